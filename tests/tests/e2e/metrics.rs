//! `/metrics` of every process parses as Prometheus text and carries the
//! names of DESIGN §11 with real counts.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use fastprep_tests::{
    TestEnv,
    otlp::{OtlpReceiver, Point},
    slack::{Reply, SlackReceiver},
    wait_for,
    ws::Ws,
};
use reqwest::StatusCode;

/// Deliveries of `queue` that `instance` counted with `outcome`
/// (`consumer_messages_total`), scraped now; 0 when it counted none.
pub async fn handled(
    env: &fastprep_tests::TestEnv,
    instance: &fastprep_tests::system::Started,
    queue: &str,
    outcome: &str,
) -> f64 {
    let text = env.http.text(&instance.metrics_url).await;
    sample(
        &text,
        "consumer_messages_total",
        &[("queue", queue), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

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
    let sys = env.start_single_system().await;
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
    // The failed try schedules its own retry and is acked; the retry is a
    // second delivery, acked too. No broker retry tier is involved.
    assert_eq!(
        sample(
            &delivery,
            "consumer_messages_total",
            &[("queue", "tg-delivery"), ("outcome", "ack")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &delivery,
            "consumer_messages_total",
            &[("queue", "tg-delivery"), ("outcome", "retry")]
        )
        .unwrap_or(0.0),
        0.0
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

/// What `promtool check metrics` says of `text` (empty: nothing).
fn promtool(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said.trim().to_owned()
    } else {
        format!("exit {}: {said}", out.status)
    }
}

/// Every label value of every series: none may be an id, an email or text.
fn check_labels(process: &str, text: &str) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    for s in &scrape.samples {
        for (name, value) in s.labels.iter() {
            let value: &str = value;
            assert!(
                ![
                    "error", "message", "email", "user", "user_id", "id", "text", "reason"
                ]
                .contains(&name.as_str()),
                "{process}: {} has a label {name}",
                s.metric
            );
            assert!(
                uuid::Uuid::parse_str(value).is_err() && !value.contains('@') && value.len() <= 64,
                "{process}: {}{{{name}=\"{value}\"}} looks like an id, an email or free text",
                s.metric
            );
        }
    }
}

/// A series name and the labels it must carry.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)]);

#[tokio::test]
async fn every_process_exports_the_contract_names_and_passes_promtool() {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    // One Slack error, so the delivery-error counter has a value.
    slack.script(&[Reply::Status(500)]);
    let sys = env.start_single_system().await;
    let fanout = env.start_consumer("authz-fanout", None, &[]).await;
    let alerts = env
        .start_consumer(
            "alerts",
            None,
            &[
                ("SLACK_WEBHOOK_URL", slack.url.clone()),
                ("FAIL_ALERT_THRESHOLD", "1".to_owned()),
            ],
        )
        .await;
    // Traffic of every kind: inbound, a reply retried once then sent, two
    // replies failed for good (an alert, then one held by its cooldown), a
    // role change, an open socket.
    env.inject(&sys.adapter, 1212, 1, "hi").await;
    let conv = env.conversation_for(&sys, 1212).await;
    env.set_faults(
        &sys.adapter,
        serde_json::json!({"fail_next": 1, "mode": "server_error"}),
    )
    .await;
    let ok = env.reply(&sys, &conv, "sent after a retry", "m-ok").await;
    env.wait_status(ok["id"].as_str().unwrap(), "sent", Duration::from_secs(30))
        .await;
    for key in ["m-failed-1", "m-failed-2"] {
        env.set_faults(
            &sys.adapter,
            serde_json::json!({"fail_next": 1, "mode": "permanent"}),
        )
        .await;
        let failed = env.reply(&sys, &conv, "will not arrive", key).await;
        env.wait_status(
            failed["id"].as_str().unwrap(),
            "failed",
            Duration::from_secs(30),
        )
        .await;
    }
    let admin = env.admin_session(&sys.api.url).await;
    env.create_role(&sys.api.url, &admin.access, "metrics-role", &["audit.read"])
        .await;
    let (_socket, _) = Ws::connect(&sys.api.url, &admin.access).await;
    wait_for("the alert in Slack", Duration::from_secs(20), || {
        let n = slack.accepted().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // Gauges are sampled every few seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // DESIGN §11, on the process that owns each; with real counts, but for
    // the backlog gauges, which are zero when the relay keeps up.
    let contract: &[(&str, &str, &[Expected])] = &[
        (
            "relay",
            &sys.relay.metrics_url,
            &[
                ("outbox_published_total", &[]),
                ("outbox_pending_rows", &[]),
                ("outbox_oldest_pending_age_seconds", &[]),
                ("outbox_commit_to_confirm_seconds_count", &[]),
            ],
        ),
        (
            "tg-delivery",
            &sys.delivery.metrics_url,
            &[
                ("outbox_processed_total", &[("status", "done")]),
                ("outbox_processed_total", &[("status", "retry")]),
                ("outbox_processed_total", &[("status", "failed")]),
                ("adapter_latency_seconds_count", &[]),
                (
                    "consumer_messages_total",
                    &[("queue", "tg-delivery"), ("outcome", "ack")],
                ),
                (
                    "consumer_handler_duration_seconds_count",
                    &[("queue", "tg-delivery")],
                ),
            ],
        ),
        (
            "inbound",
            &sys.inbound.metrics_url,
            &[(
                "consumer_messages_total",
                &[("queue", "inbound"), ("outcome", "ack")],
            )],
        ),
        (
            "authz-fanout",
            &fanout.metrics_url,
            &[(
                "consumer_messages_total",
                &[("queue", "authz-fanout"), ("outcome", "ack")],
            )],
        ),
        (
            "alerts",
            &alerts.metrics_url,
            &[
                ("alerts_sent_total", &[("kind", "delivery")]),
                ("alerts_suppressed_total", &[("kind", "delivery")]),
                ("alerts_delivery_errors_total", &[]),
                (
                    "consumer_messages_total",
                    &[("queue", "alerts"), ("outcome", "ack")],
                ),
            ],
        ),
        (
            "api",
            &sys.api.metrics_url,
            &[
                ("authz_ep_cache_total", &[("result", "hit")]),
                ("authz_ep_cache_total", &[("result", "miss")]),
                ("ws_connections", &[]),
                ("http_server_request_duration_seconds_count", &[]),
            ],
        ),
        (
            "tg-adapter",
            &sys.adapter.metrics_url,
            &[("tg_adapter_send_duration_seconds_count", &[])],
        ),
    ];
    // The checker itself complains of what it should.
    assert!(!promtool("undocumented_thing 1\n").is_empty());
    let mut complaints = Vec::new();
    for (process, url, names) in contract {
        let text = scrape(&env, url).await;
        for (name, labels) in *names {
            let value = sample(&text, name, labels);
            assert!(
                value.is_some_and(|v| v > 0.0)
                    || (name.starts_with("outbox_")
                        && !name.ends_with("_total")
                        && value.is_some()),
                "{process}: {name}{labels:?} = {value:?}\n{text}"
            );
        }
        check_labels(process, &text);
        let said = promtool(&text);
        if !said.is_empty() {
            complaints.push(format!("{process}: {said}"));
        }
    }
    assert!(
        complaints.is_empty(),
        "promtool check metrics:\n{}",
        complaints.join("\n")
    );

    // Every name the dashboard and the alert rules query is exported by one
    // of the processes, or by RabbitMQ's own Prometheus plugin.
    let mut exported = std::collections::BTreeSet::new();
    for (_, url, _) in contract {
        exported.extend(names_in_exposition(&env.http.text(url).await));
    }
    let rabbit = std::env::var("TEST_RABBITMQ_PROMETHEUS")
        .unwrap_or_else(|_| "http://127.0.0.1:15692/metrics/per-object".to_owned());
    exported.extend(names_in_exposition(&env.http.text(&rabbit).await));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("docs/grafana_outbox_dashboard.json")).unwrap(),
    )
    .unwrap();
    let queried: std::collections::BTreeSet<String> = dashboard_exprs(&dashboard)
        .iter()
        .flat_map(|e| promql_metric_names(e))
        .collect();
    let rules: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_file("docs/prometheus_outbox_rules.yaml")).unwrap(),
    )
    .unwrap();
    let ruled: std::collections::BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .flat_map(|r| promql_metric_names(r["expr"].as_str().unwrap()))
        .collect();
    assert!(ruled.contains("tg_session_state") && ruled.contains("rabbitmq_queue_messages"));
    for name in queried.iter().chain(&ruled) {
        assert!(
            exported.contains(name),
            "{name} is queried but no process (nor RabbitMQ's plugin) exports it"
        );
    }
    for name in [
        "outbox_processed_total",
        "adapter_latency_seconds_bucket",
        "outbox_published_total",
        "outbox_pending_rows",
        "outbox_oldest_pending_age_seconds",
        "outbox_commit_to_confirm_seconds_bucket",
        "consumer_messages_total",
        "consumer_handler_duration_seconds_bucket",
        "authz_ep_cache_total",
        "ws_connections",
        "alerts_sent_total",
        "alerts_suppressed_total",
        "alerts_delivery_errors_total",
        "http_server_request_duration_seconds_count",
        "tg_session_state",
    ] {
        assert!(
            queried.contains(name),
            "the dashboard has no panel on {name}"
        );
    }
    let (s, _) = env
        .http
        .get(&format!("{}/api/health", sys.api.url), "")
        .await;
    assert_eq!(s, StatusCode::OK);
    env.cleanup().await;
}

/// A file of the repository (tests run from the crate's folder).
fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The metric names of a Prometheus text exposition.
fn names_in_exposition(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn dashboard_exprs(panel: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for child in panel["panels"].as_array().into_iter().flatten() {
        out.extend(dashboard_exprs(child));
    }
    out
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges and strings that are neither functions, keywords nor
/// the label lists of `by (...)` and its kin.
fn promql_metric_names(expr: &str) -> Vec<String> {
    // Modifiers followed by a label list, which holds no metric names.
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may put `by (...)` before their parenthesis.
    const KEYWORDS: [&str; 18] = [
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += usize::from(chars[i] == '\\') + 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_group => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_group = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if GROUPING.contains(&word.as_str()) {
                    skip_group = true;
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn promql_names_are_read_as_prometheus_would() {
    assert_eq!(
        promql_metric_names(
            r#"histogram_quantile(0.99, sum by (le, queue) (rate(consumer_handler_duration_seconds_bucket{queue="x"}[5m])))"#
        ),
        ["consumer_handler_duration_seconds_bucket"]
    );
    assert_eq!(
        promql_metric_names(
            r#"sum(rate(a_total{status="retry"}[5m])) > 2 * (sum(rate(b_total[5m])) or vector(0))"#
        ),
        ["a_total", "b_total"]
    );
    assert_eq!(
        promql_metric_names("absent(tg_session_state)"),
        ["tg_session_state"]
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        vec!["check", "rules", "prometheus_outbox_rules.yaml"],
        vec!["test", "rules", "prometheus_outbox_rules.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(repo_file("docs"))
            .output()
            .expect("promtool (Debian's prometheus package; scripts/test installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The name a Prometheus-compatible backend gives a pushed point (its OTLP
/// translation with suffixes: the unit, then `_total` for a monotonic sum),
/// as the scrape names the same instrument; a histogram as its `_count`.
fn prometheus_name(p: &Point) -> String {
    let mut name = p.name.clone();
    let unit = match p.unit.as_str() {
        "s" => "seconds",
        "By" => "bytes",
        "ms" => "milliseconds",
        _ => "",
    };
    if !unit.is_empty() && !name.ends_with(unit) {
        name = format!("{name}_{unit}");
    }
    match p.kind {
        "sum" if p.monotonic && !name.ends_with("_total") => format!("{name}_total"),
        "histogram" => format!("{name}_count"),
        _ => name,
    }
}

/// The latest pushed value of each series of `service`.
fn latest(points: &[Point], service: &str) -> Vec<Point> {
    let mut by_series: std::collections::BTreeMap<(String, Vec<(String, String)>), Point> =
        std::collections::BTreeMap::new();
    for p in points.iter().filter(|p| p.service == service) {
        let key = (
            p.name.clone(),
            p.labels.clone().into_iter().collect::<Vec<_>>(),
        );
        by_series.insert(key, p.clone());
    }
    by_series.into_values().collect()
}

/// Render's background workers take no inbound traffic, so no scraper
/// reaches their `/metrics`: with `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` set,
/// every process pushes its metrics over OTLP (ADR 0022). What arrives is
/// cumulative, tagged with the service and an instance id, and, under the
/// names a Prometheus-compatible backend gives it, is what `/metrics` shows.
#[tokio::test]
async fn every_process_pushes_what_its_metrics_endpoint_shows_over_otlp() {
    let mut env = TestEnv::new().await;
    let otlp = OtlpReceiver::start().await;
    env.set_for_all(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        &format!("{}/v1/metrics", otlp.endpoint),
    );
    env.set_for_all("OTEL_METRIC_EXPORT_INTERVAL", "200");
    let sys = env.start_single_system().await;
    env.inject(&sys.adapter, 1313, 1, "pushed hello").await;
    let conv = env.conversation_for(&sys, 1313).await;
    let msg = env.reply(&sys, &conv, "pushed reply", "push-1").await;
    env.wait_status(msg["id"].as_str().unwrap(), "sent", Duration::from_secs(30))
        .await;

    let processes = [
        ("fastprep-api", &sys.api),
        ("fastprep-relay", &sys.relay),
        ("fastprep-tg-delivery", &sys.delivery),
        ("fastprep-inbound", &sys.inbound),
        ("fastprep-tg-adapter", &sys.adapter),
    ];
    // The counters that this traffic moved, pushed with the value the
    // process's own /metrics shows (both read after the traffic is done,
    // so they meet within a few pushes).
    // (service, name as scraped, labels, at least)
    type Moved = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        f64,
    );
    let moved: &[Moved] = &[
        ("fastprep-relay", "outbox_published_total", &[], 3.0),
        (
            "fastprep-tg-delivery",
            "outbox_processed_total",
            &[("status", "done")],
            1.0,
        ),
        (
            "fastprep-tg-delivery",
            "adapter_latency_seconds_count",
            &[],
            1.0,
        ),
    ];
    for (service, name, labels, at_least) in moved {
        let started = &processes.iter().find(|(s, _)| s == service).unwrap().1;
        let scraped = wait_for(
            &format!("{service} pushing {name} as /metrics shows it"),
            Duration::from_secs(20),
            || {
                let points = otlp.points();
                let url = started.metrics_url.clone();
                let http = env.http.clone();
                async move {
                    let text = http.text(&url).await;
                    let scraped = sample(&text, name, labels)?;
                    let pushed: f64 = latest(&points, service)
                        .iter()
                        .filter(|p| prometheus_name(p) == *name)
                        .filter(|p| {
                            labels
                                .iter()
                                .all(|(k, v)| p.labels.get(*k).map(String::as_str) == Some(*v))
                        })
                        .map(|p| p.value)
                        .sum();
                    (scraped >= *at_least && pushed == scraped).then_some(scraped)
                }
            },
        )
        .await;
        assert!(scraped >= *at_least);
    }

    let points = otlp.points();
    for (service, started) in processes {
        let mine: Vec<&Point> = points.iter().filter(|p| p.service == service).collect();
        assert!(!mine.is_empty(), "{service} pushed nothing");
        let instances: std::collections::BTreeSet<&str> =
            mine.iter().map(|p| p.instance.as_str()).collect();
        assert_eq!(instances.len(), 1, "{service}: {instances:?}");
        assert!(
            uuid::Uuid::parse_str(instances.first().unwrap()).is_ok(),
            "{service}: service.instance.id {instances:?}"
        );
        // Cumulative, as a Prometheus-compatible backend wants them.
        assert!(
            mine.iter()
                .filter(|p| p.kind != "gauge")
                .all(|p| p.temporality == 2),
            "{service}: a delta series"
        );
        // Every pushed series has its namesake in the scrape, so the alert
        // rules and the dashboard read pushed metrics unchanged.
        let text = env.http.text(&started.metrics_url).await;
        for p in latest(&points, service) {
            let name = prometheus_name(&p);
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name} "))
                        || l.starts_with(&format!("{name}{{"))),
                "{service} pushed {} ({}, unit {:?}) as {name}, which its /metrics lacks",
                p.name,
                p.kind,
                p.unit
            );
        }
    }
}
