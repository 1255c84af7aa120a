//! The one table from Telegram's errors to the adapter's answers (DESIGN §7):
//! every call the MTProto backend makes maps its failure here, so a send, an
//! edit, a login step and a download agree on what a FLOOD_WAIT or a revoked
//! session means.

use std::time::Duration;

use grammers_mtsender::{InvocationError, RpcError};

use crate::backend::SendError;

/// How long a PEER_FLOOD (the account is limited for writing to strangers)
/// holds sends back: Telegram names no time, and the limit lasts hours.
pub const PEER_FLOOD_WAIT: Duration = Duration::from_secs(3_600);

/// What a failed Telegram call means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// FLOOD_WAIT_X (and SLOWMODE_WAIT_X): answer 429 with `retry_after = X`.
    FloodWait { secs: u64 },
    /// PEER_FLOOD: 429 with a long wait, and the session's health is flagged.
    PeerFlood,
    /// Retrying will not help; the code is the HTTP body's `code`.
    Permanent(&'static str),
    /// The 401 family: the session is gone and someone must log in again
    /// (503 for sends, `needs_login` for the status).
    Unauthorized,
    /// Telegram or the network failed; a retry may succeed (5xx).
    Transient(String),
}

/// Telegram's permanent refusals, by error name, and the adapter's code.
const PERMANENT: &[(&str, &str)] = &[
    ("PEER_ID_INVALID", "chat_not_found"),
    ("CHAT_ID_INVALID", "chat_not_found"),
    ("CHANNEL_INVALID", "chat_not_found"),
    ("CHANNEL_PRIVATE", "chat_write_forbidden"),
    ("USER_ID_INVALID", "chat_not_found"),
    ("INPUT_USER_DEACTIVATED", "user_deactivated"),
    ("USER_DEACTIVATED", "user_deactivated"),
    ("USER_DEACTIVATED_BAN", "user_deactivated"),
    ("USER_IS_BLOCKED", "user_blocked"),
    ("YOU_BLOCKED_USER", "user_blocked"),
    ("USER_BLOCKED", "user_blocked"),
    ("CHAT_WRITE_FORBIDDEN", "chat_write_forbidden"),
    ("CHAT_ADMIN_REQUIRED", "chat_write_forbidden"),
    ("CHAT_RESTRICTED", "chat_write_forbidden"),
    ("CHAT_SEND_MEDIA_FORBIDDEN", "chat_write_forbidden"),
    ("USER_BANNED_IN_CHANNEL", "chat_write_forbidden"),
    ("USER_PRIVACY_RESTRICTED", "user_privacy_restricted"),
    ("PRIVACY_PREMIUM_REQUIRED", "user_privacy_restricted"),
    ("MESSAGE_TOO_LONG", "message_too_long"),
    ("MEDIA_CAPTION_TOO_LONG", "message_too_long"),
    ("MESSAGE_EMPTY", "empty_message"),
    ("FILE_PARTS_INVALID", "file_too_large"),
    ("FILE_PART_SIZE_INVALID", "file_too_large"),
    ("MESSAGE_ID_INVALID", "message_not_found"),
    ("MESSAGE_EDIT_TIME_EXPIRED", "message_edit_time_expired"),
    ("MESSAGE_AUTHOR_REQUIRED", "message_not_editable"),
    ("MESSAGE_DELETE_FORBIDDEN", "message_not_deletable"),
    ("PHONE_NUMBER_INVALID", "phone_number_invalid"),
    ("PHONE_NUMBER_BANNED", "phone_number_banned"),
    ("PHONE_NUMBER_UNOCCUPIED", "phone_number_unoccupied"),
    ("PHONE_CODE_INVALID", "phone_code_invalid"),
    ("PHONE_CODE_EMPTY", "phone_code_invalid"),
    ("PHONE_CODE_EXPIRED", "phone_code_expired"),
    ("PASSWORD_HASH_INVALID", "password_invalid"),
    ("SRP_ID_INVALID", "password_check_expired"),
    ("API_ID_INVALID", "api_id_invalid"),
];

/// Maps one failed call. This is the whole table; see the tests beside it.
pub fn classify(error: &InvocationError) -> Failure {
    match error {
        InvocationError::Rpc(rpc) => classify_rpc(rpc),
        // A lost connection, a transport or a parse error, a pool stopping:
        // worth another try, by tg-delivery's schedule.
        other => Failure::Transient(other.to_string()),
    }
}

fn classify_rpc(rpc: &RpcError) -> Failure {
    let name = rpc.name.as_str();
    if matches!(name, "FLOOD_WAIT" | "FLOOD_PREMIUM_WAIT" | "SLOWMODE_WAIT") || rpc.code == 420 {
        if name == "PEER_FLOOD" {
            return Failure::PeerFlood;
        }
        return Failure::FloodWait {
            secs: u64::from(rpc.value.unwrap_or(1).max(1)),
        };
    }
    if name == "PEER_FLOOD" {
        return Failure::PeerFlood;
    }
    if rpc.code == 401
        || matches!(
            name,
            "AUTH_KEY_UNREGISTERED"
                | "AUTH_KEY_INVALID"
                | "SESSION_REVOKED"
                | "SESSION_EXPIRED"
                | "USER_DEACTIVATED_BAN_SELF"
        )
    {
        // USER_DEACTIVATED (400) is the peer's state and stays permanent
        // above; as a 401 it is this account's, and login is the answer.
        return Failure::Unauthorized;
    }
    if let Some((_, code)) = PERMANENT.iter().find(|(n, _)| *n == name) {
        return Failure::Permanent(code);
    }
    if rpc.code >= 500 || rpc.code == -503 || name == "TIMEOUT" {
        return Failure::Transient(rpc.to_string());
    }
    // An unknown 400/403 is a refusal Telegram will repeat; keep its name in
    // the logs, answer a stable code.
    if matches!(rpc.code, 400 | 403 | 406) {
        tracing::warn!(error = %rpc, "Telegram refused a call with an unmapped error");
        return Failure::Permanent("telegram_refused");
    }
    Failure::Transient(rpc.to_string())
}

