//! The sandbox's durable memory: every message it "sent", keyed by
//! `random_id` (so a restarted sandbox still refuses to send one twice, as
//! Telegram does), and the message-id counter.

use broker_config::events::AttachmentRef;
use chrono::{DateTime, SubsecRound, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::backend::{SendRequest, Sent};
use crate::store::{Store, StoreError};

const SENT: TableDefinition<i64, &[u8]> = TableDefinition::new("sandbox_sent");
const META: TableDefinition<&str, i64> = TableDefinition::new("sandbox_meta");
/// Files of injected inbound messages, by `file_id`: content type, then the
/// bytes.
const MEDIA: TableDefinition<&str, (&str, &[u8])> = TableDefinition::new("sandbox_media");
const NEXT_MESSAGE_ID: &str = "next_message_id";
/// Telegram message ids start at 1 in a fresh account.
const FIRST_MESSAGE_ID: i64 = 1;

/// One message the sandbox delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRecord {
    pub idempotency_key: String,
    pub random_id: i64,
    pub chat_id: i64,
    pub text: String,
    pub attachments: Vec<AttachmentRef>,
    /// The files as the sandbox fetched them from their URLs.
    #[serde(default)]
    pub files: Vec<ReceivedFile>,
    pub tg_message_id: i64,
    pub received_at: DateTime<Utc>,
    /// Each new text an edit gave it, oldest first (an edit to the text it
    /// already has changes nothing, as in Telegram).
    #[serde(default)]
    pub edits: Vec<String>,
    /// Deleted for everyone.
    #[serde(default)]
    pub deleted: bool,
}

/// A change of a sent message, as the sandbox records it.
#[derive(Debug, Clone)]
pub enum Change {
    Edit(String),
    Delete,
}

/// A file the sandbox received: what it was called and what arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedFile {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// The two sandbox tables of the store.
#[derive(Clone)]
pub struct SentLog {
    store: Store,
}

fn next_id(meta: &mut redb::Table<&str, i64>) -> Result<i64, StoreError> {
    let next = meta
        .get(NEXT_MESSAGE_ID)?
        .map(|v| v.value())
        .unwrap_or(FIRST_MESSAGE_ID);
    meta.insert(NEXT_MESSAGE_ID, next.saturating_add(1))?;
    Ok(next)
}

