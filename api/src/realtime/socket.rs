//! `GET /api/ws`: one task per socket. The protocol is written down in
//! docs/WEBSOCKET.md; in short: the first frame authenticates (and may
//! resume), the server streams frames the user may read, a fresh token can
//! be sent at any time, and the socket closes with a 4xxx code when the
//! token expires or is revoked.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::task::Poll;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use uuid::Uuid;

use super::{
    frames::{ServerBody, ServerFrame},
    hub::{Frame, Replay, Signal},
};
use crate::{
    AppState,
    auth::jwt::Claims,
    authz::{Ep, InboxScope, pep},
    error::ApiError,
};

/// Close codes (docs/WEBSOCKET.md).
pub mod close {
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
}

/// Limits of one socket.
#[derive(Debug, Clone)]
pub struct Limits {
    pub auth_timeout: Duration,
    /// Time to send a current token after a permission change or revocation.
    pub stale_grace: Duration,
    pub heartbeat: Duration,
    /// Silence (not even a pong) after which the peer is gone.
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    /// Client frames per second, sustained, and the burst allowed.
    pub frames_per_second: f64,
    pub frame_burst: f64,
    pub max_bad_frames: u32,
    pub send_timeout: Duration,
    /// How often a socket re-reads its user's permissions without being told.
    pub recheck: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(5),
            stale_grace: Duration::from_secs(15),
            heartbeat: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: 16 * 1024,
            frames_per_second: 10.0,
            frame_burst: 30.0,
            max_bad_frames: 10,
            send_timeout: Duration::from_secs(10),
            recheck: Duration::from_secs(30),
        }
    }
}

/// The gateway's shared parts.
pub struct Gateway {
    pub hub: Arc<super::hub::Hub>,
    pub limits: Limits,
    pub origins: Vec<String>,
    pub max_connections: usize,
    /// Sockets one client address may hold before they authenticate.
    pub max_pending_per_client: usize,
    open: AtomicUsize,
    /// Sockets not yet authenticated, per client address.
    pending: Mutex<HashMap<IpAddr, usize>>,
    gauge: opentelemetry::metrics::UpDownCounter<i64>,
}

impl Gateway {
    pub fn new(
        hub: Arc<super::hub::Hub>,
        limits: Limits,
        origins: Vec<String>,
        (max_connections, max_pending_per_client): (usize, usize),
        meter: &opentelemetry::metrics::Meter,
    ) -> Arc<Self> {
        Arc::new(Self {
            hub,
            limits,
            origins,
            max_connections,
            max_pending_per_client,
            open: AtomicUsize::new(0),
            pending: Mutex::new(HashMap::new()),
            gauge: meter
                .i64_up_down_counter("ws_connections")
                .with_description("Open WebSocket connections")
                .build(),
        })
    }

    /// Sockets open on this instance.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        // Browsers always send Origin; a client without one is not a page
        // another site could be using against the user.
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        origin
            .to_str()
            .is_ok_and(|o| self.origins.iter().any(|allowed| allowed == o))
    }
}

/// Counts a socket that has not authenticated yet, against its client's
/// allowance, until it authenticates or ends: a client cannot hold the
/// gateway's slots with handshakes that never sign in.
struct Pending(Arc<Gateway>, IpAddr);

impl Pending {
    fn take(gateway: &Arc<Gateway>, client: IpAddr) -> Option<Self> {
        let mut pending = gateway.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = pending.entry(client).or_insert(0);
        if *n >= gateway.max_pending_per_client {
            return None;
        }
        *n += 1;
        Some(Self(gateway.clone(), client))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.1);
            }
        }
    }
}

/// Counts a socket while it lives.
struct Slot(Arc<Gateway>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.add(-1, &[]);
    }
}

