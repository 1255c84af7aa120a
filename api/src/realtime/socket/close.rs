//! How a socket ends: the close codes of docs/WEBSOCKET.md, and the closing
//! handshake.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};

/// No valid `auth` frame within the time allowed.
pub const AUTH_TIMEOUT: u16 = 4001;
/// The token is malformed, forged, expired on arrival or for another user.
pub const INVALID_TOKEN: u16 = 4002;
/// The token expired and no fresh one was sent in time.
pub const TOKEN_EXPIRED: u16 = 4003;
/// The user's permissions changed or their sessions were revoked, and no
/// current token was sent within the grace period.
pub const TOKEN_STALE: u16 = 4004;
/// The account was deactivated.
pub const ACCOUNT_DISABLED: u16 = 4005;
/// Too many frames, too many bad frames, or a binary frame.
pub const POLICY: u16 = 1008;
/// No answer to heartbeats.
pub const GONE_AWAY: u16 = 1001;
/// The instance is shutting down; reconnect and resume.
pub const RESTART: u16 = 1012;
/// The server could not go on (e.g. the permission store is down).
pub const INTERNAL: u16 = 1011;

/// Why a socket ends: the close code and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Close(pub u16, pub &'static str);

/// The closing handshake: our close frame, then whatever the peer still
/// sends until its close (briefly), so unread input does not reset the
/// connection before the close frame is read.
pub(super) async fn bye(mut socket: WebSocket, Close(code, reason): Close) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        }
    })
    .await;
}
