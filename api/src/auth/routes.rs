//! `POST /api/auth/login`, `GET /api/auth/me`.

use axum::{Json, Router, extract::State, routing::get, routing::post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthUser, password};
use crate::{
    AppState,
    error::{ApiError, ApiResult},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/me", get(me))
}

#[derive(Deserialize)]
pub struct LoginIn {
    pub email: String,
    pub password: String,
}

#[derive(Serialize)]
pub struct LoginOut {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: MeOut,
}

#[derive(Serialize)]
pub struct MeOut {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub perm_version: i64,
}

async fn login(
    State(state): State<AppState>,
    Json(input): Json<LoginIn>,
) -> ApiResult<Json<LoginOut>> {
    let email = input.email.trim().to_lowercase();
    let row: Option<(Uuid, String, String, bool, i64)> = sqlx::query_as(
        "SELECT id, display_name, password_hash, is_active, perm_version FROM users WHERE email = $1",
    )
    .bind(&email)
    .fetch_optional(&state.pool)
    .await?;
    let stored = row
        .as_ref()
        .map_or(password::dummy_hash().to_owned(), |r| r.2.clone());
    let candidate = input.password;
    let ok = tokio::task::spawn_blocking(move || password::verify(&candidate, &stored))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let invalid = ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "email or password is incorrect",
    };
    let Some((id, display_name, _, is_active, perm_version)) = row else {
        return Err(invalid);
    };
    if !ok || !is_active {
        return Err(invalid);
    }
    let access_token = state.keys.issue(id, perm_version)?;
    Ok(Json(LoginOut {
        access_token,
        token_type: "Bearer",
        expires_in: state.keys.ttl().as_secs(),
        user: MeOut {
            id,
            email,
            display_name,
            perm_version,
        },
    }))
}

async fn me(user: AuthUser) -> Json<MeOut> {
    Json(MeOut {
        id: user.id,
        email: user.email,
        display_name: user.display_name,
        perm_version: user.perm_version,
    })
}
