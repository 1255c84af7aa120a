//! Who is on the socket: the first frame's token, checked as REST checks a
//! bearer token, within the time allowed (docs/WEBSOCKET.md →
//! Authenticating).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};

use super::{
    client::ClientFrame,
    close::{self, Close},
};
use crate::{
    AppState,
    auth::jwt::Claims,
    authz::{Ep, pep},
    error::ApiError,
};

/// A socket's first frame, accepted.
pub(super) struct SignedIn {
    pub claims: Claims,
    /// The position a `resume` continues after.
    pub since: Option<i64>,
    pub ep: Arc<Ep>,
}

/// Reads and checks the first frame: `None` when the peer left first, or
/// the close to send.
pub(super) async fn sign_in(
    state: &AppState,
    socket: &mut WebSocket,
) -> Result<Option<SignedIn>, Close> {
    let first = tokio::time::timeout(state.gateway.limits.auth_timeout, first_frame(socket)).await;
    let (claims, since) = match first {
        Ok(Ok(Some((token, since)))) => match state.keys.verify(&token) {
            Some(c) => (c, since),
            None => return Err(Close(close::INVALID_TOKEN, "invalid_token")),
        },
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(c)) => return Err(c),
        Err(_) => return Err(Close(close::AUTH_TIMEOUT, "auth_timeout")),
    };
    let ep = current_ep(state, &claims).await?;
    Ok(Some(SignedIn { claims, since, ep }))
}

/// Reads until the first text frame: `Some((token, since))`, `None` when the
/// peer left, or the close to send.
async fn first_frame(socket: &mut WebSocket) -> Result<Option<(String, Option<i64>)>, Close> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => {
                return match serde_json::from_str::<ClientFrame>(&t) {
                    Ok(ClientFrame::Auth { token, since }) => Ok(Some((token, since))),
                    Ok(ClientFrame::Resume { token, since }) => Ok(Some((token, Some(since)))),
                    _ => Err(Close(close::AUTH_TIMEOUT, "auth_required")),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(_))) => return Err(Close(close::POLICY, "binary_frame")),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
        }
    }
}

/// The user's permissions for a verified token, refusing it as REST would.
pub(super) async fn current_ep(state: &AppState, claims: &Claims) -> Result<Arc<Ep>, Close> {
    match pep::principal(state, claims).await {
        Ok(p) => Ok(p.ep),
        Err(ApiError::Unauthorized { code, .. }) => Err(match code {
            "account_disabled" => Close(close::ACCOUNT_DISABLED, "account_disabled"),
            "token_stale" => Close(close::TOKEN_STALE, "token_stale"),
            _ => Close(close::INVALID_TOKEN, "invalid_token"),
        }),
        Err(_) => Err(Close(close::INTERNAL, "unavailable")),
    }
}