/// `GET /api/ws`.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let gateway = state.gateway.clone();
    if !gateway.origin_allowed(&headers) {
        return ApiError::ForbiddenBecause {
            code: "origin_not_allowed",
            message: "this origin may not open the realtime connection",
        }
        .into_response();
    }
    let Some(pending) = Pending::take(&gateway, state.auth.client_addr(peer, &headers)) else {
        return ApiError::TooManyRequests {
            retry_after_secs: gateway.limits.auth_timeout.as_secs().max(1),
        }
        .into_response();
    };
    if gateway.open.fetch_add(1, Ordering::Relaxed) >= gateway.max_connections {
        gateway.open.fetch_sub(1, Ordering::Relaxed);
        return ApiError::Unavailable {
            what: "the realtime gateway",
            cause: "connection limit reached".into(),
        }
        .into_response();
    }
    gateway.gauge.add(1, &[]);
    let slot = Slot(gateway.clone());
    let limits = &gateway.limits;
    // Frames are written when flushed (a burst of frames in one write); the
    // buffer is kept small so an idle socket stays small.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            serve(state, socket, pending).await;
        })
}

/// A client frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
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

/// Why a socket ends.
struct Close(u16, &'static str);

struct Session {
    state: AppState,
    gateway: Arc<Gateway>,
    user: Uuid,
    /// `pv` and `exp` of the token in force.
    pv: i64,
    exp: i64,
    ep: Arc<Ep>,
    /// Last stream position accounted for on this socket.
    cursor: i64,
    /// Set while the token in force is older than the user's permissions:
    /// nothing but `ep.update` is sent until a current token arrives.
    stale_since: Option<Instant>,
    /// Set while the user's permissions could not be re-read after a change
    /// was announced: frames are held (fail closed) and the read is retried
    /// every second.
    unverified_since: Option<Instant>,
    /// A `resync` that fell due while frames were held: sent on release.
    pending_resync: Option<i64>,
    bucket: TokenBucket,
    bad_frames: u32,
    last_heard: Instant,
}

async fn serve(state: AppState, mut socket: WebSocket, pending: Pending) {
    let gateway = state.gateway.clone();
    let limits = gateway.limits.clone();
    // Subscribed before anything is read from the ring, so nothing falls
    // between the replay and the live stream.
    let mut live = gateway.hub.subscribe();
    let authz = state.authz.updates();
    let first = tokio::time::timeout(limits.auth_timeout, first_frame(&mut socket)).await;
    let (claims, since) = match first {
        Ok(Ok(Some((token, since)))) => match state.keys.verify(&token) {
            Some(c) => (c, since),
            None => return bye(socket, Close(close::INVALID_TOKEN, "invalid_token")).await,
        },
        Ok(Ok(None)) => return,
        Ok(Err(c)) => return bye(socket, c).await,
        Err(_) => return bye(socket, Close(close::AUTH_TIMEOUT, "auth_timeout")).await,
    };
    let ep = match current_ep(&state, &claims).await {
        Ok(ep) => ep,
        Err(c) => return bye(socket, c).await,
    };
    drop(pending);
    let mut session = Session {
        user: claims.sub,
        pv: claims.pv,
        exp: claims.exp,
        ep,
        cursor: 0,
        stale_since: None,
        unverified_since: None,
        pending_resync: None,
        bucket: TokenBucket::new(limits.frames_per_second, limits.frame_burst),
        bad_frames: 0,
        last_heard: Instant::now(),
        state,
        gateway,
    };
    let outcome = session.run(&mut socket, &mut live, authz, since).await;
    match outcome {
        Ok(()) => {}
        Err(c) => bye(socket, c).await,
    }
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
async fn current_ep(state: &AppState, claims: &Claims) -> Result<Arc<Ep>, Close> {
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

/// The closing handshake: our close frame, then whatever the peer still
/// sends until its close (briefly), so unread input does not reset the
/// connection before the close frame is read.
async fn bye(mut socket: WebSocket, Close(code, reason): Close) {
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

impl Session {
    async fn run(
        &mut self,
        socket: &mut WebSocket,
        live: &mut tokio::sync::broadcast::Receiver<Signal>,
        authz: tokio::sync::broadcast::Receiver<platform::authz_redis::UserUpdated>,
        since: Option<i64>,
    ) -> Result<(), Close> {
        let limits = self.gateway.limits.clone();
        let head = self.gateway.hub.head();
        // The ep.update carries the position the client is at: the head for
        // a new stream, its own `since` for a resume (the replay follows).
        self.cursor = since.map_or(head, |s| s.clamp(0, head));
        self.send_ep(socket).await?;
        if let Some(since) = since {
            self.replay(socket, since).await?;
        }
        // The futures that stay pending between wake-ups live across loop
        // turns: re-creating them would re-register a waiter (under a lock
        // shared by every socket) at each frame.
        let shutdown = self.state.shutdown.clone();
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
                    Some(Ok(m)) => self.on_client(socket, m).await?,
                    Some(Err(_)) | None => return Ok(()),
                },
                signal = live.recv() => {
                    self.on_signal(socket, signal).await?;
                    self.flush(socket).await?;
                },
                update = authz.next() => match update {
                    // A nil user id: the listener may have missed
                    // announcements (lag, reconnect, gap); everyone re-reads.
                    Some(Ok(u)) if u.user_id != self.user && !u.user_id.is_nil() => {}
                    Some(Ok(_) | Err(BroadcastStreamRecvError::Lagged(_))) => {
                        self.recheck(socket).await?;
                        last_check = Instant::now();
                    }
                    None => return Err(Close(close::RESTART, "restart")),
                },
                _ = ticks.tick() => {
                    let now = chrono::Utc::now().timestamp();
                    if now >= self.exp {
                        return Err(Close(close::TOKEN_EXPIRED, "token_expired"));
                    }
                    if self.stale_since.is_some_and(|t| t.elapsed() >= limits.stale_grace) {
                        return Err(Close(close::TOKEN_STALE, "token_stale"));
                    }
                    if let Some(since) = self.unverified_since {
                        if since.elapsed() >= limits.stale_grace {
                            return Err(Close(close::INTERNAL, "unavailable"));
                        }
                        self.recheck(socket).await?;
                    }
                    if self.last_heard.elapsed() >= limits.idle_timeout {
                        return Err(Close(close::GONE_AWAY, "heartbeat_timeout"));
                    }
                    if last_ping.elapsed() >= limits.heartbeat {
                        last_ping = Instant::now();
                        self.send(socket, Message::Ping(Default::default())).await?;
                    }
                    if last_check.elapsed() >= limits.recheck {
                        last_check = Instant::now();
                        self.recheck(socket).await?;
                    }
                }
            }
        }
    }

    /// One live signal; frames are buffered, the caller flushes.
    async fn on_signal(
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
    async fn send(&self, socket: &mut WebSocket, m: Message) -> Result<(), Close> {
        self.io(socket.send(m)).await
    }

    /// Queues a frame for the next flush.
    async fn feed(&self, socket: &mut WebSocket, m: Message) -> Result<(), Close> {
        self.io(socket.feed(m)).await
    }

    async fn flush(&self, socket: &mut WebSocket) -> Result<(), Close> {
        self.io(socket.flush()).await
    }

    fn visible(&self, f: &Frame) -> bool {
        match self.ep.inbox_scope() {
            Some(InboxScope::All) => true,
            Some(InboxScope::Assigned(me)) => f.assignees.contains(&Some(me)),
            None => false,
        }
    }

    /// Whether frames are held (a stale token, or permissions not re-read).
    fn held(&self) -> bool {
        self.stale_since.is_some() || self.unverified_since.is_some()
    }

    /// Ends a hold: the resync that fell due meanwhile, or the frames held.
    async fn release(&mut self, socket: &mut WebSocket) -> Result<(), Close> {
        if self.held() {
            return Ok(());
        }
        match self.pending_resync.take() {
            Some(position) => self.resync(socket, position).await,
            None => {
                let from = self.cursor;
                self.replay(socket, from).await
            }
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, f: &Frame) -> Result<(), Close> {
        if f.id <= self.cursor || self.held() {
            // Already sent, or held: a current token replays from the cursor.
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

    async fn resync(&mut self, socket: &mut WebSocket, position: i64) -> Result<(), Close> {
        if self.held() {
            // A client told to reload now would be refused (stale token):
            // the resync waits for the release.
            self.pending_resync = Some(position);
            return Ok(());
        }
        self.cursor = position;
        let text = ServerFrame {
            id: position,
            body: ServerBody::Resync {},
        }
        .text();
        self.send(socket, Message::Text(text.into())).await
    }

    async fn send_ep(&self, socket: &mut WebSocket) -> Result<(), Close> {
        let text = ServerFrame {
            id: self.cursor,
            body: ServerBody::EpUpdate {
                permissions: self.ep.perms.keys(),
                perm_version: self.ep.version,
                token_current: self.ep.version <= self.pv,
            },
        }
        .text();
        self.send(socket, Message::Text(text.into())).await
    }

    /// Re-reads the user's permissions (after an `authz.user.updated`, or
    /// periodically): a deactivated account closes the socket; any change
    /// is sent as `ep.update` and applies at once; a token older than the
    /// permissions holds the stream until a current one arrives.
    async fn recheck(&mut self, socket: &mut WebSocket) -> Result<(), Close> {
        let ep = match self.state.authz.effective(self.user).await {
            Ok(Some(ep)) => ep,
            Ok(None) => return Err(Close(close::ACCOUNT_DISABLED, "account_disabled")),
            Err(_) => {
                // A change may have been announced that cannot be read:
                // hold the stream rather than serve it under old rights.
                self.unverified_since.get_or_insert_with(Instant::now);
                return Ok(());
            }
        };
        if !ep.active {
            return Err(Close(close::ACCOUNT_DISABLED, "account_disabled"));
        }
        let was_unverified = self.unverified_since.take().is_some();
        if ep.version != self.ep.version {
            self.ep = ep;
            if self.ep.version > self.pv && self.stale_since.is_none() {
                self.stale_since = Some(Instant::now());
            }
            self.send_ep(socket).await?;
        }
        if was_unverified {
            self.release(socket).await?;
        }
        Ok(())
    }

    async fn on_client(&mut self, socket: &mut WebSocket, m: Message) -> Result<(), Close> {
        self.last_heard = Instant::now();
        let text = match m {
            Message::Text(t) => t,
            Message::Pong(_) | Message::Ping(_) => return Ok(()),
            Message::Binary(_) => return Err(Close(close::POLICY, "binary_frame")),
            Message::Close(_) => return Ok(()),
        };
        if !self.bucket.take() {
            return Err(Close(close::POLICY, "rate_limited"));
        }
        match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Ping) => {
                let text = ServerFrame {
                    id: self.cursor,
                    body: ServerBody::Pong {},
                }
                .text();
                self.send(socket, Message::Text(text.into())).await
            }
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
        self.unverified_since = None;
        self.send_ep(socket).await?;
        if self.stale_since.take().is_some() || self.pending_resync.is_some() {
            self.release(socket).await?;
        }
        Ok(())
    }

    async fn error(
        &self,
        socket: &mut WebSocket,
        code: &'static str,
        message: &'static str,
    ) -> Result<(), Close> {
        let text = ServerFrame {
            id: self.cursor,
            body: ServerBody::Error { code, message },
        }
        .text();
        self.send(socket, Message::Text(text.into())).await
    }
}

/// Client frames allowed: `rate` per second, up to `burst` at once.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10.0, 3.0);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        std::thread::sleep(Duration::from_millis(120));
        assert!(b.take());
        assert!(!b.take());
    }

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
