//! The outbox relay (DESIGN §5): the only publisher of outbox rows.
//!
//! One relay is active at a time: it holds a session advisory lock on its own
//! connection (a lease that dies with the process or the connection); other
//! instances wait as hot standbys and take over within a poll interval. The
//! active relay reads due `pending` rows in id order, only rows with no
//! earlier pending row of the same aggregate, publishes them with pipelined
//! confirms (several batches in flight on one channel) and marks each batch
//! `done` in one statement once confirmed. A relay that dies before marking
//! leaves its rows `pending`, so they are published again and consumers drop
//! the duplicate by event id.

mod maintenance;
pub(crate) mod metrics;
mod pipeline;
mod rows;

use std::time::Duration;

use sqlx::{ConnectOptions, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use maintenance::purge;
pub use metrics::RelayMetrics;

use crate::config::RelayConfig;

/// Key of the session advisory lock held by the active relay.
pub const LEADER_LOCK: i64 = 0x0066_6173_7470_7265; // "fastpre"

/// Runs the relay until `shutdown`: leadership and the pipeline, the LISTEN
/// wake-up, the gauges and the retention clean-up.
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
    tasks.spawn(leadership(
        pool,
        amqp_url,
        config,
        metrics,
        wake_rx,
        shutdown.clone(),
    ));
    while let Some(done) = tasks.join_next().await {
        let failure = match done {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => e.into(),
        };
        shutdown.cancel();
        return Err(failure);
    }
    Ok(())
}

/// Waits to become the active relay, leads, and starts over when the
/// leader's connection is lost.
async fn leadership(
    pool: PgPool,
    amqp_url: String,
    config: RelayConfig,
    metrics: RelayMetrics,
    mut wake: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let options = pool.connect_options();
    while !shutdown.is_cancelled() {
        let mut conn = match options.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot reach PostgreSQL");
                pause(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut announced_standby = false;
        let leader = loop {
            match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut conn)
                .await
            {
                Ok(true) => break true,
                Ok(false) => {
                    metrics.set_leader(false);
                    if !announced_standby {
                        tracing::info!("another relay is active; standing by");
                        announced_standby = true;
                    }
                    if !pause(&shutdown, config.poll_interval).await {
                        break false;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "standby lost its connection");
                    break false;
                }
            }
        };
        if leader {
            // Losing a mark-done commit in a database crash only means the
            // rows are published again, which consumers absorb.
            sqlx::query("SET synchronous_commit = off")
                .execute(&mut conn)
                .await
                .ok();
            // The relay's read is built for index access: the pending index in
            // id order and one probe per row, stopping at the batch size.
            // Statistics from an empty outbox (a fresh deploy, before
            // autovacuum analyses it) would make the planner pick scans over
            // the whole table, per read. This session never wants those, nor
            // JIT compilation, which the cost of a disabled plan node would
            // trigger on every read (half a second of LLVM per statement).
            // Its read is planned once per `rows::REPLAN_EVERY`, not per
            // execution (`rows::read`).
            for setting in [
                "SET jit = off",
                "SET plan_cache_mode = force_generic_plan",
                "SET enable_seqscan = off",
                "SET enable_bitmapscan = off",
                "SET enable_sort = off",
                "SET enable_hashjoin = off",
                "SET enable_mergejoin = off",
                rows::READ_TIMEOUT,
            ] {
                if let Err(e) = sqlx::query(setting).execute(&mut conn).await {
                    tracing::warn!(setting, error = %e, "session setting refused");
                }
            }
            metrics.set_leader(true);
            tracing::info!("this relay is now the active one");
            let result = pipeline::lead(
                &mut conn, &pool, &amqp_url, &config, &metrics, &mut wake, &shutdown,
            )
            .await;
            metrics.set_leader(false);
            if let Err(e) = result {
                tracing::warn!(error = %e, "leader lost its database connection; stepping down");
                pause(&shutdown, Duration::from_secs(1)).await;
            }
        }
        let _ = sqlx::Connection::close(conn).await;
    }
    Ok(())
}

/// Sleeps unless shut down first; returns whether it slept the whole time.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
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
