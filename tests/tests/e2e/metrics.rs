//! `/metrics` of every process parses as Prometheus text and carries the
//! names of DESIGN §11 with real counts.

use std::time::Duration;

use fastprep_tests::TestEnv;

/// The value of `name` with every given label, summed over other labels.
/// A histogram's `_count` falls back to its +Inf bucket when the parser
/// kept the histogram whole.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).ok()?;
    let matching = |metric: &str| {
        scrape
            .samples
            .iter()
            .filter(move |s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(*v),
                prometheus_parse::Value::Histogram(h) => {
                    Some(h.iter().map(|b| b.count).fold(0.0, f64::max))
                }
                prometheus_parse::Value::Summary(_) => None,
            })
            .collect::<Vec<f64>>()
    };
    let mut values = matching(name);
    if values.is_empty()
        && let Some(base) = name.strip_suffix("_count")
    {
        values = matching(base);
    }
    (!values.is_empty()).then(|| values.iter().sum())
}

async fn scrape(env: &TestEnv, url: &str) -> String {
    let text = env.http.text(url).await;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{url} is not Prometheus text: {e}\n{text}"));
    assert!(
        !text.contains("otel_scope"),
        "scope labels leak into series"
    );
    text
}

#[tokio::test]
async fn metrics_carry_the_design_names_with_real_counts() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    env.inject(&sys.adapter, 1111, 1, "hi").await;
    let conv = env.conversation_for(&sys, 1111).await;
    env.set_faults(
        &sys.adapter,
        serde_json::json!({"fail_next": 1, "mode": "server_error"}),
    )
    .await;
    let msg = env.reply(&sys, &conv, "metrics please", "m-1").await;
    env.wait_status(msg["id"].as_str().unwrap(), "sent", Duration::from_secs(30))
        .await;
    // Gauges are sampled every few seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let relay = scrape(&env, &sys.relay.metrics_url).await;
    assert!(
        sample(&relay, "outbox_published_total", &[]).unwrap() >= 5.0,
        "{relay}"
    );
    assert!(sample(&relay, "outbox_commit_to_confirm_seconds_count", &[]).unwrap() >= 5.0);
    assert_eq!(sample(&relay, "outbox_pending_rows", &[]), Some(0.0));
    assert!(sample(&relay, "outbox_oldest_pending_age_seconds", &[]).is_some());

    let delivery = scrape(&env, &sys.delivery.metrics_url).await;
    assert_eq!(
        sample(&delivery, "outbox_processed_total", &[("status", "done")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&delivery, "outbox_processed_total", &[("status", "retry")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&delivery, "adapter_latency_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &delivery,
            "consumer_messages_total",
            &[("queue", "tg-delivery"), ("outcome", "ack")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &delivery,
            "consumer_messages_total",
            &[("queue", "tg-delivery"), ("outcome", "retry")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &delivery,
            "consumer_handler_duration_seconds_count",
            &[("queue", "tg-delivery")]
        )
        .unwrap()
            >= 2.0
    );

    let inbound = scrape(&env, &sys.inbound.metrics_url).await;
    assert_eq!(
        sample(
            &inbound,
            "consumer_messages_total",
            &[("queue", "inbound"), ("outcome", "ack")]
        ),
        Some(1.0)
    );
    let api = scrape(&env, &sys.api.metrics_url).await;
    // The parser cannot read braces inside label values, so look at the line itself.
    assert!(
        api.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains(r#"http_route="/api/conversations/{id}/messages""#)
                && l.contains(r#"http_request_method="POST""#)
        ),
        "{api}"
    );
    env.cleanup().await;
}
