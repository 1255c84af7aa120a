//! The `/v1` routes other services call: session status and the idempotent
//! `POST /v1/messages`.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use broker_config::adapter_api::{MEDIA_PATH, MESSAGES_PATH, SendRequest, SendResponse};
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use super::error::ApiError;
use crate::{
    backend::{Backend, EditRequest, SessionStatus},
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
        .route(
            &format!("{MESSAGES_PATH}/{{chat_id}}/{{tg_message_id}}"),
            patch(edit_message).delete(delete_message),
        )
        .route("/v1/chats/{chat_id}/read", post(mark_read))
        .route(&format!("{MEDIA_PATH}/{{file_id}}"), get(media))
        .with_state(state.clone())
        .merge(super::auth_routes::router(state))
}

#[derive(Debug, Deserialize)]
pub struct EditIn {
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct EditOut {
    pub edited_at: chrono::DateTime<chrono::Utc>,
}

/// `PATCH /v1/messages/{chat_id}/{tg_message_id}`: replaces the text of a
/// message the account sent. Editing to the same text again succeeds, so a
/// retry is harmless; the chat's send budget applies.
async fn edit_message(
    State(state): State<V1State>,
    Path((chat_id, tg_message_id)): Path<(i64, i64)>,
    body: Result<Json<EditIn>, JsonRejection>,
) -> Result<Json<EditOut>, ApiError> {
    let Json(body) = body?;
    // The same checks as a send's text.
    Outgoing::parse(chat_id, body.text.clone(), Vec::new())?;
    state
        .sender
        .budgets()
        .check(chat_id)
        .map_err(|t| ApiError::flood_wait(t.retry_after_secs))?;
    let edited_at = state
        .backend
        .edit_message(&EditRequest {
            chat_id,
            tg_message_id,
            text: body.text,
        })
        .await?;
    Ok(Json(EditOut { edited_at }))
}

/// `DELETE /v1/messages/{chat_id}/{tg_message_id}`: deletes for everyone;
/// a message already gone is not an error.
async fn delete_message(
    State(state): State<V1State>,
    Path((chat_id, tg_message_id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    state
        .sender
        .budgets()
        .check(chat_id)
        .map_err(|t| ApiError::flood_wait(t.retry_after_secs))?;
    state
        .backend
        .delete_messages(chat_id, &[tg_message_id])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct ReadIn {
    pub max_id: i64,
}

/// `POST /v1/chats/{chat_id}/read`: marks the chat read up to `max_id`.
async fn mark_read(
    State(state): State<V1State>,
    Path(chat_id): Path<i64>,
    body: Result<Json<ReadIn>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(body) = body?;
    if body.max_id <= 0 {
        return Err(ApiError::bad_request(
            "invalid_message_id",
            "max_id must be positive",
        ));
    }
    state.backend.mark_read(chat_id, body.max_id).await?;
    Ok(StatusCode::NO_CONTENT)
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
