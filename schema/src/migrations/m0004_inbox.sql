-- The shared inbox: per-user read marks (unread counts), private notes as
-- their own message kind and status, and search over names and texts.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE conversation_reads (
    user_id         uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    last_read_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);

-- A note is stored, never sent: its own status.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('received', 'queued', 'sending', 'sent', 'retrying', 'failed', 'internal'));

CREATE INDEX messages_text_trgm_idx ON messages USING gin (text gin_trgm_ops);
CREATE INDEX conversations_title_trgm_idx ON conversations USING gin (title gin_trgm_ops);
CREATE INDEX contacts_name_trgm_idx ON contacts USING gin (
    (coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' || coalesce(username, ''))
    gin_trgm_ops);
CREATE INDEX conversations_snoozed_idx ON conversations (snoozed_until) WHERE status = 'snoozed';
