//! `messages`: inbound and outbound messages of a conversation, one timeline.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub direction: String,
    pub kind: String,
    pub author_id: Option<Uuid>,
    pub text: String,
    pub tg_message_id: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub client_msg_id: Option<String>,
    pub attempts: i32,
    pub retry_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
