-- Authorization: the permission version an audited change produced, the
-- audit log read newest first, and refresh-token clean-up by expiry.

ALTER TABLE audit_log ADD COLUMN perm_version bigint;
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
