//! `/api/auth/*`: sign-in, token refresh and rotation, sign-out, password
//! change, and what the caller may do.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header::SET_COOKIE},
    response::{AppendHeaders, IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{
    cookie, password,
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
    /// The refresh token; null when the request asked for it in the
    /// `fastprep_refresh` cookie (`X-Refresh-Cookie: 1`).
    pub refresh_token: Option<String>,
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

/// The answer that hands over a new session: with `in_cookie`, the refresh
/// token goes into the cookie and the body's is null.
fn tokens(
    state: &AppState,
    user: Me,
    refresh_token: String,
    in_cookie: bool,
) -> ApiResult<Response> {
    let ttl = state.auth.refresh_ttl;
    let out = TokensOut {
        access_token: state.keys.issue(user.id, user.perm_version)?,
        refresh_token: (!in_cookie).then(|| refresh_token.clone()),
        token_type: "Bearer",
        expires_in: state.keys.ttl().as_secs(),
        refresh_expires_in: ttl.as_secs(),
        user,
    };
    // Tokens are not for any cache to keep.
    let no_store = (
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(if in_cookie {
        (
            AppendHeaders([no_store, (SET_COOKIE, cookie::set(&refresh_token, ttl))]),
            Json(out),
        )
            .into_response()
    } else {
        (AppendHeaders([no_store]), Json(out)).into_response()
    })
}

/// The refresh token a request presents: the body's, else (asked for) the
/// cookie's. `422 missing_refresh_token` without either.
fn presented(body: Option<&str>, headers: &HeaderMap, in_cookie: bool) -> ApiResult<String> {
    match body.map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => Ok(token.to_owned()),
        None if in_cookie => cookie::read(headers).ok_or(ApiError::Unauthorized {
            code: "invalid_refresh_token",
            message: "no session cookie: sign in",
        }),
        None => Err(ApiError::Unprocessable {
            code: "missing_refresh_token",
            message: "send the session's refresh_token, or X-Refresh-Cookie: 1 with its cookie"
                .into(),
        }),
    }
}

/// `POST /auth/login`. The attempt is reserved with the throttle before the
/// password is hashed, and counts as a failure unless it succeeds.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    summary = "Sign in with email and password",
    description = "A browser sends `X-Refresh-Cookie: 1` to get the refresh token in an `HttpOnly; Secure; SameSite=Strict` cookie (path `/api/auth`) instead of the body.",
    params(("X-Refresh-Cookie" = Option<String>, Header, description = "`1`: the refresh token in the cookie, not the body")),
    request_body = LoginIn,
    responses(
        (status = 200, description = "Signed in: a new session; with `X-Refresh-Cookie: 1`, its refresh token in the `fastprep_refresh` cookie only", body = TokensOut),
        (status = 400, description = "`invalid_refresh_cookie_header`: `X-Refresh-Cookie` other than 1", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: wrong email or password, or a deactivated account (which is not said)", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`: `X-Refresh-Cookie` from an `Origin` not in `CORS_ORIGINS`", body = ErrorBody),
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
) -> ApiResult<Response> {
    let in_cookie = cookie::requested(&headers, &state.auth.origins)?;
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
    tokens(&state, me, refresh, in_cookie)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RefreshIn {
    /// The refresh token; left out (or null) to present the cookie's, with
    /// `X-Refresh-Cookie: 1`.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// `POST /auth/refresh`: a new access token and a new refresh token; the
/// presented one is spent.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    summary = "Rotate a refresh token for a new session",
    description = "The presented refresh token is spent. Presenting a spent one again ends its whole session family. With `X-Refresh-Cookie: 1` and no `refresh_token` in the body, the `fastprep_refresh` cookie's token is presented, and the new one is set in its place; a refused cookie is removed.",
    params(("X-Refresh-Cookie" = Option<String>, Header, description = "`1`: present the cookie's refresh token and get the next one in it")),
    request_body = RefreshIn,
    responses(
        (status = 200, description = "A new access token and refresh token", body = TokensOut),
        (status = 400, description = "`invalid_refresh_cookie_header`: `X-Refresh-Cookie` other than 1", body = ErrorBody),
        (status = 401, description = "`invalid_refresh_token` (also: no cookie), `refresh_expired`, `refresh_reused` (the family is ended), `account_disabled`", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`: `X-Refresh-Cookie` from an `Origin` not in `CORS_ORIGINS`", body = ErrorBody),
        (status = 422, description = "`missing_refresh_token`: no `refresh_token` and no `X-Refresh-Cookie: 1`", body = ErrorBody),
        (status = 503, description = "`unavailable`: ending a reused family needs Redis, which is down", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(input): Json<RefreshIn>,
) -> ApiResult<Response> {
    let in_cookie = cookie::requested(&headers, &state.auth.origins)?;
    let presented = presented(input.refresh_token.as_deref(), &headers, in_cookie)?;
    match sessions::refresh(Ctx::of(&state), &presented, state.auth.refresh_ttl).await {
        Ok((me, secret)) => tokens(&state, me, secret, in_cookie),
        // A cookie that can no longer refresh is removed.
        Err(e @ ApiError::Unauthorized { .. }) if in_cookie => {
            Ok((AppendHeaders([(SET_COOKIE, cookie::clear())]), e).into_response())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct LogoutIn {
    /// The session to end; required unless `all` is true or the request
    /// presents the cookie (`X-Refresh-Cookie: 1`).
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
    description = "With `X-Refresh-Cookie: 1`, the session is the `fastprep_refresh` cookie's (unless the body names one), and the cookie is removed.",
    params(("X-Refresh-Cookie" = Option<String>, Header, description = "`1`: end the cookie's session and remove the cookie")),
    request_body = LogoutIn,
    responses(
        (status = 204, description = "Signed out; the caller's access tokens stop working"),
        (status = 400, description = "`invalid_refresh_cookie_header`: `X-Refresh-Cookie` other than 1", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`: `X-Refresh-Cookie` from an `Origin` not in `CORS_ORIGINS`", body = ErrorBody),
        (status = 422, description = "`missing_refresh_token`: neither `refresh_token`, the cookie, nor `all: true`", body = ErrorBody),
        (status = 503, description = "`unavailable`: Redis is down, nothing was changed", body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    caller: Principal,
    headers: HeaderMap,
    Json(input): Json<LogoutIn>,
) -> ApiResult<Response> {
    let in_cookie = cookie::requested(&headers, &state.auth.origins)?;
    let token;
    let ending = if input.all {
        Ending::All
    } else {
        token = match presented(input.refresh_token.as_deref(), &headers, in_cookie) {
            Ok(token) => token,
            Err(ApiError::Unprocessable { .. }) => {
                return Err(ApiError::Unprocessable {
                    code: "missing_refresh_token",
                    message: "send the session's refresh_token, or all: true".into(),
                });
            }
            // No cookie: no session of this browser to end.
            Err(_) => {
                return Ok((
                    StatusCode::NO_CONTENT,
                    AppendHeaders([(SET_COOKIE, cookie::clear())]),
                )
                    .into_response());
            }
        };
        Ending::Session(&token)
    };
    sessions::logout(Ctx::of(&state), caller.id, ending).await?;
    Ok(if in_cookie {
        (
            StatusCode::NO_CONTENT,
            AppendHeaders([(SET_COOKIE, cookie::clear())]),
        )
            .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    })
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
    description = "Ends every session of the caller and opens a new one (its refresh token in the cookie with `X-Refresh-Cookie: 1`).",
    params(("X-Refresh-Cookie" = Option<String>, Header, description = "`1`: the new refresh token in the cookie, not the body")),
    request_body = PasswordIn,
    responses(
        (status = 200, description = "Changed: the new session", body = TokensOut),
        (status = 400, description = "`invalid_refresh_cookie_header`: `X-Refresh-Cookie` other than 1", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`: `X-Refresh-Cookie` from an `Origin` not in `CORS_ORIGINS`", body = ErrorBody),
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
) -> ApiResult<Response> {
    let in_cookie = cookie::requested(&headers, &state.auth.origins)?;
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
    tokens(&state, me, refresh, in_cookie)
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
