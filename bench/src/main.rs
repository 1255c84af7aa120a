//! Benchmarks that print figures (and write them to `bench-results/`).
//!
//! `fastprep-bench relay`: raw lapin publishing with pipelined confirms vs
//! the relay draining pre-inserted outbox rows, end-to-end latency at a
//! steady request rate, and the peak memory of every process.
//!
//! `fastprep-bench authz`: the cached permission check, `/api/auth/me/ep`
//! beside nginx under wrk, and fan-out propagation (see `authz.rs`).
//!
//! `fastprep-bench realtime`: memory per idle WebSocket, event fan-out
//! latency to many sockets on two instances, `ep.update` latency (see
//! `realtime.rs`).
//!
//! `fastprep-bench alerts`: threshold crossing to Slack, and the alerts
//! process's memory (see `alerts.rs`).
//!
//! `fastprep-bench attachments`: presigning under 50 connections, and a
//! file from upload to the sandbox at 1, 20 and 100 MiB with each process's
//! memory (see `attachments.rs`).
//!
//! `fastprep-bench footprint`: each deployed binary's size, and each
//! process's time from exec to healthy and resident memory at rest (see
//! `footprint.rs`).
//!
//! `fastprep-bench replay`: `fastprep-ops dlq replay` of dead letters back
//! to tg-delivery beside raw confirmed publishing (see `replay.rs`).
//!
//! `fastprep-bench soak`: replies, inbound, sockets and permission changes
//! at once for N minutes, p50/p99 and each process's memory minute by
//! minute, a verdict on memory and exactly-once checks (see `soak.rs`).
//!
//! `fastprep-bench adapter`: the tg-adapter alone, its memory under sends,
//! inbound injections and the sandbox's listing, phase by phase (see
//! `adapter.rs`).
//!
//! `fastprep-bench all`: every benchmark in one run, each figure beside its
//! anchor and target, compared with the committed record (see `all.rs`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod adapter;
mod alerts;
mod all;
mod attachments;
mod authz;
mod footprint;
mod ramp;
mod realtime;
mod replay;
mod scale;
mod soak;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use fastprep_tests::{TestEnv, wait_for};
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{BasicProperties, options::*};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

/// A count of rounds or runs: a median needs at least one.
fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least 1, got `{raw}`"
        )),
    }
}

