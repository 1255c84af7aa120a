//! The one trait every Telegram backend implements (DESIGN §7), so the HTTP
//! layer, budgets and idempotency never depend on which Telegram is behind them.

#[cfg(test)]
pub(crate) mod contract;
pub mod mtproto;
pub mod sandbox;

use async_trait::async_trait;
pub use broker_config::events::SessionState;
use broker_config::events::{
    AttachmentRef, Event, TgUpdateDeleted, TgUpdateRead, TgUpdateReceived,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use mtproto::MtprotoBackend;
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
    /// The account is logged out (or never was): 503 until someone logs
    /// it in; tg-delivery retries meanwhile.
    #[error("the Telegram session needs a login")]
    NeedsLogin,
}

/// An edit of a message the account sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRequest {
    pub chat_id: i64,
    pub tg_message_id: i64,
    pub text: String,
}

/// Where the login of the account stands (`GET /v1/auth`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum LoginStep {
    /// Nothing started: send the phone number.
    Phone,
    /// Telegram sent a code to the phone (shown masked).
    Code { phone: String },
    /// The account has a 2FA password.
    Password {
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// Logged in.
    Authorized,
}

/// Why a login step did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The step does not fit where the login stands.
    #[error("{0}")]
    OutOfOrder(&'static str),
    /// Telegram refused the step (`phone_code_invalid`, `password_invalid`, ...).
    #[error("Telegram refused the login step: {0}")]
    Refused(&'static str),
    #[error("flood wait of {secs}s")]
    FloodWait { secs: u64 },
    /// Telegram, the network or the session file failed; try again.
    #[error("login step failed: {0}")]
    Unavailable(String),
}

/// Logging the account in, for backends that hold a real account.
#[async_trait]
pub trait AccountLogin: Send + Sync {
    async fn step(&self) -> Result<LoginStep, LoginError>;
    async fn submit_phone(&self, phone: &str) -> Result<LoginStep, LoginError>;
    async fn submit_code(&self, code: &str) -> Result<LoginStep, LoginError>;
    async fn submit_password(
        &self,
        password: &secrecy::SecretString,
    ) -> Result<LoginStep, LoginError>;
}

/// What Telegram told the account: a message (new or edited), deleted
/// messages, or a read receipt. Each becomes one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Message(TgUpdateReceived),
    Deleted(TgUpdateDeleted),
    Read(TgUpdateRead),
}

impl Inbound {
    pub fn into_event(self) -> Event {
        match self {
            Inbound::Message(m) => Event::TgUpdateReceived(m),
            Inbound::Deleted(d) => Event::TgUpdateDeleted(d),
            Inbound::Read(r) => Event::TgUpdateRead(r),
        }
    }
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
    pub update: Inbound,
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

    /// Replaces the text of a message the account sent. Editing to the
    /// text it already has succeeds (so a retry is harmless).
    async fn edit_message(&self, request: &EditRequest) -> Result<DateTime<Utc>, SendError>;

    /// Deletes messages for everyone; ids already gone are not an error.
    async fn delete_messages(&self, chat_id: i64, tg_message_ids: &[i64]) -> Result<(), SendError>;

    /// Marks a chat read up to and including `max_id`.
    async fn mark_read(&self, chat_id: i64, max_id: i64) -> Result<(), SendError>;

    /// The login of the account, when the backend holds a real one.
    fn login(&self) -> Option<&dyn AccountLogin> {
        None
    }

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
