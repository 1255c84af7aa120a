//! `messages`: inbound and outbound messages of a conversation, one timeline.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `in` or `out`.
    #[sea_orm(column_type = "Text")]
    pub direction: String,
    /// `text` or `note`.
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    pub author_id: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub text: String,
    pub tg_message_id: Option<i64>,
    /// `received`, `queued`, `sending`, `sent`, `retrying`, `failed` or `internal`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub error: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub client_msg_id: Option<String>,
    pub attempts: i32,
    pub retry_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    /// When the customer last edited it in Telegram.
    pub edited_at: Option<DateTimeUtc>,
    /// A reply waiting for an earlier unfinished reply of its chat (ADR 0011).
    pub held: bool,
    /// Deleted in Telegram: by an operator (set when asked) or the customer.
    pub deleted_at: Option<DateTimeUtc>,
    /// When the customer's read receipt covered this reply.
    pub read_at: Option<DateTimeUtc>,
    /// An operator's pending or last change of a sent reply: `edit` or `delete`.
    #[sea_orm(column_type = "Text")]
    pub change_kind: Option<String>,
    /// How far that change got: `queued`, `sending`, `sent`, `retrying`, `failed`.
    #[sea_orm(column_type = "Text")]
    pub change_status: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub change_error: Option<String>,
    pub change_retry_at: Option<DateTimeUtc>,
    /// Rises with every change asked: a handler finishes only the change it read.
    pub change_seq: i32,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::conversations::Entity", from = "Column::ConversationId", to = "super::conversations::Column::Id", on_delete = "Cascade")]
    Conversations,
    /// The author of a reply or note.
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::AuthorId", to = "super::users::Column::Id", on_delete = "SetNull")]
    Users,
    #[sea_orm(has_many = "super::message_edits::Entity")]
    MessageEdits,
    #[sea_orm(has_many = "super::attachments::Entity")]
    Attachments,
}

super::related! {
    conversations => Conversations,
    users => Users,
    message_edits => MessageEdits,
    attachments => Attachments,
}

impl ActiveModelBehavior for ActiveModel {}
