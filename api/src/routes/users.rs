//! `/api/users`: accounts, their roles, deactivation (`users.manage`); see
//! [`crate::accounts::users`].

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
        users::{self, NewUser, User, UserEdit},
    },
    authz::pep::Principal,
    error::{ApiResult, ErrorBody},
};

/// `GET /users`.
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    summary = "Every account, by email",
    responses((status = 200, description = "The accounts", body = Vec<User>))
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(users::list(&state.db).await?))
}

/// `GET /users/{id}`.
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
    summary = "One account",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, Path(id): Path<Uuid>) -> ApiResult<Json<User>> {
    Ok(Json(users::get(&state.db, id).await?))
}

/// `POST /users`.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    summary = "Create an account",
    description = "Every role given must grant only permissions the caller holds.",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 403, description = "`forbidden`: a role grants a permission the caller lacks", body = ErrorBody),
        (status = 409, description = "`email_taken`: an account has this email", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `invalid_display_name`, `weak_password`, `unknown_role`, `invalid_character`", body = ErrorBody),
        (status = 503, description = "`busy`: too many passwords are being hashed; `unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = users::create(Ctx::of(&state), caller.id, input).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `PATCH /users/{id}`: profile, password reset, (de)activation.
#[utoipa::path(
    patch,
    path = "/api/users/{id}",
    tag = "users",
    summary = "Edit an account: profile, password reset, activation",
    description = "A new password or a deactivation ends every session of the user.",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UserEdit,
    responses(
        (status = 200, description = "The account as changed", body = User),
        (status = 403, description = "`own_password`, `own_account`: one's own password, email and activation are changed elsewhere; `outranked`: the user holds permissions the caller lacks", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 409, description = "`email_taken`; `last_admin`: no active administrator would remain", body = ErrorBody),
        (status = 422, description = "`invalid_email`, `invalid_display_name`, `weak_password`, `invalid_character`", body = ErrorBody),
        (status = 503, description = "`busy`: too many passwords are being hashed; `unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<UserEdit>,
) -> ApiResult<Json<User>> {
    Ok(Json(
        users::update(Ctx::of(&state), caller.id, id, input).await?,
    ))
}

/// `DELETE /users/{id}`: deactivates the account.
#[utoipa::path(
    delete,
    path = "/api/users/{id}",
    tag = "users",
    summary = "Deactivate an account",
    description = "Its sessions end at once; its history keeps its name. Nothing to do for an inactive account.",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deactivated"),
        (status = 403, description = "`own_account`: not one's own; `outranked`: the user holds permissions the caller lacks", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 409, description = "`last_admin`: no active administrator would remain", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    users::deactivate(Ctx::of(&state), caller.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RolesIn {
    pub role_ids: Vec<Uuid>,
}

/// `PUT /users/{id}/roles`: replaces the user's roles.
#[utoipa::path(
    put,
    path = "/api/users/{id}/roles",
    tag = "users",
    summary = "Replace an account's roles",
    description = "The caller must hold every permission of each role added or removed.",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = RolesIn,
    responses(
        (status = 200, description = "The account with its new roles", body = User),
        (status = 403, description = "`own_roles`: not one's own; `outranked`; `forbidden`: a role changed grants a permission the caller lacks", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 409, description = "`last_admin`: no active administrator would remain", body = ErrorBody),
        (status = 422, description = "`unknown_role`: a role id names no role", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn put_roles(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<RolesIn>,
) -> ApiResult<Json<User>> {
    Ok(Json(
        users::put_roles(Ctx::of(&state), caller.id, id, &input.role_ids).await?,
    ))
}