impl SentLog {
    pub fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(SENT)?;
        txn.open_table(META)?;
        txn.open_table(MEDIA)?;
        Ok(())
    }

    /// Keeps an injected file under `file_id`.
    pub async fn put_media(
        &self,
        file_id: String,
        content_type: String,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.store
            .write(move |txn| {
                txn.open_table(MEDIA)?
                    .insert(file_id.as_str(), (content_type.as_str(), bytes.as_slice()))?;
                Ok(())
            })
            .await
    }

    /// An injected file: its content type and bytes.
    pub async fn media(&self, file_id: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let file_id = file_id.to_owned();
        self.store
            .blocking(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(MEDIA)?;
                Ok(table.get(file_id.as_str())?.map(|v| {
                    let (ct, bytes) = v.value();
                    (ct.to_owned(), bytes.to_vec())
                }))
            })
            .await
    }

    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records a send unless its `random_id` is known. Returns the result and
    /// whether this call actually sent (`false`: de-duplicated).
    pub async fn record(
        &self,
        request: &SendRequest,
        files: Vec<ReceivedFile>,
    ) -> Result<(Sent, bool), StoreError> {
        let request = request.clone();
        self.store
            .write(move |txn| {
                let outcome = {
                    let mut sent = txn.open_table(SENT)?;
                    let known = match sent.get(request.random_id)? {
                        Some(v) => Some(serde_json::from_slice::<SentRecord>(v.value())?),
                        None => None,
                    };
                    match known {
                        Some(first) => (
                            Sent {
                                tg_message_id: first.tg_message_id,
                                sent_at: first.received_at,
                            },
                            false,
                        ),
                        None => {
                            let mut meta = txn.open_table(META)?;
                            let record = SentRecord {
                                idempotency_key: request.idempotency_key.clone(),
                                random_id: request.random_id,
                                chat_id: request.chat_id,
                                text: request.text.clone(),
                                attachments: request.attachments.clone(),
                                // A group commit may run this again.
                                files: files.clone(),
                                tg_message_id: next_id(&mut meta)?,
                                received_at: Utc::now().trunc_subsecs(6),
                                edits: Vec::new(),
                                deleted: false,
                            };
                            let bytes = serde_json::to_vec(&record)?;
                            sent.insert(record.random_id, bytes.as_slice())?;
                            (
                                Sent {
                                    tg_message_id: record.tg_message_id,
                                    sent_at: record.received_at,
                                },
                                true,
                            )
                        }
                    }
                };
                Ok(outcome)
            })
            .await
    }

    /// A fresh message id (for inbound messages without one).
    pub async fn allocate_message_id(&self) -> Result<i64, StoreError> {
        self.store
            .write(|txn| next_id(&mut txn.open_table(META)?))
            .await
    }

    /// Makes sure the counter never hands out `id` or anything below it.
    pub async fn reserve_message_id(&self, id: i64) -> Result<(), StoreError> {
        self.store
            .write(move |txn| {
                {
                    let mut meta = txn.open_table(META)?;
                    let next = meta
                        .get(NEXT_MESSAGE_ID)?
                        .map(|v| v.value())
                        .unwrap_or(FIRST_MESSAGE_ID);
                    if id >= next {
                        meta.insert(NEXT_MESSAGE_ID, id.saturating_add(1))?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Applies `change` to the message `tg_message_id` of the chat. Returns
    /// `None` when no such message was sent, else whether it was deleted
    /// before (an edit of a deleted message is refused, as in Telegram).
    pub async fn change(
        &self,
        chat_id: i64,
        tg_message_id: i64,
        change: Change,
    ) -> Result<Option<bool>, StoreError> {
        self.store
            .write(move |txn| {
                let mut sent = txn.open_table(SENT)?;
                let mut found = None;
                for row in sent.iter()? {
                    let (k, v) = row?;
                    let record: SentRecord = serde_json::from_slice(v.value())?;
                    if record.chat_id == chat_id && record.tg_message_id == tg_message_id {
                        found = Some((k.value(), record));
                        break;
                    }
                }
                let Some((key, mut record)) = found else {
                    return Ok(None);
                };
                let was_deleted = record.deleted;
                match &change {
                    Change::Edit(text) => {
                        let current = record.edits.last().unwrap_or(&record.text);
                        if !was_deleted && current != text {
                            record.edits.push(text.clone());
                        }
                    }
                    Change::Delete => record.deleted = true,
                }
                let bytes = serde_json::to_vec(&record)?;
                sent.insert(key, bytes.as_slice())?;
                Ok(Some(was_deleted))
            })
            .await
    }

    /// Every record, oldest message id first, optionally for one chat.
    pub async fn list(&self, chat_id: Option<i64>) -> Result<Vec<SentRecord>, StoreError> {
        let mut records = self
            .store
            .blocking(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(SENT)?;
                let mut out = Vec::new();
                for row in table.iter()? {
                    let (_, v) = row?;
                    let record: SentRecord = serde_json::from_slice(v.value())?;
                    if chat_id.is_none_or(|c| c == record.chat_id) {
                        out.push(record);
                    }
                }
                Ok(out)
            })
            .await?;
        records.sort_by_key(|r| r.tg_message_id);
        Ok(records)
    }

    /// Forgets every sent message; the id counter keeps counting so ids
    /// never repeat (consumers de-duplicate on them).
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.store
            .blocking(|db| {
                let txn = db.begin_write()?;
                txn.open_table(SENT)?.retain(|_, _| false)?;
                txn.commit()?;
                Ok(())
            })
            .await
    }
}
