//! The event envelope and every event type of the system (DESIGN §4).
//! Producers and consumers share these structs; none defines its own copy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The JSON body of every AMQP message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// A new envelope with a fresh time-ordered id.
    pub fn new(event: Event) -> Self {
        Self {
            id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            aggregate_type: event.aggregate_type().to_owned(),
            aggregate_id: event.aggregate_id(),
            event,
        }
    }

    pub fn event_type(&self) -> &'static str {
        self.event.event_type()
    }
}

/// Declares [`Event`], its type names in [`types`] and
/// [`Event::event_type`] from one list: each variant with its payload, its
/// versioned type name, and the name's constant.
macro_rules! events {
    ($( $variant:ident = $name:literal as $constant:ident ),+ $(,)?) => {
        /// Every event, tagged by its versioned type name. The tag is the
        /// AMQP routing key and `type` property.
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(tag = "type", content = "data")]
        pub enum Event {
            $( #[serde(rename = $name)] $variant($variant) ),+
        }

        pub mod types {
            //! Event type names, which are also routing keys.
            $( pub const $constant: &str = $name; )+

            /// Every type above, for bounded metric labels.
            pub const ALL: [&str; [$($name),+].len()] = [$($constant),+];
        }

        impl Event {
            pub fn event_type(&self) -> &'static str {
                match self {
                    $( Event::$variant(_) => types::$constant ),+
                }
            }
        }
    };
}

events! {
    MessageOutgoing = "message.outgoing.v1" as MESSAGE_OUTGOING,
    MessageStatus = "message.status.v1" as MESSAGE_STATUS,
    MessageDeliveryFailed = "message.delivery_failed.v1" as MESSAGE_DELIVERY_FAILED,
    MessageReceived = "message.received.v1" as MESSAGE_RECEIVED,
    MessageNoteAdded = "message.note_added.v1" as MESSAGE_NOTE_ADDED,
    MessageEdited = "message.edited.v1" as MESSAGE_EDITED,
    MessageUpdated = "message.updated.v1" as MESSAGE_UPDATED,
    MessageOutgoingEdit = "message.outgoing.edit.v1" as MESSAGE_OUTGOING_EDIT,
    MessageOutgoingDelete = "message.outgoing.delete.v1" as MESSAGE_OUTGOING_DELETE,
    ConversationUpdated = "conversation.updated.v1" as CONVERSATION_UPDATED,
    AuthzRoleUpdated = "authz.role.updated.v1" as AUTHZ_ROLE_UPDATED,
    AuthzUserUpdated = "authz.user.updated.v1" as AUTHZ_USER_UPDATED,
    TgUpdateReceived = "tg.update.received.v1" as TG_UPDATE_RECEIVED,
    TgSessionChanged = "tg.session.changed.v1" as TG_SESSION_CHANGED,
    TgUpdateDeleted = "tg.update.deleted.v1" as TG_UPDATE_DELETED,
    TgUpdateRead = "tg.update.read.v1" as TG_UPDATE_READ,
}

