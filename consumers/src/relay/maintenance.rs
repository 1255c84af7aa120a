//! Background chores of the relay: backlog gauges and retention clean-up.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::RelayMetrics;
use crate::config::RelayConfig;

/// Samples the backlog into the `outbox_*` gauges.
pub async fn gauges(
    pool: PgPool,
    config: RelayConfig,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(config.gauge_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // Each part is answered from a partial index, never by a scan of
        // the (mostly done) table.
        let sample: Result<(i64, f64, i64), _> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox WHERE status = 'pending'),
                    COALESCE((SELECT EXTRACT(EPOCH FROM now() - created_at)::float8
                              FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1), 0),
                    (SELECT count(*) FROM outbox WHERE status = 'failed')",
        )
        .fetch_one(&pool)
        .await;
        match sample {
            Ok((pending, age, failed)) => metrics.set_backlog(pending, age, failed),
            Err(e) => tracing::warn!(error = %e, "sampling the outbox backlog failed"),
        }
    }
}

/// Deletes `done` outbox rows and idempotency claims older than the
/// retention, in batches so no statement holds locks for long.
pub async fn retention(
    pool: PgPool,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(config.cleanup_interval);
    let retention_secs = config.retention.as_secs_f64();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match purge(&pool, retention_secs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "outbox retention clean-up"),
            Err(e) => tracing::warn!(error = %e, "outbox retention clean-up failed"),
        }
    }
}

/// One clean-up pass; returns how many rows it deleted.
pub async fn purge(pool: &PgPool, retention_secs: f64) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 5_000;
    let mut total = 0;
    for sql in [
        "DELETE FROM outbox WHERE id IN (
           SELECT id FROM outbox WHERE status = 'done'
             AND published_at < now() - make_interval(secs => $1) LIMIT $2)",
        "DELETE FROM processed_messages WHERE (consumer, message_id) IN (
           SELECT consumer, message_id FROM processed_messages
            WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
    ] {
        loop {
            let n = sqlx::query(sql)
                .bind(retention_secs)
                .bind(BATCH)
                .execute(pool)
                .await?
                .rows_affected();
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
    }
    Ok(total)
}
