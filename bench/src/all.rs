//! `fastprep-bench all`: every benchmark in one run, in sequence (relay,
//! authz, realtime, alerts, attachments, replay, footprint; scale with
//! `--with-scale`), each writing its own `bench-results/<name>.json` as when
//! run alone. Their headline figures are gathered into one flat list, each
//! beside its anchor measured in the same run where it has one, the ratio
//! to it, and its target:
//!
//! - the relay's drains and the DLQ replay against raw confirmed publishing
//!   (the medians of the same bench's alternating rounds);
//! - `GET /api/auth/me/ep` against nginx serving a 2-byte file (the authz
//!   bench's alternating rounds), and the attachments' download link against
//!   the same nginx run by this module just before and just after the
//!   attachments bench (that bench has no reference of its own);
//! - the cached permission check and the Redis-tier read against a Redis
//!   `PING` round trip, measured here right before the authz bench.
//!
//! The table is printed and written to `bench-results/all.json` with the
//! date, the commit and the machine.
//!
//! ## Regressions
//!
//! The run is compared with the last committed record,
//! `git show HEAD:bench-results/all.json` (or `--against FILE`). The rule:
//!
//! - What is compared is the ratio to the anchor where the figure has one
//!   (a slower machine day moves the figure and its anchor together), and
//!   the value itself otherwise. The anchors (raw publishing, nginx, `PING`)
//!   measure the machine and are not judged.
//! - Each figure carries its noise `n`: the relative spread
//!   `(max - min) / median` of the samples its bench took of it (its rounds,
//!   runs, starts or instances), and for a ratio the larger of that and the
//!   anchor's own spread over its rounds, never less than the floor of 10%.
//!   A figure measured once has the floor; a latency measured once (a p99
//!   of one run, a file's one upload) has a floor of 50%, as the README's
//!   repeated runs of one build move these by 30–90%.
//! - A regression is a change for the worse beyond the larger of the two
//!   records' noise: for a figure where higher is better, `new < old * (1 -
//!   n)`; where lower is better, `new > old * (1 + n)` (so a count that
//!   should be 0, such as alerts missing, regresses as soon as it is not).
//! - Figures absent from either record, or not measured (a bench failed),
//!   are listed, not judged. A `--quick` record is never compared with a
//!   full one.
//!
//! Any regression is printed as a `REGRESSION` line and the command exits
//! with status 1; so does a benchmark that failed. A missed target alone
//! does not: the table shows it.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    path::PathBuf,
    time::{Duration, Instant},
};

use fastprep_tests::{env::Services, free_port};
use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Config as RedisConfig},
};
use futures::FutureExt;
use serde_json::{Value, json};

use super::{percentile, write_figures};

/// Noise never counts for less than this share of a figure.
const NOISE_FLOOR: f64 = 0.10;
/// ... nor, for a latency measured once (no rounds or runs to take a spread
/// from), for less than this: the README's repeated runs of the same build
/// swing such figures by 30–90% (realtime fan-out p99 6.9 to 12.9 ms, the
/// relay's p50 at 200/s 5.2 to 6.7 ms).
const LATENCY_ONCE_FLOOR: f64 = 0.50;
const RECORD: &str = "bench-results/all.json";

pub struct Args {
    pub quick: bool,
    pub with_scale: bool,
    pub no_compare: bool,
    pub against: Option<PathBuf>,
}

