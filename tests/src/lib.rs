//! Test harness: a fresh database and RabbitMQ vhost per test, the real
//! binaries as child processes, a TCP proxy the test owns to cut links, and
//! small HTTP helpers. Used by the end-to-end, chaos and benchmark suites.

// Test support: failing loudly at the first broken assumption is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod accounts;
pub mod api;
pub mod blueprint;
pub mod cluster;
pub mod env;
pub mod http;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod slack;
pub mod system;
pub mod ws;

pub use env::TestEnv;
pub use process::Proc;
pub use proxy::TcpProxy;

use std::time::Duration;

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1.
///
/// Never the same port twice in one test process: the kernel may hand a
/// just-released port out again at once, and a process given the same port
/// for `PORT` and `METRICS_PORT` cannot start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Serves `app` on a free loopback port until dropped (the local stand-ins
/// for Slack and an OTLP collector); returns its address.
pub async fn serve_on_loopback(
    app: axum::Router,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<tokio::task::JoinHandle<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, std::sync::Arc::new(server))
}
