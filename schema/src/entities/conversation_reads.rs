//! `conversation_reads`: how far each user has read each conversation, for
//! unread counts.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_reads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: Uuid,
    pub last_read_at: DateTimeUtc,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::UserId", to = "super::users::Column::Id", on_delete = "Cascade")]
    Users,
    #[sea_orm(belongs_to = "super::conversations::Entity", from = "Column::ConversationId", to = "super::conversations::Column::Id", on_delete = "Cascade")]
    Conversations,
}

super::related! {
    users => Users,
    conversations => Conversations,
}

impl ActiveModelBehavior for ActiveModel {}
