//! `GET /api/conversations`: the inbox list, newest activity first.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::cursor;
use crate::{
    AppState,
    authz::{InboxScope, pep::Principal},
    error::{ApiError, ApiResult},
};

#[derive(Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct ConversationOut {
    pub id: Uuid,
    pub tg_chat_id: i64,
    pub title: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub contact_username: Option<String>,
    pub contact_first_name: Option<String>,
    pub contact_last_name: Option<String>,
}

#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

const STATUSES: [&str; 4] = ["open", "pending", "resolved", "snoozed"];

/// `GET /conversations`, restricted to what the caller may read.
pub async fn list(
    caller: Principal,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<ConversationOut>>> {
    let scope = caller.inbox_scope()?;
    let limit = cursor::limit(q.limit)?;
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be one of open, pending, resolved, snoozed",
        ));
    }
    let after = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let mut items: Vec<ConversationOut> = sqlx::query_as(
        "SELECT c.id, c.tg_chat_id, c.title, c.status, c.assignee_id, c.last_message_at, c.created_at,
                k.username AS contact_username, k.first_name AS contact_first_name, k.last_name AS contact_last_name
         FROM conversations c LEFT JOIN contacts k ON k.id = c.contact_id
         WHERE ($1::text IS NULL OR c.status = $1)
           AND ($2::timestamptz IS NULL OR (c.last_message_at, c.id) < ($2, $3))
           AND ($5::uuid IS NULL OR c.assignee_id = $5)
         ORDER BY c.last_message_at DESC, c.id DESC
         LIMIT $4",
    )
    .bind(&q.status)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .bind(scope.assignee())
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = cursor::page(&mut items, limit, |c| (c.last_message_at, c.id));
    Ok(Json(Page { items, next_cursor }))
}

/// `GET /conversations/{id}`.
pub async fn get(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ConversationOut>> {
    let scope = caller.inbox_scope()?;
    let found: Option<ConversationOut> = sqlx::query_as(
        "SELECT c.id, c.tg_chat_id, c.title, c.status, c.assignee_id, c.last_message_at, c.created_at,
                k.username AS contact_username, k.first_name AS contact_first_name, k.last_name AS contact_last_name
         FROM conversations c LEFT JOIN contacts k ON k.id = c.contact_id
         WHERE c.id = $1 AND ($2::uuid IS NULL OR c.assignee_id = $2)",
    )
    .bind(id)
    .bind(scope.assignee())
    .fetch_optional(&state.pool)
    .await?;
    found.map(Json).ok_or(ApiError::NotFound {
        what: "conversation",
    })
}

/// The Telegram chat of a conversation the caller may read; 404 for one that
/// does not exist or is out of scope (its existence is not revealed).
pub async fn visible_chat(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    scope: InboxScope,
) -> ApiResult<i64> {
    sqlx::query_scalar(
        "SELECT tg_chat_id FROM conversations WHERE id = $1 AND ($2::uuid IS NULL OR assignee_id = $2)",
    )
    .bind(id)
    .bind(scope.assignee())
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound {
        what: "conversation",
    })
}
