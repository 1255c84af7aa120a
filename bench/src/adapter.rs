//! `fastprep-bench adapter`: the tg-adapter alone on its sandbox backend,
//! its resident memory under each of its loads in turn, to tell what
//! grows from what the soak's harness does to it.
//!
//! Each phase starts a fresh adapter (an empty store), drives it for
//! `seconds` with some of:
//! - `sends`: `POST /v1/messages`, each with an idempotency key of its
//!   own, over 50 chats, as tg-delivery calls it;
//! - `inbound`: `POST /sandbox/inbound`, a customer's message each, which
//!   the adapter publishes to the broker with a confirm;
//! - `collect`: every `--list-every` seconds, the sandbox's log listed and
//!   then reset, as the soak's collector does;
//! - `list`: the same listing without the reset, so the log keeps growing;
//!
//! and reads its RSS every second. It prints the RSS over the phase and a
//! verdict with the soak's rule: flagged when the last tenth against the
//! first tenth after a warm-up tenth, or the least-squares slope over the
//! phase, passes 10% or 5 MiB.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use fastprep_tests::{
    TestEnv,
    env::ADAPTER_TOKEN,
    system::{Started, sandbox_update},
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::soak::{GROWTH_FRACTION, GROWTH_MIB, slope, ticker};

/// One load the adapter can be put under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    Sends,
    Inbound,
    Collect,
    List,
}

/// The loads of one phase, written `sends+collect`.
#[derive(Clone, Debug)]
pub struct Phase(Vec<Load>);

/// Each load's name on the command line.
const LOAD_NAMES: [(&str, Load); 4] = [
    ("sends", Load::Sends),
    ("inbound", Load::Inbound),
    ("collect", Load::Collect),
    ("list", Load::List),
];

impl FromStr for Phase {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let mut loads = Vec::new();
        for part in raw.split('+') {
            let Some(&(_, load)) = LOAD_NAMES.iter().find(|(name, _)| *name == part.trim()) else {
                return Err(format!(
                    "unknown load `{}`: expected sends, inbound, collect or list, joined by +",
                    part.trim()
                ));
            };
            if !loads.contains(&load) {
                loads.push(load);
            }
        }
        if loads.contains(&Load::Collect) && loads.contains(&Load::List) {
            return Err("`collect` and `list` both list the log: take one".to_owned());
        }
        Ok(Self(loads))
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .0
            .iter()
            .filter_map(|l| {
                LOAD_NAMES
                    .iter()
                    .find(|(_, load)| load == l)
                    .map(|(n, _)| *n)
            })
            .collect();
        f.write_str(&names.join("+"))
    }
}

pub struct Args {
    pub phases: Vec<Phase>,
    pub seconds: u64,
    /// Sends per second; 0 for as fast as `concurrency` callers go.
    pub sends_per_sec: u64,
    /// Injections per second; 0 for as fast as `concurrency` callers go.
    pub inbound_per_sec: u64,
    pub concurrency: usize,
    pub list_every: Duration,
}

const CHATS: i64 = 50;

/// What the load tasks count.
#[derive(Default)]
struct Counts {
    sends: AtomicUsize,
    injections: AtomicUsize,
    listings: AtomicUsize,
    listed_records: AtomicUsize,
    errors: AtomicUsize,
}

pub async fn run(args: Args) -> Value {
    let mut env = TestEnv::new().await;
    // The adapter publishes inbound messages to the events exchange.
    let _broker = env.broker().await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("http client");
    println!(
        "the tg-adapter alone, sandbox backend, a fresh store each phase; {} s per phase; sends {}, inbound {}, {} callers each; listings every {} s\n",
        args.seconds,
        rate_label(args.sends_per_sec),
        rate_label(args.inbound_per_sec),
        args.concurrency,
        args.list_every.as_secs_f64(),
    );
    let mut phases = Vec::new();
    for (n, phase) in args.phases.iter().enumerate() {
        let data = env.dir.join(format!("adapter-bench-{n}"));
        let adapter = env
            .start_adapter(&[("DATA_DIR", data.display().to_string())])
            .await;
        let result = run_phase(&mut env, &http, &adapter, phase, &args).await;
        env.proc(adapter.idx).kill();
        phases.push(result);
    }
    env.cleanup().await;
    json!({ "phases": phases })
}

