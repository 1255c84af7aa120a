-- The files of a message in the order its author listed them: tg-delivery
-- reads them for every reply it sends, so they are found by message.
ALTER TABLE attachments ADD COLUMN position smallint;
CREATE INDEX attachments_message_idx ON attachments (message_id, position)
  WHERE message_id IS NOT NULL;
-- Uploads no message took: counted per uploader at each upload, and
-- purged by age.
CREATE INDEX attachments_pending_idx ON attachments (uploader_id, created_at)
  WHERE message_id IS NULL;