/// The sizes of one `bench all`: the full run aims at 20–25 minutes on the
/// 2-core development machine; `--quick` at seconds per bench.
struct Sizes {
    relay: Vec<String>,
    relay_rate: u64,
    authz: (usize, u64, usize, usize, usize),
    realtime: (usize, u64, u64, usize),
    alerts: (usize, usize),
    attachments: (u64, usize, usize, usize),
    /// nginx rounds before and after the attachments bench (each).
    nginx_rounds: usize,
    replay: (usize, usize),
    footprint: (usize, u64),
    scale: (usize, usize, usize),
    /// Rounds of `PING`, and round trips each.
    ping: (usize, usize),
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect();
        if quick {
            Sizes {
                relay: args(
                    "--events 2000 --rounds 2 --runs 1 --rate 50 --seconds 2 --chats 5 \
                     --ramp-step 50 --ramp-max 100 --ramp-seconds 2",
                ),
                relay_rate: 50,
                authz: (2_000, 1, 2, 5, 2),
                realtime: (40, 10, 2, 5),
                alerts: (3, 5),
                attachments: (1, 2, 3, 3),
                nginx_rounds: 1,
                replay: (500, 2),
                footprint: (2, 1),
                scale: (100, 10, 2_000),
                ping: (3, 500),
            }
        } else {
            Sizes {
                // About 5.5 min: 3 runs of 20 s at 200/s and the ramp, then
                // 5 alternating raw/relay rounds of 100,000 events.
                relay: args("--events 100000 --rounds 5 --runs 3 --rate 200 --seconds 20"),
                relay_rate: 200,
                // About 2 min: 5 rounds of nginx and the API, 8 s each.
                authz: (200_000, 8, 5, 200, 5),
                // About 2 min: the defaults.
                realtime: (1_000, 100, 30, 200),
                // About 2 min: 100 crossings, a 1 s cooldown each.
                alerts: (100, 5),
                // About 3 min with the nginx rounds: both stores.
                attachments: (8, 3, 50, 40),
                nginx_rounds: 2,
                // About 1 min: twice the default letters, 5 rounds.
                replay: (20_000, 5),
                // About 3.5 min: 7 processes, 5 starts, 5 s idle.
                footprint: (5, 5),
                scale: (3_000, 100, 50_000),
                ping: (5, 10_000),
            }
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "relay": self.relay.join(" "),
            "authz": {"checks": self.authz.0, "wrk_seconds": self.authz.1, "rounds": self.authz.2, "changes": self.authz.3, "holders": self.authz.4},
            "realtime": {"audience": "scoped", "sockets": self.realtime.0, "rate": self.realtime.1, "seconds": self.realtime.2, "changes": self.realtime.3},
            "alerts": {"crossings": self.alerts.0, "threshold": self.alerts.1},
            "attachments": {"wrk_seconds": self.attachments.0, "rounds": self.attachments.1, "uploaders": self.attachments.2, "uploads_each": self.attachments.3, "nginx_rounds_before_and_after": self.nginx_rounds},
            "replay": {"letters": self.replay.0, "rounds": self.replay.1},
            "footprint": {"starts": self.footprint.0, "idle_seconds": self.footprint.1},
            "scale": {"replies": self.scale.0, "chats": self.scale.1, "events": self.scale.2},
            "redis_ping": {"rounds": self.ping.0, "round_trips": self.ping.1},
        })
    }
}

// ---------------------------------------------------------------- figures

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Copy)]
enum Op {
    Lt,
    Le,
    Ge,
}

#[derive(Clone, Copy)]
struct Target {
    op: Op,
    value: f64,
    /// The target is on the ratio to the anchor, not the value.
    on_ratio: bool,
}

impl Target {
    fn holds(&self, x: f64) -> Option<bool> {
        if !x.is_finite() {
            return None;
        }
        Some(match self.op {
            Op::Lt => x < self.value,
            Op::Le => x <= self.value,
            Op::Ge => x >= self.value,
        })
    }

    fn text(&self, unit: &str) -> String {
        let op = match self.op {
            Op::Lt => "<",
            Op::Le => "≤",
            Op::Ge => "≥",
        };
        if self.on_ratio {
            format!("{op} {:.0}% of anchor", self.value * 100.0)
        } else {
            format!("{op} {} {unit}", num(self.value))
        }
    }
}

struct Figure {
    bench: String,
    name: String,
    value: f64,
    unit: &'static str,
    better: Better,
    /// The anchor's name and value, measured in the same run.
    anchor: Option<(String, f64)>,
    target: Option<Target>,
    samples: Vec<f64>,
    anchor_samples: Vec<f64>,
    /// A reference measurement of the machine: shown, never judged.
    is_anchor: bool,
    /// A latency: measured once, its floor is [`LATENCY_ONCE_FLOOR`].
    latency: bool,
}

impl Figure {
    fn new(bench: &str, name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Figure {
            bench: bench.to_owned(),
            name: name.into(),
            value,
            unit,
            better: Better::Lower,
            anchor: None,
            target: None,
            samples: Vec::new(),
            anchor_samples: Vec::new(),
            is_anchor: false,
            latency: false,
        }
    }

    fn higher(mut self) -> Self {
        self.better = Better::Higher;
        self
    }

    fn anchor(mut self, name: &str, value: f64, samples: Vec<f64>) -> Self {
        self.anchor = Some((name.to_owned(), value));
        self.anchor_samples = samples;
        self
    }

    fn target(mut self, op: Op, value: f64) -> Self {
        self.target = Some(Target {
            op,
            value,
            on_ratio: false,
        });
        self
    }

    fn target_ratio(mut self, op: Op, value: f64) -> Self {
        self.target = Some(Target {
            op,
            value,
            on_ratio: true,
        });
        self
    }

    fn samples(mut self, samples: Vec<f64>) -> Self {
        self.samples = samples;
        self
    }

    fn latency(mut self) -> Self {
        self.latency = true;
        self
    }

    /// The least noise this figure is granted.
    fn floor(&self) -> f64 {
        if self.latency && self.samples.len() < 2 {
            LATENCY_ONCE_FLOOR
        } else {
            NOISE_FLOOR
        }
    }

