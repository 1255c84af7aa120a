//! A local HTTP receiver that plays Slack's incoming webhook: it records
//! every post with the time it arrived, and answers each one as scripted
//! (by default 200 `ok`).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::Value;

/// How the receiver answers one post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Status(u16),
    /// 429 with `Retry-After` seconds.
    TooMany(u64),
}

/// One post as it arrived.
#[derive(Debug, Clone)]
pub struct Post {
    pub at: Instant,
    pub body: Value,
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    posts: Vec<Post>,
}

#[derive(Clone)]
pub struct SlackReceiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let mut inner = inner.lock().unwrap();
    let reply = inner.script.pop_front().unwrap_or(Reply::Ok);
    let (status, resp) = match reply {
        Reply::Ok => (200, (StatusCode::OK, "ok").into_response()),
        Reply::Status(code) => (
            code,
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "scripted",
            )
                .into_response(),
        ),
        Reply::TooMany(secs) => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "rate_limited").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            (429, r)
        }
    };
    inner.posts.push(Post {
        at: Instant::now(),
        body,
        answered: status,
    });
    resp
}

impl SlackReceiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/services/T000/B000/test", post(receive))
            .with_state(inner.clone());
        let (addr, server) = crate::serve_on_loopback(app).await;
        Self {
            url: format!("http://{addr}/services/T000/B000/test"),
            inner,
            _server: server,
        }
    }

    /// The answers to the next posts, in order; then 200 again.
    pub fn script(&self, replies: &[Reply]) {
        self.inner.lock().unwrap().script = replies.iter().copied().collect();
    }

    /// Every post so far.
    pub fn posts(&self) -> Vec<Post> {
        self.inner.lock().unwrap().posts.clone()
    }

    /// The posts answered 200: what Slack shows.
    pub fn accepted(&self) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.answered == 200)
            .collect()
    }
}
