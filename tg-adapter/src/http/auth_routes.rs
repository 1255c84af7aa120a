//! `/v1/auth/*`: logging the Telegram account in (phone, code, 2FA
//! password), for backends that hold a real account. Behind the `/v1`
//! bearer token like every other `/v1` route; the sandbox answers 404.

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    routing::{get, post},
};
use secrecy::SecretString;
use serde::Deserialize;

use super::{error::ApiError, v1::V1State};
use crate::backend::{AccountLogin, LoginStep};

pub fn router(state: V1State) -> Router {
    Router::new()
        .route("/v1/auth", get(step))
        .route("/v1/auth/phone", post(phone))
        .route("/v1/auth/code", post(code))
        .route("/v1/auth/password", post(password))
        .with_state(state)
}

fn login(state: &V1State) -> Result<&dyn AccountLogin, ApiError> {
    state.backend.login().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "login_unavailable",
            "this backend has no account to log in",
        )
    })
}

async fn step(State(state): State<V1State>) -> Result<Json<LoginStep>, ApiError> {
    Ok(Json(login(&state)?.step().await?))
}

#[derive(Deserialize)]
struct PhoneIn {
    phone: String,
}

async fn phone(
    State(state): State<V1State>,
    body: Result<Json<PhoneIn>, JsonRejection>,
) -> Result<Json<LoginStep>, ApiError> {
    let Json(body) = body?;
    Ok(Json(login(&state)?.submit_phone(&body.phone).await?))
}

#[derive(Deserialize)]
struct CodeIn {
    code: String,
}

async fn code(
    State(state): State<V1State>,
    body: Result<Json<CodeIn>, JsonRejection>,
) -> Result<Json<LoginStep>, ApiError> {
    let Json(body) = body?;
    Ok(Json(login(&state)?.submit_code(&body.code).await?))
}

#[derive(Deserialize)]
struct PasswordIn {
    password: String,
}

async fn password(
    State(state): State<V1State>,
    body: Result<Json<PasswordIn>, JsonRejection>,
) -> Result<Json<LoginStep>, ApiError> {
    let Json(body) = body?;
    let password = SecretString::from(body.password);
    Ok(Json(login(&state)?.submit_password(&password).await?))
}