impl Failure {
    /// The answer a send (or edit, delete, read) gives for this failure.
    pub fn into_send_error(self) -> SendError {
        match self {
            Failure::FloodWait { secs } => SendError::FloodWait {
                retry_after_secs: secs,
            },
            Failure::PeerFlood => SendError::FloodWait {
                retry_after_secs: PEER_FLOOD_WAIT.as_secs(),
            },
            Failure::Permanent(code) => SendError::Permanent { code: code.into() },
            Failure::Unauthorized => SendError::NeedsLogin,
            Failure::Transient(reason) => SendError::Transient { reason },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use grammers_tl_types as tl;

    /// An error as Telegram sends it (`FLOOD_WAIT_31`), parsed the way the
    /// library parses it.
    fn rpc(code: i32, message: &str) -> InvocationError {
        InvocationError::Rpc(RpcError::from(tl::types::RpcError {
            error_code: code,
            error_message: message.into(),
        }))
    }

    #[test]
    fn flood_waits_carry_their_seconds() {
        assert_eq!(
            classify(&rpc(420, "FLOOD_WAIT_31")),
            Failure::FloodWait { secs: 31 }
        );
        assert_eq!(
            classify(&rpc(420, "FLOOD_PREMIUM_WAIT_5")),
            Failure::FloodWait { secs: 5 }
        );
        assert_eq!(
            classify(&rpc(400, "SLOWMODE_WAIT_60")),
            Failure::FloodWait { secs: 60 }
        );
        // A wait of 0 still waits a second.
        assert_eq!(
            classify(&rpc(420, "FLOOD_WAIT_0")),
            Failure::FloodWait { secs: 1 }
        );
        assert_eq!(
            classify(&rpc(420, "FLOOD_WAIT_31")).into_send_error(),
            SendError::FloodWait {
                retry_after_secs: 31
            }
        );
    }

    #[test]
    fn peer_flood_is_a_long_wait() {
        assert_eq!(classify(&rpc(400, "PEER_FLOOD")), Failure::PeerFlood);
        assert_eq!(classify(&rpc(420, "PEER_FLOOD")), Failure::PeerFlood);
        assert_eq!(
            Failure::PeerFlood.into_send_error(),
            SendError::FloodWait {
                retry_after_secs: 3_600
            }
        );
    }

    #[test]
    fn refusals_are_permanent_with_their_codes() {
        for (message, code) in [
            ("USER_IS_BLOCKED", "user_blocked"),
            ("YOU_BLOCKED_USER", "user_blocked"),
            ("CHAT_WRITE_FORBIDDEN", "chat_write_forbidden"),
            ("INPUT_USER_DEACTIVATED", "user_deactivated"),
            ("PEER_ID_INVALID", "chat_not_found"),
            ("MESSAGE_TOO_LONG", "message_too_long"),
            ("USER_PRIVACY_RESTRICTED", "user_privacy_restricted"),
            ("PHONE_CODE_INVALID", "phone_code_invalid"),
            ("PASSWORD_HASH_INVALID", "password_invalid"),
        ] {
            assert_eq!(
                classify(&rpc(400, message)),
                Failure::Permanent(code),
                "{message}"
            );
        }
        assert_eq!(
            classify(&rpc(403, "CHAT_WRITE_FORBIDDEN")).into_send_error(),
            SendError::Permanent {
                code: "chat_write_forbidden".into()
            }
        );
        assert_eq!(
            classify(&rpc(400, "SOMETHING_NEW")),
            Failure::Permanent("telegram_refused")
        );
    }

    #[test]
    fn the_401_family_needs_a_login() {
        for message in [
            "AUTH_KEY_UNREGISTERED",
            "SESSION_REVOKED",
            "SESSION_EXPIRED",
            "USER_DEACTIVATED",
            "AUTH_KEY_PERM_EMPTY",
        ] {
            assert_eq!(
                classify(&rpc(401, message)),
                Failure::Unauthorized,
                "{message}"
            );
        }
        assert_eq!(
            Failure::Unauthorized.into_send_error(),
            SendError::NeedsLogin
        );
    }

    #[test]
    fn server_and_network_failures_are_transient() {
        assert!(matches!(
            classify(&rpc(500, "RPC_CALL_FAIL")),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&rpc(-503, "Timeout")),
            Failure::Transient(_)
        ));
        let io = InvocationError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(matches!(classify(&io), Failure::Transient(_)));
        assert!(matches!(
            classify(&InvocationError::Dropped("pool stopped")),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&io).into_send_error(),
            SendError::Transient { .. }
        ));
    }
}
