//! Chaos: processes killed mid-way, the adapter failing in each way it can,
//! poison messages, and the broker out of reach.

use std::time::{Duration, Instant};

use fastprep_tests::{TestEnv, system::System, wait_for};
use serde_json::{Value, json};

fn sends_of(sent: &Value, key: &str) -> i64 {
    sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["idempotency_key"] == key)
        .map(|m| m["send_count"].as_i64().unwrap())
        .sum()
}

async fn queue_depth(env: &TestEnv, queue: &str) -> u32 {
    let conn = env.broker().await;
    let n = broker_config::dlq::depth(&conn, queue).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    n
}

async fn outbox_status(env: &TestEnv, event_type: &str, aggregate_id: &str) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT status, attempts FROM outbox WHERE event_type = $1 AND aggregate_id = $2 ORDER BY id")
        .bind(event_type)
        .bind(aggregate_id)
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn conversation(env: &mut TestEnv, sys: &System, chat: i64) -> String {
    env.inject(&sys.adapter, chat, 1, "hi").await;
    env.conversation_for(sys, chat).await
}

#[tokio::test]
async fn relay_killed_between_publish_and_mark_done_sends_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    let conv = conversation(&mut env, &sys, 4004).await;
    env.wait_outbox_drained(Duration::from_secs(20)).await;
    // The shipped binary has no fail points: `FAILPOINTS` arms nothing.
    env.proc(sys.relay.idx)
        .restart_with(&[("FAILPOINTS", Some("relay-after-publish=return".into()))]);
    let shipped = env.reply(&sys, &conv, "no hooks shipped", "k-0").await;
    let shipped = shipped["id"].as_str().unwrap().to_owned();
    env.wait_status(&shipped, "sent", Duration::from_secs(20))
        .await;
    env.wait_outbox_drained(Duration::from_secs(20)).await;
    assert!(
        env.proc(sys.relay.idx).exited().is_none(),
        "the shipped relay obeyed FAILPOINTS"
    );
    // Arm the crash in the fault tests' build: the next batch the relay
    // publishes kills it before the rows are marked done.
    env.proc(sys.relay.idx).restart_as(
        "fastprep-consumers-failpoints",
        &[("FAILPOINTS", Some("relay-after-publish=return".into()))],
    );
    let msg = env
        .reply(&sys, &conv, "survives a relay crash", "k-1")
        .await;
    let id = msg["id"].as_str().unwrap().to_owned();
    let relay = sys.relay.idx;
    wait_for(
        "the relay to die at the fail point",
        Duration::from_secs(20),
        || {
            let exited = env.proc(relay).exited();
            async move { exited.map(|_| ()) }
        },
    )
    .await;
    // The event was published (tg-delivery sends it) but its row is still pending.
    env.wait_status(&id, "sent", Duration::from_secs(20)).await;
    assert_eq!(
        outbox_status(&env, "message.outgoing.v1", &id).await,
        [("pending".to_owned(), 0)]
    );
    // A healthy relay publishes the row again; the duplicate is absorbed.
    env.proc(relay)
        .restart_as("fastprep-consumers", &[("FAILPOINTS", None)]);
    wait_for("the row to be marked done", Duration::from_secs(20), || {
        let env = &env;
        let id = id.clone();
        async move {
            let rows = outbox_status(env, "message.outgoing.v1", &id).await;
            (rows[0].0 == "done").then_some(())
        }
    })
    .await;
    let dupes: i64 = wait_for(
        "the duplicate delivery to be seen",
        Duration::from_secs(20),
        || {
            let env = &env;
            let id = id.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM processed_messages p
                     JOIN outbox o ON o.event_id = p.message_id
                     WHERE p.consumer = 'tg-delivery' AND o.aggregate_id = $1
                       AND o.event_type = 'message.outgoing.v1'",
                )
                .bind(&id)
                .fetch_one(&env.pool)
                .await
                .unwrap();
                let depth = queue_depth(env, "tg-delivery").await;
                (depth == 0).then_some(n)
            }
        },
    )
    .await;
    assert_eq!(
        dupes, 1,
        "one claim for the event, however often it was delivered"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sends_of(&env.sent(&sys.adapter).await, &id), 1);
    let (status, _, attempts, _) = env.message_row(&id).await;
    assert_eq!((status.as_str(), attempts), ("sent", 1));
    env.cleanup().await;
}

