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
