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
    error::ApiResult,
    inbox::contacts::{self, Contact},
};

/// `GET /contacts/{id}`.
pub async fn get(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Contact>> {
    let scope = caller.inbox_scope()?;
    Ok(Json(contacts::get(&state.db, id, scope).await?))
}
