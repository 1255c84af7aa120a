-- The Telegram account's login and health from the API (DESIGN §3's
-- `ops.telegram`), for the admin role. Admins' versions rise so that their
-- next token refresh reads the new right; adding a right needs no instant
-- revocation, so cached rights may lag by one access token's lifetime.
INSERT INTO permissions (key, description) VALUES
    ('ops.telegram', 'Log the Telegram account in and watch its session')
ON CONFLICT (key) DO NOTHING;

INSERT INTO role_permissions (role_id, permission_key)
    SELECT id, 'ops.telegram' FROM roles WHERE name = 'admin'
ON CONFLICT DO NOTHING;

UPDATE users SET perm_version = perm_version + 1, updated_at = now()
WHERE id IN (SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id
             WHERE r.name = 'admin');
