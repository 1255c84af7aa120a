//! `fastprep-bench alerts`: time from the failure that crosses the threshold
//! to Slack (a local receiver) holding the alert, over many crossings, with
//! two alerts instances sharing the work; and the alerts process's peak RSS.

use std::time::{Duration, Instant};

use broker_config::{Envelope, Event, Publisher, events::MessageDeliveryFailed};
use fastprep_tests::{TestEnv, slack::SlackReceiver, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ms, percentile};

pub struct Args {
    pub crossings: usize,
    pub threshold: usize,
}

fn failed() -> Envelope {
    Envelope::new(Event::MessageDeliveryFailed(MessageDeliveryFailed {
        message_id: Uuid::now_v7(),
        conversation_id: Uuid::now_v7(),
        error: "chat_not_found".into(),
        attempts: 8,
    }))
}

pub async fn run(args: Args) -> Value {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    let knobs = [
        ("SLACK_WEBHOOK_URL", slack.url.clone()),
        ("FAIL_ALERT_THRESHOLD", args.threshold.to_string()),
        ("FAIL_ALERT_WINDOW_SEC", "600".to_owned()),
        // A crossing, then a cooldown just long enough to start the next.
        ("FAIL_ALERT_COOLDOWN_SEC", "1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let one = env.start_consumer("alerts", None, &knobs).await;
    let two = env.start_consumer("alerts", None, &knobs).await;
    let conn = env.broker().await;
    let publisher = Publisher::new(&conn).await.unwrap();
    println!(
        "(a) {} threshold crossings of {} failures, two alerts instances, Slack played locally",
        args.crossings, args.threshold
    );
    let mut latencies = Vec::with_capacity(args.crossings);
    for i in 0..args.crossings {
        // Below the threshold, then the one failure that crosses it.
        for _ in 1..args.threshold {
            publisher.publish_envelope(&failed(), &[]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = slack.accepted().len();
        let crossing = Instant::now();
        publisher.publish_envelope(&failed(), &[]).await.unwrap();
        let arrived = wait_for("the alert in Slack", Duration::from_secs(10), || {
            let posts = slack.accepted();
            async move { posts.get(before).map(|p| p.at) }
        })
        .await;
        latencies.push(arrived.duration_since(crossing).as_secs_f64() * 1000.0);
        // Let the cooldown end before the next crossing.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        if (i + 1) % 25 == 0 {
            println!("    {} crossings", i + 1);
        }
    }
    let alerts = slack.accepted().len();
    latencies.sort_by(f64::total_cmp);
    println!(
        "    crossing → Slack: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; alerts received {alerts} for {} crossings",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        args.crossings
    );
    let rss: Vec<f64> = [one.idx, two.idx]
        .iter()
        .map(|idx| env.proc(*idx).peak_rss_kib().unwrap_or(0) as f64 / 1024.0)
        .collect();
    println!(
        "(b) peak RSS of the alerts processes: {:.1} / {:.1} MiB",
        rss[0], rss[1]
    );
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
    json!({
        "crossings": args.crossings,
        "threshold": args.threshold,
        "alerts_received": alerts,
        "crossing_to_slack": ms(&latencies),
        "peak_rss_mib": rss,
    })
}