    fn reference(mut self) -> Self {
        self.is_anchor = true;
        self
    }

    fn key(&self) -> String {
        format!("{}: {}", self.bench, self.name)
    }

    fn ratio(&self) -> Option<f64> {
        self.anchor.as_ref().map(|(_, a)| self.value / a)
    }

    fn met(&self) -> Option<bool> {
        let t = self.target?;
        t.holds(if t.on_ratio {
            self.ratio()?
        } else {
            self.value
        })
    }

    fn noise(&self) -> f64 {
        self.floor()
            .max(spread(&self.samples))
            .max(spread(&self.anchor_samples))
    }

    fn to_json(&self) -> Value {
        json!({
            "key": self.key(),
            "bench": self.bench,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "better": match self.better { Better::Higher => "higher", Better::Lower => "lower" },
            "anchor": self.anchor.as_ref().map(|(n, v)| json!({"name": n, "value": v})),
            "ratio": self.ratio(),
            "target": self.target.map(|t| json!({"text": t.text(self.unit), "value": t.value, "of": if t.on_ratio { "ratio" } else { "value" }})),
            "met": self.met(),
            "noise": self.noise(),
            "noise_floor": self.floor(),
            "samples": self.samples,
            "anchor_samples": self.anchor_samples,
            "is_anchor": self.is_anchor,
        })
    }
}

