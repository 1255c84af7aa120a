//! `/api/auth/*`: sign-in, token refresh and rotation, sign-out, password
//! change, and what the caller may do.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{
    password,
    ratelimit::{Outcome, Target},
    session,
};
use crate::{
    AppState,
    authz::{change::AuthzChange, pep::Principal},
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
    pub user: MeOut,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct MeOut {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub perm_version: i64,
}

fn bad_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "email or password is incorrect",
    }
}

async fn me_row(state: &AppState, id: Uuid) -> ApiResult<MeOut> {
    sqlx::query_as("SELECT id, email, display_name, perm_version FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound { what: "user" })
}

fn tokens(state: &AppState, user: MeOut, refresh_token: String) -> ApiResult<TokensOut> {
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
    let row: Option<(Uuid, String, bool)> =
        match sqlx::query_as("SELECT id, password_hash, is_active FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(&state.pool)
            .await
        {
            Ok(row) => row,
            Err(e) => {
                state.limiter.release(reservation, Outcome::Undecided).await;
                return Err(e.into());
            }
        };
    let stored = row.as_ref().map(|r| r.1.clone());
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
    let user = match row {
        Some((id, _, true)) if ok => id,
        _ => return Err(bad_credentials()),
    };
    state.limiter.release(reservation, Outcome::Succeeded).await;
    let mut tx = state.pool.begin().await?;
    // Under the user's row lock: a reset or deactivation that committed
    // while the password was being checked wins, and one that comes later
    // waits for this session and ends it.
    let current: Option<(String, bool, Uuid, String, String, i64)> = sqlx::query_as(
        "SELECT password_hash, is_active, id, email, display_name, perm_version
         FROM users WHERE id = $1 FOR SHARE",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let me = match current {
        Some((hash, true, id, email, display_name, perm_version))
            if Some(&hash) == stored.as_ref() =>
        {
            MeOut {
                id,
                email,
                display_name,
                perm_version,
            }
        }
        _ => return Err(bad_credentials()),
    };
    let (_, refresh) =
        session::issue(&mut tx, user, Uuid::now_v7(), state.auth.refresh_ttl).await?;
    tx.commit().await?;
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
    let mut tx = state.pool.begin().await?;
    match session::rotate(&mut tx, input.refresh_token.trim(), state.auth.refresh_ttl).await? {
        session::Presented::Rotated { me, secret } => {
            tx.commit().await?;
            // The token carries the version read under the user row's lock,
            // never one read after the commit: a reuse detected after that
            // commit bumps the version past this one, and so kills this
            // access token too.
            Ok(Json(tokens(&state, me, secret)?))
        }
        session::Presented::Reused { user, family } => {
            tx.rollback().await?;
            // Someone holds a copy: end the family and every access token
            // minted from it.
            let mut change = AuthzChange::begin(&state.pool, None).await?;
            if session::revoke_family(change.conn(), family).await? > 0 {
                change
                    .user_changed(
                        user,
                        "auth.refresh_reused",
                        None,
                        Some(json!({"family_id": family})),
                    )
                    .await?;
            }
            change.commit(&state.authz, &state.relay_wake).await?;
            Err(ApiError::Unauthorized {
                code: "refresh_reused",
                message: "this refresh token was already used; the session is ended, sign in again",
            })
        }
    }
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
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let ended = if input.all {
        session::revoke_user(change.conn(), caller.id).await?
    } else {
        let presented = input.refresh_token.as_deref().map(str::trim).unwrap_or("");
        if presented.is_empty() {
            return Err(ApiError::Unprocessable {
                code: "missing_refresh_token",
                message: "send the session's refresh_token, or all: true".into(),
            });
        }
        match session::family_of(change.conn(), caller.id, presented).await? {
            Some(family) => session::revoke_family(change.conn(), family).await?,
            None => 0,
        }
    };
    change
        .user_changed(
            caller.id,
            "auth.logout",
            None,
            Some(json!({"all": input.all, "tokens_revoked": ended})),
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
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
    let stored: String = match sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(caller.id)
        .fetch_one(&state.pool)
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            state.limiter.release(reservation, Outcome::Undecided).await;
            return Err(e.into());
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
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    // Only over the hash that was checked: a reset by an administrator in
    // between wins, and this change is refused.
    let changed = sqlx::query(
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1 AND password_hash = $3",
    )
    .bind(caller.id)
    .bind(&hash)
    .bind(&stored)
    .execute(change.conn())
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(ApiError::Conflict {
            code: "password_changed_meanwhile",
            message: "the password was changed by someone else meanwhile; sign in again".into(),
        });
    }
    session::revoke_user(change.conn(), caller.id).await?;
    let perm_version = change
        .user_changed(caller.id, "user.password_changed", None, None)
        .await?;
    let (_, refresh) = session::issue(
        change.conn(),
        caller.id,
        Uuid::now_v7(),
        state.auth.refresh_ttl,
    )
    .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    let mut me = me_row(&state, caller.id).await?;
    me.perm_version = perm_version;
    Ok(Json(tokens(&state, me, refresh)?))
}

/// `GET /auth/me`.
pub async fn me(State(state): State<AppState>, caller: Principal) -> ApiResult<Json<MeOut>> {
    Ok(Json(me_row(&state, caller.id).await?))
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