#[tokio::test]
async fn tg_delivery_killed_mid_message_sends_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let conv = conversation(&mut env, &sys, 5005).await;
    // The adapter takes 1.5 s per send: long enough to kill tg-delivery while
    // it waits for the answer.
    env.set_faults(&sys.adapter, json!({"latency_ms": 1500}))
        .await;
    let msg = env
        .reply(&sys, &conv, "survives a consumer crash", "k-2")
        .await;
    let id = msg["id"].as_str().unwrap().to_owned();
    env.wait_status(&id, "sending", Duration::from_secs(20))
        .await;
    env.proc(sys.delivery.idx).kill();
    env.set_faults(&sys.adapter, json!({"latency_ms": 0})).await;
    env.proc(sys.delivery.idx).restart_with(&[]);
    let (_, tg_id, attempts, _) = env.wait_status(&id, "sent", Duration::from_secs(30)).await;
    assert!(tg_id.is_some());
    assert_eq!(attempts, 2, "the redelivery is a second attempt");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sends_of(&env.sent(&sys.adapter).await, &id), 1);
    env.cleanup().await;
}

/// A long-lived task of the API that ends while it serves (here the
/// realtime hub, through a fail point) stops the API with an error, rather
/// than leaving it serving with realtime dead.
#[tokio::test]
async fn an_api_task_that_ends_stops_the_api_with_an_error() {
    let mut env = TestEnv::new().await;
    // The shipped binary ignores `FAILPOINTS`: it comes up healthy.
    let api = env
        .start_api(&[("FAILPOINTS", "realtime-hub=return".into())])
        .await;
    let idx = api.idx;
    env.proc(idx).restart_as("fastprep-api-failpoints", &[]);
    let status = wait_for("the API to stop", Duration::from_secs(20), || {
        let exited = env.proc(idx).exited();
        async move { exited }
    })
    .await;
    assert!(!status.success(), "the API stopped with {status}");
    let log = env.proc(idx).log_tail();
    assert!(log.contains("task realtime hub returned"), "{log}");
    env.cleanup().await;
}

#[tokio::test]
async fn adapter_5xx_then_200_is_retried_and_sent_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let conv = conversation(&mut env, &sys, 6006).await;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "server_error"}),
    )
    .await;
    let msg = env.reply(&sys, &conv, "retry me", "k-3").await;
    let id = msg["id"].as_str().unwrap().to_owned();
    let (_, _, attempts, _) = env.wait_status(&id, "sent", Duration::from_secs(30)).await;
    assert_eq!(attempts, 2);
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'status' FROM outbox WHERE event_type = 'message.status.v1' AND aggregate_id = $1 ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(statuses, ["sending", "retrying", "sending", "sent"]);
    assert_eq!(sends_of(&env.sent(&sys.adapter).await, &id), 1);
    env.cleanup().await;
}