/// `(max - min) / median` of the samples; 0 for fewer than two.
fn spread(samples: &[f64]) -> f64 {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if s.len() < 2 {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    let median = percentile(&s, 0.5);
    if median <= 0.0 {
        return if s[s.len() - 1] > s[0] { 1.0 } else { 0.0 };
    }
    (s[s.len() - 1] - s[0]) / median
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn pct(r: f64) -> String {
    if !r.is_finite() {
        "n/a".into()
    } else if r * 100.0 >= 10.0 {
        format!("{:.1}%", r * 100.0)
    } else {
        format!("{:.2}%", r * 100.0)
    }
}

fn at(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn list(v: &Value, pointer: &str) -> Vec<f64> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

/// One field of each object of an array.
fn field(v: &Value, pointer: &str, key: &str) -> Vec<f64> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x[key].as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .unwrap_or_default()
}

fn max_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn relay_figures(r: &Value, rate: u64) -> Vec<Figure> {
    let b = "relay";
    let raw = at(r, "/raw_events_per_sec");
    let raw_rounds = list(r, "/raw_rounds");
    let few = r["few_aggregates"].as_u64().unwrap_or(0);
    let p99s = list(r, "/working_rate_p99_ms");
    let ceilings: Vec<f64> = r["ceilings"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default();
    let mut out = vec![
        Figure::new(b, "raw confirmed publish", raw, "events/s")
            .higher()
            .samples(raw_rounds.clone())
            .reference(),
        Figure::new(
            b,
            "drain, one aggregate per row",
            at(r, "/relay_events_per_sec"),
            "events/s",
        )
        .higher()
        .samples(list(r, "/relay_rounds"))
        .anchor("raw confirmed publish", raw, raw_rounds.clone())
        .target_ratio(Op::Ge, 0.80),
        Figure::new(
            b,
            format!("drain, {few} aggregates"),
            at(r, "/few_aggregates_events_per_sec"),
            "events/s",
        )
        .higher()
        .samples(list(r, "/few_aggregates_rounds"))
        .anchor("raw confirmed publish", raw, raw_rounds)
        .target_ratio(Op::Ge, 0.80),
        Figure::new(
            b,
            format!("end to end p99 at {rate}/s, worst run"),
            max_of(&p99s),
            "ms",
        )
        .samples(p99s)
        .target(Op::Le, 20.0)
        .latency(),
        Figure::new(
            b,
            format!("end to end p50 at {rate}/s, last run"),
            at(r, "/e2e/p50_ms"),
            "ms",
        )
        .latency(),
        Figure::new(
            b,
            "sustainable ceiling, lowest run",
            ceilings.iter().copied().fold(f64::INFINITY, f64::min),
            "replies/s",
        )
        .higher()
        .samples(ceilings)
        .target(Op::Ge, 600.0),
    ];
    for p in ["api", "relay", "tg-delivery", "inbound", "tg-adapter"] {
        out.push(
            Figure::new(
                b,
                format!("peak RSS {p}"),
                at(r, &format!("/peak_rss_mib/{p}")),
                "MiB",
            )
            .target(Op::Lt, 64.0),
        );
    }
    out
}

fn authz_figures(a: &Value, ping: &Ping) -> Vec<Figure> {
    let b = "authz";
    let nginx_rounds = field(a, "/ep_endpoint/nginx_rounds", "rps");
    let api_p99s = field(a, "/ep_endpoint/api_rounds", "p99_ms");
    vec![
        Figure::new(
            b,
            "cached permission check p99",
            at(a, "/check/check_cached/p99_us"),
            "µs",
        )
        .anchor("Redis PING p99", ping.p99, ping.p99s.clone())
        .target(Op::Lt, 50.0)
        .latency(),
        Figure::new(
            b,
            "Redis-tier read p50",
            at(a, "/check/redis_tier_read/p50_us"),
            "µs",
        )
        .anchor("Redis PING p50", ping.p50, ping.p50s.clone())
        .latency(),
        Figure::new(
            b,
            "nginx static, 2-byte file",
            at(a, "/ep_endpoint/nginx_median_rps"),
            "req/s",
        )
        .higher()
        .samples(nginx_rounds.clone())
        .reference(),
        Figure::new(
            b,
            "GET /api/auth/me/ep",
            at(a, "/ep_endpoint/api_median_rps"),
            "req/s",
        )
        .higher()
        .samples(field(a, "/ep_endpoint/api_rounds", "rps"))
        .anchor(
            "nginx static",
            at(a, "/ep_endpoint/nginx_median_rps"),
            nginx_rounds,
        )
        .target_ratio(Op::Ge, 0.50),
        Figure::new(
            b,
            "GET /api/auth/me/ep p99, worst round",
            max_of(&api_p99s),
            "ms",
        )
        .samples(api_p99s)
        .target(Op::Lt, 5.0)
        .latency(),
        Figure::new(
            b,
            "role change → authz-fanout publish p99",
            at(a, "/fanout/authz_fanout_consumer/p99_ms"),
            "ms",
        )
        .target(Op::Lt, 100.0)
        .latency(),
    ]
}

fn realtime_figures(r: &Value) -> Vec<Figure> {
    let b = "realtime";
    let per_socket = list(r, "/memory_per_idle_socket_kib");
    vec![
        Figure::new(
            b,
            "memory per idle socket, larger instance",
            max_of(&per_socket),
            "KiB",
        )
        .samples(per_socket)
        .target(Op::Lt, 64.0),
        Figure::new(
            b,
            "scoped fan-out, commit → frame p99",
            at(r, "/fanout/commit_to_frame/p99_ms"),
            "ms",
        )
        .target(Op::Lt, 100.0)
        .latency(),
        Figure::new(
            b,
            "ep.update, request → frame on both p99",
            at(r, "/ep_update/request_to_frame_on_both/p99_ms"),
            "ms",
        )
        .target(Op::Lt, 100.0)
        .latency(),
    ]
}

fn alerts_figures(a: &Value) -> Vec<Figure> {
    let b = "alerts";
    let rss = list(a, "/peak_rss_mib");
    vec![
        Figure::new(
            b,
            "crossing → Slack p99",
            at(a, "/crossing_to_slack/p99_ms"),
            "ms",
        )
        .target(Op::Lt, 500.0)
        .latency(),
        Figure::new(
            b,
            "alerts missing or extra",
            (at(a, "/alerts_received") - at(a, "/crossings")).abs(),
            "alerts",
        )
        .target(Op::Le, 0.0),
        Figure::new(b, "peak RSS, larger instance", max_of(&rss), "MiB")
            .samples(rss)
            .target(Op::Lt, 64.0),
    ]
}

fn attachments_figures(a: &Value, nginx: &[f64]) -> Vec<Figure> {
    let b = "attachments";
    let nginx_median = median(nginx);
    let mut out = vec![
        Figure::new(b, "nginx static, 2-byte file", nginx_median, "req/s")
            .higher()
            .samples(nginx.to_vec())
            .reference(),
    ];
    for store in ["s3", "local"] {
        let links = field(a, &format!("/{store}/download_link_rounds"), "per_sec");
        let p99s = field(a, &format!("/{store}/download_link_rounds"), "p99_ms");
        let files = a[store]["files"].as_array().cloned().unwrap_or_default();
        let largest = files.last().cloned().unwrap_or(Value::Null);
        let mib = largest["mib"].as_u64().unwrap_or(100);
        out.extend([
            Figure::new(
                b,
                format!("[{store}] download link"),
                median(&links),
                "req/s",
            )
            .higher()
            .samples(links)
            .anchor("nginx static", nginx_median, nginx.to_vec()),
            Figure::new(
                b,
                format!("[{store}] download link p99, worst round"),
                max_of(&p99s),
                "ms",
            )
            .samples(p99s)
            .latency(),
            Figure::new(
                b,
                format!(
                    "[{store}] upload presign, {} at once",
                    a[store]["upload_presign"]["users"].as_u64().unwrap_or(0)
                ),
                at(a, &format!("/{store}/upload_presign/per_sec")),
                "req/s",
            )
            .higher(),
            Figure::new(
                b,
                format!("[{store}] {mib} MiB upload → sandbox"),
                at(&largest, "/seconds"),
                "s",
            )
            .latency(),
            Figure::new(
                b,
                format!("[{store}] api peak RSS"),
                at(&largest, "/peak_rss_mib/api"),
                "MiB",
            ),
        ]);
    }
    out
}

fn replay_figures(r: &Value) -> Vec<Figure> {
    let b = "replay";
    let raw = at(r, "/median_raw_per_sec");
    let raw_rounds = field(r, "/rounds", "raw_per_sec");
    let peaks = field(r, "/rounds", "peak_rss_mib");
    vec![
        Figure::new(b, "raw confirmed publish", raw, "msgs/s")
            .higher()
            .samples(raw_rounds.clone())
            .reference(),
        Figure::new(
            b,
            "dlq replay to tg-delivery",
            at(r, "/median_replay_per_sec"),
            "msgs/s",
        )
        .higher()
        .samples(field(r, "/rounds", "replay_per_sec"))
        .anchor("raw confirmed publish", raw, raw_rounds),
        Figure::new(
            b,
            "fastprep-ops peak RSS",
            at(r, "/max_peak_rss_mib"),
            "MiB",
        )
        .samples(peaks),
    ]
}

fn footprint_figures(f: &Value) -> Vec<Figure> {
    let b = "footprint";
    let mut out = Vec::new();
    for bin in ["fastprep-api", "fastprep-consumers", "fastprep-tg-adapter"] {
        out.push(Figure::new(
            b,
            format!("{bin} binary"),
            at(f, &format!("/binaries_bytes/{bin}")) / 1024.0 / 1024.0,
            "MiB",
        ));
    }
    for p in ["api", "tg-adapter"] {
        out.push(
            Figure::new(
                b,
                format!("{p} start → healthy p50"),
                at(f, &format!("/processes/{p}/start_to_healthy_ms/p50")),
                "ms",
            )
            .samples(list(
                f,
                &format!("/processes/{p}/start_to_healthy_ms/samples"),
            )),
        );
    }
    for p in [
        "api",
        "relay",
        "tg-delivery",
        "inbound",
        "authz-fanout",
        "alerts",
        "tg-adapter",
    ] {
        out.push(
            Figure::new(
                b,
                format!("{p} idle RSS p50"),
                at(f, &format!("/processes/{p}/idle_rss_mib/p50")),
                "MiB",
            )
            .samples(list(f, &format!("/processes/{p}/idle_rss_mib/samples"))),
        );
    }
    out
}

fn scale_figures(s: &Value) -> Vec<Figure> {
    let b = "scale";
    let mut out = Vec::new();
    for d in s["delivery"].as_array().cloned().unwrap_or_default() {
        let n = d["instances"].as_u64().unwrap_or(0);
        out.push(
            Figure::new(
                b,
                format!("delivered, {n} tg-delivery instance(s)"),
                at(&d, "/replies_per_sec"),
                "replies/s",
            )
            .higher(),
        );
    }
    let raw = at(s, "/cluster/raw_events_per_sec");
    let raw_rounds = list(s, "/cluster/raw_rounds");
    out.extend([
        Figure::new(b, "cluster raw confirmed publish", raw, "events/s")
            .higher()
            .samples(raw_rounds.clone())
            .reference(),
        Figure::new(
            b,
            "cluster relay drain",
            at(s, "/cluster/relay_events_per_sec"),
            "events/s",
        )
        .higher()
        .samples(list(s, "/cluster/relay_rounds"))
        .anchor("cluster raw confirmed publish", raw, raw_rounds)
        .target_ratio(Op::Ge, 0.80),
        Figure::new(
            b,
            "inbound stored, one active instance",
            at(s, "/inbound/updates_per_sec"),
            "updates/s",
        )
        .higher(),
    ]);
    out
}

// ---------------------------------------------------------------- anchors

/// Redis `PING` round trips, timed one by one in rounds (µs): the median
/// round's p50 and p99, and each round's.
struct Ping {
    p50: f64,
    p99: f64,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
}

async fn redis_ping(rounds: usize, n: usize) -> Ping {
    let url = Services::from_env().redis;
    let client = Builder::from_config(RedisConfig::from_url(&url).expect("the Redis URL"))
        .build()
        .expect("a Redis client");
    client.init().await.expect("Redis answers");
    for _ in 0..n.min(1_000) {
        let _: String = client.ping(None).await.unwrap();
    }
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut took = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let _: String = client.ping(None).await.unwrap();
            took.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        took.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
        println!("    round {round}: {n} PINGs, p50 {p50:.1} µs, p99 {p99:.1} µs");
        p50s.push(p50);
        p99s.push(p99);
    }
    let _ = client.quit().await;
    Ping {
        p50: median(&p50s),
        p99: median(&p99s),
        p50s,
        p99s,
    }
}

/// nginx with one worker serving a 2-byte file (as the authz bench runs it)
/// under the same wrk, `rounds` rounds of `seconds`: requests/s of each.
async fn nginx_rounds(rounds: usize, seconds: u64) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!("fastprep-bench-all-nginx-{}", free_port()));
    let (url, mut child) = crate::authz::start_nginx(&dir);
    let started = Instant::now();
    while !reqwest::get(&url)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let u = url.clone();
    let rates = tokio::task::spawn_blocking(move || {
        crate::authz::wrk(&u, seconds.min(2), None);
        (0..rounds)
            .map(|_| crate::authz::wrk(&u, seconds, None).0)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    for r in &rates {
        println!("    nginx static, 2-byte file: {r:.0} req/s");
    }
    rates
}

// ---------------------------------------------------------------- the run

/// Runs one bench; a panic is reported and the run goes on.
async fn guarded<F: Future<Output = Value>>(
    name: &str,
    fut: F,
    seconds: &mut serde_json::Map<String, Value>,
    failed: &mut Vec<String>,
) -> Option<Value> {
    println!("\n======== bench all: {name} ========");
    let started = Instant::now();
    let out = AssertUnwindSafe(fut).catch_unwind().await;
    let secs = started.elapsed().as_secs_f64();
    seconds.insert(name.to_owned(), json!(secs));
    match out {
        Ok(v) => {
            println!("======== {name}: {secs:.0} s ========");
            Some(v)
        }
        Err(_) => {
            println!("======== {name}: FAILED after {secs:.0} s (its panic is above) ========");
            failed.push(name.to_owned());
            None
        }
    }
}

/// The relay bench lives in `main`; it runs as a child of this binary and
/// its figures are read back from `bench-results/relay.json`.
async fn relay_child(args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("this binary's path");
    let started = std::time::SystemTime::now();
    let status = tokio::process::Command::new(exe)
        .arg("relay")
        .args(args)
        .status()
        .await
        .expect("start fastprep-bench relay");
    assert!(status.success(), "fastprep-bench relay: {status}");
    let path = "bench-results/relay.json";
    let fresh = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|m| m >= started);
    assert!(fresh, "{path} was not written by this run");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn machine() -> Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": mem_kib / 1024.0 / 1024.0,
        "cpu": model,
        "kernel": sh("uname", &["-r"]),
        "load_average_at_start": loadavg(),
    })
}

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

