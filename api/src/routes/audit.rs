//! `GET /api/audit`: the audit log, newest first (`audit.read`).

use axum::{
    Json,
    extract::{Query, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::conversations::Page;
use crate::{
    AppState,
    error::{ApiError, ApiResult},
};

#[derive(Deserialize)]
pub struct AuditQuery {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct AuditOut {
    pub id: i64,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub perm_version: Option<i64>,
    pub created_at: DateTime<Utc>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditOut>>> {
    let limit = super::cursor::limit(q.limit)?;
    for (name, value) in [("target_type", &q.target_type), ("target_id", &q.target_id)] {
        if value
            .as_deref()
            .is_some_and(|v| v.len() > 200 || v.contains('\0'))
        {
            return Err(ApiError::Unprocessable {
                code: if name == "target_id" {
                    "invalid_target_id"
                } else {
                    "invalid_target_type"
                },
                message: format!("{name} must be at most 200 bytes, with no NUL character"),
            });
        }
    }
    let before: Option<i64> = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
            })
        })
        .transpose()?;
    let mut items: Vec<AuditOut> = sqlx::query_as(
        "SELECT id, actor_id, action, target_type, target_id, before, after, perm_version, created_at
         FROM audit_log
         WHERE ($1::text IS NULL OR target_type = $1)
           AND ($2::text IS NULL OR target_id = $2)
           AND ($3::uuid IS NULL OR actor_id = $3)
           AND ($4::bigint IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
    )
    .bind(&q.target_type)
    .bind(&q.target_id)
    .bind(q.actor_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| items.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}
