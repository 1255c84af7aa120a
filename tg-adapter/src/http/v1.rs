//! The `/v1` routes other services call: session status and the idempotent
//! `POST /v1/messages`.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use broker_config::adapter_api::{MEDIA_PATH, MESSAGES_PATH, SendRequest, SendResponse};
use tokio_util::task::TaskTracker;

use super::error::ApiError;
use crate::{
    backend::{Backend, SessionStatus},
    idempotency::IdempotencyKey,
    send::{Outgoing, SendService},
};

/// Header naming a request's idempotency key.
pub use broker_config::adapter_api::IDEMPOTENCY_KEY;
/// Response header set when a stored first result is returned.
pub const REPLAYED: &str = "idempotent-replayed";

#[derive(Clone)]
pub struct V1State {
    pub sender: Arc<SendService>,
    pub backend: Arc<dyn Backend>,
    /// Sends run as tracked tasks: a caller that hangs up does not cut a
    /// send (or the storing of its result) in half.
    pub tasks: TaskTracker,
}

pub fn router(state: V1State) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route(MESSAGES_PATH, post(send_message))
        .route(&format!("{MEDIA_PATH}/{{file_id}}"), get(media))
        .with_state(state)
}

/// The bytes of an inbound file, streamed as Telegram hands them out.
async fn media(
    State(state): State<V1State>,
    Path(file_id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(download) = state.backend.download(&file_id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "file_not_found",
            "no file with this file_id",
        ));
    };
    let content_type = download
        .content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_LENGTH, HeaderValue::from(download.size)),
        ],
        Body::from_stream(download.body),
    )
        .into_response())
}

async fn status(State(state): State<V1State>) -> Json<SessionStatus> {
    Json(state.backend.status().await)
}

async fn send_message(
    State(state): State<V1State>,
    headers: HeaderMap,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::parse(headers.get(IDEMPOTENCY_KEY).map(|v| v.as_bytes()))?;
    let Json(body) = body?;
    let message = Outgoing::parse(body.chat_id, body.text, body.attachments)?;
    let sender = state.sender.clone();
    let delivered = state
        .tasks
        .spawn(async move { sender.send(key, message).await })
        .await
        .map_err(|e| ApiError::unavailable(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e))??;
    let out = SendResponse {
        tg_message_id: delivered.result.tg_message_id,
        sent_at: delivered.result.sent_at,
    };
    let mut response = Json(out).into_response();
    if delivered.replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
