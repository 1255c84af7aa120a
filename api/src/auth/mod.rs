//! Authentication: passwords, access tokens, the `AuthUser` extractor and the
//! login/me routes.

pub mod jwt;
pub mod password;
pub mod routes;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// The caller, authenticated by a valid access token of an active user.
/// Every route that is not public takes this extractor.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub perm_version: i64,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let claims = state.keys.verify(token).ok_or(ApiError::Unauthorized {
            code: "invalid_token",
            message: "the access token is invalid or expired",
        })?;
        let row: Option<(String, String, bool, i64)> = sqlx::query_as(
            "SELECT email, display_name, is_active, perm_version FROM users WHERE id = $1",
        )
        .bind(claims.sub)
        .fetch_optional(&state.pool)
        .await?;
        let Some((email, display_name, is_active, perm_version)) = row else {
            return Err(ApiError::unauthorized());
        };
        if !is_active {
            return Err(ApiError::Unauthorized {
                code: "account_disabled",
                message: "this account is deactivated",
            });
        }
        Ok(AuthUser {
            id: claims.sub,
            email,
            display_name,
            perm_version,
        })
    }
}
