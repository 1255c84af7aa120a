//! On-call's tools against the real system: dead letters peeked, replayed
//! (by `fastprep-ops` and by the API, killed mid-way and run again) and
//! purged; failed replies sent again; the outbox retry against the
//! runbook's SQL; the topology compared with the live broker.

use std::time::Duration;

use fastprep_tests::{TestEnv, system::System, wait_for};
use lapin::types::{AMQPValue, FieldTable};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn depth(env: &TestEnv, queue: &str) -> u32 {
    let conn = env.broker().await;
    let n = broker_config::dlq::depth(&conn, queue).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    n
}

async fn wait_depth(env: &TestEnv, queue: &str, n: u32, timeout: Duration) {
    wait_for(&format!("{queue} to hold {n}"), timeout, || async move {
        (depth(env, queue).await == n).then_some(())
    })
    .await;
}

/// Sends per idempotency key (message id) at the sandbox.
fn sends(sent: &Value) -> std::collections::HashMap<String, i64> {
    let mut out = std::collections::HashMap::new();
    for m in sent["messages"].as_array().unwrap() {
        *out.entry(m["idempotency_key"].as_str().unwrap().to_owned())
            .or_default() += m["send_count"].as_i64().unwrap();
    }
    out
}

/// Runs `fastprep-ops --json ARGS` to its end; its exit code and JSON.
fn ops(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (status, printed) = env.run_to_end(
        "fastprep-ops",
        &all,
        &[("RABBITMQ_MANAGEMENT_URL", env.services.rabbit_mgmt.clone())],
    );
    let json_start = printed.find(['{', '[']).unwrap_or(0);
    let value = serde_json::from_str(printed[json_start..].trim())
        .unwrap_or_else(|e| panic!("fastprep-ops {args:?} printed no JSON ({e}): {printed}"));
    (status.code().unwrap_or(-1), value)
}

/// A reply to `chat` (its conversation opened by an inbound message) that
/// the sandbox refuses with `user_blocked`; its id once it is `failed`.
async fn blocked_reply(env: &mut TestEnv, sys: &System, chat: i64, key: &str) -> String {
    env.inject(&sys.adapter, chat, 1, "hi").await;
    env.set_faults(&sys.adapter, json!({"blocked_chats": [chat]}))
        .await;
    let conv = env.conversation_for(sys, chat).await;
    let msg = env.reply(sys, &conv, "your schedule for Monday", key).await;
    let id = msg["id"].as_str().unwrap().to_owned();
    let (_, _, _, error) = env
        .wait_status(&id, "failed", Duration::from_secs(20))
        .await;
    assert_eq!(error.as_deref(), Some("user_blocked"));
    id
}

