//! The API's one error type. Every error leaves as
//! `{"error": {"code", "message", "request_id"}}` with the right status;
//! 5xx bodies are generic and the cause is logged with the request id.

use axum::{
    Json,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("authentication required")]
    Unauthorized {
        code: &'static str,
        message: &'static str,
    },
    #[error("forbidden")]
    Forbidden,
    #[error("{message}")]
    ForbiddenBecause {
        code: &'static str,
        message: &'static str,
    },
    #[error("not found")]
    NotFound { what: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{message}")]
    PayloadTooLarge { code: &'static str, message: String },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{what} unavailable: {cause}")]
    Unavailable { what: &'static str, cause: String },
    /// Shedding load: the client should retry in a second.
    #[error("{what} is busy")]
    Busy { what: &'static str },
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::Unauthorized {
            code: "unauthorized",
            message: "a valid access token is required",
        }
    }

    /// The code and message a client may see (generic for server errors),
    /// for an error reported inside a streamed answer.
    pub fn public(&self) -> (&'static str, String) {
        let (_, code, message) = self.parts();
        (code, message)
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::Unauthorized { code, message } => {
                (StatusCode::UNAUTHORIZED, code, (*message).to_owned())
            }
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "you do not have the permission this needs".to_owned(),
            ),
            ApiError::ForbiddenBecause { code, message } => {
                (StatusCode::FORBIDDEN, code, (*message).to_owned())
            }
            ApiError::NotFound { what } => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            ApiError::Conflict { code, message } => (StatusCode::CONFLICT, code, message.clone()),
            ApiError::Unprocessable { code, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, message.clone())
            }
            ApiError::PayloadTooLarge { code, message } => {
                (StatusCode::PAYLOAD_TOO_LARGE, code, message.clone())
            }
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many attempts; wait before trying again".to_owned(),
            ),
            ApiError::Unavailable { what, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{what} is unavailable; nothing was changed, try again shortly"),
            ),
            ApiError::Busy { what } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{what} is busy; nothing was changed, try again in a second"),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side; the request id identifies it in the logs"
                    .to_owned(),
            ),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        e.as_database_error()
            .and_then(refused_by_database)
            .unwrap_or_else(|| ApiError::Internal(e.into()))
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        use sea_orm::{DbErr, RuntimeErr};
        let refused = match &e {
            DbErr::Query(RuntimeErr::SqlxError(inner))
            | DbErr::Exec(RuntimeErr::SqlxError(inner)) => {
                inner.as_database_error().and_then(refused_by_database)
            }
            _ => None,
        };
        refused.unwrap_or_else(|| ApiError::Internal(e.into()))
    }
}

/// The client's error among the database's refusals, if it is one.
fn refused_by_database(db: &dyn sqlx::error::DatabaseError) -> Option<ApiError> {
    if db.is_unique_violation() {
        return Some(ApiError::Conflict {
            code: "conflict",
            message: "a record with these values already exists".into(),
        });
    }
    // 22021: a NUL byte (or invalid UTF-8) in a text value. Inputs are
    // checked field by field; this is the backstop for any field that was
    // not.
    if db.code().as_deref() == Some("22021") {
        return Some(ApiError::Unprocessable {
            code: "invalid_character",
            message: "a text value contains a NUL character, which cannot be stored".into(),
        });
    }
    None
}

/// The error, carried to [`error_envelope`] which adds the request id.
#[derive(Clone)]
struct ErrorInfo {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            ApiError::Unavailable { what, cause } => {
                tracing::warn!(what, cause = %cause, "dependency unavailable");
            }
            _ => {}
        }
        let mut resp = status.into_response();
        match &self {
            ApiError::TooManyRequests { retry_after_secs } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Busy { .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp.extensions_mut().insert(ErrorInfo { code, message });
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every error answer: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `not_found`, `invalid_token`, `email_taken`.
    pub code: String,
    /// What was wrong, in words; generic for server errors.
    pub message: String,
    /// The request's `x-request-id`, which names it in the logs.
    pub request_id: String,
}

fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        _ => "internal",
    }
}

/// Middleware: gives every error response the uniform JSON body with the
/// request id, including axum's own rejections (bad JSON, unknown route).
pub async fn error_envelope(req: Request, next: Next) -> Response {
    // Kept as the header value (no copy); read only for an error.
    let request_id = req.headers().get("x-request-id").cloned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let info = resp.extensions().get::<ErrorInfo>().cloned();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if info.is_none() && is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let info = match info {
        Some(info) => info,
        None => {
            // An axum rejection: its text says what was wrong with the
            // request, except for server errors which must not leak.
            let text = axum::body::to_bytes(body, 16 * 1024)
                .await
                .unwrap_or_default();
            let message = if status.is_server_error() {
                "something went wrong on our side".to_owned()
            } else {
                String::from_utf8_lossy(&text).into_owned()
            };
            ErrorInfo {
                code: code_for(status),
                message,
            }
        }
    };
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body = ErrorBody {
        error: ErrorDetail {
            code: info.code.to_owned(),
            message: info.message,
            request_id: request_id.to_owned(),
        },
    };
    let mut resp = (parts.status, Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
