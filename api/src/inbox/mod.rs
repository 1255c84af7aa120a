//! The inbox service: conversations, their messages and notes, and contacts,
//! always within the caller's [`InboxScope`]. Functions take a sea-orm
//! connection or transaction; routes extract, call them and answer.

pub mod changes;
pub mod contacts;
pub mod conversations;
pub mod messages;

pub use crate::authz::InboxScope;

platform::named_enum! {
    /// Where a conversation stands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ConversationStatus {
        Open = "open",
        Pending = "pending",
        Resolved = "resolved",
        Snoozed = "snoozed",
    }
}

crate::openapi::named_enum_schema!(ConversationStatus, "Where a conversation stands");

/// The message every refusal of an unknown status carries.
pub const STATUS_CHOICES: &str = "status must be one of open, pending, resolved, snoozed";