#[tokio::test]
async fn flood_wait_is_not_retried_before_retry_after() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let conv = conversation(&mut env, &sys, 7007).await;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "flood_wait", "retry_after": 3}),
    )
    .await;
    let started = Instant::now();
    let msg = env.reply(&sys, &conv, "slow down", "k-4").await;
    let id = msg["id"].as_str().unwrap().to_owned();
    env.wait_status(&id, "retrying", Duration::from_secs(20))
        .await;
    let retry_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT retry_at FROM messages WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(
        retry_at >= chrono::Utc::now() + chrono::Duration::seconds(2),
        "retry_at {retry_at}"
    );
    env.wait_status(&id, "sent", Duration::from_secs(30)).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "retried after {:?}",
        started.elapsed()
    );
    let sent = env.sent(&sys.adapter).await;
    assert_eq!(sends_of(&sent, &id), 1);
    let record = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["idempotency_key"] == id.as_str())
        .unwrap()
        .clone();
    let received: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(record["received_at"].clone()).unwrap();
    assert!(
        received >= retry_at,
        "sent at {received}, before retry_at {retry_at}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn permanent_4xx_fails_the_message_and_dead_letters_it_without_retry() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let conv = conversation(&mut env, &sys, 8008).await;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "permanent", "code": "user_blocked"}),
    )
    .await;
    let msg = env.reply(&sys, &conv, "you blocked us", "k-5").await;
    let id = msg["id"].as_str().unwrap().to_owned();
    let (_, tg_id, attempts, error) = env
        .wait_status(&id, "failed", Duration::from_secs(20))
        .await;
    assert_eq!(
        (tg_id, attempts, error.as_deref()),
        (None, 1, Some("user_blocked"))
    );
    wait_for(
        "the message in tg-delivery.dlq",
        Duration::from_secs(10),
        || {
            let env = &env;
            async move { (queue_depth(env, "tg-delivery.dlq").await == 1).then_some(()) }
        },
    )
    .await;
    let failed_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'message.delivery_failed.v1' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(failed_events, 1);
    // No retry happens later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.message_row(&id).await.2, 1);
    assert_eq!(sends_of(&env.sent(&sys.adapter).await, &id), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn poison_message_is_dead_lettered_and_the_consumer_keeps_serving() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let conv = conversation(&mut env, &sys, 9009).await;
    for (i, body) in [
        &b"{not json"[..],
        br#"{"id":"x","type":"message.outgoing.v1"}"#,
    ]
    .into_iter()
    .enumerate()
    {
        env.publish_raw("message.outgoing.v1", body, &format!("poison-{i}"))
            .await;
    }
    wait_for(
        "both poison messages in tg-delivery.dlq",
        Duration::from_secs(10),
        || {
            let env = &env;
            async move { (queue_depth(env, "tg-delivery.dlq").await == 2).then_some(()) }
        },
    )
    .await;
    let msg = env.reply(&sys, &conv, "still working", "k-6").await;
    env.wait_status(msg["id"].as_str().unwrap(), "sent", Duration::from_secs(20))
        .await;
    env.cleanup().await;
}

