-- An operator's edit or deletion of a sent reply goes to Telegram through
-- the outbox like the reply did (ADR 0020), and its progress is the
-- message's: which change is pending (`change_kind`), how far it got
-- (`change_status`, with the reasons and times a send has), and a counter
-- that tells a later change from the one a handler read (`change_seq`).
-- `deleted_at`: deleted in Telegram, by an operator (set when asked) or by
-- the customer; the row and its text stay for staff.
-- `read_at`: when the customer's read receipt covered this reply.
ALTER TABLE messages
    ADD COLUMN deleted_at      timestamptz,
    ADD COLUMN read_at         timestamptz,
    ADD COLUMN change_kind     text,
    ADD COLUMN change_status   text,
    ADD COLUMN change_error    text,
    ADD COLUMN change_retry_at timestamptz,
    ADD COLUMN change_seq      integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT messages_change_kind_check CHECK (change_kind IN ('edit', 'delete')),
    ADD CONSTRAINT messages_change_status_check
        CHECK (change_status IN ('queued', 'sending', 'sent', 'retrying', 'failed')),
    ADD CONSTRAINT messages_change_pair_check CHECK ((change_kind IS NULL) = (change_status IS NULL));

-- Who replaced a text: null for the customer's own edits in Telegram.
ALTER TABLE message_edits ADD COLUMN editor_id uuid REFERENCES users(id) ON DELETE SET NULL;
