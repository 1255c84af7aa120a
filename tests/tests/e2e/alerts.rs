//! The alerts consumer against real RabbitMQ and Redis, with a local HTTP
//! receiver playing Slack: one alert per threshold crossing across two
//! instances, the cooldown and its summary, Slack errors retried, the
//! dead-letter alert for a poison message, and the session alert.

use std::time::{Duration, Instant};

use broker_config::{Envelope, Event, Publisher, events::MessageDeliveryFailed};
use fastprep_tests::{
    TestEnv,
    slack::{Reply, SlackReceiver},
    system::Started,
    wait_for,
};
use lapin::{BasicProperties, options::BasicPublishOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::metrics::sample;

const PUBLIC_URL: &str = "https://admin.fastprep.test";

async fn alerts(env: &mut TestEnv, slack: &SlackReceiver, extra: &[(&str, &str)]) -> Started {
    let mut vars = vec![
        ("SLACK_WEBHOOK_URL", slack.url.clone()),
        ("PUBLIC_URL", PUBLIC_URL.to_owned()),
        (
            "RUNBOOK_URL",
            "https://docs.fastprep.test/RUNBOOK.md".to_owned(),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env.start_consumer("alerts", None, &vars).await
}

/// Publishes a message that is not an event where inbound reads.
async fn publish_poison(conn: &lapin::Connection, id: &str, body: &[u8]) {
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_publish(
            "fastprep.events".into(),
            "tg.update.received.v1".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_message_id(id.into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Publishes `n` failed replies at once, each in its own conversation.
async fn fail_replies(env: &TestEnv, n: usize, error: &str) -> Vec<Uuid> {
    let conn = env.broker().await;
    let publisher = Publisher::new(&conn).await.unwrap();
    let conversations: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let sends = conversations.iter().map(|c| {
        let envelope = Envelope::new(Event::MessageDeliveryFailed(MessageDeliveryFailed {
            message_id: Uuid::now_v7(),
            conversation_id: *c,
            error: error.to_owned(),
            attempts: 8,
        }));
        let publisher = &publisher;
        async move { publisher.publish_envelope(&envelope, &[]).await.unwrap() }
    });
    futures::future::join_all(sends).await;
    let _ = conn.close(200, "bye".into()).await;
    conversations
}

async fn wait_accepted(slack: &SlackReceiver, n: usize, within: Duration) -> Vec<Value> {
    wait_for(&format!("{n} message(s) accepted by Slack"), within, || {
        let accepted = slack.accepted();
        async move { (accepted.len() >= n).then(|| accepted.into_iter().map(|p| p.body).collect()) }
    })
    .await
}

/// `name{kind="delivery"}` summed over processes.
async fn total(env: &TestEnv, procs: [&Started; 2], name: &str) -> f64 {
    let mut sum = 0.0;
    for p in procs {
        let text = env.http.text(&p.metrics_url).await;
        sum += sample(&text, name, &[("kind", "delivery")]).unwrap_or(0.0);
    }
    sum
}

fn text_of(body: &Value) -> String {
    body.to_string()
}

#[tokio::test]
async fn two_instances_alert_once_per_crossing_and_summarise_after_the_cooldown() {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    let knobs = [
        ("FAIL_ALERT_THRESHOLD", "5"),
        ("FAIL_ALERT_WINDOW_SEC", "60"),
        ("FAIL_ALERT_COOLDOWN_SEC", "4"),
    ];
    let one = alerts(&mut env, &slack, &knobs).await;
    let two = alerts(&mut env, &slack, &knobs).await;

    // 30 failures at once, split between both instances: one crossing.
    let conversations = fail_replies(&env, 30, "chat_not_found").await;
    let first = wait_accepted(&slack, 1, Duration::from_secs(15)).await;
    let alert = &first[0];
    let text = text_of(alert);
    assert!(text.contains("Alert"), "{text}");
    assert!(text.contains("chat_not_found"), "{text}");
    assert!(text.contains("5 replies failed for good"), "{text}");
    assert!(
        text.contains(&format!("{PUBLIC_URL}/conversations/")),
        "{text}"
    );
    assert!(
        conversations.iter().any(|c| text.contains(&c.to_string())),
        "links name affected conversations: {text}"
    );
    assert!(
        text.contains(
            "https://docs.fastprep.test/RUNBOOK.md#alert-replies-are-not-reaching-telegram"
        ),
        "{text}"
    );
    let blocks = alert["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    // The cooldown holds: nothing more arrives during it ...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(slack.accepted().len(), 1, "{:?}", slack.posts());
    let suppressed = total(&env, [&one, &two], "alerts_suppressed_total").await;
    assert_eq!(suppressed, 25.0);
    // ... and when it ends, one summary of what it held back.
    let both = wait_accepted(&slack, 2, Duration::from_secs(15)).await;
    let summary = text_of(&both[1]);
    assert!(summary.contains("Summary"), "{summary}");
    assert!(
        summary.contains("25 more while alerts were paused"),
        "{summary}"
    );
    // A new crossing after the cooldown alerts again, once.
    fail_replies(&env, 5, "user_blocked").await;
    let three = wait_accepted(&slack, 3, Duration::from_secs(15)).await;
    assert!(text_of(&three[2]).contains("user_blocked"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slack.accepted().len(), 3, "{:?}", slack.posts());
    let sent = total(&env, [&one, &two], "alerts_sent_total").await;
    assert_eq!(sent, 3.0);
    env.cleanup().await;
}

#[tokio::test]
async fn slack_errors_are_retried_and_the_alert_arrives_once_no_earlier_than_asked() {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    slack.script(&[Reply::Status(500), Reply::TooMany(2), Reply::Ok]);
    let proc = alerts(&mut env, &slack, &[("FAIL_ALERT_THRESHOLD", "1")]).await;
    fail_replies(&env, 1, "chat_not_found").await;
    wait_accepted(&slack, 1, Duration::from_secs(20)).await;
    let posts = slack.posts();
    let answered: Vec<u16> = posts.iter().map(|p| p.answered).collect();
    assert_eq!(answered, [500, 429, 200]);
    let waited = posts[2].at.duration_since(posts[1].at);
    assert!(
        waited >= Duration::from_millis(1950),
        "posted again {waited:?} after a Retry-After of 2 s"
    );
    assert_eq!(posts[0].body, posts[2].body, "the same alert, re-sent");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slack.accepted().len(), 1);
    let metrics = env.http.text(&proc.metrics_url).await;
    assert_eq!(
        sample(&metrics, "alerts_delivery_errors_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "alerts_sent_total", &[("kind", "delivery")]),
        Some(1.0)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_poison_message_ends_in_its_dlq_and_raises_the_dead_letter_alert() {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    alerts(&mut env, &slack, &[("FAIL_ALERT_THRESHOLD", "1")]).await;
    env.start_consumer("inbound", None, &[]).await;
    let conn = env.broker().await;
    publish_poison(
        &conn,
        "poison-1",
        b"{not an event, and a secret customer text",
    )
    .await;
    let body = &wait_accepted(&slack, 1, Duration::from_secs(20)).await[0];
    let text = text_of(body);
    assert!(
        text.contains("inbound is dead-lettering messages"),
        "{text}"
    );
    assert!(text.contains("undecodable"), "{text}");
    assert!(!text.contains("secret customer text"), "{text}");
    let depth = wait_for(
        "the poison message in inbound.dlq",
        Duration::from_secs(10),
        || async {
            let n = env.queue("inbound.dlq").await?["messages"].as_u64()?;
            (n == 1).then_some(n)
        },
    )
    .await;
    assert_eq!(depth, 1);
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn needs_login_from_the_sandbox_raises_the_session_alert_at_once() {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    // The default threshold (5) does not apply: the account cannot send.
    alerts(&mut env, &slack, &[]).await;
    let adapter = env.start_adapter(&[]).await;
    let started = Instant::now();
    env.set_session(&adapter, json!({"session": "needs_login"}))
        .await;
    // The adapter says so on /v1/status, and sends are refused meanwhile.
    let (s, status) = env
        .http
        .get(
            &format!("{}/v1/status", adapter.url),
            fastprep_tests::env::ADAPTER_TOKEN,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["session"], "needs_login");
    let body = &wait_accepted(&slack, 1, Duration::from_secs(15)).await[0];
    let text = text_of(body);
    assert!(text.contains("the Telegram account cannot send"), "{text}");
    assert!(text.contains("needs_login"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Logged in again: no alert for that.
    env.set_session(&adapter, json!({"session": "authorized"}))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slack.accepted().len(), 1);
    // A short FLOOD_WAIT neither alerts nor outlives its end.
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    env.set_session(&adapter, json!({"session": "flood_wait", "until": until}))
        .await;
    wait_for("the flood wait to end", Duration::from_secs(10), || {
        let http = env.http.clone();
        let url = format!("{}/v1/status", adapter.url);
        async move {
            let (_, status) = http.get(&url, fastprep_tests::env::ADAPTER_TOKEN).await;
            (status["session"] == "authorized").then_some(())
        }
    })
    .await;
    assert_eq!(slack.accepted().len(), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn without_a_webhook_alerts_are_logged_and_counted() {
    let mut env = TestEnv::new().await;
    let proc = env
        .start_consumer("alerts", None, &[("FAIL_ALERT_THRESHOLD", "1".to_owned())])
        .await;
    fail_replies(&env, 1, "user_blocked").await;
    let metrics = wait_for("the alert to be counted", Duration::from_secs(15), || {
        let (http, url) = (env.http.clone(), proc.metrics_url.clone());
        async move {
            let text = http.text(&url).await;
            (sample(&text, "alerts_sent_total", &[("kind", "delivery")]) == Some(1.0))
                .then_some(text)
        }
    })
    .await;
    assert_eq!(sample(&metrics, "alerts_delivery_errors_total", &[]), None);
    let logs = env.logs();
    assert!(logs.contains("alert (no SLACK_WEBHOOK_URL)"), "{logs}");
    assert!(logs.contains("replies failed for good"), "{logs}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_dead_letter_parked_while_redis_is_away_still_counts_once_redis_is_back() {
    let mut env = TestEnv::new().await;
    let slack = SlackReceiver::start().await;
    let redis: std::net::SocketAddr = env
        .services
        .redis
        .trim_start_matches("redis://")
        .parse()
        .unwrap();
    let proxy = fastprep_tests::TcpProxy::start(redis).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port());
    env.start_consumer(
        "alerts",
        None,
        &[
            ("SLACK_WEBHOOK_URL", slack.url.clone()),
            ("FAIL_ALERT_THRESHOLD", "1".to_owned()),
            ("REDIS_URL", via_proxy),
        ],
    )
    .await;
    env.start_consumer("inbound", None, &[]).await;
    let conn = env.broker().await;
    // Let the sender join its group, then take Redis away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    publish_poison(&conn, "poison-2", b"poison while redis is away").await;
    // The copy reaches alerts, cannot be counted, and waits in a retry tier.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(slack.accepted().is_empty());
    proxy.restore();
    let body = &wait_accepted(&slack, 1, Duration::from_secs(30)).await[0];
    let text = text_of(body);
    assert!(
        text.contains("inbound is dead-lettering messages"),
        "{text}"
    );
    // The management API leaves out a queue's counts until its first
    // statistics come in: wait for them, then read.
    let in_alerts_dlq = wait_for(
        "alerts.dlq's message count",
        Duration::from_secs(15),
        || async { env.queue("alerts.dlq").await?["messages"].as_u64() },
    )
    .await;
    assert_eq!(in_alerts_dlq, 0, "nothing ended in alerts.dlq");
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}
