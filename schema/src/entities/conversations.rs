//! `conversations`: one per Telegram chat.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub tg_chat_id: i64,
    pub contact_id: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub title: String,
    /// `open`, `pending`, `resolved` or `snoozed`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub snoozed_until: Option<DateTimeUtc>,
    pub last_message_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::contacts::Entity", from = "Column::ContactId", to = "super::contacts::Column::Id", on_delete = "SetNull")]
    Contacts,
    /// The assignee.
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::AssigneeId", to = "super::users::Column::Id", on_delete = "SetNull")]
    Users,
    #[sea_orm(has_many = "super::messages::Entity")]
    Messages,
    #[sea_orm(has_many = "super::conversation_reads::Entity")]
    ConversationReads,
}

super::related! {
    contacts => Contacts,
    users => Users,
    messages => Messages,
    conversation_reads => ConversationReads,
}

impl ActiveModelBehavior for ActiveModel {}