impl Event {
    /// The aggregate the event belongs to; events of one aggregate are
    /// published in commit order.
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            Event::MessageOutgoing(_)
            | Event::MessageStatus(_)
            | Event::MessageDeliveryFailed(_)
            | Event::MessageReceived(_)
            | Event::MessageNoteAdded(_)
            | Event::MessageEdited(_)
            | Event::MessageUpdated(_)
            | Event::MessageOutgoingEdit(_)
            | Event::MessageOutgoingDelete(_) => "message",
            Event::ConversationUpdated(_) => "conversation",
            Event::AuthzRoleUpdated(_) => "role",
            Event::AuthzUserUpdated(_) => "user",
            Event::TgUpdateReceived(_) | Event::TgUpdateDeleted(_) | Event::TgUpdateRead(_) => {
                "tg_chat"
            }
            Event::TgSessionChanged(_) => "tg_session",
        }
    }

    pub fn aggregate_id(&self) -> String {
        match self {
            Event::MessageOutgoing(e) => e.message_id.to_string(),
            Event::MessageStatus(e) => e.message_id.to_string(),
            Event::MessageDeliveryFailed(e) => e.message_id.to_string(),
            Event::MessageReceived(e) => e.message_id.to_string(),
            Event::MessageNoteAdded(e) => e.message_id.to_string(),
            Event::MessageEdited(e) => e.message_id.to_string(),
            Event::MessageUpdated(e) => e.message_id.to_string(),
            Event::MessageOutgoingEdit(e) => e.0.message_id.to_string(),
            Event::MessageOutgoingDelete(e) => e.0.message_id.to_string(),
            Event::ConversationUpdated(e) => e.conversation_id.to_string(),
            Event::AuthzRoleUpdated(e) => e.role_id.to_string(),
            Event::AuthzUserUpdated(e) => e.user_id.to_string(),
            Event::TgUpdateReceived(e) => e.chat.id.to_string(),
            Event::TgUpdateDeleted(e) => e
                .chat_id
                .map_or_else(|| "account".to_owned(), |id| id.to_string()),
            Event::TgUpdateRead(e) => e.chat_id.to_string(),
            Event::TgSessionChanged(_) => "account".to_owned(),
        }
    }

    /// The `data` member alone, as stored in `outbox.payload`.
    pub fn data_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        use serde::ser::Error as _;
        match serde_json::to_value(self)? {
            serde_json::Value::Object(mut map) => map
                .remove("data")
                .ok_or_else(|| serde_json::Error::custom("the event has no data member")),
            _ => Err(serde_json::Error::custom("the event is not a JSON object")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachmentRef {
    pub url: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
}

/// A file of a message, as events name it: no URL (one is made when the
/// file is sent or opened, and expires).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachedFile {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageOutgoing {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub tg_chat_id: i64,
    pub text: String,
    /// The files sent with the text, in order. tg-delivery sends the files
    /// attached to the message's row, whatever this copy says.
    #[serde(default)]
    pub attachments: Vec<AttachedFile>,
    /// The conversation's assignee when the event was written: who sees it
    /// under `inbox.read_assigned` (the realtime gateways filter by it, so
    /// every instance decides alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
    /// Not a new message: tg-delivery's own retry of it, or its turn after
    /// an earlier reply to the chat finished. Realtime gateways skip it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    /// The message as `GET /api/conversations/{id}/messages` rendered it in
    /// the transaction that wrote it: realtime gateways send it as it is,
    /// without reading the row back. Absent from resends and retries (the
    /// gateways then load the row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<serde_json::Value>,
}

platform::named_enum! {
    /// Delivery status of an outgoing message, as stored in `messages.status`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DeliveryStatus {
        Queued = "queued",
        Sending = "sending",
        Sent = "sent",
        Retrying = "retrying",
        Failed = "failed",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageStatus {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tg_message_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempt: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// The conversation's assignee when the event was written: who sees it
    /// under `inbox.read_assigned` (the realtime gateways filter by it, so
    /// every instance decides alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageDeliveryFailed {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub error: String,
    pub attempts: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageReceived {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub preview: String,
    /// The conversation's assignee when the event was written: who sees it
    /// under `inbox.read_assigned` (the realtime gateways filter by it, so
    /// every instance decides alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
}

/// A private note: staff only, never sent to Telegram.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageNoteAdded {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub author_id: Uuid,
    pub preview: String,
    /// The conversation's assignee when the event was written: who sees it
    /// under `inbox.read_assigned` (the realtime gateways filter by it, so
    /// every instance decides alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
    /// The message as `GET /api/conversations/{id}/messages` rendered it in
    /// the transaction that wrote it: realtime gateways send it as it is,
    /// without reading the row back. Absent from events written before it
    /// existed (the gateways then load the row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<serde_json::Value>,
}

/// A message's row changed otherwise than by a customer's edit: an
/// operator's edit or deletion of a reply and its progress to Telegram, a
/// deletion in Telegram, a read receipt. Realtime gateways send the row as
/// it is now (`message.updated`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageUpdated {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
}

/// A change an operator asked of a sent reply, for tg-delivery to make in
/// Telegram. It names the reply, not the change: the handler reads what to
/// do from the row (the latest text, or the deletion), and finishes only
/// the change numbered `seq` (a later one has its own event).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplyChange {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub tg_chat_id: i64,
    /// `messages.change_seq` as the change was asked.
    pub seq: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
}

