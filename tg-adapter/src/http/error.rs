//! The one error type of the adapter's HTTP API: a stable snake_case `code`,
//! a message, and `retry_after` (plus the `Retry-After` header) on 429.

use axum::{
    Json,
    extract::rejection::{JsonRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use broker_config::adapter_api::ErrorResponse;

use crate::{
    backend::{LoginError, SendError, sandbox::InjectError},
    idempotency::KeyError,
    send::{Invalid, SendFailure},
    store::StoreError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    pub fn flood_wait(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "flood_wait",
                format!("over the send budget; retry after {retry_after_secs}s"),
            )
        }
    }

    /// A 5xx whose cause is logged, not shown.
    pub fn unavailable(status: StatusCode, code: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(code, error = %cause, "request failed");
        Self::new(status, code, "temporarily unavailable; retry later")
    }
}

/// HTTP status of a permanent Telegram error.
pub fn permanent_status(code: &str) -> StatusCode {
    match code {
        "chat_not_found" | "peer_id_invalid" | "user_not_found" => StatusCode::NOT_FOUND,
        "message_not_found" => StatusCode::NOT_FOUND,
        "user_blocked"
        | "user_is_blocked"
        | "chat_write_forbidden"
        | "user_deactivated"
        | "user_privacy_restricted" => StatusCode::FORBIDDEN,
        "file_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn permanent_message(code: &str) -> &'static str {
    match code {
        "chat_not_found" | "peer_id_invalid" | "user_not_found" => {
            "Telegram does not know this chat"
        }
        "user_blocked" | "user_is_blocked" => "the user has blocked this account",
        "file_too_large" => "an attachment is larger than Telegram accepts",
        "message_too_long" => "the text is longer than Telegram accepts",
        _ => "Telegram refused the message",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorResponse {
            code: self.code,
            message: self.message,
            retry_after: self.retry_after,
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        let code = match e {
            KeyError::Missing => "missing_idempotency_key",
            KeyError::Invalid => "invalid_idempotency_key",
        };
        Self::bad_request(code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, "invalid_body", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request("invalid_query", e.body_text())
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::bad_request(e.code, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::unavailable(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &e)
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::FloodWait { retry_after_secs } => Self::flood_wait(retry_after_secs.max(1)),
            SendError::Permanent { code } => Self::new(
                permanent_status(&code),
                code.clone(),
                permanent_message(&code),
            ),
            SendError::Transient { reason } => {
                Self::unavailable(StatusCode::BAD_GATEWAY, "upstream_unavailable", &reason)
            }
            SendError::NeedsLogin => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_needs_login",
                "the Telegram account is not logged in; retry later",
            ),
        }
    }
}

impl From<SendFailure> for ApiError {
    fn from(e: SendFailure) -> Self {
        match e {
            SendFailure::Throttled(t) => Self::flood_wait(t.retry_after_secs),
            SendFailure::Backend(e) => e.into(),
            SendFailure::Store(e) => e.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::OutOfOrder(message) => {
                Self::new(StatusCode::CONFLICT, "login_out_of_order", message)
            }
            LoginError::Refused(code) => {
                Self::bad_request(code, "Telegram refused this login step")
            }
            LoginError::FloodWait { secs } => Self::flood_wait(secs.max(1)),
            LoginError::Unavailable(reason) => Self::unavailable(
                StatusCode::SERVICE_UNAVAILABLE,
                "login_unavailable",
                &reason,
            ),
        }
    }
}

impl From<InjectError> for ApiError {
    fn from(e: InjectError) -> Self {
        match e {
            InjectError::Store(e) => e.into(),
            InjectError::Publish(e) => {
                Self::unavailable(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", &e)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn permanent_codes_map_to_statuses() {
        assert_eq!(permanent_status("chat_not_found"), StatusCode::NOT_FOUND);
        assert_eq!(permanent_status("user_blocked"), StatusCode::FORBIDDEN);
        assert_eq!(
            permanent_status("file_too_large"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            permanent_status("message_too_long"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(permanent_status("something_new"), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn flood_wait_carries_retry_after() {
        let response = ApiError::from(SendError::FloodWait {
            retry_after_secs: 0,
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
