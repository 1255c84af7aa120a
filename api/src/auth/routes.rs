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
    error::{ApiError, ApiResult, ErrorBody},
};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginIn {
    #[schema(max_length = 254)]
    pub email: String,
    pub password: String,
}

/// A new session: the access token for `Authorization: Bearer`, and the
/// refresh token that gets the next one.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokensOut {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Seconds the refresh token lives.
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
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    summary = "Sign in with email and password",
    request_body = LoginIn,
    responses(
        (status = 200, description = "Signed in: a new session", body = TokensOut),
        (status = 401, description = "`invalid_credentials`: wrong email or password, or a deactivated account (which is not said)", body = ErrorBody),
        (status = 422, description = "`invalid_email`: not an address", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: too many attempts for this account or from this address", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`busy`: too many sign-ins are being checked; `unavailable`: the throttle's store is down", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshIn {
    pub refresh_token: String,
}

/// `POST /auth/refresh`: a new access token and a new refresh token; the
/// presented one is spent.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    summary = "Rotate a refresh token for a new session",
    description = "The presented refresh token is spent. Presenting a spent one again ends its whole session family.",
    request_body = RefreshIn,
    responses(
        (status = 200, description = "A new access token and refresh token", body = TokensOut),
        (status = 401, description = "`invalid_refresh_token`, `refresh_expired`, `refresh_reused` (the family is ended), `account_disabled`", body = ErrorBody),
        (status = 503, description = "`unavailable`: ending a reused family needs Redis, which is down", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct LogoutIn {
    /// The session to end; required unless `all` is true.
    pub refresh_token: Option<String>,
    /// End every session of the caller.
    #[serde(default)]
    pub all: bool,
}

/// `POST /auth/logout`: ends this session (the family of `refresh_token`)
/// or, with `all`, every session of the caller. Access tokens already issued
/// stop working at once.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    summary = "Sign out of this session, or of all",
    request_body = LogoutIn,
    responses(
        (status = 204, description = "Signed out; the caller's access tokens stop working"),
        (status = 422, description = "`missing_refresh_token`: neither `refresh_token` nor `all: true`", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordIn {
    pub current_password: String,
    /// 12 to 128 characters.
    #[schema(min_length = 12, max_length = 128)]
    pub new_password: String,
}

/// `POST /auth/password`: changes the caller's password, ends every session
/// and returns a new one. Guesses of the current password are throttled
/// like sign-ins.
#[utoipa::path(
    post,
    path = "/api/auth/password",
    tag = "auth",
    summary = "Change one's own password",
    description = "Ends every session of the caller and opens a new one.",
    request_body = PasswordIn,
    responses(
        (status = 200, description = "Changed: the new session", body = TokensOut),
        (status = 409, description = "`password_changed_meanwhile`: an administrator reset it meanwhile", body = ErrorBody),
        (status = 422, description = "`weak_password`: the new password breaks the policy; `wrong_password`: the current one is not correct", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: too many guesses of the current password", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`busy`: too many passwords are being checked; `unavailable`: Redis is down", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    summary = "The signed-in account",
    responses((status = 200, description = "The caller's account", body = Me))
)]
pub async fn me(State(state): State<AppState>, caller: Principal) -> ApiResult<Json<Me>> {
    Ok(Json(sessions::me(&state.db, caller.id).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EpOut {
    /// Permission keys, e.g. `inbox.read_all`.
    #[schema(value_type = Vec<crate::authz::Perm>)]
    pub permissions: Vec<&'static str>,
    pub perm_version: i64,
}

/// `GET /auth/me/ep`: the caller's effective permissions.
#[utoipa::path(
    get,
    path = "/api/auth/me/ep",
    tag = "auth",
    summary = "The caller's effective permissions",
    responses((status = 200, description = "Permissions and the version they are at", body = EpOut))
)]
pub async fn me_ep(caller: Principal) -> Json<EpOut> {
    Json(EpOut {
        permissions: caller.ep.perms.keys(),
        perm_version: caller.ep.version,
    })
}
