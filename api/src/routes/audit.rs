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
    error::{ApiResult, ErrorBody},
    page::{self, Page, PageRequest},
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this kind of target (`user`, `role`, `conversation`, …).
    #[param(max_length = 200)]
    pub target_type: Option<String>,
    /// Only entries about this target.
    #[param(max_length = 200)]
    pub target_id: Option<String>,
    /// Only entries by this user.
    pub actor_id: Option<Uuid>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// `GET /audit`: newest first, keyset-paged by id.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    summary = "The audit log, newest first",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of entries", body = Page<AuditRecord>),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`", body = ErrorBody),
        (status = 422, description = "`invalid_target_type`, `invalid_target_id`: over 200 bytes or with a NUL character", body = ErrorBody),
    )
)]
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
