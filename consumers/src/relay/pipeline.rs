//! The active relay's loop: read due rows after a cursor, publish them on one
//! confirm-mode channel with several batches in flight, and mark each batch
//! as soon as its confirms are in. Reading runs on the leader's own
//! connection, so a relay that loses it stops publishing at once; marking
//! runs beside it on a pool connection.

use std::{collections::VecDeque, time::Instant};

use broker_config::{Publisher, connection::connect_with_retry, topology};
use chrono::Utc;
use lapin::PublisherConfirm;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    RelayMetrics,
    rows::{self, Prepared, Published, Row},
};
use crate::config::RelayConfig;

/// Marks confirmed batches on a connection of its own while the pipeline
/// goes on reading and publishing. Marking is safe from any connection: a
/// confirmed row is published whoever marks it. The connection's settings
/// are made once, so a batch of published rows costs one statement.
struct Marker {
    jobs: mpsc::Sender<Mark>,
    task: tokio::task::JoinHandle<()>,
}

enum Mark {
    Batch {
        done: Vec<i64>,
        failed: Vec<i64>,
    },
    /// Answers once every earlier batch is marked (or the first error).
    Flush(oneshot::Sender<Result<(), sqlx::Error>>),
}

impl Marker {
    fn start(pool: PgPool, max_attempts: i32, metrics: RelayMetrics) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Mark>(64);
        let task = tokio::spawn(async move {
            let mut error: Option<sqlx::Error> = None;
            let mut conn: Option<PgConnection> = None;
            while let Some(job) = rx.recv().await {
                match job {
                    Mark::Batch { done, failed } => {
                        if error.is_some() {
                            continue;
                        }
                        let marked = async {
                            if conn.is_none() {
                                conn = Some(marking_connection(&pool).await?);
                            }
                            let Some(c) = conn.as_mut() else {
                                return Err(sqlx::Error::PoolClosed);
                            };
                            if failed.is_empty() {
                                return rows::mark_done(c, &done).await;
                            }
                            let mut tx = sqlx::Connection::begin(c).await?;
                            rows::mark_done(&mut tx, &done).await?;
                            rows::mark_failed(
                                &mut tx,
                                &failed,
                                "broker did not confirm the publish",
                                max_attempts,
                            )
                            .await?;
                            tx.commit().await
                        }
                        .await;
                        match marked {
                            Ok(()) => metrics.published(done.len() as u64),
                            Err(e) => {
                                conn = None;
                                error = Some(e);
                            }
                        }
                    }
                    Mark::Flush(reply) => {
                        let _ = reply.send(error.take().map_or(Ok(()), Err));
                    }
                }
            }
        });
        Self { jobs, task }
    }

    async fn mark(&self, done: Vec<i64>, failed: Vec<i64>) {
        let _ = self.jobs.send(Mark::Batch { done, failed }).await;
    }

    async fn flush(&self) -> Result<(), sqlx::Error> {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Mark::Flush(tx)).await.is_err() {
            return Err(sqlx::Error::PoolClosed);
        }
        rx.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }

    async fn stop(self) -> Result<(), sqlx::Error> {
        let flushed = self.flush().await;
        drop(self.jobs);
        let _ = self.task.await;
        flushed
    }
}

/// The marker's connection: rows by primary key, whatever stale statistics
/// say, with the plan made once (it was planned afresh at every mark); a
/// lost commit only means a republish.
async fn marking_connection(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    let mut conn = pool.connect_options().connect().await?;
    for setting in [
        "SET enable_seqscan = off",
        "SET enable_bitmapscan = off",
        "SET synchronous_commit = off",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        sqlx::query(setting).execute(&mut conn).await?;
    }
    Ok(conn)
}

/// A published batch waiting for its confirms.
struct InFlight {
    rows: Vec<Row>,
    confirms: Vec<PublisherConfirm>,
}

