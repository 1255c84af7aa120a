//! One signed-in socket: the token in force and its renewal, the user's
//! permissions and their re-reads, which frames it may see, and every frame
//! it sends.

use std::{sync::Arc, task::Poll, time::Instant};

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Gateway, Limits,
    auth::{SignedIn, current_ep},
    client::ClientFrame,
    close::{self, Close},
    hold::{Hold, Release},
    limit::FrameLimit,
};
use crate::{
    AppState,
    authz::{Ep, InboxScope},
    realtime::{
        frames::{ServerBody, ServerFrame},
        hub::{Frame, Replay, Signal},
    },
};

pub(super) struct Session {
    state: AppState,
    gateway: Arc<Gateway>,
    user: Uuid,
    /// `pv` and `exp` of the token in force.
    pv: i64,
    exp: i64,
    ep: Arc<Ep>,
    /// Last stream position accounted for on this socket.
    cursor: i64,
    /// Whether event frames flow or are held, and why.
    hold: Hold,
    limit: FrameLimit,
    bad_frames: u32,
    last_heard: Instant,
}

impl Session {
    pub(super) fn new(state: AppState, signed_in: &SignedIn) -> Self {
        let gateway = state.gateway.clone();
        Self {
            user: signed_in.claims.sub,
            pv: signed_in.claims.pv,
            exp: signed_in.claims.exp,
            ep: signed_in.ep.clone(),
            cursor: 0,
            hold: Hold::Live,
            limit: FrameLimit::new(gateway.limits.frame_quota),
            bad_frames: 0,
            last_heard: Instant::now(),
            state,
            gateway,
        }
    }

    pub(super) fn user(&self) -> Uuid {
        self.user
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.gateway.limits
    }

    /// Cancelled when the instance stops.
    pub(super) fn shutdown(&self) -> &CancellationToken {
        &self.state.shutdown
    }

    /// The first frames: `ep.update`, then for a resume the replay.
    pub(super) async fn start(
        &mut self,
        socket: &mut WebSocket,
        since: Option<i64>,
    ) -> Result<(), Close> {
        let head = self.gateway.hub.head();
        // The ep.update carries the position the client is at: the head for
        // a new stream, its own `since` for a resume (the replay follows).
        self.cursor = since.map_or(head, |s| s.clamp(0, head));
        self.send_ep(socket).await?;
        if let Some(since) = since {
            self.replay(socket, since).await?;
        }
        Ok(())
    }

    /// The checks of every second: the token's expiry, a hold past its
    /// grace (or, while the permissions are unread, one more read), and a
    /// silent peer.
    pub(super) async fn on_tick(&mut self, socket: &mut WebSocket) -> Result<(), Close> {
        if chrono::Utc::now().timestamp() >= self.exp {
            return Err(Close(close::TOKEN_EXPIRED, "token_expired"));
        }
        let grace = self.gateway.limits.stale_grace;
        if let Some(lapsed) = self.hold.lapsed(Instant::now(), grace) {
            return Err(lapsed);
        }
        if self.hold.is_unverified() {
            self.recheck(socket).await?;
        }
        if self.last_heard.elapsed() >= self.gateway.limits.idle_timeout {
            return Err(Close(close::GONE_AWAY, "heartbeat_timeout"));
        }
        Ok(())
    }

    /// One live signal; frames are buffered, the caller flushes.
    pub(super) async fn on_signal(
        &mut self,
        socket: &mut WebSocket,
        signal: Result<Signal, RecvError>,
    ) -> Result<(), Close> {
        match signal {
            Ok(Signal::Frame(f)) => self.on_frame(socket, &f).await,
            Ok(Signal::Reset(position)) => self.resync(socket, position).await,
            Err(RecvError::Lagged(_)) => {
                // Too slow for the live channel: the ring has it.
                let from = self.cursor;
                self.replay(socket, from).await
            }
            Err(RecvError::Closed) => Err(Close(close::RESTART, "restart")),
        }
    }

    /// Runs a write to the socket, with the send timeout only when it has
    /// to wait (the usual write completes at once, with no timer armed).
    async fn io(
        &self,
        write: impl std::future::Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), Close> {
        // The peer is gone or not reading: end without a close frame.
        let gone = || Close(close::GONE_AWAY, "not_reading");
        let mut write = std::pin::pin!(write);
        if let Poll::Ready(done) = futures::poll!(&mut write) {
            return done.map_err(|_| gone());
        }
        match tokio::time::timeout(self.gateway.limits.send_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(gone()),
        }
    }

    /// Sends one frame now.
    pub(super) async fn send(&self, socket: &mut WebSocket, m: Message) -> Result<(), Close> {
        self.io(socket.send(m)).await
    }

    /// Queues a frame for the next flush.
    async fn feed(&self, socket: &mut WebSocket, m: Message) -> Result<(), Close> {
        self.io(socket.feed(m)).await
    }

    pub(super) async fn flush(&self, socket: &mut WebSocket) -> Result<(), Close> {
        self.io(socket.flush()).await
    }

    /// Sends a control frame at the socket's position.
    async fn control(&self, socket: &mut WebSocket, body: ServerBody<'_>) -> Result<(), Close> {
        let text = ServerFrame {
            id: self.cursor,
            body,
        }
        .text();
        self.send(socket, Message::Text(text.into())).await
    }

    fn visible(&self, f: &Frame) -> bool {
        match self.ep.inbox_scope() {
            Some(InboxScope::All) => true,
            Some(InboxScope::Assigned(me)) => f.assignees.contains(&Some(me)),
            None => false,
        }
    }

