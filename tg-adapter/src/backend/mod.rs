//! The one trait every Telegram backend implements (DESIGN §7), so the HTTP
//! layer, budgets and idempotency never depend on which Telegram is behind them.

pub mod sandbox;

use async_trait::async_trait;
pub use broker_config::events::SessionState;
use broker_config::events::{AttachmentRef, TgUpdateReceived};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use sandbox::SandboxBackend;

/// One outgoing message. `random_id` is Telegram's own de-duplication key
/// (messages.sendMessage): the same id sends once and returns the first result.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub chat_id: i64,
    pub text: String,
    pub attachments: Vec<AttachmentRef>,
    pub random_id: i64,
    /// The caller's idempotency key; backends may record it for diagnostics.
    pub idempotency_key: String,
}

/// A message Telegram accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub tg_message_id: i64,
    pub sent_at: DateTime<Utc>,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Telegram's FLOOD_WAIT: try again no earlier than this.
    #[error("flood wait of {retry_after_secs}s")]
    FloodWait { retry_after_secs: u64 },
    /// Retrying will not help (`chat_not_found`, `user_blocked`, `file_too_large`, ...).
    #[error("permanent failure: {code}")]
    Permanent { code: String },
    /// Telegram or the network failed; a retry may succeed.
    #[error("transient failure: {reason}")]
    Transient { reason: String },
}

/// Session state reported by `GET /v1/status` and announced as
/// `tg.session.changed.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionStatus {
    pub session: SessionState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// Why an inbound update was not handed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inbound update not published: {0}")]
pub struct PublishFailed(pub String);

/// An update from Telegram and the channel on which the forwarder reports,
/// after the broker confirmed it, the id of the event it published. A backend
/// acknowledges the update to Telegram only after `Ok`.
#[derive(Debug)]
pub struct InboundUpdate {
    pub update: TgUpdateReceived,
    pub ack: oneshot::Sender<Result<Uuid, PublishFailed>>,
    /// W3C trace context of whatever received the update (empty when traces
    /// are not exported): the published event continues its trace.
    pub trace: std::collections::HashMap<String, String>,
}

/// A Telegram account.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Sends text (and attachments), de-duplicated on `random_id`.
    async fn send_message(&self, request: &SendRequest) -> Result<Sent, SendError>;

    /// Whether the account's session can send.
    async fn status(&self) -> SessionStatus;

    /// The session's state as it changes; the adapter announces each change.
    fn session(&self) -> watch::Receiver<SessionStatus>;

    /// The stream of inbound updates; `Some` only for the first caller.
    fn take_updates(&self) -> Option<mpsc::Receiver<InboundUpdate>>;

    /// The bytes of an inbound file named by an update's `file_id`, as a
    /// stream; `None` when Telegram has no such file.
    async fn download(&self, file_id: &str) -> Result<Option<Download>, SendError>;
}

/// An inbound file being read.
pub struct Download {
    pub size: u64,
    pub content_type: Option<String>,
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
}
