//! `/api/auth/*`: sign-in, token refresh and rotation, sign-out, password
//! change, and what the caller may do.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};

use super::{
    password,
    ratelimit::{Outcome, Target},
};
use crate::{
    AppState,
    accounts::{
        Ctx,
        sessions::{self, Ending, Me},
    },
    authz::pep::Principal,
    error::{ApiError, ApiResult},
};

#[derive(Deserialize)]
pub struct LoginIn {
    pub email: String,
    pub password: String,
}

#[derive(Serialize)]
pub struct TokensOut {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_expires_in: u64,
    pub user: Me,
}

fn bad_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "email or password is incorrect",
    }
}

fn tokens(state: &AppState, user: Me, refresh_token: String) -> ApiResult<TokensOut> {
    Ok(TokensOut {
        access_token: state.keys.issue(user.id, user.perm_version)?,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.keys.ttl().as_secs(),
        refresh_expires_in: state.auth.refresh_ttl.as_secs(),
        user,
    })
}

/// `POST /auth/login`. The attempt is reserved with the throttle before the
/// password is hashed, and counts as a failure unless it succeeds.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(input): Json<LoginIn>,
) -> ApiResult<Json<TokensOut>> {
    let email = input.email.trim().to_lowercase();
    if email.len() > 254 || email.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable {
            code: "invalid_email",
            message: "email is not a valid address".into(),
        });
    }
    let addr = state.auth.client_addr(peer, &headers);
    let reservation = state.limiter.reserve(Target::Login(&email), addr).await?;
    let row = match sessions::credentials(&state.db, &email).await {
        Ok(row) => row,
        Err(e) => {
            state.limiter.release(reservation, Outcome::Undecided).await;
            return Err(e);
        }
    };
    let stored = row.as_ref().map(|r| r.password_hash.clone());
    let (candidate, checked) = (input.password, stored.clone());
    // An unknown email is checked against a dummy hash, made (once) in the
    // hashing pool like every other hash, so it takes as long.
    let ok = match state
        .hasher
        .run(move || {
            let checked = checked.unwrap_or_else(|| password::dummy_hash().to_owned());
            password::verify(&candidate, &checked)
        })
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            state.limiter.release(reservation, Outcome::Undecided).await;
            return Err(e);
        }
    };
    let (user, stored) = match (row, stored) {
        (Some(r), Some(stored)) if ok && r.is_active => (r.id, stored),
        _ => return Err(bad_credentials()),
    };
    state.limiter.release(reservation, Outcome::Succeeded).await;
    let (me, refresh) = sessions::open(&state.db, user, &stored, state.auth.refresh_ttl)
        .await?
        .ok_or_else(bad_credentials)?;
    Ok(Json(tokens(&state, me, refresh)?))
}

#[derive(Deserialize)]
pub struct RefreshIn {
    pub refresh_token: String,
}

/// `POST /auth/refresh`: a new access token and a new refresh token; the
/// presented one is spent.
pub async fn refresh(
    State(state): State<AppState>,
    Json(input): Json<RefreshIn>,
) -> ApiResult<Json<TokensOut>> {
    let (me, secret) = sessions::refresh(
        Ctx::of(&state),
        input.refresh_token.trim(),
        state.auth.refresh_ttl,
    )
    .await?;
    Ok(Json(tokens(&state, me, secret)?))
}

#[derive(Deserialize, Default)]
pub struct LogoutIn {
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub all: bool,
}

/// `POST /auth/logout`: ends this session (the family of `refresh_token`)
/// or, with `all`, every session of the caller. Access tokens already issued
/// stop working at once.
pub async fn logout(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<LogoutIn>,
) -> ApiResult<StatusCode> {
    let ending = if input.all {
        Ending::All
    } else {
        let presented = input.refresh_token.as_deref().map(str::trim).unwrap_or("");
        if presented.is_empty() {
            return Err(ApiError::Unprocessable {
                code: "missing_refresh_token",
                message: "send the session's refresh_token, or all: true".into(),
            });
        }
        Ending::Session(presented)
    };
    sessions::logout(Ctx::of(&state), caller.id, ending).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct PasswordIn {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /auth/password`: changes the caller's password, ends every session
/// and returns a new one. Guesses of the current password are throttled
/// like sign-ins.
pub async fn change_password(
    State(state): State<AppState>,
    caller: Principal,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(input): Json<PasswordIn>,
) -> ApiResult<Json<TokensOut>> {
    password::check_policy(&input.new_password)?;
    let addr = state.auth.client_addr(peer, &headers);
    let reservation = state
        .limiter
        .reserve(Target::CurrentPassword(caller.id), addr)
        .await?;
    let stored = match sessions::stored_hash(&state.db, caller.id).await {
        Ok(stored) => stored,
        Err(e) => {
            state.limiter.release(reservation, Outcome::Undecided).await;
            return Err(e);
        }
    };
    let (current, new, checked) = (input.current_password, input.new_password, stored.clone());
    let verified = state
        .hasher
        .run(move || {
            password::verify(&current, &checked)
                .then(|| password::hash(&new))
                .transpose()
        })
        .await;
    let hash = match verified {
        Ok(Ok(Some(hash))) => hash,
        Ok(Ok(None)) => {
            return Err(ApiError::Unprocessable {
                code: "wrong_password",
                message: "the current password is not correct".into(),
            });
        }
        Ok(Err(e)) => {
            state.limiter.release(reservation, Outcome::Undecided).await;
            return Err(ApiError::Internal(e));
        }
        Err(e) => {
            state.limiter.release(reservation, Outcome::Undecided).await;
            return Err(e);
        }
    };
    state.limiter.release(reservation, Outcome::Succeeded).await;
    let (me, refresh) = sessions::change_password(
        Ctx::of(&state),
        caller.id,
        &stored,
        &hash,
        state.auth.refresh_ttl,
    )
    .await?;
    Ok(Json(tokens(&state, me, refresh)?))
}

/// `GET /auth/me`.
pub async fn me(State(state): State<AppState>, caller: Principal) -> ApiResult<Json<Me>> {
    Ok(Json(sessions::me(&state.db, caller.id).await?))
}

#[derive(Serialize)]
pub struct EpOut {
    pub permissions: Vec<&'static str>,
    pub perm_version: i64,
}

/// `GET /auth/me/ep`: the caller's effective permissions.
pub async fn me_ep(caller: Principal) -> Json<EpOut> {
    Json(EpOut {
        permissions: caller.ep.perms.keys(),
        perm_version: caller.ep.version,
    })
}
