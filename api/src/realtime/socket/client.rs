//! What a client may send (docs/WEBSOCKET.md), parsed strictly: anything
//! else is a bad frame.

use serde::Deserialize;

/// A client frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientFrame {
    Auth {
        token: String,
        #[serde(default)]
        since: Option<i64>,
    },
    Resume {
        token: String,
        since: i64,
    },
    Ping,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_strictly() {
        assert!(matches!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"resume","token":"t","since":5}"#),
            Ok(ClientFrame::Resume { since: 5, .. })
        ));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"resume","since":5}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"auth"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"subscribe"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>("not json").is_err());
    }
}
