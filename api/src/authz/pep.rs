//! The policy enforcement point. Every route is declared with its
//! [`Access`] in the route table (`routes::table`), and the router wraps each
//! one in [`enforce`]; handlers learn who is calling only through the
//! [`Principal`] that `enforce` leaves in the request.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{Ep, InboxScope, Perm};
use crate::{AppState, auth::jwt::Claims, error::ApiError};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login, refresh, health).
    Public,
    /// Any signed-in, active user with a current token.
    Authenticated,
    /// A signed-in user holding at least one of these permissions.
    Any(&'static [Perm]),
    /// The WebSocket: the upgrade is open, and the socket authenticates in
    /// its first frame with the same checks (`realtime::socket`).
    FirstFrame,
}

/// The authenticated caller and their effective permissions.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: Uuid,
    pub ep: Arc<Ep>,
}

impl Principal {
    pub fn has(&self, p: Perm) -> bool {
        self.ep.perms.contains(p)
    }

    /// Refuses with 403 unless the caller holds `p`.
    pub fn require(&self, p: Perm) -> Result<(), ApiError> {
        if self.has(p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Which conversations the caller may read; 403 when none.
    pub fn inbox_scope(&self) -> Result<InboxScope, ApiError> {
        self.ep.inbox_scope().ok_or(ApiError::Forbidden)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "handler asked for the caller on a route declared public"
            ))
        })
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Verifies an access token and the account behind it.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let claims = state.keys.verify(token).ok_or(ApiError::Unauthorized {
        code: "invalid_token",
        message: "the access token is invalid or expired",
    })?;
    principal(state, &claims).await
}

/// The principal for verified `claims`: the account must exist and be active
/// and the token must carry the user's current `perm_version`.
pub async fn principal(state: &AppState, claims: &Claims) -> Result<Principal, ApiError> {
    let unknown = || ApiError::Unauthorized {
        code: "invalid_token",
        message: "the access token is invalid or expired",
    };
    let mut ep = state
        .authz
        .effective(claims.sub)
        .await?
        .ok_or_else(unknown)?;
    if claims.pv > ep.version {
        // Newer than what this instance had: it was issued after a change
        // this instance has not heard of yet. Ask the database.
        ep = state.authz.fresh(claims.sub).await?.ok_or_else(unknown)?;
    }
    if !ep.active {
        return Err(ApiError::Unauthorized {
            code: "account_disabled",
            message: "this account is deactivated",
        });
    }
    if claims.pv < ep.version {
        return Err(ApiError::Unauthorized {
            code: "token_stale",
            message: "permissions changed since this token was issued; refresh it",
        });
    }
    if claims.pv > ep.version {
        return Err(unknown());
    }
    Ok(Principal { id: claims.sub, ep })
}

/// The middleware around every route: authenticates and checks the declared
/// permission before the handler (or its body parsing) runs.
pub async fn enforce(state: AppState, access: Access, mut req: Request, next: Next) -> Response {
    if matches!(access, Access::Public | Access::FirstFrame) {
        return next.run(req).await;
    }
    let Some(token) = bearer(req.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    let principal = match authenticate(&state, token).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Access::Any(perms) = access
        && !principal.ep.perms.any(perms)
    {
        return ApiError::Forbidden.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}
