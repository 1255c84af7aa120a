//! A Telegram contact's profile and the conversations with them that the
//! caller may read.

use chrono::{DateTime, Utc};
use schema::entities::{contacts, conversations};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::InboxScope;
use crate::error::{ApiError, ApiResult};

/// A Telegram contact and the conversations with them the caller may read.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    pub id: Uuid,
    pub tg_user_id: i64,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub conversations: Vec<ContactConversation>,
}

#[derive(Debug, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct ContactConversation {
    pub id: Uuid,
    pub title: String,
    #[schema(value_type = super::ConversationStatus)]
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub last_message_at: DateTime<Utc>,
    pub message_count: i64,
}

/// Someone who may read only assigned conversations sees a contact only
/// through one of those.
pub async fn get<C: ConnectionTrait>(conn: &C, id: Uuid, scope: InboxScope) -> ApiResult<Contact> {
    use conversations::Column;
    let contact = contacts::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound { what: "contact" })?;
    let conversations = conversations::Entity::in_scope(scope.assignee())
        .filter(Column::ContactId.eq(id))
        .select_only()
        .columns([
            Column::Id,
            Column::Title,
            Column::Status,
            Column::AssigneeId,
            Column::LastMessageAt,
        ])
        .expr_as(
            Expr::cust(
                "(SELECT count(*) FROM messages m WHERE m.conversation_id = conversations.id)",
            ),
            "message_count",
        )
        .order_by_desc(Column::LastMessageAt)
        .into_model::<ContactConversation>()
        .all(conn)
        .await?;
    if matches!(scope, InboxScope::Assigned(_)) && conversations.is_empty() {
        return Err(ApiError::NotFound { what: "contact" });
    }
    Ok(Contact {
        id: contact.id,
        tg_user_id: contact.tg_user_id,
        username: contact.username,
        first_name: contact.first_name,
        last_name: contact.last_name,
        created_at: contact.created_at,
        conversations,
    })
}
