//! The `/metrics` endpoint every process serves on `METRICS_PORT`.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Telemetry;

/// A router with `/metrics` (Prometheus text) and `/health` (liveness).
pub fn router(telemetry: Telemetry) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/health", get(|| async { "ok" }))
        .with_state(telemetry)
}

async fn render(State(t): State<Telemetry>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.render(),
    )
}

/// Serves `/metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_http(listener, router(telemetry), shutdown).await
}

/// Binds the metrics port (`bind`:`port`) and serves `/metrics` there in
/// the background until `shutdown`; a metrics server that fails stops the
/// process (it cancels `shutdown`).
pub async fn start(
    bind: std::net::IpAddr,
    port: u16,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("binding METRICS_PORT {port}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    tokio::spawn(crate::shutdown::supervise(
        "metrics-server",
        shutdown.clone(),
        serve(listener, telemetry, shutdown),
    ));
    Ok(())
}

/// A configuration parsed, or the process ended with exit code 2 and the
/// reason on stderr: a process must not start half-configured.
pub fn config_or_exit<T, E: std::fmt::Display>(parsed: Result<T, E>) -> T {
    match parsed {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    }
}

/// Serves `app` on `listener` with TCP_NODELAY (small request/response pairs
/// must not wait on Nagle and delayed ACKs) until `shutdown`, then lets
/// in-flight requests finish.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
