//! `/api/roles` and `/api/permissions` (`roles.manage`); see
//! [`crate::accounts::roles`].

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    AppState,
    accounts::{
        Ctx,
        roles::{self, NewRole, Permission, Role, RoleEdit},
    },
    authz::pep::Principal,
    error::ApiResult,
};

/// `GET /roles`.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(roles::list(&state.db).await?))
}

/// `POST /roles`.
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<NewRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let role = roles::create(Ctx::of(&state), caller.id, input).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// `PATCH /roles/{id}`: name and description (rights are unchanged).
pub async fn update(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<RoleEdit>,
) -> ApiResult<Json<Role>> {
    Ok(Json(
        roles::update(Ctx::of(&state), caller.id, id, input).await?,
    ))
}

/// `DELETE /roles/{id}`: its holders lose what it gave them at once.
pub async fn delete(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    roles::delete(Ctx::of(&state), caller.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct PermissionsIn {
    pub permissions: Vec<String>,
}

/// `PUT /roles/{id}/permissions`: replaces the role's permissions.
pub async fn put_permissions(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<PermissionsIn>,
) -> ApiResult<Json<Role>> {
    Ok(Json(
        roles::put_permissions(Ctx::of(&state), caller.id, id, &input.permissions).await?,
    ))
}

/// `GET /permissions`: the catalogue.
pub async fn permissions(State(state): State<AppState>) -> ApiResult<Json<Vec<Permission>>> {
    Ok(Json(roles::permissions(&state.db).await?))
}
