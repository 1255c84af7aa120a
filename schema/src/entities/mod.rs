//! sea-orm entities, one per table the migrations create. The test
//! `schema/tests/entities_match_schema.rs` keeps them equal to the migrated
//! schema: a column, type, key or foreign key that differs fails it.

pub mod prelude;

pub mod attachments;
pub mod audit_log;
pub mod contacts;
pub mod conversation_reads;
pub mod conversations;
pub mod message_edits;
pub mod messages;
pub mod outbox;
pub mod permissions;
pub mod processed_messages;
pub mod refresh_tokens;
pub mod role_permissions;
pub mod roles;
pub mod user_roles;
pub mod users;
