//! `GET /api/audit`: the audit log, newest first (`audit.read`).

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    AppState,
    audit::{self, AuditRecord},
    error::ApiResult,
    page::{self, Page, PageRequest},
};

#[derive(Deserialize)]
pub struct AuditQuery {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditRecord>>> {
    let page = PageRequest::new(
        q.limit,
        q.cursor.as_deref().map(page::decode_id).transpose()?,
    )?;
    let filter = audit::Filter {
        target_type: q.target_type,
        target_id: q.target_id,
        actor_id: q.actor_id,
    };
    Ok(Json(audit::list(&state.db, &filter, page).await?))
}
