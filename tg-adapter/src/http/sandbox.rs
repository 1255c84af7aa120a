//! `/sandbox/*` control routes, mounted only with `TG_BACKEND=sandbox`:
//! inject inbound messages, list what was sent, script failures and the
//! session's state, reset.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    extract::{
        Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::StatusCode,
    routing::{get, post},
};
use base64::Engine;
use broker_config::events::{TgChat, TgMedia, TgSender};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use crate::backend::{
    Backend, SessionState, SessionStatus,
    sandbox::{FaultPlan, InjectMedia, InjectMessage, SandboxBackend, SentListing},
};

pub fn router(sandbox: Arc<SandboxBackend>) -> Router {
    Router::new()
        // Room for an injected file of 20 MiB, in base64.
        .route(
            "/sandbox/inbound",
            post(inbound).layer(DefaultBodyLimit::max(MAX_INJECT_BODY)),
        )
        .route("/sandbox/sent", get(sent))
        .route(
            "/sandbox/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/sandbox/session", get(get_session).post(set_session))
        .route("/sandbox/reset", post(reset))
        .with_state(sandbox)
}

/// The largest `POST /sandbox/inbound` body.
const MAX_INJECT_BODY: usize = 40 * 1024 * 1024;

/// A file of an injected message.
#[derive(Debug, Deserialize)]
pub struct MediaIn {
    /// `photo`, `document`, `voice`, `audio` or `video`.
    pub kind: String,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// The file's bytes: the sandbox keeps them and serves them at
    /// `GET /v1/media/{file_id}`. Without them the update only describes a
    /// file (`file_id`, `size`), as before.
    #[serde(default)]
    pub data_base64: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub size: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct InboundIn {
    pub chat_id: i64,
    /// `private` (default), `group` or `channel`.
    #[serde(default)]
    pub chat_kind: Option<String>,
    #[serde(default)]
    pub chat_title: Option<String>,
    pub sender: TgSender,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub media: Vec<MediaIn>,
    #[serde(default)]
    pub tg_message_id: Option<i64>,
    #[serde(default)]
    pub date: Option<DateTime<Utc>>,
    /// The customer edits message `tg_message_id` to `text` (as Telegram's
    /// `updateEditMessage`).
    #[serde(default)]
    pub edit: bool,
}

#[derive(Debug, Serialize)]
pub struct InboundOut {
    pub tg_message_id: i64,
    pub event_id: Uuid,
}

async fn inbound(
    State(sandbox): State<Arc<SandboxBackend>>,
    body: Result<Json<InboundIn>, JsonRejection>,
) -> Result<Json<InboundOut>, ApiError> {
    let Json(body) = body?;
    if body.chat_id == 0 || body.sender.id == 0 {
        return Err(ApiError::bad_request(
            "invalid_chat_id",
            "chat_id and sender.id must not be 0",
        ));
    }
    if body.tg_message_id.is_some_and(|id| id <= 0) {
        return Err(ApiError::bad_request(
            "invalid_message_id",
            "tg_message_id must be positive",
        ));
    }
    if body.edit && body.tg_message_id.is_none() {
        return Err(ApiError::bad_request(
            "invalid_message_id",
            "an edit names the tg_message_id it edits",
        ));
    }
    let kind = body.chat_kind.unwrap_or_else(|| "private".to_owned());
    if !matches!(kind.as_str(), "private" | "group" | "channel") {
        return Err(ApiError::bad_request(
            "invalid_chat_kind",
            "chat_kind must be private, group or channel",
        ));
    }
    let mut media = Vec::with_capacity(body.media.len());
    for m in body.media {
        if !matches!(
            m.kind.as_str(),
            "photo" | "document" | "voice" | "audio" | "video"
        ) {
            return Err(ApiError::bad_request(
                "invalid_media",
                "media kind must be photo, document, voice, audio or video",
            ));
        }
        let bytes = match m.data_base64 {
            Some(data) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|_| {
                        ApiError::bad_request("invalid_media", "data_base64 is not base64")
                    })?,
            ),
            None => None,
        };
        media.push(InjectMedia {
            media: TgMedia {
                kind: m.kind,
                file_id: m.file_id,
                filename: m.filename,
                size: m.size,
                content_type: m.content_type,
            },
            bytes,
        });
    }
    let message = InjectMessage {
        chat: TgChat {
            id: body.chat_id,
            kind,
            title: body.chat_title,
        },
        sender: body.sender,
        text: body.text,
        media,
        tg_message_id: body.tg_message_id,
        date: body.date,
        edit: body.edit,
    };
    let (tg_message_id, event_id) = sandbox.inject(message).await?;
    Ok(Json(InboundOut {
        tg_message_id,
        event_id,
    }))
}

#[derive(Debug, Deserialize)]
pub struct SentQuery {
    pub chat_id: Option<i64>,
}

async fn sent(
    State(sandbox): State<Arc<SandboxBackend>>,
    query: Result<Query<SentQuery>, QueryRejection>,
) -> Result<Json<SentListing>, ApiError> {
    let Query(query) = query?;
    Ok(Json(sandbox.sent(query.chat_id).await?))
}

async fn get_faults(State(sandbox): State<Arc<SandboxBackend>>) -> Json<FaultPlan> {
    Json(sandbox.faults().current())
}

async fn set_faults(
    State(sandbox): State<Arc<SandboxBackend>>,
    body: Result<Json<FaultPlan>, JsonRejection>,
) -> Result<Json<FaultPlan>, ApiError> {
    let Json(plan) = body?;
    plan.validate()
        .map_err(|m| ApiError::bad_request("invalid_fault", m))?;
    sandbox.faults().set(plan);
    Ok(Json(sandbox.faults().current()))
}

async fn clear_faults(State(sandbox): State<Arc<SandboxBackend>>) -> Json<FaultPlan> {
    sandbox.faults().clear();
    Json(sandbox.faults().current())
}

async fn reset(State(sandbox): State<Arc<SandboxBackend>>) -> Result<StatusCode, ApiError> {
    sandbox.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct SessionIn {
    pub session: SessionState,
    /// With `flood_wait`: when it ends (required, in the future).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

async fn get_session(State(sandbox): State<Arc<SandboxBackend>>) -> Json<SessionStatus> {
    Json(sandbox.status().await)
}

/// Plays Telegram signing the account out (`needs_login`), asking it to wait
/// (`flood_wait` until a time), or the account being logged in again.
async fn set_session(
    State(sandbox): State<Arc<SandboxBackend>>,
    body: Result<Json<SessionIn>, JsonRejection>,
) -> Result<Json<SessionStatus>, ApiError> {
    let Json(body) = body?;
    let until = match body.session {
        SessionState::FloodWait => match body.until {
            Some(until) if until > Utc::now() => Some(until),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_until",
                    "flood_wait needs an until in the future",
                ));
            }
        },
        _ => None,
    };
    sandbox.set_session(SessionStatus {
        session: body.session,
        until,
    });
    Ok(Json(sandbox.status().await))
}