#[derive(Subcommand)]
enum Bench {
    /// Every benchmark in one run (about 20–25 min): relay, authz, realtime,
    /// alerts, attachments, replay, footprint; each figure beside its anchor
    /// and target, written to bench-results/all.json and compared with the
    /// committed record (exits 1 on a regression beyond the noise).
    All {
        /// Every bench shrunk to seconds, to smoke-test this command on the
        /// debug binaries: its figures mean nothing.
        #[arg(long)]
        quick: bool,
        /// Also the scale bench (the three-node cluster; long).
        #[arg(long)]
        with_scale: bool,
        /// Skip the comparison with the committed record.
        #[arg(long)]
        no_compare: bool,
        /// Compare with this record instead of `git show HEAD:bench-results/all.json`.
        #[arg(long, hide = true)]
        against: Option<std::path::PathBuf>,
    },
    /// Relay throughput vs raw publishing, end-to-end latency, memory.
    Relay {
        /// Events for the throughput phases.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Steady request rate of the latency phase, per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Length of the latency phase, seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Conversations the latency phase spreads its replies over.
        #[arg(long, default_value_t = 50)]
        chats: i64,
        /// Alternating raw/relay rounds of the throughput phases.
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        rounds: usize,
        /// Aggregates of the few-aggregates drain (rows spread round-robin).
        #[arg(long, default_value_t = 10)]
        aggregates: usize,
        /// Runs of the latency phase and the ramp.
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        runs: usize,
        /// Rate added per ramp step, replies/s.
        #[arg(long, default_value_t = 100)]
        ramp_step: u64,
        /// Highest rate the ramp tries.
        #[arg(long, default_value_t = 2_000)]
        ramp_max: u64,
        /// Length of each ramp step, seconds.
        #[arg(long, default_value_t = 6)]
        ramp_seconds: u64,
        /// A ramp step holds while its p99 stays at or under this, ms.
        #[arg(long, default_value_t = 50.0)]
        bound_ms: f64,
    },
    /// Cached permission check, /api/auth/me/ep vs nginx, fan-out propagation.
    Authz {
        /// Timed calls of the in-process check.
        #[arg(long, default_value_t = 200_000)]
        checks: usize,
        /// Length of each wrk round, seconds.
        #[arg(long, default_value_t = 8)]
        wrk_seconds: u64,
        /// Alternating nginx/API wrk rounds.
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        rounds: usize,
        /// Role changes of the fan-out phase.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Holders of the changed role.
        #[arg(long, default_value_t = 5)]
        holders: usize,
    },
    /// Threshold crossing → Slack latency, alerts memory.
    /// Delivery throughput with 1, 2 and 4 tg-delivery instances; the relay
    /// against a three-node cluster beside raw publishing to it.
    Scale {
        /// Replies queued for the delivery phases.
        #[arg(long, default_value_t = 3_000)]
        replies: usize,
        /// Chats the replies are spread over.
        #[arg(long, default_value_t = 100)]
        chats: usize,
        /// Events of the cluster's raw/relay rounds.
        #[arg(long, default_value_t = 50_000)]
        events: usize,
    },
    Alerts {
        /// Threshold crossings timed.
        #[arg(long, default_value_t = 100)]
        crossings: usize,
        /// FAIL_ALERT_THRESHOLD of the run.
        #[arg(long, default_value_t = 5)]
        threshold: usize,
    },
    /// Presigning rate and latency; a file from upload to the sandbox at
    /// 1, 20 and 100 MiB with the memory of the api, tg-delivery and adapter.
    Attachments {
        /// Length of each wrk round, seconds.
        #[arg(long, default_value_t = 8)]
        wrk_seconds: u64,
        /// wrk rounds of the download link.
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        rounds: usize,
        /// Users uploading at once (one connection each).
        #[arg(long, default_value_t = 50)]
        uploaders: usize,
        /// Uploads each (at most 50: the cap of unused uploads).
        #[arg(long, default_value_t = 40)]
        uploads_each: usize,
    },
    /// Replay of dead letters back to tg-delivery beside raw publishing,
    /// and fastprep-ops's memory.
    Replay {
        /// Dead letters replayed per round.
        #[arg(long, default_value_t = 10_000)]
        letters: usize,
        /// Rounds (raw publishing, then a replay, each).
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        rounds: usize,
    },
    /// Binary sizes; each process's start to healthy and idle RSS.
    Footprint {
        /// Starts of each process.
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        starts: usize,
        /// Seconds a process idles before its memory is read.
        #[arg(long, default_value_t = 5)]
        idle_seconds: u64,
    },
    /// Mixed-load soak: replies, inbound, open sockets and permission
    /// changes at once for N minutes; p50/p99 of each path and each
    /// process's memory minute by minute, a verdict on memory, exactly once.
    Soak {
        /// Measured minutes (after the warm-up).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Replies per second, open loop, over the chats and both API instances.
        #[arg(long, default_value_t = 200)]
        replies_per_sec: u64,
        /// Inbound messages injected per second.
        #[arg(long, default_value_t = 50)]
        inbound_per_sec: u64,
        /// WebSockets open and authenticated for the whole run.
        #[arg(long, default_value_t = 1_000)]
        sockets: usize,
        /// Role grants/revokes on an operator per minute.
        #[arg(long, default_value_t = 30)]
        perm_changes_per_min: u64,
        /// Chats (conversations) the traffic is spread over.
        #[arg(long, default_value_t = 50)]
        chats: i64,
        /// Unmeasured minutes of the same load first.
        #[arg(long, default_value_t = 1)]
        warmup_minutes: u64,
        /// Sockets reading everything whose frames are timed.
        #[arg(long, default_value_t = 4)]
        timed_sockets: usize,
        /// Length of a "minute", seconds (shortened for smoke tests only).
        #[arg(long, default_value_t = 60, hide = true)]
        seconds_per_minute: u64,
    },
    /// The tg-adapter alone on its sandbox backend: its memory under each
    /// load in turn (sends, inbound injections, the sandbox's listing), a
    /// fresh adapter per phase, with the soak's verdict on growth.
    Adapter {
        /// Phases, each a set of loads joined by `+`: sends, inbound,
        /// collect (list the sandbox's log, then reset it), list (no reset).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "sends,inbound,sends+collect,sends+list"
        )]
        phases: Vec<adapter::Phase>,
        /// Length of each phase, seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Sends per second (0: as fast as the callers go).
        #[arg(long, default_value_t = 0)]
        sends_per_sec: u64,
        /// Inbound injections per second (0: as fast as the callers go).
        #[arg(long, default_value_t = 0)]
        inbound_per_sec: u64,
        /// Concurrent callers of each load.
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        concurrency: usize,
        /// Seconds between listings of the sandbox's log.
        #[arg(long, default_value_t = 2)]
        list_every: u64,
    },
    /// WebSocket memory, event fan-out and ep.update latency.
    Realtime {
        /// Who reads each event.
        #[arg(long, value_enum, default_value_t = realtime::Audience::Scoped)]
        audience: realtime::Audience,
        /// Open sockets, split between two API instances.
        #[arg(long, default_value_t = 1_000)]
        sockets: usize,
        /// Events per second of the fan-out phase.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Length of the fan-out phase, seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Permission changes of the ep.update phase.
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
}