/// An outgoing event that names a real reply under another conversation
/// and chat (malformed, or forged by whoever can publish) fails for good
/// without touching that reply: no send, no status, no retry dropped.
#[tokio::test]
async fn an_event_naming_a_reply_of_another_chat_changes_nothing_of_it() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let mine = conversation(&mut env, &sys, 9101).await;
    let other = conversation(&mut env, &sys, 9102).await;
    let reply = env.reply(&sys, &mine, "the real one", "k-7").await;
    let id = reply["id"].as_str().unwrap().to_owned();
    env.wait_status(&id, "sent", Duration::from_secs(20)).await;
    env.wait_outbox_drained(Duration::from_secs(20)).await;
    let events_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let event_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "id": event_id, "type": "message.outgoing.v1", "occurred_at": chrono::Utc::now(),
        "aggregate_type": "message", "aggregate_id": id,
        "data": {"message_id": id, "conversation_id": other, "tg_chat_id": 9102,
                 "text": "hijacked", "attachments": []},
    });
    env.publish_raw(
        "message.outgoing.v1",
        &serde_json::to_vec(&body).unwrap(),
        &event_id,
    )
    .await;
    wait_for(
        "the event in tg-delivery.dlq",
        Duration::from_secs(10),
        || {
            let env = &env;
            async move { (queue_depth(env, "tg-delivery.dlq").await == 1).then_some(()) }
        },
    )
    .await;
    let (status, _, attempts, error) = env.message_row(&id).await;
    assert_eq!((status.as_str(), attempts), ("sent", 1), "{error:?}");
    let events_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        events_after, events_before,
        "no event written for the reply"
    );
    let arrived = env.arrivals(&sys.adapter).await;
    assert_eq!(arrived[&9101], vec!["the real one"]);
    assert!(!arrived.contains_key(&9102), "{arrived:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn broker_out_of_reach_keeps_rows_pending_then_they_flow() {
    let mut env = TestEnv::new().await;
    let proxy = env.broker_proxy().await;
    let relay_amqp = env.amqp_url_via("127.0.0.1", proxy.port());
    let sys = env.start_system_with(&[("AMQP_URL", relay_amqp)]).await;
    let conv = conversation(&mut env, &sys, 1010).await;
    proxy.cut();
    let mut ids = Vec::new();
    for i in 0..5 {
        let msg = env
            .reply(
                &sys,
                &conv,
                &format!("during the outage {i}"),
                &format!("o-{i}"),
            )
            .await;
        ids.push(msg["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        assert_eq!(
            outbox_status(&env, "message.outgoing.v1", id).await,
            [("pending".to_owned(), 0)]
        );
        assert_eq!(env.message_row(id).await.0, "queued");
    }
    proxy.restore();
    for id in &ids {
        env.wait_status(id, "sent", Duration::from_secs(30)).await;
    }
    let sent = env.sent(&sys.adapter).await;
    for id in &ids {
        assert_eq!(sends_of(&sent, id), 1);
    }
    env.cleanup().await;
}

/// `AMQP_URL` lists two broker addresses (two links to the broker, standing
/// in for two nodes of a cluster): the consumers start on the first, move to
/// the second when the first goes away, and back when the second does.
/// Nothing is lost or sent twice.
#[tokio::test]
async fn consumers_move_to_a_surviving_broker_address_and_back() {
    let mut env = TestEnv::new().await;
    let first = env.broker_proxy().await;
    let second = env.broker_proxy().await;
    let nodes = format!(
        "{},{}",
        env.amqp_url_via("127.0.0.1", first.port()),
        env.amqp_url_via("127.0.0.1", second.port())
    );
    let sys = env.start_system_with(&[("AMQP_URL", nodes)]).await;
    let conv = conversation(&mut env, &sys, 1020).await;
    // Connections to a node so far, from the logs.
    let connected_to = |env: &TestEnv, node: &str| {
        strip_ansi(&env.logs())
            .lines()
            .filter(|l| l.contains("connected to RabbitMQ") && l.contains(node))
            .count()
    };
    let mut ids = Vec::new();
    let mut on_first_before_back = 0;
    for (step, link) in [(0, None), (1, Some(&first)), (2, Some(&second))] {
        if step == 2 {
            on_first_before_back = connected_to(&env, "node=1");
        }
        if let Some(link) = link {
            // This node goes away; the other one is up.
            first.restore();
            second.restore();
            link.cut();
        }
        for i in 0..3 {
            let msg = env
                .reply(
                    &sys,
                    &conv,
                    &format!("step {step} reply {i}"),
                    &format!("n-{step}-{i}"),
                )
                .await;
            ids.push(msg["id"].as_str().unwrap().to_owned());
        }
        for id in &ids {
            env.wait_status(id, "sent", Duration::from_secs(30)).await;
        }
    }
    let sent = env.sent(&sys.adapter).await;
    for id in &ids {
        assert_eq!(sends_of(&sent, id), 1);
    }
    // Each loss moved the processes on to the other address: to the second
    // when the first went, and back to the first when the second went.
    assert!(
        connected_to(&env, "node=2") >= 1,
        "never moved to the second address\n{}",
        env.logs()
    );
    assert!(
        connected_to(&env, "node=1") > on_first_before_back,
        "never moved back to the first address\n{}",
        env.logs()
    );
    env.cleanup().await;
}

/// The logs without terminal colour codes.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
