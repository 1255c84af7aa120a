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
    error::ApiResult,
};

/// `GET /users`.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(users::list(&state.db).await?))
}

/// `GET /users/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<Uuid>) -> ApiResult<Json<User>> {
    Ok(Json(users::get(&state.db, id).await?))
}

/// `POST /users`.
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = users::create(Ctx::of(&state), caller.id, input).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `PATCH /users/{id}`: profile, password reset, (de)activation.
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
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    users::deactivate(Ctx::of(&state), caller.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RolesIn {
    pub role_ids: Vec<Uuid>,
}

/// `PUT /users/{id}/roles`: replaces the user's roles.
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