/// p50, p99 and max of sorted milliseconds, for the JSON figures.
fn ms(sorted: &[f64]) -> serde_json::Value {
    json!({
        "p50_ms": percentile(sorted, 0.50),
        "p99_ms": percentile(sorted, 0.99),
        "max_ms": sorted.last().copied().unwrap_or(f64::NAN),
        "samples": sorted.len(),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sample_payload(i: usize) -> serde_json::Value {
    json!({
        "message_id": uuid::Uuid::now_v7(),
        "conversation_id": uuid::Uuid::now_v7(),
        "tg_chat_id": 100_000 + i as i64,
        "text": "Hello! Your SAT practice test is booked for Saturday at 10:00.",
        "attachments": []
    })
}

/// (a) Raw lapin: publish `n` envelopes to the tg-delivery quorum queue with
/// pipelined confirms (a sliding window of outstanding confirms).
async fn raw_publish(env: &TestEnv, n: usize) -> f64 {
    let (conn, ch) = confirm_channel(env, "bench-raw").await;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            serde_json::to_vec(&json!({
                "id": uuid::Uuid::now_v7(), "type": "message.outgoing.v1", "occurred_at": Utc::now(),
                "aggregate_type": "message", "aggregate_id": uuid::Uuid::now_v7().to_string(),
                "data": sample_payload(i)
            }))
            .unwrap()
        })
        .collect();
    const WINDOW: usize = 2_000;
    let started = Instant::now();
    let mut in_flight: FuturesUnordered<lapin::PublisherConfirm> = FuturesUnordered::new();
    for body in &bodies {
        if in_flight.len() >= WINDOW {
            let c: lapin::Confirmation = in_flight.next().await.unwrap().unwrap();
            assert!(c.is_ack());
        }
        let confirm = ch
            .basic_publish(
                "fastprep.events".into(),
                "message.outgoing.v1".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
            .unwrap();
        in_flight.push(confirm);
    }
    while let Some(c) = in_flight.next().await {
        assert!(c.unwrap().is_ack());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    ch.queue_purge("tg-delivery".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
    rate
}

/// A confirm-mode channel to the processes' broker, the topology declared.
async fn confirm_channel(env: &TestEnv, name: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = broker_config::connection::connect(&env.processes_amqp_url(), name)
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    broker_config::topology::declare(&ch, &broker_config::topology::topology())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

/// (b) The relay draining `n` outbox rows committed in one transaction,
/// each of its own aggregate (`aggregates` 0) or spread round-robin over
/// `aggregates` of them (a few busy conversations: the relay keeps each
/// aggregate's rows in order).
async fn relay_drain(env: &TestEnv, n: usize, aggregates: usize) -> (f64, f64) {
    // Start from an empty outbox (earlier phases leave their done rows).
    sqlx::query("DELETE FROM outbox")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload)
         SELECT gen_random_uuid(), 'message.outgoing.v1', 'message',
                CASE WHEN $2 = 0 THEN gen_random_uuid()::text ELSE 'busy-' || (g % $2) END,
                jsonb_build_object('message_id', gen_random_uuid(), 'conversation_id', gen_random_uuid(),
                  'tg_chat_id', 100000 + g, 'attachments', '[]'::jsonb,
                  'text', 'Hello! Your SAT practice test is booked for Saturday at 10:00.')
         FROM generate_series(1, $1) g",
    )
    .bind(n as i64)
    .bind(aggregates as i64)
    .execute(&env.pool)
    .await
    .unwrap();
    // Woken as every writer wakes it, after the commit.
    schema::outbox::notify_relay(&env.pool).await;
    let started = Instant::now();
    // A cheap probe, so the measurement does not compete with the relay.
    loop {
        let pending: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending')")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if !pending {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status = 'done'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(done as usize, n, "every row published");
    // The published events are synthetic: drop them before real traffic.
    let conn = broker_config::connection::connect(&env.processes_amqp_url(), "bench-purge")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge("tg-delivery".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
    sqlx::query("DELETE FROM outbox")
        .execute(&env.pool)
        .await
        .unwrap();
    (n as f64 / elapsed, elapsed)
}

#[tokio::main]
async fn main() {
    // Parsed first: `--help` or a mistyped option exits here, before the
    // server's setting is touched.
    let cli = Cli::parse();
    let autovacuum = Autovacuum::on().await;
    // A bench that panics, or is stopped with Ctrl-C or SIGTERM, still puts
    // the setting back. On a signal the bench's future is dropped first,
    // which stops the processes it started.
    let stop = platform::shutdown::shutdown_token();
    let bench = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(bench_main(cli)));
    let code = tokio::select! {
        code = bench => code.unwrap_or(101),
        () = stop.cancelled() => {
            eprintln!("stopped by a signal; autovacuum is put back as it was");
            130
        }
    };
    if let Some(a) = autovacuum {
        a.restore().await;
    }
    std::process::exit(code);
}

/// Autovacuum for the run. A deployed PostgreSQL always runs it; without it
/// a benchmark's churn (a conversation row rewritten at every reply, each
/// outbox row written twice) leaves the hot tables mostly dead tuples, which
/// every later step walks: a soak at 200 replies/s found 134,090 dead
/// tuples beside the 50 live rows of `conversations` after 11 minutes, and
/// the reply path's throughput halved. The machine's PostgreSQL may have it
/// off (this machine's CI configuration does): a benchmark turns it on with
/// `ALTER SYSTEM` and a reload, and puts the setting back when it ends.
struct Autovacuum {
    pool: sqlx::PgPool,
}

impl Autovacuum {
    async fn on() -> Option<Self> {
        let url = format!(
            "{}/postgres",
            fastprep_tests::env::Services::from_env().postgres
        );
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .ok()?;
        let setting: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&pool)
            .await
            .ok()?;
        if setting == "on" {
            return None;
        }
        let turned = async {
            sqlx::query("ALTER SYSTEM SET autovacuum = on")
                .execute(&pool)
                .await?;
            sqlx::query("SELECT pg_reload_conf()")
                .execute(&pool)
                .await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        match turned {
            Ok(()) => {
                println!(
                    "PostgreSQL's autovacuum was off: on for this run (ALTER SYSTEM), put back at the end"
                );
                Some(Self { pool })
            }
            Err(e) => {
                println!(
                    "PostgreSQL's autovacuum is off and could not be turned on ({e}): figures of long runs will suffer"
                );
                None
            }
        }
    }

    async fn restore(self) {
        let _ = sqlx::query("ALTER SYSTEM RESET autovacuum")
            .execute(&self.pool)
            .await;
        let _ = sqlx::query("SELECT pg_reload_conf()")
            .execute(&self.pool)
            .await;
    }
}

async fn bench_main(cli: Cli) -> i32 {
    let relay_args;
    let (events, rate, seconds, chats, rounds) = match cli.bench {
        Bench::Relay {
            events,
            rate,
            seconds,
            chats,
            rounds,
            aggregates,
            runs,
            ramp_step,
            ramp_max,
            ramp_seconds,
            bound_ms,
        } => {
            relay_args = (
                runs,
                ramp_step,
                ramp_max,
                ramp_seconds,
                bound_ms,
                aggregates,
            );
            (events, rate, seconds, chats, rounds)
        }
        Bench::All {
            quick,
            with_scale,
            no_compare,
            against,
        } => {
            let code = all::run(all::Args {
                quick,
                with_scale,
                no_compare,
                against,
            })
            .await;
            return code;
        }
        Bench::Authz {
            checks,
            wrk_seconds,
            rounds,
            changes,
            holders,
        } => {
            let results = authz::run(authz::Args {
                checks,
                wrk_seconds,
                rounds,
                changes,
                holders,
            })
            .await;
            write_figures("authz", &results);
            return 0;
        }
        Bench::Scale {
            replies,
            chats,
            events,
        } => {
            let results = scale::run(scale::Args {
                replies,
                chats,
                events,
            })
            .await;
            write_figures("scale", &results);
            return 0;
        }
        Bench::Footprint {
            starts,
            idle_seconds,
        } => {
            let results = footprint::run(footprint::Args {
                starts,
                idle: Duration::from_secs(idle_seconds),
            })
            .await;
            write_figures("footprint", &results);
            return 0;
        }
        Bench::Adapter {
            phases,
            seconds,
            sends_per_sec,
            inbound_per_sec,
            concurrency,
            list_every,
        } => {
            let results = adapter::run(adapter::Args {
                phases,
                seconds,
                sends_per_sec,
                inbound_per_sec,
                concurrency,
                list_every: Duration::from_secs(list_every.max(1)),
            })
            .await;
            write_figures("adapter", &results);
            return 0;
        }
        Bench::Alerts {
            crossings,
            threshold,
        } => {
            let results = alerts::run(alerts::Args {
                crossings,
                threshold,
            })
            .await;
            write_figures("alerts", &results);
            return 0;
        }
        Bench::Attachments {
            wrk_seconds,
            rounds,
            uploaders,
            uploads_each,
        } => {
            let results = attachments::run(attachments::Args {
                wrk_seconds,
                rounds,
                uploaders,
                uploads_each: uploads_each.min(50),
            })
            .await;
            write_figures("attachments", &results);
            return 0;
        }
        Bench::Soak {
            minutes,
            replies_per_sec,
            inbound_per_sec,
            sockets,
            perm_changes_per_min,
            chats,
            warmup_minutes,
            timed_sockets,
            seconds_per_minute,
        } => {
            let results = soak::run(soak::Args {
                minutes,
                replies_per_sec,
                inbound_per_sec,
                sockets,
                perm_changes_per_min,
                chats,
                seconds_per_minute,
                warmup_minutes,
                timed_sockets,
            })
            .await;
            write_figures("soak", &results);
            // Memory that grows, a reply or message not handled exactly
            // once, or a load the system did not keep up with fails the run.
            let flat = results["memory"]["flagged"] == false;
            let once = results["exactly_once"] == true;
            let kept_up = results["kept_up"] == true;
            if !(flat && once && kept_up) {
                return 1;
            }
            return 0;
        }
        Bench::Replay { letters, rounds } => {
            let results = replay::run(replay::Args { letters, rounds }).await;
            write_figures("replay", &results);
            return 0;
        }
        Bench::Realtime {
            audience,
            sockets,
            rate,
            seconds,
            changes,
        } => {
            let results = realtime::run(realtime::Args {
                audience,
                sockets,
                rate,
                seconds,
                changes,
            })
            .await;
            write_figures(&format!("realtime-{}", audience.name()), &results);
            return 0;
        }
    };
    let (runs, ramp_step, ramp_max, ramp_seconds, bound_ms, aggregates) = relay_args;
    let mut env = TestEnv::new().await;
    println!(
        "relay benchmark: {events} events, latency at {rate}/s for {seconds}s over {chats} chats"
    );
    println!(
        "binaries from {}",
        fastprep_tests::process::bin_dir().display()
    );

    // Relay tuning knobs pass through from the bench's environment.
    let mut knobs: Vec<(&str, String)> = ["RELAY_BATCH_SIZE", "RELAY_PIPELINE_DEPTH"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect();
    // The production defaults, not the tests' shortened ones.
    for (knob, default) in [("RELAY_POLL_INTERVAL", "1s"), ("TG_SENDING_AFTER", "250ms")] {
        knobs.push((knob, std::env::var(knob).unwrap_or_else(|_| default.into())));
    }
    // (c) end to end at a steady rate.
    let sys = env.start_single_system_with(&knobs).await;
    let (adapter, api, relay, delivery, inbound, token) = (
        sys.adapter,
        sys.api,
        sys.relay,
        sys.delivery,
        sys.inbound,
        sys.token,
    );
    for chat in 1..=chats {
        env.inject(&adapter, chat, 1, "hello").await;
    }
    let convs: Vec<String> = wait_for("conversations", Duration::from_secs(60), || {
        let pool = env.pool.clone();
        async move {
            let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM conversations")
                .fetch_all(&pool)
                .await
                .ok()?;
            (ids.len() as i64 == chats).then(|| ids.iter().map(ToString::to_string).collect())
        }
    })
    .await;
    // Warm-up at the same rate (pools connect, caches fill); not measured.
    let warmup = post_at_rate(&env, &api.url, &token, &convs, rate, rate * 2, "warmup").await;
    drop(warmup);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let target = ramp::Target {
        api: &api,
        adapter: &adapter,
        named: vec![
            ("api", &api),
            ("relay", &relay),
            ("tg-delivery", &delivery),
            ("tg-adapter", &adapter),
        ],
        token: &token,
        convs: &convs,
    };
    // (c) Three times over: the latency at the working rate, then the ramp
    // to the ceiling.
    let mut working: Vec<ramp::Step> = Vec::new();
    let mut ceilings: Vec<Option<u64>> = Vec::new();
    let mut ramps = Vec::new();
    for run in 1..=runs {
        let s = ramp::step(
            &mut env,
            &target,
            rate,
            seconds,
            &format!("bench{run}"),
            Duration::from_secs(120),
        )
        .await;
        println!(
            "(c) run {run}: end to end (POST answered -> sandbox received) at {:.0}/s, {} replies: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; most sends of one reply: {}",
            s.offered,
            s.latencies.len(),
            s.p(0.5),
            s.p(0.99),
            s.p(1.0),
            s.max_sends
        );
        println!(
            "    CPU ms per reply: {} ({:.2} cores busy)",
            s.cpu_per_reply(),
            s.cores()
        );
        assert!(s.delivered_all(), "every reply of the working rate arrives");
        working.push(s);
        println!("    ramp (+{ramp_step}/s per {ramp_seconds} s step, bound p99 {bound_ms} ms):");
        let (ceiling, steps) = ramp::ramp(
            &mut env,
            &target,
            (rate, ramp_step, ramp_max),
            ramp_seconds,
            bound_ms,
            run,
        )
        .await;
        match ceiling {
            Some(c) => println!("    run {run}: sustainable ceiling {c} replies/s"),
            None => println!("    run {run}: no step held the bound"),
        }
        ceilings.push(ceiling);
        ramps.push(
            steps
                .iter()
                .map(|s| json!({"rate": s.rate, "p50_ms": s.p(0.5), "p99_ms": s.p(0.99), "delivered": s.latencies.len(), "posted": s.posted, "cores": s.cores()}))
                .collect::<Vec<_>>(),
        );
    }
    let p99s: Vec<String> = working
        .iter()
        .map(|s| format!("{:.1}", s.p(0.99)))
        .collect();
    let ceiling_list: Vec<String> = ceilings
        .iter()
        .map(|c| c.map_or("none".into(), |c| c.to_string()))
        .collect();
    println!(
        "(c) summary: p99 at {rate}/s in each run: {} ms; ceiling in each run: {} replies/s",
        p99s.join(" / "),
        ceiling_list.join(" / ")
    );
    let last = working.last().expect("at least one run");
    let csv: String = last
        .timeline
        .iter()
        .map(|(at, ms)| {
            format!(
                "{},{ms:.3}\n",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        })
        .collect();
    std::fs::create_dir_all("bench-results").unwrap();
    std::fs::write(
        "bench-results/e2e-latency.csv",
        format!("accepted_at,latency_ms\n{csv}"),
    )
    .unwrap();
    let (p50, p99, max, offered, max_sends) = (
        last.p(0.5),
        last.p(0.99),
        last.p(1.0),
        last.offered,
        working.iter().map(|s| s.max_sends).max().unwrap_or(0),
    );
    let latencies = &last.latencies;

    // Where the time goes: API commit -> relay confirm, relay -> sandbox.
    let stages: Vec<(String, f64)> = sqlx::query_as(
        "SELECT aggregate_id, EXTRACT(EPOCH FROM published_at - created_at)::float8 * 1000
         FROM outbox WHERE event_type = 'message.outgoing.v1' AND published_at IS NOT NULL",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let mut relay_stage: Vec<f64> = stages.iter().map(|s| s.1).collect();
    relay_stage.sort_by(f64::total_cmp);
    println!(
        "    of which outbox commit -> broker confirm: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&relay_stage, 0.5),
        percentile(&relay_stage, 0.99)
    );

    let delivery_metrics = env.http.text(&delivery.metrics_url).await;
    let api_metrics = env.http.text(&api.metrics_url).await;
    let adapter_metrics = env.http.text(&adapter.metrics_url).await;
    for (text, name, label) in [
        (
            &api_metrics,
            "http_server_request_duration_seconds",
            "API requests",
        ),
        (
            &delivery_metrics,
            "adapter_latency_seconds",
            "TG adapter call",
        ),
        (
            &adapter_metrics,
            "tg_adapter_send_duration_seconds",
            "adapter's Telegram call",
        ),
        (
            &delivery_metrics,
            "consumer_handler_duration_seconds",
            "tg-delivery handler",
        ),
    ] {
        println!(
            "    {label}: p50 <= {} ms, p99 <= {} ms (histogram buckets)",
            bucket_quantile(text, name, 0.5),
            bucket_quantile(text, name, 0.99)
        );
    }

    // The consumers stop here: the throughput phases publish synthetic
    // events that nobody must deliver. Their peak memory is taken first.
    let mut peaks: Vec<(&str, u64)> = Vec::new();
    for (name, started) in [
        ("api", &api),
        ("tg-delivery", &delivery),
        ("inbound", &inbound),
        ("tg-adapter", &adapter),
    ] {
        peaks.push((name, env.proc(started.idx).peak_rss_kib().unwrap_or(0)));
        env.proc(started.idx).terminate(Duration::from_secs(10));
    }

    // Raw and relay alternate, so both see the same machine; the medians
    // are compared.
    let mut raws = Vec::new();
    let mut relays = Vec::new();
    let mut few = Vec::new();
    let mut relay_cpu = 0.0;
    for round in 1..=rounds {
        let raw = raw_publish(&env, events).await;
        let cpu_before = env.proc(relay.idx).cpu_seconds().unwrap_or(0.0);
        let (relay_rate, relay_secs) = relay_drain(&env, events, 0).await;
        relay_cpu += env.proc(relay.idx).cpu_seconds().unwrap_or(0.0) - cpu_before;
        let (few_rate, few_secs) = relay_drain(&env, events, aggregates).await;
        println!(
            "    round {round}: raw {raw:>6.0} events/s, relay {relay_rate:>6.0} events/s ({relay_secs:.2}s, {:.1}%), {aggregates} aggregates {few_rate:>6.0} events/s ({few_secs:.2}s, {:.1}%)",
            relay_rate / raw * 100.0,
            few_rate / raw * 100.0
        );
        raws.push(raw);
        relays.push(relay_rate);
        few.push(few_rate);
    }
    raws.sort_by(f64::total_cmp);
    relays.sort_by(f64::total_cmp);
    few.sort_by(f64::total_cmp);
    let raw = percentile(&raws, 0.5);
    let relay_rate = percentile(&relays, 0.5);
    let few_rate = percentile(&few, 0.5);
    println!(
        "(a) raw lapin publish, pipelined confirms, quorum queue: {raw:>10.0} events/s (median of {rounds})"
    );
    println!(
        "(b) relay drain of {events} committed outbox rows:     {relay_rate:>10.0} events/s (median of {rounds})"
    );
    println!(
        "    relay / raw = {:.1}%; relay CPU {:.1} µs per event",
        relay_rate / raw * 100.0,
        relay_cpu / (events * rounds) as f64 * 1e6
    );
    println!(
        "(b') relay drain over {aggregates} aggregates:            {few_rate:>10.0} events/s (median of {rounds}); relay / raw = {:.1}%",
        few_rate / raw * 100.0
    );

    peaks.insert(
        1,
        ("relay", env.proc(relay.idx).peak_rss_kib().unwrap_or(0)),
    );

    // (d) peak memory.
    let mut memory = serde_json::Map::new();
    println!("(d) peak resident memory (VmHWM):");
    for (name, kib) in peaks {
        println!("    {name:<12} {:>6.1} MiB", kib as f64 / 1024.0);
        memory.insert(name.to_owned(), json!(kib as f64 / 1024.0));
    }
    let results = json!({
        "at": Utc::now(),
        "events": events,
        "rounds": rounds,
        "raw_events_per_sec": raw,
        "raw_rounds": raws,
        "relay_rounds": relays,
        "relay_events_per_sec": relay_rate,
        "relay_to_raw_ratio": relay_rate / raw,
        "few_aggregates": aggregates,
        "few_aggregates_rounds": few,
        "few_aggregates_events_per_sec": few_rate,
        "few_aggregates_to_raw_ratio": few_rate / raw,
        "e2e": {"offered_per_sec": offered, "count": latencies.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max, "max_sends_of_one_reply": max_sends},
        "working_rate_p99_ms": working.iter().map(|s| s.p(0.99)).collect::<Vec<_>>(),
        "ceilings": ceilings,
        "ramps": ramps,
        "peak_rss_mib": memory,
    });
    write_figures("relay", &results);
    env.cleanup().await;
    0
}

/// Posts `count` replies at `rate` per second, round-robin over `convs`;
/// returns when each was accepted, by message id.
async fn post_at_rate(
    env: &TestEnv,
    api: &str,
    token: &str,
    convs: &[String],
    rate: u64,
    count: u64,
    tag: &str,
) -> HashMap<String, DateTime<Utc>> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..count as usize {
        ticker.tick().await;
        let http = env.http.raw().clone();
        let url = format!(
            "{api}/api/conversations/{}/messages",
            convs[i % convs.len()]
        );
        let token = token.to_owned();
        let client_msg_id = format!("{tag}-{i}");
        posts.spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"text": format!("{client_msg_id}: your lesson is confirmed"), "client_msg_id": client_msg_id}))
                .send()
                .await
                .unwrap();
            let accepted_at = Utc::now();
            assert_eq!(resp.status(), 202);
            let body: serde_json::Value = resp.json().await.unwrap();
            (body["id"].as_str().unwrap().to_owned(), accepted_at)
        });
    }
    let mut accepted = HashMap::new();
    while let Some(r) = posts.join_next().await {
        let (id, at) = r.unwrap();
        accepted.insert(id, at);
    }
    accepted
}

/// The upper bound (ms) of the histogram bucket holding quantile `q`, summed
/// over label sets.
fn bucket_quantile(text: &str, name: &str, q: f64) -> String {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let Some(count) = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else {
            continue;
        };
        let key = if le == "+Inf" {
            u64::MAX
        } else {
            (le.parse::<f64>().unwrap_or(0.0) * 1e6) as u64
        };
        *buckets.entry(key).or_default() += count;
    }
    let total = buckets.get(&u64::MAX).copied().unwrap_or(0.0);
    for (le, count) in &buckets {
        if *count >= total * q {
            return if *le == u64::MAX {
                "inf".into()
            } else {
                format!("{}", *le as f64 / 1000.0)
            };
        }
    }
    "n/a".into()
}

