//! Every frame the server sends on the WebSocket (docs/WEBSOCKET.md), as
//! one type: `{"id": <stream position>, "type": ..., "data": {...}}`.

use broker_config::events::{DeliveryStatus, MessageStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::inbox::messages::Message;

/// A server frame: the body, at stream position `id`.
#[derive(Serialize)]
pub struct ServerFrame<'a> {
    pub id: i64,
    #[serde(flatten)]
    pub body: ServerBody<'a>,
}

impl ServerFrame<'_> {
    /// The frame as the text a socket sends.
    pub fn text(&self) -> String {
        // Serializing these types cannot fail (no maps with non-string
        // keys, no fallible `Serialize`); an empty frame would be refused by
        // every client, so the failure is logged loudly where it happens.
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "a server frame could not be encoded");
            String::new()
        })
    }
}

/// The `type` and `data` of a server frame.
#[derive(Serialize)]
#[serde(tag = "type", content = "data")]
pub enum ServerBody<'a> {
    /// A new message in a conversation (inbound, reply or note), as REST
    /// renders it.
    #[serde(rename = "message.created")]
    MessageCreated(MessageData<'a>),
    /// A message changed: a customer's edit, an operator's edit or deletion
    /// of a reply and how far it got in Telegram, a deletion in Telegram, a
    /// read receipt. The message as REST renders it now.
    #[serde(rename = "message.updated")]
    MessageUpdated(MessageData<'a>),
    /// A reply's delivery status changed.
    #[serde(rename = "message.status")]
    MessageStatus(StatusData),
    /// Fields of a conversation changed (only those, by name).
    #[serde(rename = "conversation.updated")]
    ConversationUpdated {
        conversation_id: Uuid,
        changed: &'a serde_json::Map<String, serde_json::Value>,
    },
    /// The caller's effective permissions, at sign-in and after a change.
    #[serde(rename = "ep.update")]
    EpUpdate {
        permissions: Vec<&'static str>,
        perm_version: i64,
        token_current: bool,
    },
    /// Events were missed: reload, then read on from this position.
    #[serde(rename = "resync")]
    Resync {},
    /// The answer to a client's `ping`.
    #[serde(rename = "pong")]
    Pong {},
    /// A client frame was refused; the socket stays open.
    #[serde(rename = "error")]
    Error {
        code: &'static str,
        message: &'static str,
    },
}

/// `data` of a message frame: the message as REST renders it.
#[derive(Serialize)]
#[serde(untagged)]
pub enum MessageData<'a> {
    /// Read from PostgreSQL.
    Row(&'a Message),
    /// As its writer rendered it, carried by the event (`view`).
    Written(&'a serde_json::Value),
}

/// `data` of `message.status`.
#[derive(Debug, Serialize)]
pub struct StatusData {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub status: DeliveryStatus,
    pub tg_message_id: Option<i64>,
    pub error: Option<String>,
    pub attempt: i32,
    pub retry_at: Option<DateTime<Utc>>,
}

impl From<&MessageStatus> for StatusData {
    fn from(e: &MessageStatus) -> Self {
        Self {
            message_id: e.message_id,
            conversation_id: e.conversation_id,
            status: e.status,
            tg_message_id: e.tg_message_id,
            error: e.error.clone(),
            attempt: e.attempt,
            retry_at: e.retry_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_keep_the_documented_shape() {
        let pong = ServerFrame {
            id: 7,
            body: ServerBody::Pong {},
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&pong.text()).unwrap(),
            serde_json::json!({"id": 7, "type": "pong", "data": {}})
        );
        let error = ServerFrame {
            id: 8,
            body: ServerBody::Error {
                code: "rate_limited",
                message: "slow down",
            },
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&error.text()).unwrap(),
            serde_json::json!({"id": 8, "type": "error",
                               "data": {"code": "rate_limited", "message": "slow down"}})
        );
    }
}
