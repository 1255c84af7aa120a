//! The outbox relay (DESIGN §5): the only publisher of outbox rows.
//!
//! Each worker claims due `pending` rows with `FOR UPDATE SKIP LOCKED`, only
//! rows with no earlier pending row of the same aggregate, publishes them with
//! pipelined confirms and marks them `done` in one statement, all inside the
//! claiming transaction. A relay that dies before the commit leaves its rows
//! `pending` and unlocked, so they are published again (consumers drop the
//! duplicate by event id). Any number of workers and relay processes may run.

mod claim;
mod maintenance;
mod metrics;

use std::{sync::Arc, time::Duration};

use broker_config::{Publisher, connection::connect_with_retry, topology};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use claim::{BatchOutcome, relay_batch};
pub use maintenance::purge;
pub use metrics::RelayMetrics;

use crate::config::RelayConfig;

/// Runs the relay until `shutdown`: workers, the LISTEN wake-up, the gauges
/// and the retention clean-up.
pub async fn run(
    pool: PgPool,
    amqp_url: String,
    config: RelayConfig,
    metrics: RelayMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (wake_tx, wake_rx) = watch::channel(0u64);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(listen(pool.clone(), wake_tx, shutdown.clone()));
    tasks.spawn(maintenance::gauges(
        pool.clone(),
        config.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(maintenance::retention(
        pool.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let config = Arc::new(config);
    for worker in 0..config.workers {
        tasks.spawn(work(
            worker,
            pool.clone(),
            amqp_url.clone(),
            config.clone(),
            metrics.clone(),
            wake_rx.clone(),
            shutdown.clone(),
        ));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                return Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// `LISTEN outbox`: bumps the wake-up counter on every notification. Polling
/// covers the time the listener is reconnecting.
async fn listen(
    pool: PgPool,
    wake: watch::Sender<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    while !shutdown.is_cancelled() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen("outbox").await {
            tracing::warn!(error = %e, "LISTEN outbox failed; polling meanwhile");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => match n {
                    Ok(_) => wake.send_modify(|v| *v = v.wrapping_add(1)),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost");
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn work(
    worker: usize,
    pool: PgPool,
    amqp_url: String,
    config: Arc<RelayConfig>,
    metrics: RelayMetrics,
    mut wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = format!("relay-{worker}");
    let mut publisher: Option<(lapin::Connection, Publisher)> = None;
    let mut db_backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let (_, pubr) = match &publisher {
            Some(p) if p.1.is_connected() => p,
            _ => {
                let Some(conn) = connect_with_retry(&amqp_url, &name, &shutdown).await else {
                    break;
                };
                let declared = async {
                    let ch = conn.create_channel().await?;
                    topology::declare(&ch, &topology::topology()).await?;
                    let _ = ch.close(200, "declared".into()).await;
                    anyhow::Ok(Publisher::new(&conn).await?)
                }
                .await;
                match declared {
                    Ok(p) => {
                        tracing::info!(worker, "relay connected to RabbitMQ");
                        publisher = Some((conn, p));
                    }
                    Err(e) => {
                        tracing::warn!(worker, error = %e, "declaring topology failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
        };
        wake.borrow_and_update();
        match relay_batch(&pool, pubr, &config, &metrics).await {
            Ok(BatchOutcome { claimed, .. }) if claimed > 0 => {
                db_backoff = Duration::from_millis(100);
            }
            Ok(_) => {
                db_backoff = Duration::from_millis(100);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
            }
            Err(claim::RelayError::Broker(e)) => {
                tracing::warn!(worker, error = %e, "broker failed mid-batch; rows stay pending");
                publisher = None;
            }
            Err(claim::RelayError::Database(e)) => {
                tracing::warn!(worker, error = %e, backoff_ms = db_backoff.as_millis() as u64, "database error");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(db_backoff) => {}
                }
                db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    if let Some((conn, _)) = publisher {
        let _ = conn.close(200, "bye".into()).await;
    }
    Ok(())
}
