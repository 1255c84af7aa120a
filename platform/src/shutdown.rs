//! One cancellation token per process, cancelled on SIGTERM or SIGINT.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled when the process receives SIGTERM or
/// SIGINT. Servers and consumers watch it to finish in-flight work and stop.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; shutdown only by kill");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs `fut`; if it ends with an error, logs it and cancels `token` so the
/// rest of the process stops loudly instead of limping on.
pub async fn supervise<F, E>(name: &'static str, token: CancellationToken, fut: F)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match fut.await {
        Ok(()) => tracing::info!(task = name, "task finished"),
        Err(e) => {
            tracing::error!(task = name, error = %e, "task failed; stopping the process");
            token.cancel();
        }
    }
}
