-- Customers edit messages in Telegram: the message shows the latest text,
-- and every text it replaced is kept, oldest first.
ALTER TABLE messages ADD COLUMN edited_at timestamptz;

CREATE TABLE message_edits (
    id          bigserial PRIMARY KEY,
    message_id  uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    -- The text as it was before this edit.
    text        text NOT NULL,
    -- When the edit replaced it (Telegram's edit time).
    replaced_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_edits_message_idx ON message_edits (message_id, id);
