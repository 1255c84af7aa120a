//! `GET /api/contacts/{id}`: a Telegram contact's profile and the
//! conversations with them the caller may read (see [`crate::inbox::contacts`]).

use axum::{
    Json,
    extract::{Path, State},
};
use uuid::Uuid;

use crate::{
    AppState,
    authz::pep::Principal,
    error::{ApiResult, ErrorBody},
    inbox::contacts::{self, Contact},
};

/// `GET /contacts/{id}`.
#[utoipa::path(
    get,
    path = "/api/contacts/{id}",
    tag = "inbox",
    summary = "A contact and the conversations with them the caller may read",
    params(("id" = Uuid, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The contact", body = Contact),
        (status = 404, description = "`not_found`: no such contact, or none of its conversations is the caller's to read", body = ErrorBody),
    )
)]
pub async fn get(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Contact>> {
    let scope = caller.inbox_scope()?;
    Ok(Json(contacts::get(&state.db, id, scope).await?))
}
