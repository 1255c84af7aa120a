//! The HTTP side of `GET /api/ws`: the origin check and the connection
//! limits, answered before the upgrade (`403`, `429`, `503`), and the
//! accounting of the sockets an instance holds.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    extract::{ConnectInfo, State, ws::WebSocketUpgrade},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};

use super::Limits;
use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    realtime::hub::Hub,
};

/// The gateway's shared parts.
pub struct Gateway {
    pub hub: Arc<Hub>,
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
        hub: Arc<Hub>,
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
pub(super) struct Pending(Arc<Gateway>, IpAddr);

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
#[utoipa::path(
    get,
    path = "/api/ws",
    tag = "system",
    summary = "Open the realtime WebSocket",
    description = "No token in the URL: the socket authenticates with its first frame, \
`{\"type\":\"auth\",\"token\":\"<access token>\"}`, within 5 s. A refused token closes the \
socket with a 4xxx close code, never an HTTP 401. Frames and close codes: docs/WEBSOCKET.md.",
    responses(
        (status = 101, description = "Switching protocols: the socket is open and waits for its `auth` frame"),
        (status = 400, description = "`bad_request`: not a WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version: 13` missing)", body = ErrorBody),
        (status = 403, description = "`origin_not_allowed`: an `Origin` not in `CORS_ORIGINS`", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: this client holds too many sockets still to authenticate", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`unavailable`: this instance holds as many sockets as it may", body = ErrorBody),
    )
)]
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
            super::serve(state, socket, pending).await;
        })
}
