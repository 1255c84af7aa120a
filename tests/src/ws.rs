//! A WebSocket client for the realtime gateway, as a frontend would use it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::{HeaderValue, StatusCode},
        protocol::frame::coding::CloseCode,
    },
};

/// What the server said next.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    Frame(Value),
    /// The close code and reason, or `None` when the connection just ended.
    Closed(Option<(u16, String)>),
    Silence,
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

fn url(api: &str) -> String {
    format!("{}/api/ws", api.replacen("http", "ws", 1))
}

impl Ws {
    /// Opens a socket (no Origin header, as a non-browser client).
    pub async fn open(api: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url(api))
            .await
            .expect("websocket upgrade");
        Ws { stream }
    }

    /// Opens a socket as a page from `origin`; the HTTP status when refused.
    pub async fn open_from(api: &str, origin: &str) -> Result<Ws, StatusCode> {
        let mut req = url(api).into_client_request().expect("request");
        req.headers_mut().insert(
            "origin",
            HeaderValue::from_str(origin).expect("origin header"),
        );
        Self::upgrade(req).await
    }

    /// Opens a socket (no Origin); the HTTP status when refused.
    pub async fn try_open(api: &str) -> Result<Ws, StatusCode> {
        Self::upgrade(url(api).into_client_request().expect("request")).await
    }

    async fn upgrade(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Ws, StatusCode> {
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(Ws { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status()),
            Err(e) => panic!("websocket upgrade: {e}"),
        }
    }

    /// Opens, authenticates and returns the socket with its `ep.update`.
    pub async fn connect(api: &str, token: &str) -> (Ws, Value) {
        let mut ws = Ws::open(api).await;
        ws.send(json!({"type": "auth", "token": token})).await;
        let ep = ws.expect("ep.update").await;
        (ws, ep)
    }

    /// Opens and resumes after `since`; returns the socket and its `ep.update`.
    pub async fn resume(api: &str, token: &str, since: i64) -> (Ws, Value) {
        let mut ws = Ws::open(api).await;
        ws.send(json!({"type": "resume", "token": token, "since": since}))
            .await;
        let ep = ws.expect("ep.update").await;
        (ws, ep)
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        let _ = self.stream.send(Message::Text(text.into())).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        let _ = self.stream.send(Message::Binary(bytes.into())).await;
    }

    /// The next frame, close, or silence after `wait`. Pings are answered by
    /// the library and not reported.
    pub async fn next(&mut self, wait: Duration) -> Heard {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Heard::Silence,
                Ok(None) => return Heard::Closed(None),
                Ok(Some(Err(_))) => return Heard::Closed(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Heard::Frame(serde_json::from_str(&t).expect("frames are JSON"));
                }
                Message::Close(frame) => {
                    return Heard::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                _ => {}
            }
        }
    }

    /// The next frame, which must be of type `kind` (within 10 s).
    pub async fn expect(&mut self, kind: &str) -> Value {
        match self.next(Duration::from_secs(10)).await {
            Heard::Frame(f) if f["type"] == kind => f,
            other => panic!("expected a {kind} frame, heard {other:?}"),
        }
    }

    /// Frames until `done` says so (the frame that satisfied it included),
    /// within `wait`.
    pub async fn until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            if done(&frames) {
                return frames;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Heard::Frame(f) => frames.push(f),
                other => panic!(
                    "stream ended ({other:?}) after {} frames: {frames:#?}",
                    frames.len()
                ),
            }
        }
    }

    /// Every frame heard until `quiet` passes without one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            match self.next(quiet).await {
                Heard::Frame(f) => frames.push(f),
                Heard::Silence => return frames,
                other => panic!("stream ended ({other:?}) after {frames:#?}"),
            }
        }
    }

    /// Waits for the server to close; returns the code and reason.
    pub async fn closed(&mut self, wait: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Heard::Frame(_) => {}
                Heard::Closed(c) => return c,
                Heard::Silence => panic!("the server did not close within {wait:?}"),
            }
        }
    }

    /// The underlying stream, for a client that reads frames itself (the
    /// benchmark).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.stream
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}
