//! The adapter's HTTP surface (DESIGN §7): `/health`, the token-protected
//! `/v1` API and, in sandbox mode, the `/sandbox` control routes.

pub mod auth;
mod auth_routes;
pub mod error;
pub mod sandbox;
#[cfg(test)]
mod tests;
pub mod v1;

use std::sync::Arc;

use axum::{Json, Router, middleware, routing::get};
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::backend::SandboxBackend;
use auth::BearerAuth;
use error::ApiError;

/// The whole router. `sandbox` is `Some` only with `TG_BACKEND=sandbox`,
/// with the token of its control routes (never the `/v1` one).
pub fn router(
    auth: BearerAuth,
    v1: v1::V1State,
    sandbox: Option<(Arc<SandboxBackend>, BearerAuth)>,
) -> Router {
    let mut protected =
        v1::router(v1).layer(middleware::from_fn_with_state(auth, auth::require_bearer));
    if let Some((sandbox, sandbox_auth)) = sandbox {
        protected = protected.merge(sandbox::router(sandbox).layer(
            middleware::from_fn_with_state(sandbox_auth, auth::require_bearer),
        ));
    }
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The span of one request: with traces exported, a server span continuing
/// the caller's `traceparent`.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    if !platform::trace::enabled() {
        return tracing::debug_span!("request", method = %req.method(), uri = %req.uri());
    }
    // Named after the route, never a raw path (low cardinality).
    const ROUTES: [&str; 12] = [
        "/health",
        "/v1/messages",
        "/v1/status",
        "/v1/auth",
        "/v1/auth/phone",
        "/v1/auth/code",
        "/v1/auth/password",
        "/sandbox/inbound",
        "/sandbox/sent",
        "/sandbox/faults",
        "/sandbox/session",
        "/sandbox/reset",
    ];
    let path = req.uri().path();
    let route = ROUTES
        .into_iter()
        .find(|r| *r == path)
        .unwrap_or("unmatched");
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
    );
    platform::trace::set_parent_from(&span, &platform::trace::from_http(req.headers()));
    span
}
