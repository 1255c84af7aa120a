//! A simulated Telegram for local use and tests: sends are recorded durably
//! and de-duplicated on `random_id` like the real thing, failures can be
//! scripted, and inbound messages are injected over HTTP.

mod faults;
mod log;

use std::sync::Mutex;

use async_trait::async_trait;
use broker_config::events::{AttachmentRef, TgChat, TgMedia, TgSender, TgUpdateReceived};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use faults::{FaultMode, FaultPlan, Faults};
pub use log::{Change, ReceivedFile, SentLog, SentRecord};

use super::{
    Backend, Download, EditRequest, Inbound, InboundUpdate, PublishFailed, SendError, SendRequest,
    Sent, SessionState, SessionStatus,
};
use crate::store::{Store, StoreError};
use faults::Injected;

/// Telegram's upload limit for a regular account (2000 MiB).
pub const MAX_FILE_BYTES: i64 = 2000 * 1024 * 1024;
/// Inbound updates waiting for the forwarder.
const UPDATE_BUFFER: usize = 256;

/// The simulated account.
pub struct SandboxBackend {
    log: SentLog,
    faults: Faults,
    updates_tx: mpsc::Sender<InboundUpdate>,
    updates_rx: Mutex<Option<mpsc::Receiver<InboundUpdate>>>,
    /// The simulated session, scripted with `POST /sandbox/session`.
    session: std::sync::Arc<watch::Sender<SessionStatus>>,
    /// Fetches the files of sends, as Telegram's upload would read them.
    http: reqwest::Client,
}

/// A file of an injected message: as Telegram describes it, with the bytes
/// the sandbox then serves from `GET /v1/media/{file_id}`.
#[derive(Debug, Clone)]
pub struct InjectMedia {
    pub media: TgMedia,
    pub bytes: Option<Vec<u8>>,
}

/// An inbound message to inject (`POST /sandbox/inbound`).
#[derive(Debug, Clone)]
pub struct InjectMessage {
    pub chat: TgChat,
    pub sender: TgSender,
    pub text: String,
    pub media: Vec<InjectMedia>,
    pub tg_message_id: Option<i64>,
    pub date: Option<DateTime<Utc>>,
    /// An edit of `tg_message_id` rather than a new message.
    pub edit: bool,
}

/// Why an injected message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishFailed),
}

/// One row of `GET /sandbox/sent`.
#[derive(Debug, Clone, Serialize)]
pub struct SentEntry {
    pub idempotency_key: String,
    pub random_id: i64,
    pub chat_id: i64,
    pub text: String,
    pub attachments: Vec<AttachmentRef>,
    /// The files as fetched: name, type, size and SHA-256.
    pub files: Vec<ReceivedFile>,
    pub tg_message_id: i64,
    /// RFC 3339 with microseconds.
    pub received_at: String,
    /// How many times a message with this idempotency key was really sent
    /// (1 in a healthy system).
    pub send_count: u64,
    /// Each new text edits gave it, oldest first.
    pub edits: Vec<String>,
    /// Deleted for everyone.
    pub deleted: bool,
}

/// The body of `GET /sandbox/sent`.
#[derive(Debug, Clone, Serialize)]
pub struct SentListing {
    pub messages: Vec<SentEntry>,
    pub total_sends: u64,
}