/// CPU seconds used so far by each process of the run, by name: the named
/// processes, the run database's PostgreSQL backends, RabbitMQ and the
/// benchmark itself.
async fn cpu_snapshot(
    env: &mut TestEnv,
    named: &[(&'static str, &fastprep_tests::system::Started)],
) -> Vec<(String, f64)> {
    use fastprep_tests::process::{cpu_seconds_of, pids_named};
    let mut out: Vec<(String, f64)> = named
        .iter()
        .map(|(name, s)| {
            (
                name.to_string(),
                env.proc(s.idx).cpu_seconds().unwrap_or(0.0),
            )
        })
        .collect();
    let backends: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap_or_default();
    let pg: f64 = backends
        .iter()
        .filter_map(|p| cpu_seconds_of(u32::try_from(*p).ok()?))
        .sum();
    out.push(("postgres".into(), pg));
    let broker: f64 = pids_named("beam.smp")
        .into_iter()
        .filter_map(cpu_seconds_of)
        .sum();
    out.push(("rabbitmq".into(), broker));
    out.push((
        "bench client".into(),
        cpu_seconds_of(std::process::id()).unwrap_or(0.0),
    ));
    out
}

/// Writes a benchmark's figures to `bench-results/<name>.json`.
fn write_figures(name: &str, results: &serde_json::Value) {
    std::fs::create_dir_all("bench-results").unwrap();
    let path = format!("bench-results/{name}.json");
    std::fs::write(&path, serde_json::to_string_pretty(results).unwrap()).unwrap();
    println!("figures written to {path}");
}