/// `message.outgoing.edit.v1`: replace a sent reply's text in Telegram.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct MessageOutgoingEdit(pub ReplyChange);

/// `message.outgoing.delete.v1`: delete a sent reply for everyone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct MessageOutgoingDelete(pub ReplyChange);

/// A customer edited an inbound message: its text was replaced and the
/// previous text kept in `message_edits`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageEdited {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub edited_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationUpdated {
    pub conversation_id: Uuid,
    /// Only the fields that changed, by name.
    pub changed: serde_json::Map<String, serde_json::Value>,
    /// With an assignment change, who held the conversation before (so the
    /// realtime gateway can tell them it left their queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_assignee_id: Option<Uuid>,
    /// The assignee after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<Uuid>,
}

/// A role's permissions or existence changed. `users` are the holders it
/// affected with the `perm_version` each was given in the same transaction;
/// when empty (an event written by hand), the consumer bumps every current
/// holder itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthzRoleUpdated {
    pub role_id: Uuid,
    #[serde(default)]
    pub users: Vec<UserVersion>,
}

/// One user's rights or account changed (roles, deactivation, password,
/// logout). `perm_version` is the version given in the same transaction;
/// `None` asks the consumer to bump it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthzUserUpdated {
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm_version: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct UserVersion {
    pub user_id: Uuid,
    pub perm_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgChat {
    pub id: i64,
    /// `private`, `group`, `channel`.
    #[serde(default = "private")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

fn private() -> String {
    "private".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgSender {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgMedia {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Its media type, when Telegram gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgUpdateReceived {
    pub chat: TgChat,
    pub sender: TgSender,
    pub tg_message_id: i64,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub media: Vec<TgMedia>,
    pub date: DateTime<Utc>,
    /// Set when this update is an edit of message `tg_message_id`: the
    /// edit's time, with `text` the new text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
}

/// Telegram deleted messages (`tg.update.deleted.v1`, from the MTProto
/// backend). In private chats and small groups Telegram names only the
/// message ids, so `chat_id` is absent there; in channels and supergroups
/// it is the chat's id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgUpdateDeleted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    pub tg_message_ids: Vec<i64>,
    pub deleted_at: DateTime<Utc>,
}

/// A read receipt (`tg.update.read.v1`, from the MTProto backend).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgUpdateRead {
    pub chat_id: i64,
    /// Read up to and including this message id.
    pub max_id: i64,
    /// `true`: the customer read the account's messages; `false`: the
    /// account read the customer's (in another Telegram app).
    pub outgoing: bool,
    pub read_at: DateTime<Utc>,
}

platform::named_enum! {
    /// The state of the Telegram account's session (DESIGN §7, `GET /v1/status`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SessionState {
        /// Signed in; sends go out.
        Authorized = "authorized",
        /// Signed out (revoked, expired, never logged in): nothing can be sent
        /// until someone logs the account in again.
        NeedsLogin = "needs_login",
        /// Telegram asked the account to wait until `until`.
        FloodWait = "flood_wait",
    }
}

/// The adapter's session changed state; published by the adapter itself
/// (confirmed) at every change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgSessionChanged {
    pub state: SessionState,
    /// With `flood_wait`: when the wait ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The state before this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<SessionState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(Event::MessageOutgoing(MessageOutgoing {
            message_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            tg_chat_id: 42,
            text: "hi".into(),
            attachments: vec![],
            assignee_id: None,
            resend: false,
            view: None,
        }))
    }

    #[test]
    fn envelope_has_the_wire_shape_of_design_4() {
        let env = sample();
        let json = serde_json::to_value(&env).unwrap();
        for key in [
            "id",
            "type",
            "occurred_at",
            "aggregate_type",
            "aggregate_id",
            "data",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["type"], "message.outgoing.v1");
        assert_eq!(json["data"]["tg_chat_id"], 42);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn unknown_type_does_not_decode() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["type"] = "message.outgoing.v9".into();
        assert!(serde_json::from_value::<Envelope>(json).is_err());
    }

    #[test]
    fn data_json_is_the_data_member() {
        let env = sample();
        assert_eq!(env.event.data_json().unwrap()["text"], "hi");
    }
}