fn rate_label(per_sec: u64) -> String {
    if per_sec == 0 {
        "as fast as they go".to_owned()
    } else {
        format!("{per_sec}/s")
    }
}

async fn run_phase(
    env: &mut TestEnv,
    http: &reqwest::Client,
    adapter: &Started,
    phase: &Phase,
    args: &Args,
) -> Value {
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for load in &phase.0 {
        match load {
            Load::Sends => spawn_callers(
                &mut tasks,
                args.sends_per_sec,
                args.concurrency,
                &stop,
                &counts,
                {
                    let http = http.clone();
                    let url = adapter.url.clone();
                    move |n, counts| send(http.clone(), url.clone(), n, counts)
                },
            ),
            Load::Inbound => spawn_callers(
                &mut tasks,
                args.inbound_per_sec,
                args.concurrency,
                &stop,
                &counts,
                {
                    let http = env.http.clone();
                    let url = adapter.url.clone();
                    move |n, counts| inject(http.clone(), url.clone(), n, counts)
                },
            ),
            Load::Collect | Load::List => {
                let reset = *load == Load::Collect;
                let http = env.http.clone();
                let url = adapter.url.clone();
                let counts = counts.clone();
                let stop = stop.clone();
                let every = args.list_every;
                tasks.spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        list(&http, &url, reset, &counts).await;
                    }
                });
            }
        }
    }

    // RSS every second.
    // RssAnon beside it: private memory, where a leak or an allocator's
    // retention shows, without the executable's code paging in.
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut anon: Vec<(f64, f64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        let at = started.elapsed().as_secs_f64();
        if let Some((rss, private)) = env.proc(adapter.idx).rss_and_anon_kib() {
            samples.push((at, rss as f64 / 1024.0));
            anon.push((at, private as f64 / 1024.0));
        }
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let alive = env.proc(adapter.idx).exited().is_none();

    let Trend {
        first,
        last,
        per_hour,
        span_hours,
        line,
    } = trend(&samples);
    let private = trend(&anon);
    let bound = (first * GROWTH_FRACTION).max(GROWTH_MIB);
    let grew = last - first;
    let flagged = grew > bound || per_hour * span_hours > bound;
    let min = samples.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = samples.iter().map(|p| p.1).fold(0.0, f64::max);

    let sends = counts.sends.load(Ordering::Relaxed);
    let injections = counts.injections.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let listings = counts.listings.load(Ordering::Relaxed);
    let listed = counts.listed_records.load(Ordering::Relaxed);
    println!("phase {phase} ({elapsed:.0} s)");
    println!(
        "    sends {sends} ({:.0}/s), injections {injections} ({:.0}/s), listings {listings} ({listed} records), errors {errors}{}",
        sends as f64 / elapsed,
        injections as f64 / elapsed,
        if alive { "" } else { ", THE ADAPTER EXITED" }
    );
    println!("    RSS MiB: {line}");
    println!(
        "    {first:.1} → {last:.1} MiB ({grew:+.1}), min {min:.1}, max {max:.1}, slope {per_hour:+.1} MiB/h, bound {bound:.1} MiB{}",
        if flagged { "  <- GROWS" } else { "  flat" }
    );
    println!("    RssAnon MiB: {}", private.line);
    println!(
        "    private {:.1} → {:.1} MiB ({:+.1}), slope {:+.1} MiB/h\n",
        private.first,
        private.last,
        private.last - private.first,
        private.per_hour
    );
    json!({
        "phase": phase.to_string(),
        "seconds": elapsed,
        "sends": sends,
        "injections": injections,
        "listings": listings,
        "listed_records": listed,
        "errors": errors,
        "adapter_alive": alive,
        "rss_mib": samples.iter().map(|p| json!([p.0.round(), p.1])).collect::<Vec<_>>(),
        "first_mib": first,
        "last_mib": last,
        "min_mib": min,
        "max_mib": max,
        "slope_mib_per_hour": per_hour,
        "anon_mib": anon.iter().map(|p| json!([p.0.round(), p.1])).collect::<Vec<_>>(),
        "anon_first_mib": private.first,
        "anon_last_mib": private.last,
        "anon_slope_mib_per_hour": private.per_hour,
        "bound_mib": bound,
        "flagged": flagged,
    })
}

