//! The TG adapter's HTTP contract for sends (DESIGN §7): what tg-delivery
//! posts to `POST /v1/messages` and what the adapter answers. The adapter
//! and its client both use these types; neither defines its own.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::events::AttachmentRef;

/// The send route.
pub const MESSAGES_PATH: &str = "/v1/messages";
/// `GET {MEDIA_PATH}/{file_id}`: the bytes of an inbound file.
pub const MEDIA_PATH: &str = "/v1/media";

/// The header naming a send's idempotency key (the message id).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The body of `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub chat_id: i64,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
}

/// The answer to a send that went out (or had gone out: a replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResponse {
    pub tg_message_id: i64,
    /// RFC 3339 with microseconds on the wire.
    #[serde(serialize_with = "micros", deserialize_with = "rfc3339")]
    pub sent_at: DateTime<Utc>,
}

/// The body of every error answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// With 429: seconds to wait (also in `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

fn micros<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|at| at.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_response_round_trips_with_microseconds() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let json = serde_json::to_string(&SendResponse {
            tg_message_id: 7,
            sent_at: at,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"tg_message_id":7,"sent_at":"2026-12-06T10:00:00.123456Z"}"#
        );
        let back: SendResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sent_at, at);
    }

    #[test]
    fn an_error_without_a_code_still_reads() {
        let e: ErrorResponse = serde_json::from_str(r#"{"retry_after":3}"#).unwrap();
        assert_eq!(e.retry_after, Some(3));
        assert_eq!(e.code, "");
    }
}