impl SandboxBackend {
    /// Table creation for [`Store::open`].
    pub fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        SentLog::create_tables(txn)
    }

    pub fn new(store: Store) -> Self {
        let (updates_tx, updates_rx) = mpsc::channel(UPDATE_BUFFER);
        Self {
            log: SentLog::new(store),
            faults: Faults::default(),
            updates_tx,
            updates_rx: Mutex::new(Some(updates_rx)),
            session: std::sync::Arc::new(watch::Sender::new(SessionStatus {
                session: SessionState::Authorized,
                until: None,
            })),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Scripts the session: `needs_login` refuses sends (503) until it is
    /// `authorized` again; `flood_wait` answers 429 until `until`, and then
    /// the session is `authorized` again, as Telegram's wait ends.
    pub fn set_session(&self, status: SessionStatus) {
        if let (SessionState::FloodWait, Some(until)) = (status.session, status.until) {
            let session = self.session.clone();
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                session.send_if_modified(|now| {
                    let ended = now.session == SessionState::FloodWait && now.until == Some(until);
                    if ended {
                        *now = SessionStatus {
                            session: SessionState::Authorized,
                            until: None,
                        };
                    }
                    ended
                });
            });
        }
        self.session.send_replace(status);
    }

    /// Why the session cannot send now, if it cannot.
    fn session_refusal(&self) -> Option<SendError> {
        let status = self.session.borrow().clone();
        match status.session {
            SessionState::Authorized => None,
            SessionState::NeedsLogin => Some(SendError::NeedsLogin),
            SessionState::FloodWait => {
                let left = status
                    .until
                    .map(|u| (u - Utc::now()).num_seconds())
                    .unwrap_or(0);
                (left > 0).then(|| SendError::FloodWait {
                    retry_after_secs: u64::try_from(left).unwrap_or(1),
                })
            }
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// What was sent, oldest first, optionally for one chat.
    pub async fn sent(&self, chat_id: Option<i64>) -> Result<SentListing, StoreError> {
        let records = self.log.list(chat_id).await?;
        let mut per_key = std::collections::HashMap::<&str, u64>::new();
        for r in &records {
            *per_key.entry(r.idempotency_key.as_str()).or_default() += 1;
        }
        let messages = records
            .iter()
            .map(|r| SentEntry {
                idempotency_key: r.idempotency_key.clone(),
                random_id: r.random_id,
                chat_id: r.chat_id,
                text: r.text.clone(),
                attachments: r.attachments.clone(),
                files: r.files.clone(),
                tg_message_id: r.tg_message_id,
                received_at: r.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                send_count: per_key
                    .get(r.idempotency_key.as_str())
                    .copied()
                    .unwrap_or(1),
                edits: r.edits.clone(),
                deleted: r.deleted,
            })
            .collect();
        Ok(SentListing {
            messages,
            total_sends: records.len() as u64,
        })
    }

    /// Clears the sent log and the fault plan.
    pub async fn reset(&self) -> Result<(), StoreError> {
        self.faults.clear();
        self.log.clear().await
    }

    /// Hands an inbound message to the forwarder and waits until the broker
    /// confirmed the event. Returns the message id and the event id.
    pub async fn inject(&self, message: InjectMessage) -> Result<(i64, Uuid), InjectError> {
        let tg_message_id = match message.tg_message_id {
            Some(id) => {
                self.log.reserve_message_id(id).await?;
                id
            }
            None => self.log.allocate_message_id().await?,
        };
        let mut media = Vec::with_capacity(message.media.len());
        for item in message.media {
            let mut described = item.media;
            if let Some(bytes) = item.bytes {
                let file_id = described
                    .file_id
                    .clone()
                    .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
                described.size = Some(bytes.len() as i64);
                let content_type = described
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_owned());
                self.log
                    .put_media(file_id.clone(), content_type, bytes)
                    .await?;
                described.file_id = Some(file_id);
            }
            media.push(described);
        }
        let now = Utc::now().trunc_subsecs(0);
        let update = TgUpdateReceived {
            chat: message.chat,
            sender: message.sender,
            tg_message_id,
            text: message.text,
            media,
            date: message.date.unwrap_or(now),
            edited_at: message.edit.then(Utc::now),
        };
        let (ack, confirmed) = oneshot::channel();
        self.updates_tx
            .send(InboundUpdate {
                update: Inbound::Message(update),
                ack,
                trace: platform::trace::inject_current(),
            })
            .await
            .map_err(|_| PublishFailed("the inbound forwarder has stopped".into()))?;
        let event_id = confirmed
            .await
            .map_err(|_| PublishFailed("the inbound forwarder dropped the update".into()))??;
        Ok((tg_message_id, event_id))
    }
}

fn check_attachments(attachments: &[AttachmentRef]) -> Result<(), SendError> {
    if attachments.iter().any(|a| a.size > MAX_FILE_BYTES) {
        return Err(SendError::Permanent {
            code: "file_too_large".into(),
        });
    }
    Ok(())
}