/// A memory series after its warm-up tenth: the means of its first and
/// last tenth, the least-squares slope, the span it covers, and a dozen of
/// its readings for the log.
struct Trend {
    first: f64,
    last: f64,
    per_hour: f64,
    span_hours: f64,
    line: String,
}

fn trend(samples: &[(f64, f64)]) -> Trend {
    let tenth = (samples.len() / 10).max(1);
    let measured = &samples[tenth.min(samples.len())..];
    let mean = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len().max(1) as f64;
    let hourly: Vec<(f64, f64)> = measured.iter().map(|p| (p.0 / 3600.0, p.1)).collect();
    let line: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 12).max(1))
        .map(|p| format!("{:.0}s {:.1}", p.0, p.1))
        .collect();
    Trend {
        first: mean(&measured[..tenth.min(measured.len())]),
        last: mean(&measured[measured.len().saturating_sub(tenth)..]),
        per_hour: slope(&hourly),
        span_hours: match (measured.first(), measured.last()) {
            (Some(a), Some(b)) => (b.0 - a.0) / 3600.0,
            _ => 0.0,
        },
        line: line.join(", "),
    }
}

/// `concurrency` callers of `call`, paced together at `per_sec` (0: each
/// calls again as soon as its last call answered).
fn spawn_callers<F, Fut>(
    tasks: &mut tokio::task::JoinSet<()>,
    per_sec: u64,
    concurrency: usize,
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
    call: F,
) where
    F: Fn(usize, Arc<Counts>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    if per_sec == 0 {
        for _ in 0..concurrency {
            let (call, next, stop, counts) =
                (call.clone(), next.clone(), stop.clone(), counts.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call(next.fetch_add(1, Ordering::Relaxed), counts.clone()).await;
                }
            });
        }
        return;
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let (stop, counts) = (stop.clone(), counts.clone());
    tasks.spawn(async move {
        let mut tick = ticker(per_sec as f64);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let fut = call(next.fetch_add(1, Ordering::Relaxed), counts.clone());
            tokio::spawn(async move {
                fut.await;
                drop(permit);
            });
        }
        // The calls in flight finish before the phase reads its counts.
        let _ = permits.acquire_many(concurrency as u32).await;
    });
}

async fn send(http: reqwest::Client, url: String, n: usize, counts: Arc<Counts>) {
    let chat = 900_000 + (n as i64 % CHATS);
    let answer = http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(ADAPTER_TOKEN)
        .header("Idempotency-Key", format!("bench-{}", uuid::Uuid::now_v7()))
        .json(&json!({
            "chat_id": chat,
            "text": "Hello! Your SAT practice test is booked for Saturday at 10:00.",
            "attachments": [],
        }))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
            counts.sends.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn inject(http: fastprep_tests::http::Client, url: String, n: usize, counts: Arc<Counts>) {
    let chat = 900_000 + (n as i64 % CHATS);
    let (status, _) = http
        .sandbox(
            &url,
            Method::POST,
            "/sandbox/inbound",
            Some(sandbox_update(
                chat,
                1 + n as i64 / CHATS,
                "Hi, can I move my lesson to Sunday?",
                false,
            )),
        )
        .await;
    if status.is_success() {
        counts.injections.fetch_add(1, Ordering::Relaxed);
    } else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
    }
}

async fn list(http: &fastprep_tests::http::Client, url: &str, reset: bool, counts: &Counts) {
    let (status, body) = http.sandbox(url, Method::GET, "/sandbox/sent", None).await;
    if !status.is_success() {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    counts.listings.fetch_add(1, Ordering::Relaxed);
    counts.listed_records.fetch_add(
        body["messages"].as_array().map_or(0, Vec::len),
        Ordering::Relaxed,
    );
    if reset {
        let (status, _) = http
            .sandbox(url, Method::POST, "/sandbox/reset", None)
            .await;
        if !status.is_success() {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