pub async fn run(args: Args) -> i32 {
    let sizes = Sizes::new(args.quick);
    let began = Instant::now();
    let started_at = chrono::Utc::now();
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty =
        sh("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    let machine = machine();
    println!(
        "bench all{}: commit {}{}; {machine}",
        if args.quick {
            " --quick (sizes in seconds: the figures mean nothing)"
        } else {
            ""
        },
        commit.as_deref().unwrap_or("?"),
        if dirty == Some(true) {
            " (uncommitted changes)"
        } else {
            ""
        },
    );
    println!(
        "binaries from {}",
        fastprep_tests::process::bin_dir().display()
    );
    let mut seconds = serde_json::Map::new();
    let mut failed = Vec::new();
    let mut figures: Vec<Figure> = Vec::new();

    if let Some(r) = guarded(
        "relay",
        relay_child(&sizes.relay),
        &mut seconds,
        &mut failed,
    )
    .await
    {
        figures.extend(relay_figures(&r, sizes.relay_rate));
    }

    let ping = guarded(
        "redis-ping",
        async {
            println!(
                "Redis PING round trip, {} rounds of {}",
                sizes.ping.0, sizes.ping.1
            );
            let p = redis_ping(sizes.ping.0, sizes.ping.1).await;
            json!({"p50_us": p.p50, "p99_us": p.p99, "rounds_p50_us": p.p50s, "rounds_p99_us": p.p99s})
        },
        &mut seconds,
        &mut failed,
    )
    .await;
    let ping = Ping {
        p50: ping.as_ref().map_or(f64::NAN, |p| at(p, "/p50_us")),
        p99: ping.as_ref().map_or(f64::NAN, |p| at(p, "/p99_us")),
        p50s: ping
            .as_ref()
            .map(|p| list(p, "/rounds_p50_us"))
            .unwrap_or_default(),
        p99s: ping
            .as_ref()
            .map(|p| list(p, "/rounds_p99_us"))
            .unwrap_or_default(),
    };
    figures.push(
        Figure::new("redis", "PING round trip p50", ping.p50, "µs")
            .samples(ping.p50s.clone())
            .reference(),
    );
    figures.push(
        Figure::new("redis", "PING round trip p99", ping.p99, "µs")
            .samples(ping.p99s.clone())
            .reference(),
    );

    let (checks, wrk_seconds, rounds, changes, holders) = sizes.authz;
    if let Some(a) = guarded(
        "authz",
        async {
            let v = crate::authz::run(crate::authz::Args {
                checks,
                wrk_seconds,
                rounds,
                changes,
                holders,
            })
            .await;
            write_figures("authz", &v);
            v
        },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        figures.extend(authz_figures(&a, &ping));
    }

    let (sockets, rate, secs, changes) = sizes.realtime;
    if let Some(r) = guarded(
        "realtime",
        async {
            let audience = crate::realtime::Audience::Scoped;
            let v = crate::realtime::run(crate::realtime::Args {
                audience,
                sockets,
                rate,
                seconds: secs,
                changes,
            })
            .await;
            write_figures(&format!("realtime-{}", audience.name()), &v);
            v
        },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        figures.extend(realtime_figures(&r));
    }

    let (crossings, threshold) = sizes.alerts;
    if let Some(a) = guarded(
        "alerts",
        async {
            let v = crate::alerts::run(crate::alerts::Args {
                crossings,
                threshold,
            })
            .await;
            write_figures("alerts", &v);
            v
        },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        figures.extend(alerts_figures(&a));
    }

    let (wrk_seconds, rounds, uploaders, uploads_each) = sizes.attachments;
    let mut nginx = Vec::new();
    if let Some(n) = guarded(
        "nginx-before-attachments",
        async { json!(nginx_rounds(sizes.nginx_rounds, wrk_seconds).await) },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        nginx.extend(list(&n, ""));
    }
    let attachments = guarded(
        "attachments",
        async {
            let v = crate::attachments::run(crate::attachments::Args {
                wrk_seconds,
                rounds,
                uploaders,
                uploads_each: uploads_each.min(50),
            })
            .await;
            write_figures("attachments", &v);
            v
        },
        &mut seconds,
        &mut failed,
    )
    .await;
    if let Some(n) = guarded(
        "nginx-after-attachments",
        async { json!(nginx_rounds(sizes.nginx_rounds, wrk_seconds).await) },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        nginx.extend(list(&n, ""));
    }
    if let Some(a) = attachments {
        figures.extend(attachments_figures(&a, &nginx));
    }

    let (letters, rounds) = sizes.replay;
    if let Some(r) = guarded(
        "replay",
        async {
            let v = crate::replay::run(crate::replay::Args { letters, rounds }).await;
            write_figures("replay", &v);
            v
        },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        figures.extend(replay_figures(&r));
    }

    let (starts, idle) = sizes.footprint;
    if let Some(f) = guarded(
        "footprint",
        async {
            let v = crate::footprint::run(crate::footprint::Args {
                starts,
                idle: Duration::from_secs(idle),
            })
            .await;
            write_figures("footprint", &v);
            v
        },
        &mut seconds,
        &mut failed,
    )
    .await
    {
        figures.extend(footprint_figures(&f));
    }

    if args.with_scale {
        let (replies, chats, events) = sizes.scale;
        if let Some(s) = guarded(
            "scale",
            async {
                let v = crate::scale::run(crate::scale::Args {
                    replies,
                    chats,
                    events,
                })
                .await;
                write_figures("scale", &v);
                v
            },
            &mut seconds,
            &mut failed,
        )
        .await
        {
            figures.extend(scale_figures(&s));
        }
    }

    let total = began.elapsed().as_secs_f64();
    println!(
        "\n======== bench all: every figure ({:.1} min{}) ========\n",
        total / 60.0,
        if args.quick {
            "; --quick: the figures mean nothing"
        } else {
            ""
        }
    );
    print_table(&figures);

    let record = json!({
        "at": started_at,
        "commit": commit,
        "uncommitted_changes": dirty,
        "quick": args.quick,
        "with_scale": args.with_scale,
        "machine": machine,
        "load_average_at_end": loadavg(),
        "sizes": sizes.to_json(),
        "seconds": seconds,
        "total_minutes": total / 60.0,
        "failed": failed,
        "noise_floor": NOISE_FLOOR,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
    });
    write_figures("all", &record);

    let mut code = 0;
    if !failed.is_empty() {
        println!("FAILED: {} (their figures are missing)", failed.join(", "));
        code = 1;
    }
    if args.no_compare {
        println!("comparison skipped (--no-compare)");
    } else if compare(&record, args.against.as_deref()) > 0 {
        code = 1;
    }
    code
}

fn print_table(figures: &[Figure]) {
    let rows: Vec<[String; 6]> = figures
        .iter()
        .map(|f| {
            [
                format!("{}{}", f.key(), if f.is_anchor { " (anchor)" } else { "" }),
                format!("{} {}", num(f.value), f.unit),
                f.anchor
                    .as_ref()
                    .map(|(n, v)| format!("{n} {} {}", num(*v), f.unit))
                    .unwrap_or_default(),
                f.ratio().map(pct).unwrap_or_default(),
                f.target.map(|t| t.text(f.unit)).unwrap_or_default(),
                match f.met() {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None if f.target.is_some() => "n/a".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let head = ["figure", "value", "anchor", "ratio", "target", "met?"];
    let mut w = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String; 6]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(w[i] - c.chars().count());
                if i == 0 || i == 2 || i == 4 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&head.map(str::to_owned));
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in &rows {
        line(r);
    }
}

/// What a record says of one figure.
struct Seen {
    compared: f64,
    of_ratio: bool,
    noise: f64,
    higher: bool,
}

fn seen(f: &Value) -> Option<(String, Seen, bool)> {
    let key = f["key"].as_str()?.to_owned();
    let of_ratio = !f["anchor"].is_null();
    let compared = if of_ratio {
        f["ratio"].as_f64()
    } else {
        f["value"].as_f64()
    }
    .unwrap_or(f64::NAN);
    Some((
        key,
        Seen {
            compared,
            of_ratio,
            noise: f["noise"].as_f64().unwrap_or(NOISE_FLOOR),
            higher: f["better"] == "higher",
        },
        f["is_anchor"].as_bool().unwrap_or(false),
    ))
}

/// Compares `record` with the last committed one (or `against`); prints
/// the regressions and returns how many.
fn compare(record: &Value, against: Option<&std::path::Path>) -> usize {
    let (old, source) = match against {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => (t, path.display().to_string()),
            Err(e) => {
                println!("no record to compare with: {}: {e}", path.display());
                return 0;
            }
        },
        None => match sh("git", &["show", &format!("HEAD:{RECORD}")]) {
            Some(t) => (t, format!("HEAD:{RECORD}")),
            None => {
                println!(
                    "no committed record (`git show HEAD:{RECORD}` finds none): this is the first; nothing to compare"
                );
                return 0;
            }
        },
    };
    let Ok(old) = serde_json::from_str::<Value>(&old) else {
        println!("{source} is not JSON: nothing compared");
        return 0;
    };
    println!(
        "\ncompared with {source}: commit {}, {}{}",
        old["commit"].as_str().unwrap_or("?"),
        old["at"].as_str().unwrap_or("?"),
        if old["quick"] == true {
            ", --quick"
        } else {
            ""
        }
    );
    if old["quick"] != record["quick"] {
        println!("one of the two records is a --quick run and the other is not: nothing compared");
        return 0;
    }
    let olds: std::collections::HashMap<String, Seen> = old["figures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(seen)
        .map(|(k, s, _)| (k, s))
        .collect();
    let mut regressions = 0;
    let (mut within, mut better, mut skipped) = (0, Vec::new(), Vec::new());
    for f in record["figures"].as_array().into_iter().flatten() {
        let Some((key, new, is_anchor)) = seen(f) else {
            continue;
        };
        if is_anchor {
            continue;
        }
        let Some(old) = olds.get(&key) else {
            skipped.push(format!("{key} (not in the record)"));
            continue;
        };
        if old.of_ratio != new.of_ratio {
            skipped.push(format!("{key} (anchored in one record only)"));
            continue;
        }
        if !new.compared.is_finite() || !old.compared.is_finite() {
            skipped.push(format!("{key} (not measured)"));
            continue;
        }
        let noise = new.noise.max(old.noise);
        let what = if new.of_ratio { "ratio" } else { "value" };
        let show = |x: f64| {
            if new.of_ratio { pct(x) } else { num(x) }
        };
        let worse = if new.higher {
            new.compared < old.compared * (1.0 - noise)
        } else {
            new.compared > old.compared * (1.0 + noise)
        };
        let improved = if new.higher {
            new.compared > old.compared * (1.0 + noise)
        } else {
            new.compared < old.compared * (1.0 - noise)
        };
        let change = if old.compared != 0.0 {
            format!("{:+.1}%", (new.compared / old.compared - 1.0) * 100.0)
        } else {
            "from 0".into()
        };
        if worse {
            regressions += 1;
            println!(
                "REGRESSION {key}: {what} {} against {} ({change}; {} is better; noise ±{:.0}%)",
                show(new.compared),
                show(old.compared),
                if new.higher { "higher" } else { "lower" },
                noise * 100.0
            );
        } else if improved {
            better.push(format!(
                "{key}: {what} {} against {} ({change}; noise ±{:.0}%)",
                show(new.compared),
                show(old.compared),
                noise * 100.0
            ));
        } else {
            within += 1;
        }
    }
    for b in &better {
        println!("better     {b}");
    }
    for s in &skipped {
        println!("not compared: {s}");
    }
    println!(
        "{regressions} regression(s), {} better beyond the noise, {within} within it, {} not compared",
        better.len(),
        skipped.len()
    );
    regressions
}