    /// Ends a hold: the resync that fell due meanwhile, or the frames held.
    async fn release(
        &mut self,
        socket: &mut WebSocket,
        release: Option<Release>,
    ) -> Result<(), Close> {
        match release {
            None => Ok(()),
            Some(Release::Resync(position)) => self.send_resync(socket, position).await,
            Some(Release::Replay) => {
                let from = self.cursor;
                self.replay(socket, from).await
            }
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, f: &Frame) -> Result<(), Close> {
        if f.id <= self.cursor || self.hold.is_held() {
            // Already sent, or held: the release replays from the cursor.
            return Ok(());
        }
        self.cursor = f.id;
        if self.visible(f) {
            self.feed(socket, Message::Text(f.text.clone())).await?;
        }
        Ok(())
    }

    /// Sends every visible frame after `since`, or `resync`.
    async fn replay(&mut self, socket: &mut WebSocket, since: i64) -> Result<(), Close> {
        match self.gateway.hub.since(since) {
            Replay::Frames(frames) => {
                self.cursor = since;
                for f in frames {
                    self.on_frame(socket, &f).await?;
                }
                self.flush(socket).await
            }
            Replay::TooOld(position) => self.resync(socket, position).await,
        }
    }

    /// A `resync` fell due: sent now, or on the release when frames are
    /// held (a client told to reload now would be refused: stale token).
    async fn resync(&mut self, socket: &mut WebSocket, position: i64) -> Result<(), Close> {
        let (hold, now) = self.hold.resync_due(position);
        self.hold = hold;
        match now {
            Some(position) => self.send_resync(socket, position).await,
            None => Ok(()),
        }
    }

    async fn send_resync(&mut self, socket: &mut WebSocket, position: i64) -> Result<(), Close> {
        self.cursor = position;
        self.control(socket, ServerBody::Resync {}).await
    }

    async fn send_ep(&self, socket: &mut WebSocket) -> Result<(), Close> {
        self.control(
            socket,
            ServerBody::EpUpdate {
                permissions: self.ep.perms.keys(),
                perm_version: self.ep.version,
                token_current: self.ep.version <= self.pv,
            },
        )
        .await
    }

    /// Re-reads the user's permissions (after an `authz.user.updated`, or
    /// periodically): a deactivated account closes the socket; any change
    /// is sent as `ep.update` and applies at once; a token older than the
    /// permissions holds the stream until a current one arrives.
    pub(super) async fn recheck(&mut self, socket: &mut WebSocket) -> Result<(), Close> {
        let ep = match self.state.authz.effective(self.user).await {
            Ok(Some(ep)) => ep,
            Ok(None) => return Err(Close(close::ACCOUNT_DISABLED, "account_disabled")),
            Err(_) => {
                // A change may have been announced that cannot be read:
                // hold the stream rather than serve it under old rights.
                self.hold = self.hold.unreadable(Instant::now());
                return Ok(());
            }
        };
        if !ep.active {
            return Err(Close(close::ACCOUNT_DISABLED, "account_disabled"));
        }
        let changed = ep.version != self.ep.version;
        let (hold, release) = self
            .hold
            .read(changed && ep.version > self.pv, Instant::now());
        self.hold = hold;
        if changed {
            self.ep = ep;
            self.send_ep(socket).await?;
        }
        self.release(socket, release).await
    }

    pub(super) async fn on_client(
        &mut self,
        socket: &mut WebSocket,
        m: Message,
    ) -> Result<(), Close> {
        self.last_heard = Instant::now();
        let text = match m {
            Message::Text(t) => t,
            Message::Pong(_) | Message::Ping(_) => return Ok(()),
            Message::Binary(_) => return Err(Close(close::POLICY, "binary_frame")),
            Message::Close(_) => return Ok(()),
        };
        if !self.limit.allow() {
            return Err(Close(close::POLICY, "rate_limited"));
        }
        match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Ping) => self.control(socket, ServerBody::Pong {}).await,
            Ok(ClientFrame::Auth { token, since: None }) => self.reauth(socket, &token).await,
            Ok(ClientFrame::Auth { .. } | ClientFrame::Resume { .. }) => {
                self.error(
                    socket,
                    "already_streaming",
                    "resume only as the first frame",
                )
                .await
            }
            Err(_) => {
                self.bad_frames += 1;
                if self.bad_frames > self.gateway.limits.max_bad_frames {
                    return Err(Close(close::POLICY, "too_many_bad_frames"));
                }
                self.error(socket, "bad_frame", "expected auth, resume or ping")
                    .await
            }
        }
    }

    /// A fresh token on an open socket: same user, current `pv`.
    async fn reauth(&mut self, socket: &mut WebSocket, token: &str) -> Result<(), Close> {
        let Some(claims) = self.state.keys.verify(token) else {
            return Err(Close(close::INVALID_TOKEN, "invalid_token"));
        };
        if claims.sub != self.user {
            return Err(Close(close::INVALID_TOKEN, "invalid_token"));
        }
        self.ep = match current_ep(&self.state, &claims).await {
            Ok(ep) => ep,
            // The permission store is down: keep the session as it is (its
            // token may still be valid) and say so.
            Err(Close(close::INTERNAL, _)) => {
                return self
                    .error(
                        socket,
                        "unavailable",
                        "the token could not be checked; try again shortly",
                    )
                    .await;
            }
            Err(c) => return Err(c),
        };
        self.pv = claims.pv;
        self.exp = claims.exp;
        let (hold, release) = self.hold.reauthenticated();
        self.hold = hold;
        self.send_ep(socket).await?;
        self.release(socket, release).await
    }

    async fn error(
        &self,
        socket: &mut WebSocket,
        code: &'static str,
        message: &'static str,
    ) -> Result<(), Close> {
        self.control(socket, ServerBody::Error { code, message })
            .await
    }
}
