//! The reply path at steady rates: one step posts replies at a rate for a
//! while and times each from the `POST`'s answer to the sandbox's receipt;
//! a ramp raises the rate step by step until the p99 passes a bound or the
//! replies are not all delivered in time (a backlog), and names the last
//! rate that held as the ceiling.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use fastprep_tests::{TestEnv, system::Started};

use super::{cpu_snapshot, percentile, post_at_rate};

/// What one step measured.
pub struct Step {
    pub rate: u64,
    pub offered: f64,
    /// Sorted, milliseconds.
    pub latencies: Vec<f64>,
    pub posted: usize,
    pub max_sends: i64,
    /// (accepted at, latency ms), by acceptance.
    pub timeline: Vec<(DateTime<Utc>, f64)>,
    /// CPU seconds per process over the step, by name.
    pub cpu: Vec<(String, f64)>,
    pub seconds: f64,
}

impl Step {
    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies, q)
    }

    pub fn delivered_all(&self) -> bool {
        self.latencies.len() == self.posted
    }

    /// `api 0.61, postgres 1.58, …` CPU ms per reply.
    pub fn cpu_per_reply(&self) -> String {
        self.cpu
            .iter()
            .map(|(n, s)| format!("{n} {:.2}", s / self.posted.max(1) as f64 * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Cores busy over the step, all processes of the run together.
    pub fn cores(&self) -> f64 {
        self.cpu.iter().map(|c| c.1).sum::<f64>() / self.seconds.max(1e-9)
    }
}

/// The processes of the system under test.
pub struct Target<'a> {
    pub api: &'a Started,
    pub adapter: &'a Started,
    pub named: Vec<(&'static str, &'a Started)>,
    pub token: &'a str,
    pub convs: &'a [String],
}

/// Posts at `rate` for `seconds`, then waits (up to `drain`) for every reply
/// at the sandbox; clears the sandbox's log afterwards so the next step's
/// polls stay small.
pub async fn step(
    env: &mut TestEnv,
    t: &Target<'_>,
    rate: u64,
    seconds: u64,
    tag: &str,
    drain: Duration,
) -> Step {
    let posted = (rate * seconds) as usize;
    let cpu_before = cpu_snapshot(env, &t.named).await;
    let started = std::time::Instant::now();
    let accepted = post_at_rate(env, &t.api.url, t.token, t.convs, rate, posted as u64, tag).await;
    let offered = posted as f64 / started.elapsed().as_secs_f64();
    let deadline = std::time::Instant::now() + drain;
    let sent = loop {
        let sent = env.sent(t.adapter).await;
        let arrived = sent["messages"]
            .as_array()
            .map(|m| m.iter().filter(|m| mine(&accepted, m)).count())
            .unwrap_or(0);
        if arrived >= posted || std::time::Instant::now() > deadline {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seconds_taken = started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(env, &t.named).await;
    let mut latencies = Vec::with_capacity(posted);
    let mut timeline = Vec::with_capacity(posted);
    let mut max_sends = 0;
    for m in sent["messages"].as_array().into_iter().flatten() {
        let key = m["idempotency_key"].as_str().unwrap_or_default();
        let Some(at) = accepted.get(key) else {
            continue;
        };
        let Ok(received) = serde_json::from_value::<DateTime<Utc>>(m["received_at"].clone()) else {
            continue;
        };
        let ms = (received - *at).as_seconds_f64() * 1000.0;
        latencies.push(ms);
        timeline.push((*at, ms));
        max_sends = max_sends.max(m["send_count"].as_i64().unwrap_or(0));
    }
    latencies.sort_by(f64::total_cmp);
    timeline.sort_by_key(|t| t.0);
    env.reset_sandbox(t.adapter).await;
    let cpu = cpu_after
        .iter()
        .map(|(name, after)| {
            let before = cpu_before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |b| b.1);
            (name.clone(), after - before)
        })
        .collect();
    Step {
        rate,
        offered,
        latencies,
        posted,
        max_sends,
        timeline,
        cpu,
        seconds: seconds_taken,
    }
}

fn mine(accepted: &HashMap<String, DateTime<Utc>>, m: &serde_json::Value) -> bool {
    m["idempotency_key"]
        .as_str()
        .is_some_and(|k| accepted.contains_key(k))
}

/// Raises the rate from `from` by `by` per step until a step's p99 passes
/// `bound_ms` or its replies are not all delivered within a second of the
/// last `POST`. Returns every step; the ceiling is the last that held.
pub async fn ramp(
    env: &mut TestEnv,
    t: &Target<'_>,
    (from, by, max): (u64, u64, u64),
    seconds: u64,
    bound_ms: f64,
    run: usize,
) -> (Option<u64>, Vec<Step>) {
    let mut steps = Vec::new();
    let mut ceiling = None;
    let mut rate = from;
    while rate <= max {
        let s = step(
            env,
            t,
            rate,
            seconds,
            &format!("ramp{run}-{rate}"),
            Duration::from_secs(1),
        )
        .await;
        let held = s.delivered_all() && s.p(0.99) <= bound_ms;
        println!(
            "      {rate:>5}/s: p50 {:>7.1} ms, p99 {:>7.1} ms, delivered {}/{} in time, {:.2} cores busy{}",
            s.p(0.5),
            s.p(0.99),
            s.latencies.len(),
            s.posted,
            s.cores(),
            if held { "" } else { "  <- past the bound" }
        );
        println!("             CPU ms per reply: {}", s.cpu_per_reply());
        steps.push(s);
        if !held {
            break;
        }
        ceiling = Some(rate);
        rate += by;
        // Whatever is still queued drains before the next step.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // A step past the bound leaves a backlog; let it drain.
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.reset_sandbox(t.adapter).await;
    (ceiling, steps)
}
