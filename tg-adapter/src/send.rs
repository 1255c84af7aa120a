//! The send path behind `POST /v1/messages`: replay a key's first result,
//! else serialise on the key, check budgets, call the backend once and store
//! the first success.

use std::{sync::Arc, time::Instant};

use broker_config::events::AttachmentRef;
use chrono::Utc;

use crate::{
    backend::{Backend, SendError, SendRequest},
    budget::{Budgets, Throttled},
    idempotency::{IdempotencyKey, IdempotencyStore, KeyLocks, StoredSend},
    metrics::{Metrics, SendResult},
    store::StoreError,
};

/// Telegram's longest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Telegram's largest album.
pub const MAX_ATTACHMENTS: usize = 10;

/// A message that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    chat_id: i64,
    text: String,
    attachments: Vec<AttachmentRef>,
}

/// Why a request body is not a sendable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

impl Outgoing {
    pub fn parse(
        chat_id: i64,
        text: String,
        attachments: Vec<AttachmentRef>,
    ) -> Result<Self, Invalid> {
        if chat_id == 0 {
            return Err(invalid("invalid_chat_id", "chat_id must not be 0"));
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(invalid(
                "message_too_long",
                format!("text has {chars} characters; Telegram allows {MAX_TEXT_CHARS}"),
            ));
        }
        if text.trim().is_empty() && attachments.is_empty() {
            return Err(invalid("empty_message", "text or attachments are required"));
        }
        if attachments.len() > MAX_ATTACHMENTS {
            return Err(invalid(
                "too_many_attachments",
                format!("at most {MAX_ATTACHMENTS} attachments per message"),
            ));
        }
        if let Some(bad) = attachments
            .iter()
            .find(|a| a.url.trim().is_empty() || a.filename.trim().is_empty() || a.size < 0)
        {
            return Err(invalid(
                "invalid_attachment",
                format!(
                    "attachment {:?} needs a url, a filename and a size >= 0",
                    bad.filename
                ),
            ));
        }
        Ok(Self {
            chat_id,
            text,
            attachments,
        })
    }

    pub fn chat_id(&self) -> i64 {
        self.chat_id
    }
}

/// A successful send, first or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub result: StoredSend,
    /// `true` when the key's stored first result was returned.
    pub replayed: bool,
}

/// Why a send did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    #[error("over the send budget")]
    Throttled(Throttled),
    #[error(transparent)]
    Backend(#[from] SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything the send path needs, shared by all requests.
pub struct SendService {
    backend: Arc<dyn Backend>,
    results: IdempotencyStore,
    locks: KeyLocks,
    budgets: Budgets,
    metrics: Metrics,
}

impl SendService {
    pub fn new(
        backend: Arc<dyn Backend>,
        results: IdempotencyStore,
        budgets: Budgets,
        metrics: Metrics,
    ) -> Self {
        Self {
            backend,
            results,
            locks: KeyLocks::default(),
            budgets,
            metrics,
        }
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    pub fn results(&self) -> &IdempotencyStore {
        &self.results
    }

    /// Sends `message` at most once per `key`.
    pub async fn send(
        &self,
        key: IdempotencyKey,
        message: Outgoing,
    ) -> Result<Delivered, SendFailure> {
        let _serialised = self.locks.lock(key.as_str()).await;
        let outcome = self.send_locked(&key, message).await;
        self.metrics.count(match &outcome {
            Ok(d) if d.replayed => SendResult::Duplicate,
            Ok(_) => SendResult::Sent,
            Err(e) => failure_result(e),
        });
        outcome
    }

    async fn send_locked(
        &self,
        key: &IdempotencyKey,
        message: Outgoing,
    ) -> Result<Delivered, SendFailure> {
        if let Some(first) = self.results.get(key.as_str()).await? {
            if first.chat_id != message.chat_id {
                tracing::warn!(
                    stored_chat = first.chat_id,
                    requested_chat = message.chat_id,
                    "idempotency key reused for another chat; returning the first result"
                );
            }
            return Ok(Delivered {
                result: first,
                replayed: true,
            });
        }
        self.budgets
            .check(message.chat_id)
            .map_err(SendFailure::Throttled)?;
        let request = SendRequest {
            chat_id: message.chat_id,
            text: message.text,
            attachments: message.attachments,
            random_id: key.random_id(),
            idempotency_key: key.as_str().to_owned(),
        };
        let started = Instant::now();
        let sent = self.backend.send_message(&request).await;
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.backend_call(
            match &sent {
                Ok(_) => SendResult::Sent,
                Err(e) => failure_result(&SendFailure::Backend(e.clone())),
            },
            elapsed,
        );
        let sent = sent?;
        let result = StoredSend {
            chat_id: request.chat_id,
            random_id: request.random_id,
            tg_message_id: sent.tg_message_id,
            sent_at: sent.sent_at,
            stored_at: Utc::now(),
        };
        match self.results.put_first(key.as_str(), result.clone()).await {
            Ok(stored) => Ok(Delivered {
                result: stored,
                replayed: false,
            }),
            // The message is out; a retry re-derives the same random_id and
            // Telegram de-duplicates it, so report the success.
            Err(e) => {
                tracing::error!(error = %e, "sent but could not store the idempotency result");
                Ok(Delivered {
                    result,
                    replayed: false,
                })
            }
        }
    }
}

fn failure_result(e: &SendFailure) -> SendResult {
    match e {
        SendFailure::Throttled(_) | SendFailure::Backend(SendError::FloodWait { .. }) => {
            SendResult::FloodWait
        }
        SendFailure::Backend(SendError::Permanent { .. }) => SendResult::Permanent,
        SendFailure::Backend(SendError::Transient { .. } | SendError::NeedsLogin)
        | SendFailure::Store(_) => SendResult::Transient,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn att(size: i64) -> AttachmentRef {
        AttachmentRef {
            url: "https://x/y".into(),
            filename: "a.pdf".into(),
            content_type: "application/pdf".into(),
            size,
        }
    }

    #[test]
    fn validation() {
        let code = |r: Result<Outgoing, Invalid>| r.unwrap_err().code;
        assert_eq!(
            code(Outgoing::parse(0, "hi".into(), vec![])),
            "invalid_chat_id"
        );
        assert_eq!(
            code(Outgoing::parse(1, " ".into(), vec![])),
            "empty_message"
        );
        assert_eq!(
            code(Outgoing::parse(1, "é".repeat(4097), vec![])),
            "message_too_long"
        );
        assert!(Outgoing::parse(1, "é".repeat(4096), vec![]).is_ok());
        assert!(Outgoing::parse(1, String::new(), vec![att(10)]).is_ok());
        assert_eq!(
            code(Outgoing::parse(1, String::new(), vec![att(-1)])),
            "invalid_attachment"
        );
        assert_eq!(
            code(Outgoing::parse(1, "x".into(), vec![att(1); 11])),
            "too_many_attachments"
        );
    }
}
