//! Connecting to RabbitMQ, with back-off while the broker is unreachable.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties, types::LongString};
use tokio_util::sync::CancellationToken;

/// Connects once.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    Connection::connect(url, props).await
}

/// Connects, retrying with exponential back-off (capped at 5 s) until it
/// succeeds or `shutdown` is cancelled (then `None`).
pub async fn connect_with_retry(
    url: &str,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delay = Duration::from_millis(100);
    loop {
        match connect(url, name).await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "RabbitMQ unreachable");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
