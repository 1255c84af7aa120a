//! Every entity under its table's name, as `sea-orm-cli` lays them out.

pub use super::attachments::Entity as Attachments;
pub use super::audit_log::Entity as AuditLog;
pub use super::contacts::Entity as Contacts;
pub use super::conversation_reads::Entity as ConversationReads;
pub use super::conversations::Entity as Conversations;
pub use super::message_edits::Entity as MessageEdits;
pub use super::messages::Entity as Messages;
pub use super::outbox::Entity as Outbox;
pub use super::permissions::Entity as Permissions;
pub use super::processed_messages::Entity as ProcessedMessages;
pub use super::refresh_tokens::Entity as RefreshTokens;
pub use super::role_permissions::Entity as RolePermissions;
pub use super::roles::Entity as Roles;
pub use super::user_roles::Entity as UserRoles;
pub use super::users::Entity as Users;
