-- Replies to one chat go out in the order they were written, whichever
-- tg-delivery instance takes them and however long an earlier one waits in
-- a retry (ADR 0011). A reply that finds an earlier unfinished reply of its
-- chat is `held`; the earlier one, when it finishes, hands the chat's turn on.
ALTER TABLE messages ADD COLUMN held boolean NOT NULL DEFAULT false;

-- The unfinished replies of a conversation in send order: the handler asks
-- whether any precedes its own, and who is next once it is done.
CREATE INDEX messages_unfinished_idx ON messages (conversation_id, created_at, id)
  WHERE direction = 'out' AND status IN ('queued', 'sending', 'retrying');
