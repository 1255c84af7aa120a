//! `fastprep-bench replay`: `fastprep-ops dlq replay` of N dead letters back
//! to tg-delivery, beside raw confirmed publishing to the same queue in the
//! same rounds, and the peak memory of `fastprep-ops`.

use std::time::{Duration, Instant};

use chrono::Utc;
use fastprep_tests::TestEnv;
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueuePurgeOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde_json::json;

pub struct Args {
    pub letters: usize,
    pub rounds: usize,
}

/// Fills tg-delivery.dlq with `n` dead letters as the runner writes them
/// (published to fastprep.dlx, reason and source in the headers).
async fn fill(env: &TestEnv, n: usize) {
    let (conn, ch) = crate::confirm_channel(env, "bench-dead-letters").await;
    let mut in_flight: FuturesUnordered<lapin::PublisherConfirm> = FuturesUnordered::new();
    for i in 0..n {
        if in_flight.len() >= 2_000 {
            assert!(in_flight.next().await.unwrap().unwrap().is_ack());
        }
        let id = uuid::Uuid::now_v7().to_string();
        let body = serde_json::to_vec(&json!({
            "id": id, "type": "message.outgoing.v1", "occurred_at": Utc::now(),
            "aggregate_type": "message", "aggregate_id": uuid::Uuid::now_v7().to_string(),
            "data": crate::sample_payload(i)
        }))
        .unwrap();
        let mut headers = FieldTable::default();
        for (k, v) in [
            ("x-fastprep-dlq-source", "tg-delivery".to_owned()),
            ("x-fastprep-failure", "user_blocked".to_owned()),
            ("x-fastprep-death-reason", "rejected".to_owned()),
            ("x-fastprep-died-at", Utc::now().to_rfc3339()),
        ] {
            headers.insert(
                ShortString::from(k),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
        let confirm = ch
            .basic_publish(
                "fastprep.dlx".into(),
                "tg-delivery".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(ShortString::from(id.as_str()))
                    .with_type("message.outgoing.v1".into())
                    .with_content_type("application/json".into())
                    .with_headers(headers),
            )
            .await
            .unwrap();
        in_flight.push(confirm);
    }
    while let Some(c) = in_flight.next().await {
        assert!(c.unwrap().is_ack());
    }
    // The alerts queue takes a copy of every tg-delivery dead letter.
    ch.queue_purge("alerts".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Runs `fastprep-ops --json dlq replay tg-delivery.dlq`; its summary, the
/// seconds it took and its peak RSS (KiB, read until it exits).
async fn replay_once(env: &TestEnv) -> (serde_json::Value, f64, u64) {
    let started = Instant::now();
    let mut child =
        std::process::Command::new(fastprep_tests::process::bin_dir().join("fastprep-ops"))
            .args(["--json", "dlq", "replay", "tg-delivery.dlq"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.base_env())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start fastprep-ops");
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "fastprep-ops failed");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (summary, elapsed, peak)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(args: Args) -> serde_json::Value {
    let env = TestEnv::new().await;
    println!(
        "replay benchmark: {} dead letters back to tg-delivery, {} rounds; binaries from {}",
        args.letters,
        args.rounds,
        fastprep_tests::process::bin_dir().display()
    );
    let mut rounds = Vec::new();
    let (mut raw_rates, mut replay_rates, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let raw = crate::raw_publish(&env, args.letters).await;
        fill(&env, args.letters).await;
        let (summary, secs, peak_kib) = replay_once(&env).await;
        let replayed = summary["replayed"].as_u64().unwrap_or(0);
        assert_eq!(replayed as usize, args.letters, "{summary}");
        let rate = replayed as f64 / secs;
        let (conn, ch) = crate::confirm_channel(&env, "bench-purge").await;
        ch.queue_purge("tg-delivery".into(), QueuePurgeOptions::default())
            .await
            .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        let peak_mib = peak_kib as f64 / 1024.0;
        println!(
            "round {round}: raw confirmed publish {raw:.0}/s; replay {replayed} in {secs:.2}s = {rate:.0}/s ({:.1}% of raw); fastprep-ops peak RSS {peak_mib:.1} MiB",
            100.0 * rate / raw
        );
        rounds.push(json!({"raw_per_sec": raw, "replay_per_sec": rate, "seconds": secs, "peak_rss_mib": peak_mib}));
        raw_rates.push(raw);
        replay_rates.push(rate);
        peaks.push(peak_mib);
    }
    let (raw, rate) = (median(raw_rates), median(replay_rates));
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    println!(
        "median: replay {rate:.0}/s beside raw confirmed publish {raw:.0}/s ({:.1}%); fastprep-ops peak RSS at most {peak:.1} MiB",
        100.0 * rate / raw
    );
    env.cleanup().await;
    json!({
        "letters": args.letters,
        "rounds": rounds,
        "median_replay_per_sec": rate,
        "median_raw_per_sec": raw,
        "max_peak_rss_mib": peak,
    })
}
