//! `GET /api/ws`: one task per socket. The protocol is written down in
//! docs/WEBSOCKET.md; in short: the first frame authenticates (and may
//! resume), the server streams frames the user may read, a fresh token can
//! be sent at any time, and the socket closes with a 4xxx code when the
//! token expires or is revoked.
//!
//! Here is the connection loop; the rooms around it:
//! - `upgrade`: the HTTP handshake, the origin check, the connection limits;
//! - `auth`: the first frame, within the time allowed;
//! - `session`: the signed-in socket (frames sent, renewal, permission re-reads);
//! - `hold`: whether event frames flow or are held, and why;
//! - `limit`: the limits of one socket and the client-frame rate limit;
//! - `client`: what a client may send; [`close`]: how a socket ends.

mod auth;
mod client;
pub mod close;
mod hold;
mod limit;
mod session;
pub(crate) mod upgrade;

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use platform::authz_redis::UserUpdated;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

pub use limit::Limits;
pub use upgrade::{Gateway, upgrade};

use super::hub::Signal;
use crate::AppState;
use close::{Close, bye};
use session::Session;
use upgrade::Pending;

/// One upgraded socket, from its first frame to its close.
async fn serve(state: AppState, mut socket: WebSocket, pending: Pending) {
    // Subscribed before anything is read from the ring, so nothing falls
    // between the replay and the live stream.
    let mut live = state.gateway.hub.subscribe();
    let authz = state.authz.updates();
    let signed_in = match auth::sign_in(&state, &mut socket).await {
        Ok(Some(signed_in)) => signed_in,
        Ok(None) => return,
        Err(c) => return bye(socket, c).await,
    };
    drop(pending);
    let mut session = Session::new(state, &signed_in);
    let outcome = run(&mut session, &mut socket, &mut live, authz, signed_in.since).await;
    if let Err(c) = outcome {
        bye(socket, c).await;
    }
}

/// The connection loop: the client's frames, the hub's, permission
/// announcements and a tick every second, until one of them ends it.
async fn run(
    session: &mut Session,
    socket: &mut WebSocket,
    live: &mut broadcast::Receiver<Signal>,
    authz: broadcast::Receiver<UserUpdated>,
    since: Option<i64>,
) -> Result<(), Close> {
    let limits = session.limits().clone();
    session.start(socket, since).await?;
    // The futures that stay pending between wake-ups live across loop
    // turns: re-creating them would re-register a waiter (under a lock
    // shared by every socket) at each frame.
    let shutdown = session.shutdown().clone();
    let mut cancelled = std::pin::pin!(shutdown.cancelled());
    let mut authz = BroadcastStream::new(authz);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    let mut last_check = Instant::now();
    loop {
        tokio::select! {
            () = &mut cancelled => return Err(Close(close::RESTART, "restart")),
            incoming = socket.recv() => match incoming {
                Some(Ok(m)) => session.on_client(socket, m).await?,
                Some(Err(_)) | None => return Ok(()),
            },
            signal = live.recv() => {
                session.on_signal(socket, signal).await?;
                session.flush(socket).await?;
            },
            update = authz.next() => match update {
                // A nil user id: the listener may have missed
                // announcements (lag, reconnect, gap); everyone re-reads.
                Some(Ok(u)) if u.user_id != session.user() && !u.user_id.is_nil() => {}
                Some(Ok(_) | Err(BroadcastStreamRecvError::Lagged(_))) => {
                    session.recheck(socket).await?;
                    last_check = Instant::now();
                }
                None => return Err(Close(close::RESTART, "restart")),
            },
            _ = ticks.tick() => {
                session.on_tick(socket).await?;
                if last_ping.elapsed() >= limits.heartbeat {
                    last_ping = Instant::now();
                    session.send(socket, Message::Ping(Default::default())).await?;
                }
                if last_check.elapsed() >= limits.recheck {
                    last_check = Instant::now();
                    session.recheck(socket).await?;
                }
            }
        }
    }
}
