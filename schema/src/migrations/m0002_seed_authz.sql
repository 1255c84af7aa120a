-- Seeded permission catalogue and system roles (DESIGN §3).

INSERT INTO permissions (key, description) VALUES
    ('inbox.read_all',      'Read every conversation and its messages'),
    ('inbox.read_assigned', 'Read conversations assigned to oneself'),
    ('inbox.reply',         'Send replies to Telegram'),
    ('inbox.assign',        'Assign conversations and change their status'),
    ('attachments.upload',  'Upload files to attach to replies'),
    ('attachments.read',    'Download attachments'),
    ('users.manage',        'Create, edit and deactivate users'),
    ('roles.manage',        'Create and edit roles and their permissions'),
    ('ops.outbox',          'Inspect and retry the outbox'),
    ('ops.dlq',             'Inspect and replay dead-letter queues'),
    ('audit.read',          'Read the audit log');

INSERT INTO roles (id, name, description, is_system) VALUES
    ('00000000-0000-7000-8000-000000000001', 'admin',    'Everything', true),
    ('00000000-0000-7000-8000-000000000002', 'operator', 'Answers customers', true),
    ('00000000-0000-7000-8000-000000000003', 'viewer',   'Reads the inbox', true);

INSERT INTO role_permissions (role_id, permission_key)
    SELECT '00000000-0000-7000-8000-000000000001', key FROM permissions;
INSERT INTO role_permissions (role_id, permission_key) VALUES
    ('00000000-0000-7000-8000-000000000002', 'inbox.read_all'),
    ('00000000-0000-7000-8000-000000000002', 'inbox.read_assigned'),
    ('00000000-0000-7000-8000-000000000002', 'inbox.reply'),
    ('00000000-0000-7000-8000-000000000002', 'inbox.assign'),
    ('00000000-0000-7000-8000-000000000002', 'attachments.upload'),
    ('00000000-0000-7000-8000-000000000002', 'attachments.read'),
    ('00000000-0000-7000-8000-000000000003', 'inbox.read_all'),
    ('00000000-0000-7000-8000-000000000003', 'attachments.read');