#[tokio::test]
async fn a_blocked_chats_reply_is_replayed_once_by_the_cli_and_by_the_api() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let first = blocked_reply(&mut env, &sys, 7001, "k-1").await;
    wait_depth(&env, "tg-delivery.dlq", 1, Duration::from_secs(10)).await;

    // What on-call sees: the reason, where it came from, no customer text.
    let (code, listed) = ops(&env, &["dlq", "list"]);
    assert_eq!(code, 0);
    let tg = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "tg-delivery.dlq")
        .unwrap();
    assert_eq!(tg["depth"], 1);
    assert_eq!(tg["top_reasons"][0]["reason"], "user_blocked");
    let (_, peeked) = ops(&env, &["dlq", "peek", "tg-delivery.dlq", "-n", "5"]);
    let letter = &peeked[0];
    assert_eq!(letter["source_queue"], "tg-delivery");
    assert_eq!(letter["event_type"], "message.outgoing.v1");
    assert_eq!(letter["failure"], "user_blocked");
    assert_eq!(letter["reason"], "rejected");
    assert_eq!(letter["payload"]["data"]["message_id"], first.as_str());
    assert_eq!(letter["payload"]["data"]["text"], "<24 chars>");

    // The cause is fixed; the replay sends it, once.
    env.set_faults(&sys.adapter, json!({})).await;
    let (code, summary) = ops(&env, &["dlq", "replay", "tg-delivery.dlq"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["replayed"], 1);
    assert_eq!(summary["by_queue"]["tg-delivery"], 1);
    env.wait_status(&first, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(depth(&env, "tg-delivery.dlq").await, 0);

    // The same through the API, audited with its actor.
    let second = blocked_reply(&mut env, &sys, 7002, "k-2").await;
    wait_depth(&env, "tg-delivery.dlq", 1, Duration::from_secs(10)).await;
    env.set_faults(&sys.adapter, json!({})).await;
    let response = env
        .http
        .raw()
        .post(format!(
            "{}/api/ops/dlq/tg-delivery.dlq/replay",
            sys.api.url
        ))
        .bearer_auth(&sys.token)
        .json(&json!({"event_type": "message.outgoing.v1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(
        (last["done"].clone(), last["replayed"].clone()),
        (json!(true), json!(1)),
        "{lines:?}"
    );
    env.wait_status(&second, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(depth(&env, "tg-delivery.dlq").await, 0);
    let (_, me) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/auth/me", sys.api.url),
            Some(&sys.token),
            None,
        )
        .await;
    let (actor, after): (Option<uuid::Uuid>, Value) = sqlx::query_as(
        "SELECT actor_id, after FROM audit_log WHERE action = 'dlq.replay' AND actor_id IS NOT NULL",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        actor.map(|a| a.to_string()),
        me["id"].as_str().map(str::to_owned)
    );
    assert_eq!(after["outcome"], "done");
    assert_eq!(after["summary"]["replayed"], 1);

    // Nothing was sent twice, even after a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sends(&env.sent(&sys.adapter).await);
    assert_eq!((sent.get(&first), sent.get(&second)), (Some(&1), Some(&1)));
    env.cleanup().await;
}

#[tokio::test]
async fn a_failed_reply_is_retried_from_the_inbox_and_its_dead_letter_then_sends_nothing() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let id = blocked_reply(&mut env, &sys, 7101, "k-1").await;
    let conv = env.conversation_for(&sys, 7101).await;
    wait_depth(&env, "tg-delivery.dlq", 1, Duration::from_secs(10)).await;
    let retry_url = format!(
        "{}/api/conversations/{conv}/messages/{id}/retry",
        sys.api.url
    );
    // Still blocked: refused again, failed again.
    let (status, body) = env
        .http
        .call(Method::POST, &retry_url, Some(&sys.token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    env.wait_status(&id, "failed", Duration::from_secs(20))
        .await;
    env.set_faults(&sys.adapter, json!({})).await;
    let (status, _) = env
        .http
        .call(Method::POST, &retry_url, Some(&sys.token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    env.wait_status(&id, "sent", Duration::from_secs(20)).await;
    // A sent reply cannot be retried, nor can a note or an unknown id.
    let (status, body) = env
        .http
        .call(Method::POST, &retry_url, Some(&sys.token), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("not_failed"))
    );
    let (status, _) = env
        .http
        .call(
            Method::POST,
            &format!(
                "{}/api/conversations/{conv}/messages/{}/retry",
                sys.api.url,
                uuid::Uuid::now_v7()
            ),
            Some(&sys.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Both dead letters replayed: the reply is sent already, nothing goes out.
    wait_depth(&env, "tg-delivery.dlq", 2, Duration::from_secs(10)).await;
    let (code, summary) = ops(&env, &["dlq", "replay", "tg-delivery.dlq"]);
    assert_eq!((code, summary["replayed"].clone()), (0, json!(2)));
    env.wait_outbox_drained(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sends(&env.sent(&sys.adapter).await).get(&id), Some(&1));
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'message.retry'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(audited, 2);
    env.cleanup().await;
}

/// Every message of `queue` as a peek sees it, without the broker's
/// delivery count (which each peek raises).
async fn snapshot(env: &TestEnv, queue: &str) -> Vec<Value> {
    let conn = env.broker().await;
    let letters = broker_config::dlq::peek(&conn, queue, 1000).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    letters
        .into_iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap();
            v.as_object_mut().unwrap().remove("delivery_count");
            v["headers"]
                .as_object_mut()
                .unwrap()
                .remove("x-delivery-count");
            v
        })
        .collect()
}

#[tokio::test]
async fn peeking_fifty_times_leaves_the_dlq_as_it_was() {
    let mut env = TestEnv::new().await;
    let adapter = env.start_adapter(&[]).await;
    let api = env.start_api(&[]).await;
    env.start_consumer("tg-delivery", Some(&adapter), &[]).await;
    env.wait_consumers("tg-delivery", 1).await;
    for i in 0..12 {
        env.publish_raw(
            "message.outgoing.v1",
            format!("{{not json {i}").as_bytes(),
            &format!("poison-{i}"),
        )
        .await;
    }
    wait_depth(&env, "tg-delivery.dlq", 12, Duration::from_secs(20)).await;
    let before = snapshot(&env, "tg-delivery.dlq").await;
    assert_eq!(before.len(), 12);
    let ids: Vec<&str> = before
        .iter()
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..12).map(|i| format!("poison-{i}")).collect::<Vec<_>>()
    );
    assert!(
        before[0]["failure"]
            .as_str()
            .unwrap()
            .starts_with("undecodable")
    );
    let token = env
        .http
        .login(
            &api.url,
            fastprep_tests::env::ADMIN_EMAIL,
            fastprep_tests::env::ADMIN_PASSWORD,
        )
        .await;
    for n in [1, 5, 12, 50] {
        for _ in 0..(50 / 4 + 1) {
            let (status, body) = env
                .http
                .call(
                    Method::GET,
                    &format!("{}/api/ops/dlq/tg-delivery.dlq/messages?n={n}", api.url),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body.as_array().unwrap().len(), n.min(12));
        }
    }
    assert_eq!(snapshot(&env, "tg-delivery.dlq").await, before);
    assert_eq!(depth(&env, "tg-delivery.dlq").await, 12);
    // Unknown queues are not peeked, nor purged.
    let (status, _) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/ops/dlq/tg-delivery/messages", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = env
        .http
        .call(
            Method::DELETE,
            &format!("{}/api/ops/dlq/tg-delivery.dlq/messages", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["purged"].clone()),
        (StatusCode::OK, json!(12))
    );
    assert_eq!(depth(&env, "tg-delivery.dlq").await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_replay_goes_back_to_its_own_queue_only() {
    let mut env = TestEnv::new().await;
    let inbound = env.start_consumer("inbound", None, &[]).await;
    let fanout = env.start_consumer("authz-fanout", None, &[]).await;
    env.wait_consumers("inbound", 1).await;
    env.wait_consumers("authz-fanout", 1).await;
    env.publish_raw("tg.update.received.v1", b"{broken", "bad-inbound")
        .await;
    env.publish_raw("authz.user.updated.v1", b"{broken", "bad-authz")
        .await;
    wait_depth(&env, "inbound.dlq", 1, Duration::from_secs(20)).await;
    wait_depth(&env, "authz-fanout.dlq", 1, Duration::from_secs(20)).await;
    // Both dead letters also reached the alerts queue (nobody consumes it here).
    wait_depth(&env, "alerts", 2, Duration::from_secs(10)).await;
    env.proc(inbound.idx).kill();
    env.proc(fanout.idx).kill();
    for (dlq, queue) in [
        ("inbound.dlq", "inbound"),
        ("authz-fanout.dlq", "authz-fanout"),
    ] {
        let (code, summary) = ops(&env, &["dlq", "replay", dlq]);
        assert_eq!(code, 0, "{summary}");
        assert_eq!(summary["by_queue"][queue], 1, "{summary}");
        wait_depth(&env, queue, 1, Duration::from_secs(10)).await;
        assert_eq!(depth(&env, dlq).await, 0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(depth(&env, "alerts").await, 2, "no second copy for alerts");
    assert_eq!(depth(&env, "tg-delivery").await, 0);
    // The replayed copy carries its replay count and none of its death.
    let conn = env.broker().await;
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        // (A single-active-consumer queue such as inbound refuses basic.get.)
        .basic_get(
            "authz-fanout".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .unwrap();
    let headers = got.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("x-fastprep-replays"),
        Some(&AMQPValue::LongString("1".into()))
    );
    assert!(!headers.inner().contains_key("x-death"));
    assert!(!headers.inner().contains_key("x-fastprep-failure"));
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_replayed_too_often_stays_in_its_dlq() {
    let mut env = TestEnv::new().await;
    let inbound = env.start_consumer("inbound", None, &[]).await;
    env.wait_consumers("inbound", 1).await;
    env.publish_raw("tg.update.received.v1", b"{still broken", "loop")
        .await;
    wait_depth(&env, "inbound.dlq", 1, Duration::from_secs(20)).await;
    let max = broker_config::dlq::MAX_REPLAYS;
    for round in 1..=max {
        let (_, summary) = ops(&env, &["dlq", "replay", "inbound.dlq"]);
        assert_eq!(summary["replayed"], 1, "round {round}: {summary}");
        // The consumer fails it again; it comes back with its count.
        wait_depth(&env, "inbound.dlq", 1, Duration::from_secs(20)).await;
    }
    let (_, summary) = ops(&env, &["dlq", "replay", "inbound.dlq"]);
    assert_eq!(
        (
            summary["replayed"].clone(),
            summary["over_replay_cap"].clone()
        ),
        (json!(0), json!(1))
    );
    let (_, peeked) = ops(&env, &["dlq", "peek", "inbound.dlq"]);
    assert_eq!(peeked[0]["replays"], max);
    env.proc(inbound.idx).kill();
    env.cleanup().await;
}

#[tokio::test]
async fn a_replay_killed_midway_and_run_again_sends_each_reply_once() {
    const REPLIES: usize = 1000;
    const CHATS: i64 = 50;
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let chats: Vec<i64> = (0..CHATS).map(|c| 7200 + c).collect();
    for chat in &chats {
        env.inject(&sys.adapter, *chat, 1, "hi").await;
    }
    let mut convs = Vec::new();
    for chat in &chats {
        convs.push(env.conversation_for(&sys, *chat).await);
    }
    env.set_faults(&sys.adapter, json!({"blocked_chats": chats}))
        .await;
    let mut ids = Vec::new();
    for i in 0..REPLIES {
        let conv = &convs[i % convs.len()];
        let msg = env
            .reply(&sys, conv, &format!("reply {i}"), &format!("k-{i}"))
            .await;
        ids.push(msg["id"].as_str().unwrap().to_owned());
    }
    wait_depth(
        &env,
        "tg-delivery.dlq",
        REPLIES as u32,
        Duration::from_secs(180),
    )
    .await;
    env.set_faults(&sys.adapter, json!({})).await;

    // Each batch of 64 slowed by 200 ms: the replay is still running when
    // the test kills it, whatever the machine's speed.
    let replay = env.spawn(
        "fastprep-ops-failpoints",
        &["dlq", "replay", "tg-delivery.dlq"],
        &[("FAILPOINTS", "dlq-replay-batch=sleep(200)".to_owned())],
    );
    // Part-way: some replies went out again. (The DLQ's depth cannot tell:
    // the replay holds the whole queue unacked from its first moment.)
    let pool = env.pool.clone();
    wait_for("the replay to be part-way", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let sent: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'sent'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (sent > 0).then_some(())
        }
    })
    .await;
    env.proc(replay).kill();
    // What it held unacked goes back to the DLQ (with copies confirmed but
    // not yet acked: they go again, and the claims keep them from being
    // sent twice); nothing would, had it finished.
    wait_for(
        "the unfinished part back in the DLQ",
        Duration::from_secs(10),
        || {
            let env = &env;
            async move { (depth(env, "tg-delivery.dlq").await > 0).then_some(()) }
        },
    )
    .await;
    let (code, summary) = ops(&env, &["dlq", "replay", "tg-delivery.dlq"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["remaining"], 0, "{summary}");
    let pool = env.pool.clone();
    wait_for("every reply sent", Duration::from_secs(180), || {
        let pool = pool.clone();
        async move {
            let unsent: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE direction = 'out' AND status <> 'sent'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (unsent == 0).then_some(())
        }
    })
    .await;
    env.wait_outbox_drained(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = sends(&env.sent(&sys.adapter).await);
    let twice: Vec<_> = ids.iter().filter(|id| sent.get(*id) != Some(&1)).collect();
    assert!(
        twice.is_empty(),
        "not sent exactly once: {} of {REPLIES}, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    assert_eq!(depth(&env, "tg-delivery.dlq").await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn outbox_retry_failed_matches_the_runbooks_sql() {
    let env = TestEnv::new().await;
    // Failed rows of two types, failed at two times, beside pending and done.
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, status, attempts, scheduled_at, created_at, updated_at, last_error)
         SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'authz.user.updated.v1' ELSE 'conversation.updated.v1' END,
                'test', i::text, '{}', '{}',
                CASE WHEN i % 5 = 0 THEN 'done' WHEN i % 7 = 0 THEN 'pending' ELSE 'failed' END,
                CASE WHEN i % 5 = 0 THEN 0 ELSE 10 END, now() + interval '1 hour', now() - interval '2 days',
                now() - CASE WHEN i < 20 THEN interval '1 day' ELSE interval '1 minute' END, 'broker refused'
         FROM generate_series(1, 40) AS i",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    type Row = (i64, String, i32, bool);
    let state = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, Row>(
            "SELECT id, status, attempts, scheduled_at <= now() + interval '1 second' FROM outbox ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // What the runbook's SQL does, on the same rows, rolled back.
    let mut tx = env.pool.begin().await.unwrap();
    sqlx::query("UPDATE outbox SET status = 'pending', attempts = 0, scheduled_at = NOW() WHERE status = 'failed'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let by_runbook: Vec<Row> = sqlx::query_as(
        "SELECT id, status, attempts, scheduled_at <= now() + interval '1 second' FROM outbox ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let before = state(env.pool.clone()).await;
    assert_ne!(before, by_runbook);

    // Scoped first: one type, then one id; the rest untouched.
    let (_, stats) = ops(&env, &["outbox", "stats"]);
    let failed_before = stats["counts"]["failed"].as_i64().unwrap();
    let (code, out) = ops(
        &env,
        &[
            "outbox",
            "retry-failed",
            "--type",
            "authz.user.updated.v1",
            "--since",
            "1h",
        ],
    );
    assert_eq!(code, 0);
    let scoped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE status = 'failed' AND event_type = 'authz.user.updated.v1' AND updated_at >= now() - interval '1 hour'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(scoped, 0);
    let retried = out["retried"].as_i64().unwrap();
    assert!(retried > 0);
    let (_, stats) = ops(&env, &["outbox", "stats"]);
    assert_eq!(
        stats["counts"]["failed"].as_i64().unwrap(),
        failed_before - retried
    );
    // Unscoped: the runbook's result, row for row.
    let (code, _) = ops(&env, &["outbox", "retry-failed"]);
    assert_eq!(code, 0);
    assert_eq!(state(env.pool.clone()).await, by_runbook);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'outbox.retry_failed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(audited, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn topology_diff_names_what_the_broker_lacks() {
    let env = TestEnv::new().await;
    let (code, out) = ops(&env, &["topology", "apply"]);
    assert_eq!(code, 0, "{out}");
    let (code, diff) = ops(&env, &["topology", "diff"]);
    assert_eq!((code, diff.clone()), (0, json!([])));
    // Someone removes a binding and adds a queue by hand.
    let mgmt = &env.services.rabbit_mgmt;
    let vhost = &env.vhost;
    let http = env.http.raw();
    http.delete(format!(
        "{mgmt}/api/bindings/{vhost}/e/fastprep.events/q/authz-fanout/authz.%23"
    ))
    .send()
    .await
    .unwrap()
    .error_for_status()
    .unwrap();
    http.put(format!("{mgmt}/api/queues/{vhost}/stray"))
        .json(&json!({"durable": true}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let (code, diff) = ops(&env, &["topology", "diff"]);
    assert_eq!(code, 1);
    let found: Vec<(String, String)> = diff
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["object"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("unexpected".to_owned(), "queue stray".to_owned()),
            (
                "missing".to_owned(),
                "binding fastprep.events -> authz-fanout (authz.#)".to_owned()
            ),
        ]
    );
    let (code, _) = ops(&env, &["topology", "apply"]);
    assert_eq!(code, 0);
    let (_, diff) = ops(&env, &["topology", "diff"]);
    assert_eq!(
        diff.as_array().unwrap().len(),
        1,
        "only the stray queue is left: {diff}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_shovel_from_the_dlq_also_sends_the_reply_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let id = blocked_reply(&mut env, &sys, 7301, "k-1").await;
    wait_depth(&env, "tg-delivery.dlq", 1, Duration::from_secs(10)).await;
    env.set_faults(&sys.adapter, json!({})).await;
    // The management UI's way: a dynamic shovel that moves the DLQ back
    // into its queue and deletes itself (see the runbook).
    let (mgmt, vhost) = (&env.services.rabbit_mgmt, &env.vhost);
    let uri = format!("amqp:///{vhost}");
    env.http
        .raw()
        .put(format!("{mgmt}/api/parameters/shovel/{vhost}/dlq-back"))
        .json(&json!({"value": {
            "src-protocol": "amqp091", "src-uri": uri, "src-queue": "tg-delivery.dlq",
            "dest-protocol": "amqp091", "dest-uri": uri, "dest-queue": "tg-delivery",
            "src-delete-after": "queue-length"
        }}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    env.wait_status(&id, "sent", Duration::from_secs(30)).await;
    wait_depth(&env, "tg-delivery.dlq", 0, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sends(&env.sent(&sys.adapter).await).get(&id), Some(&1));
    env.cleanup().await;
}

#[tokio::test]
async fn authz_flush_ends_the_old_rights_of_one_user_or_all() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let token = env
        .http
        .login(
            &api.url,
            fastprep_tests::env::ADMIN_EMAIL,
            fastprep_tests::env::ADMIN_PASSWORD,
        )
        .await;
    let me_url = format!("{}/api/auth/me", api.url);
    let (status, me) = env
        .http
        .call(Method::GET, &me_url, Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let admin = me["id"].as_str().unwrap().to_owned();
    let version = |pool: sqlx::PgPool, id: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT perm_version FROM users WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = version(env.pool.clone(), admin.clone()).await;
    let (code, out) = ops(&env, &["authz", "flush", "--user", &admin]);
    assert_eq!((code, out["flushed"].clone()), (0, json!(1)), "{out}");
    assert_eq!(version(env.pool.clone(), admin.clone()).await, before + 1);
    // The token signed before the flush no longer works; a new sign-in does.
    let (status, _) = env
        .http
        .call(Method::GET, &me_url, Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = env
        .http
        .login(
            &api.url,
            fastprep_tests::env::ADMIN_EMAIL,
            fastprep_tests::env::ADMIN_PASSWORD,
        )
        .await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let (code, out) = ops(&env, &["authz", "flush"]);
    assert_eq!((code, out["flushed"].clone()), (0, json!(users)), "{out}");
    let (status, _) = env
        .http
        .call(Method::GET, &me_url, Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'authz.flush'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(audited, 2);
    env.cleanup().await;
}

/// Publishes `n` dead letters of `source` to `fastprep.dlx`, as the runner
/// does, with `headers` on each.
async fn dead_letters(env: &TestEnv, source: &str, n: usize, headers: &[(&str, &str)]) {
    use lapin::{
        BasicProperties,
        options::{BasicPublishOptions, ConfirmSelectOptions},
        types::{LongString, ShortString},
    };
    let conn = env.broker().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..n {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(
                ShortString::from(*k),
                AMQPValue::LongString(LongString::from(*v)),
            );
        }
        let body = serde_json::to_vec(&json!({"id": uuid::Uuid::now_v7(), "type": "message.delivery_failed.v1",
            "occurred_at": chrono::Utc::now(), "aggregate_type": "message", "aggregate_id": i.to_string(),
            "data": {"message_id": uuid::Uuid::now_v7(), "conversation_id": uuid::Uuid::now_v7(), "error": "user_blocked", "attempts": 1}}))
        .unwrap();
        confirms.push(
            ch.basic_publish(
                "fastprep.dlx".into(),
                source.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(ShortString::from(format!("dl-{i}")))
                    .with_type("message.delivery_failed.v1".into())
                    .with_headers(table),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn a_dead_letter_of_alerts_goes_back_to_alerts_whatever_its_headers_say() {
    let env = TestEnv::new().await;
    let (code, _) = ops(&env, &["topology", "apply"]);
    assert_eq!(code, 0);
    // A copy of a tg-delivery dead letter that the alerts consumer could not
    // take, dead-lettered by the broker with the headers it came with.
    dead_letters(
        &env,
        "alerts",
        1,
        &[("x-fastprep-dlq-source", "tg-delivery")],
    )
    .await;
    wait_depth(&env, "alerts.dlq", 1, Duration::from_secs(10)).await;
    let (_, peeked) = ops(&env, &["dlq", "peek", "alerts.dlq"]);
    assert_eq!(peeked[0]["source_queue"], "alerts");
    let (code, summary) = ops(&env, &["dlq", "replay", "alerts.dlq"]);
    assert_eq!(
        (code, summary["by_queue"].clone()),
        (0, json!({"alerts": 1})),
        "{summary}"
    );
    assert_eq!(depth(&env, "tg-delivery").await, 0);
    assert_eq!(depth(&env, "alerts").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn a_listing_during_a_replay_shows_the_queue_busy_and_a_second_replay_waits_its_turn() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let (code, _) = ops(&env, &["topology", "apply"]);
    assert_eq!(code, 0);
    dead_letters(
        &env,
        "tg-delivery",
        3000,
        &[("x-fastprep-failure", "user_blocked")],
    )
    .await;
    wait_depth(&env, "tg-delivery.dlq", 3000, Duration::from_secs(20)).await;
    let token = env
        .http
        .login(
            &api.url,
            fastprep_tests::env::ADMIN_EMAIL,
            fastprep_tests::env::ADMIN_PASSWORD,
        )
        .await;
    // Another operation holds the queue (its lock, taken here by hand): a
    // listing shows it busy at once, a peek waits 5 s and is refused.
    let mut other = env.pool.begin().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('fastprep-dlq:tg-delivery.dlq', 0))",
    )
    .execute(&mut *other)
    .await
    .unwrap();
    let (status, list) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/ops/dlq", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let tg = list
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "tg-delivery.dlq")
        .unwrap()
        .clone();
    assert_eq!(
        (tg["busy"].clone(), tg["depth"].clone()),
        (json!(true), json!(3000)),
        "{tg}"
    );
    let (status, body) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/ops/dlq/tg-delivery.dlq/messages?n=5", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("dlq_busy"))
    );
    other.rollback().await.unwrap();

    let replay = env.spawn("fastprep-ops", &["dlq", "replay", "tg-delivery.dlq"], &[]);
    let pool = env.pool.clone();
    wait_for(
        "the replay to hold the queue's lock",
        Duration::from_secs(20),
        || {
            let pool = pool.clone();
            async move {
                let held: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (held > 0).then_some(())
            }
        },
    )
    .await;
    // A second replay waits for the first, then finds nothing left.
    let (code, second) = ops(&env, &["dlq", "replay", "tg-delivery.dlq"]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["replayed"], 0, "{second}");
    wait_for("the first replay to end", Duration::from_secs(60), || {
        let done = env.proc(replay).exited().is_some();
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(depth(&env, "tg-delivery").await, 3000);
    assert_eq!(depth(&env, "tg-delivery.dlq").await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_limited_replay_leaves_the_rest_in_order() {
    let env = TestEnv::new().await;
    let (code, _) = ops(&env, &["topology", "apply"]);
    assert_eq!(code, 0);
    dead_letters(&env, "authz-fanout", 8, &[]).await;
    wait_depth(&env, "authz-fanout.dlq", 8, Duration::from_secs(10)).await;
    let (code, summary) = ops(&env, &["dlq", "replay", "authz-fanout.dlq", "--limit", "3"]);
    assert_eq!(
        (code, summary["replayed"].clone()),
        (0, json!(3)),
        "{summary}"
    );
    let (_, dry) = ops(&env, &["dlq", "replay", "authz-fanout.dlq", "--dry-run"]);
    assert_eq!(
        (dry["replayed"].clone(), dry["remaining"].clone()),
        (json!(5), json!(5)),
        "{dry}"
    );
    let (_, left) = ops(&env, &["dlq", "peek", "authz-fanout.dlq", "-n", "10"]);
    let ids: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dl-3", "dl-4", "dl-5", "dl-6", "dl-7"]);
    assert_eq!(depth(&env, "authz-fanout").await, 3);
    env.cleanup().await;
}

/// The audit rows of the Telegram account's login, oldest first.
async fn login_audit(env: &TestEnv) -> Vec<(String, Value)> {
    sqlx::query_as::<_, (String, Value)>(
        "SELECT action, after FROM audit_log WHERE action LIKE 'telegram.login.%' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_telegram_account_is_shown_to_ops_and_every_login_step_is_audited_without_secrets() {
    let mut env = TestEnv::new().await;
    let adapter = env.start_adapter(&[]).await;
    let api = env
        .start_api(&[("TG_ADAPTER_URL", adapter.url.clone())])
        .await;
    let admin = env.admin_session(&api.url).await;
    let account = format!("{}/api/ops/telegram", api.url);
    // One login step as `token`: its status and answer.
    let http = env.http.clone();
    let step = |token: &str, step: &str, body: Value| {
        let (http, url, token) = (
            http.clone(),
            format!("{account}/login/{step}"),
            token.to_owned(),
        );
        async move {
            http.call(Method::POST, &url, Some(&token), Some(body))
                .await
        }
    };

    let (status, body) = env.http.get(&account, &admin.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["session"]["session"], "authorized", "{body}");
    // The sandbox has no account to log in.
    assert_eq!(body["login"], Value::Null, "{body}");

    env.set_session(&adapter, json!({"session": "needs_login"}))
        .await;
    let (_, body) = env.http.get(&account, &admin.access).await;
    assert_eq!(body["session"]["session"], "needs_login", "{body}");

    // A step the sandbox cannot take is refused, and audited with the
    // number's last two digits and the outcome.
    let (status, body) = step(&admin.access, "phone", json!({"phone": "+44 7700 900123"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "login_unavailable", "{body}");
    // A malformed number never reaches the adapter, nor the log.
    let (status, body) = step(&admin.access, "phone", json!({"phone": "+44 7700'; DROP"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_phone", "{body}");
    let (status, _) = step(&admin.access, "code", json!({"code": "98765"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = step(
        &admin.access,
        "password",
        json!({"password": "correct horse battery staple"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let audit = login_audit(&env).await;
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "telegram.login.phone",
            "telegram.login.code",
            "telegram.login.password"
        ]
    );
    assert_eq!(
        audit[0].1,
        json!({"phone": "…23", "outcome": "login_unavailable"})
    );
    let logged = serde_json::to_string(&audit).unwrap();
    assert!(!logged.contains("98765"), "{logged}");
    assert!(!logged.contains("horse"), "{logged}");
    assert!(!logged.contains("900123"), "{logged}");

    // Only `ops.telegram` opens it: an operator has no such right.
    env.create_user(
        &api.url,
        &admin.access,
        "operator@fastprep.test",
        &[fastprep_tests::accounts::OPERATOR_ROLE],
    )
    .await;
    let operator = env
        .sign_in(
            &api.url,
            "operator@fastprep.test",
            fastprep_tests::accounts::USER_PASSWORD,
        )
        .await;
    let (status, _) = env.http.get(&account, &operator.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = step(
        &operator.access,
        "phone",
        json!({"phone": "+44 7700 900123"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(login_audit(&env).await.len(), 3);

    // An API not told where the adapter is says so.
    let lone = env.start_api(&[]).await;
    let admin = env.admin_session(&lone.url).await;
    let (status, body) = env
        .http
        .get(&format!("{}/api/ops/telegram", lone.url), &admin.access)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    env.cleanup().await;
}

/// After a database restore the restored outbox holds as published the
/// events of replies it holds unfinished: the broker's copies are gone
/// with the world the backup does not know. Here tg-delivery is down, two
/// replies of one chat are written and published, and the queue is purged:
/// nothing would ever send them. `messages resume-unfinished` (ADR 0022)
/// hands both out again, a dry run first changing nothing; they then go
/// out once each, in their order, and a second run finds nothing left.
#[tokio::test]
async fn resume_unfinished_hands_out_the_replies_a_restore_left_stuck_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    env.inject(&sys.adapter, 5151, 1, "hi").await;
    let conv = env.conversation_for(&sys, 5151).await;
    env.proc(sys.delivery.idx).kill();
    let first = env.reply(&sys, &conv, "restored reply one", "r-1").await;
    let second = env.reply(&sys, &conv, "restored reply two", "r-2").await;
    let first = first["id"].as_str().unwrap().to_owned();
    let second = second["id"].as_str().unwrap().to_owned();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    env.wait_outbox_drained(Duration::from_secs(20)).await;
    let conn = env.broker().await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_purge(
            "tg-delivery".into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "bye".into()).await;
    let done = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM outbox WHERE event_type = 'message.outgoing.v1' AND status = 'done'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let done_before = done(env.pool.clone()).await;

    let (code, dry) = ops(&env, &["messages", "resume-unfinished", "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["message_ids"], json!(both), "{dry}");
    assert_eq!(done(env.pool.clone()).await, done_before);

    let (code, resumed) = ops(&env, &["messages", "resume-unfinished"]);
    assert_eq!(code, 0);
    assert_eq!(resumed["message_ids"], json!(both), "{resumed}");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'messages.resume_unfinished'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    env.proc(sys.delivery.idx).restart_with(&[]);
    env.wait_status(&first, "sent", Duration::from_secs(30))
        .await;
    env.wait_status(&second, "sent", Duration::from_secs(30))
        .await;
    let arrivals = env.arrivals(&sys.adapter).await;
    assert_eq!(
        arrivals.get(&5151).cloned().unwrap_or_default(),
        vec![
            "restored reply one".to_owned(),
            "restored reply two".to_owned()
        ]
    );
    let (_, again) = ops(&env, &["messages", "resume-unfinished"]);
    assert_eq!(again["message_ids"], json!([]), "{again}");
}
