//! `GET /api/contacts/{id}`: a Telegram contact's profile and the
//! conversations with them the caller may read.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    AppState,
    authz::{InboxScope, pep::Principal},
    error::{ApiError, ApiResult},
};

#[derive(Serialize, sqlx::FromRow)]
pub struct ContactOut {
    pub id: Uuid,
    pub tg_user_id: i64,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: DateTime<Utc>,
    #[sqlx(skip)]
    pub conversations: Vec<ContactConversation>,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct ContactConversation {
    pub id: Uuid,
    pub title: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub last_message_at: DateTime<Utc>,
    pub message_count: i64,
}

/// `GET /contacts/{id}`. Someone who may read only assigned conversations
/// sees a contact only through one of those.
pub async fn get(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ContactOut>> {
    let scope = caller.inbox_scope()?;
    let mut conn = state.pool.acquire().await?;
    let mut contact: ContactOut = sqlx::query_as(
        "SELECT id, tg_user_id, username, first_name, last_name, created_at FROM contacts WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound { what: "contact" })?;
    contact.conversations = sqlx::query_as(
        "SELECT c.id, c.title, c.status, c.assignee_id, c.last_message_at,
                (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count
         FROM conversations c
         WHERE c.contact_id = $1 AND ($2::uuid IS NULL OR c.assignee_id = $2)
         ORDER BY c.last_message_at DESC",
    )
    .bind(id)
    .bind(scope.assignee())
    .fetch_all(&mut *conn)
    .await?;
    if matches!(scope, InboxScope::Assigned(_)) && contact.conversations.is_empty() {
        return Err(ApiError::NotFound { what: "contact" });
    }
    Ok(Json(contact))
}
