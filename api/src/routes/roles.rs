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
    error::{ApiResult, ErrorBody},
};

/// `GET /roles`.
#[utoipa::path(
    get,
    path = "/api/roles",
    tag = "roles",
    summary = "Every role with its permissions and holder count",
    responses((status = 200, description = "Built-in roles first, then by name", body = Vec<Role>))
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(roles::list(&state.db).await?))
}

/// `POST /roles`.
#[utoipa::path(
    post,
    path = "/api/roles",
    tag = "roles",
    summary = "Create a role",
    description = "It may grant only permissions the caller holds.",
    request_body = NewRole,
    responses(
        (status = 201, description = "Created", body = Role),
        (status = 403, description = "`forbidden`: it grants a permission the caller lacks", body = ErrorBody),
        (status = 409, description = "`role_name_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_role_name`, `unknown_permission`, `invalid_character`", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<NewRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let role = roles::create(Ctx::of(&state), caller.id, input).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// `PATCH /roles/{id}`: name and description (rights are unchanged).
#[utoipa::path(
    patch,
    path = "/api/roles/{id}",
    tag = "roles",
    summary = "Rename or redescribe a role",
    params(("id" = Uuid, Path, description = "The role's id")),
    request_body = RoleEdit,
    responses(
        (status = 200, description = "The role as changed", body = Role),
        (status = 404, description = "`not_found`: no such role", body = ErrorBody),
        (status = 409, description = "`system_role`: built-in roles keep their names; `role_name_taken`", body = ErrorBody),
        (status = 422, description = "`invalid_role_name`, `invalid_character`", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/api/roles/{id}",
    tag = "roles",
    summary = "Delete a role",
    description = "Its holders lose what it gave them at once.",
    params(("id" = Uuid, Path, description = "The role's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`forbidden`: it has holders and grants a permission the caller lacks", body = ErrorBody),
        (status = 404, description = "`not_found`: no such role", body = ErrorBody),
        (status = 409, description = "`system_role`: built-in roles cannot be deleted", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    roles::delete(Ctx::of(&state), caller.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PermissionsIn {
    /// Permission keys (see `GET /api/permissions`).
    #[schema(value_type = Vec<crate::authz::Perm>)]
    pub permissions: Vec<String>,
}

/// `PUT /roles/{id}/permissions`: replaces the role's permissions.
#[utoipa::path(
    put,
    path = "/api/roles/{id}/permissions",
    tag = "roles",
    summary = "Replace a role's permissions",
    description = "Every holder's rights change at once. The caller must hold each permission added or removed.",
    params(("id" = Uuid, Path, description = "The role's id")),
    request_body = PermissionsIn,
    responses(
        (status = 200, description = "The role with its new permissions", body = Role),
        (status = 403, description = "`forbidden`: a permission added or removed is one the caller lacks", body = ErrorBody),
        (status = 404, description = "`not_found`: no such role", body = ErrorBody),
        (status = 409, description = "`system_role`: admin always has every permission", body = ErrorBody),
        (status = 422, description = "`unknown_permission`", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/permissions",
    tag = "roles",
    summary = "The permission catalogue",
    responses((status = 200, description = "Every permission, by key", body = Vec<Permission>))
)]
pub async fn permissions(State(state): State<AppState>) -> ApiResult<Json<Vec<Permission>>> {
    Ok(Json(roles::permissions(&state.db).await?))
}
