//! Scoped finders on the entities: the one place each visibility rule is
//! written, so a query cannot forget it.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Select};
use uuid::Uuid;

use crate::entities::{conversations, messages};

impl conversations::Entity {
    /// Conversations a reader may see: every one, or (for a reader limited
    /// to assigned conversations) only those assigned to `assignee`.
    pub fn in_scope(assignee: Option<Uuid>) -> Select<Self> {
        let all = Self::find();
        match assignee {
            Some(a) => all.filter(conversations::Column::AssigneeId.eq(a)),
            None => all,
        }
    }
}

impl messages::Entity {
    /// The messages of one conversation.
    pub fn of_conversation(conversation: Uuid) -> Select<Self> {
        Self::find().filter(messages::Column::ConversationId.eq(conversation))
    }
}
