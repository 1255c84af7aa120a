-- FastPrep Admin: every table of DESIGN §3.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    password_hash text NOT NULL,
    is_active     boolean NOT NULL DEFAULT true,
    perm_version  bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE roles (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    is_system   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE permissions (
    key         text PRIMARY KEY,
    description text NOT NULL
);

CREATE TABLE role_permissions (
    role_id        uuid NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    permission_key text NOT NULL REFERENCES permissions(key) ON DELETE CASCADE,
    PRIMARY KEY (role_id, permission_key)
);

CREATE TABLE user_roles (
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id uuid NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role_idx ON user_roles (role_id);

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    replaced_by uuid REFERENCES refresh_tokens(id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    actor_id    uuid REFERENCES users(id) ON DELETE SET NULL,
    action      text NOT NULL,
    target_type text NOT NULL,
    target_id   text NOT NULL,
    before      jsonb,
    after       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id);

CREATE TABLE contacts (
    id          uuid PRIMARY KEY,
    tg_user_id  bigint NOT NULL UNIQUE,
    username    text,
    first_name  text,
    last_name   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversations (
    id              uuid PRIMARY KEY,
    tg_chat_id      bigint NOT NULL UNIQUE,
    contact_id      uuid REFERENCES contacts(id) ON DELETE SET NULL,
    title           text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'pending', 'resolved', 'snoozed')),
    assignee_id     uuid REFERENCES users(id) ON DELETE SET NULL,
    snoozed_until   timestamptz,
    last_message_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_activity_idx ON conversations (last_message_at DESC, id DESC);
CREATE INDEX conversations_assignee_idx ON conversations (assignee_id);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    kind            text NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'note')),
    author_id       uuid REFERENCES users(id) ON DELETE SET NULL,
    text            text NOT NULL DEFAULT '',
    tg_message_id   bigint,
    status          text NOT NULL
                    CHECK (status IN ('received', 'queued', 'sending', 'sent', 'retrying', 'failed')),
    error           text,
    client_msg_id   text,
    attempts        integer NOT NULL DEFAULT 0,
    retry_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, client_msg_id),
    UNIQUE (conversation_id, direction, tg_message_id)
);
CREATE INDEX messages_timeline_idx ON messages (conversation_id, created_at DESC, id DESC);

CREATE TABLE attachments (
    id           uuid PRIMARY KEY,
    uploader_id  uuid REFERENCES users(id) ON DELETE SET NULL,
    message_id   uuid REFERENCES messages(id) ON DELETE SET NULL,
    object_key   text NOT NULL UNIQUE,
    filename     text NOT NULL,
    content_type text NOT NULL,
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'uploaded', 'attached')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    event_type     text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    scheduled_at   timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    last_error     text
);
-- The relay's claim: due pending rows in id order.
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE status = 'pending';
-- Per-aggregate ordering: is there an earlier pending row of this aggregate?
CREATE INDEX outbox_pending_aggregate_idx ON outbox (aggregate_type, aggregate_id, id) WHERE status = 'pending';
-- Failed rows, as the runbook lists them (newest first).
CREATE INDEX outbox_failed_idx ON outbox (updated_at) WHERE status = 'failed';
-- Retention clean-up of done rows.
CREATE INDEX outbox_done_idx ON outbox (published_at) WHERE status = 'done';

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE processed_messages (
    consumer     text NOT NULL,
    message_id   uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX processed_messages_age_idx ON processed_messages (processed_at);