/// Reads a file from its URL as an upload to Telegram would: chunk by
/// chunk, never whole in memory, hashing what arrives. A URL that does not
/// answer with the file is worth another try (tg-delivery makes fresh URLs
/// for it); a file of another size than declared is not.
async fn fetch(http: &reqwest::Client, file: &AttachmentRef) -> Result<ReceivedFile, SendError> {
    use sha2::Digest;
    let transient = |reason: String| SendError::Transient { reason };
    let mut response = http.get(&file.url).send().await.map_err(|e| {
        transient(format!(
            "file {:?} unreachable: {}",
            file.filename,
            e.without_url()
        ))
    })?;
    if !response.status().is_success() {
        return Err(transient(format!(
            "file {:?}: its URL answered {}",
            file.filename,
            response.status().as_u16()
        )));
    }
    // The type the file is served with, as Telegram would see it.
    let served_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&file.content_type)
        .to_owned();
    let mut hasher = sha2::Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        transient(format!(
            "file {:?} cut off: {}",
            file.filename,
            e.without_url()
        ))
    })? {
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if i64::try_from(size).ok() != Some(file.size) {
        return Err(SendError::Permanent {
            code: "file_size_mismatch".into(),
        });
    }
    Ok(ReceivedFile {
        filename: file.filename.clone(),
        content_type: served_type,
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[async_trait]
impl Backend for SandboxBackend {
    async fn send_message(&self, request: &SendRequest) -> Result<Sent, SendError> {
        if let Some(latency) = self.faults.latency() {
            tokio::time::sleep(latency).await;
        }
        if let Some(refusal) = self.session_refusal() {
            return Err(refusal);
        }
        let injected = self.faults.take(request.chat_id);
        if let Some(Injected::Before(error)) = injected {
            return Err(error);
        }
        check_attachments(&request.attachments)?;
        let mut files = Vec::with_capacity(request.attachments.len());
        for file in &request.attachments {
            files.push(fetch(&self.http, file).await?);
        }
        let (sent, _fresh) =
            self.log
                .record(request, files)
                .await
                .map_err(|e| SendError::Transient {
                    reason: format!("sandbox store: {e}"),
                })?;
        if let Some(Injected::AfterRecord(error)) = injected {
            return Err(error);
        }
        Ok(sent)
    }

    async fn edit_message(&self, request: &EditRequest) -> Result<DateTime<Utc>, SendError> {
        if let Some(refusal) = self.session_refusal() {
            return Err(refusal);
        }
        if let Some(Injected::Before(error) | Injected::AfterRecord(error)) =
            self.faults.take(request.chat_id)
        {
            return Err(error);
        }
        let changed = self
            .log
            .change(
                request.chat_id,
                request.tg_message_id,
                Change::Edit(request.text.clone()),
            )
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("sandbox store: {e}"),
            })?;
        match changed {
            Some(false) => Ok(Utc::now()),
            // Telegram answers MESSAGE_ID_INVALID for both.
            Some(true) | None => Err(SendError::Permanent {
                code: "message_not_found".into(),
            }),
        }
    }

    async fn delete_messages(&self, chat_id: i64, tg_message_ids: &[i64]) -> Result<(), SendError> {
        if let Some(refusal) = self.session_refusal() {
            return Err(refusal);
        }
        if let Some(Injected::Before(error) | Injected::AfterRecord(error)) =
            self.faults.take(chat_id)
        {
            return Err(error);
        }
        // As Telegram: deleting what is already gone, or was never there,
        // is no error.
        for id in tg_message_ids {
            self.log
                .change(chat_id, *id, Change::Delete)
                .await
                .map_err(|e| SendError::Transient {
                    reason: format!("sandbox store: {e}"),
                })?;
        }
        Ok(())
    }

    async fn mark_read(&self, _chat_id: i64, _max_id: i64) -> Result<(), SendError> {
        match self.session_refusal() {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    async fn status(&self) -> SessionStatus {
        self.session.borrow().clone()
    }

    fn session(&self) -> watch::Receiver<SessionStatus> {
        self.session.subscribe()
    }

    fn take_updates(&self) -> Option<mpsc::Receiver<InboundUpdate>> {
        self.updates_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    async fn download(&self, file_id: &str) -> Result<Option<Download>, SendError> {
        let found = self
            .log
            .media(file_id)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("sandbox store: {e}"),
            })?;
        Ok(found.map(|(content_type, bytes)| {
            let size = bytes.len() as u64;
            // In chunks, as Telegram's upload.getFile hands out a file.
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes::Bytes::from(bytes)
                .chunks(512 * 1024)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            Download {
                size,
                content_type: Some(content_type),
                body: Box::pin(futures::stream::iter(chunks)),
            }
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(key: &str, random_id: i64) -> SendRequest {
        SendRequest {
            chat_id: 42,
            text: "hi".into(),
            attachments: vec![],
            random_id,
            idempotency_key: key.into(),
        }
    }

    #[tokio::test]
    async fn same_random_id_sends_once_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("tg-adapter-unit-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = {
            let store = Store::open(&dir, &[SandboxBackend::create_tables]).unwrap();
            let sandbox = SandboxBackend::new(store);
            let a = sandbox.send_message(&request("k1", 1)).await.unwrap();
            let b = sandbox.send_message(&request("k1", 1)).await.unwrap();
            assert_eq!(a, b);
            let other = sandbox.send_message(&request("k2", 2)).await.unwrap();
            assert_eq!(other.tg_message_id, a.tg_message_id + 1);
            a
        };
        let store = Store::open(&dir, &[SandboxBackend::create_tables]).unwrap();
        let sandbox = SandboxBackend::new(store);
        assert_eq!(
            sandbox.send_message(&request("k1", 1)).await.unwrap(),
            first
        );
        let listing = sandbox.sent(None).await.unwrap();
        assert_eq!(listing.total_sends, 2);
        assert!(listing.messages.iter().all(|m| m.send_count == 1));
        assert_eq!(sandbox.sent(Some(7)).await.unwrap().total_sends, 0);
        sandbox.reset().await.unwrap();
        assert_eq!(sandbox.sent(None).await.unwrap().total_sends, 0);
        // Ids keep counting after a reset.
        let after = sandbox.send_message(&request("k3", 3)).await.unwrap();
        assert!(after.tg_message_id > first.tg_message_id + 1);
        drop(sandbox);
        let _ = std::fs::remove_dir_all(dir);
    }
}