/// Leads until `shutdown` (Ok) or until the leader's database connection
/// fails (Err). A broker that goes away is reconnected to without giving up
/// leadership; the rows it did not confirm stay pending and are read again.
pub async fn lead(
    conn: &mut PgConnection,
    pool: &PgPool,
    amqp_url: &str,
    config: &RelayConfig,
    metrics: &RelayMetrics,
    wake: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    while !shutdown.is_cancelled() {
        let Some((amqp, publisher)) = connect(amqp_url, shutdown).await else {
            return Ok(());
        };
        let marker = Marker::start(pool.clone(), config.max_attempts, metrics.clone());
        let outcome =
            run_pipeline(conn, &publisher, &marker, config, metrics, wake, shutdown).await;
        let marked = marker.stop().await;
        let _ = amqp.close(200, "bye".into()).await;
        let broker_lost = outcome?;
        marked?;
        if broker_lost {
            tracing::warn!("broker connection lost; unconfirmed rows stay pending");
        }
    }
    Ok(())
}

async fn connect(
    amqp_url: &str,
    shutdown: &CancellationToken,
) -> Option<(lapin::Connection, Publisher)> {
    loop {
        let conn = connect_with_retry(amqp_url, "relay", shutdown).await?;
        let ready = async {
            let ch = conn.create_channel().await?;
            topology::declare(&ch, &topology::topology()).await?;
            let _ = ch.close(200, "declared".into()).await;
            anyhow::Ok(Publisher::new(&conn).await?)
        }
        .await;
        match ready {
            Ok(publisher) => {
                tracing::info!("relay connected to RabbitMQ");
                return Some((conn, publisher));
            }
            Err(e) => {
                tracing::warn!(error = %e, "preparing the broker failed; retrying");
                let _ = conn.close(200, "retry".into()).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Runs until shutdown (`Ok(false)`) or until the broker fails (`Ok(true)`).
async fn run_pipeline(
    conn: &mut PgConnection,
    publisher: &Publisher,
    marker: &Marker,
    config: &RelayConfig,
    metrics: &RelayMetrics,
    wake: &mut watch::Receiver<u64>,
    shutdown: &CancellationToken,
) -> Result<bool, sqlx::Error> {
    let max_in_flight = config.batch_size.max(1) as usize * config.pipeline_depth.max(1);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut rows_in_flight = 0;
    // Rows at or below the cursor were read in this pass. A pass ends when a
    // read comes back short (or after a poll interval under constant load);
    // then, with nothing in flight, reading starts again from the lowest
    // pending row, which picks up rows that had to wait for an earlier row of
    // their aggregate and rows whose transaction committed late.
    let mut cursor = 0_i64;
    let mut pass_over = false;
    let mut published_in_pass = false;
    // Whether the pass ended on a short read, and whether any read of it held
    // rows back: a pass that read to the end and held nothing back published
    // every row due when its last read began (see the end of the loop).
    let mut ended_short = false;
    let mut held_in_pass = false;
    let mut pass_started = Instant::now();
    let mut planned = Instant::now();
    // When the outbox's statistics were last refreshed because of a slow
    // read (none yet).
    let mut analysed: Option<Instant> = None;
    let mut published = Published::default();
    loop {
        if shutdown.is_cancelled() && in_flight.is_empty() {
            return Ok(false);
        }
        if !pass_over && !shutdown.is_cancelled() && rows_in_flight < max_in_flight {
            wake.borrow_and_update();
            let read_started = Instant::now();
            let read = match rows::read(conn, cursor, config.batch_size, &mut published).await {
                Ok(read) => {
                    // A slow read runs a plan made from statistics of
                    // another outbox (`rows::SLOW_READ`): refresh them, at
                    // most once per `ANALYZE_AT_MOST_EVERY`. The rows it
                    // read are valid.
                    let took = read_started.elapsed();
                    if took >= rows::SLOW_READ
                        && analysed.is_none_or(|at| at.elapsed() >= rows::ANALYZE_AT_MOST_EVERY)
                    {
                        tracing::warn!(
                            read_ms = took.as_millis() as u64,
                            "relay read slow; analysing the outbox"
                        );
                        rows::analyze(conn).await?;
                        (analysed, planned) = (Some(Instant::now()), Instant::now());
                    }
                    read
                }
                Err(e) if rows::is_timeout(&e) => {
                    // The extreme of the same: statistics of a much smaller
                    // backlog (an outbox that filled up faster than
                    // autovacuum analyses it). Refresh them and read again.
                    tracing::warn!("relay read timed out; analysing the outbox");
                    rows::analyze(conn).await?;
                    (analysed, planned) = (Some(Instant::now()), Instant::now());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = read.last else {
                pass_over = true;
                ended_short = true;
                continue;
            };
            cursor = last;
            let read_all = (read.count as i64) < config.batch_size;
            held_in_pass |= read.rows.len() < read.count;
            let rows = read.rows;
            // A read that could publish nothing after this pass published
            // something is held back by rows in flight: reading on would
            // only walk the backlog behind them. Before that, nothing of the
            // pass is in flight, so the rows wait behind ones backing off:
            // read on past them to the other aggregates.
            pass_over = read_all
                || (rows.is_empty() && published_in_pass)
                || pass_started.elapsed() >= config.poll_interval;
            ended_short = read_all;
            if rows.is_empty() {
                continue;
            }
            published_in_pass = true;
            let prepared = match Prepared::new(&rows) {
                Ok(p) => p,
                Err(e) => {
                    // Never an empty body: nothing of the batch goes out, the
                    // rows stay pending, and the relay starts over loudly.
                    tracing::error!(error = %e, "an envelope did not encode; nothing published");
                    return Ok(true);
                }
            };
            let confirms = match publisher.send(&prepared.outgoing(&rows)).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "publishing failed");
                    return Ok(true);
                }
            };
            drop(prepared);
            rows_in_flight += rows.len();
            in_flight.push_back(InFlight { rows, confirms });
            continue;
        }
        if let Some(batch) = in_flight.pop_front() {
            rows_in_flight -= batch.rows.len();
            let results = match Publisher::confirmations(batch.confirms).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for confirms failed");
                    return Ok(true);
                }
            };
            // Fault-injection point for the crash tests (compiled out without
            // the `failpoints` feature): die after the broker confirmed,
            // before the rows are marked done.
            fail::fail_point!("relay-after-publish", |_| std::process::abort());
            let confirmed_at = Utc::now();
            let mut done = Vec::with_capacity(batch.rows.len());
            let mut failed = Vec::new();
            for (row, result) in batch.rows.iter().zip(&results) {
                match result {
                    Ok(()) => {
                        done.push(row.id);
                        metrics.record_confirm(
                            &row.event_type,
                            (confirmed_at - row.created_at).as_seconds_f64(),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(outbox_id = row.id, event_type = %row.event_type, error = %e, "publish not confirmed");
                        failed.push(row.id);
                    }
                }
            }
            let refused = !failed.is_empty();
            marker.mark(done, failed).await;
            if refused {
                // A channel that saw nacks may keep refusing after the broker
                // recovered (a quorum queue caches "over limit" per channel):
                // start over on a fresh connection once the batches in
                // flight are settled.
                for batch in in_flight.drain(..) {
                    if let Ok(results) = Publisher::confirmations(batch.confirms).await {
                        let done = batch
                            .rows
                            .iter()
                            .zip(&results)
                            .filter(|(_, r)| r.is_ok())
                            .map(|(row, _)| row.id)
                            .collect();
                        marker.mark(done, Vec::new()).await;
                    }
                }
                return Ok(true);
            }
            continue;
        }
        // Nothing in flight and the pass is over: once every mark is written
        // (so no confirmed row is read again), start a new pass. Wait for a
        // wake first (or the poll interval) if the last pass published
        // nothing (it found no rows, or only rows held back behind one that
        // is not yet due), and also if it read to the end and held nothing
        // back: it published every row due when its last read began, and a
        // row committed since comes with a wake, which writers send after
        // their commit and which `wake.changed()` returns at once when it
        // came during the pass. Under a steady stream that wake is already
        // there; between bursts it saves a read that would find nothing.
        marker.flush().await?;
        if planned.elapsed() >= rows::REPLAN_EVERY {
            rows::replan(conn).await?;
            planned = Instant::now();
        }
        let idle = !published_in_pass || (ended_short && !held_in_pass);
        cursor = 0;
        published.clear();
        pass_over = false;
        published_in_pass = false;
        ended_short = false;
        held_in_pass = false;
        pass_started = Instant::now();
        if idle {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = wake.changed() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
    }
}
