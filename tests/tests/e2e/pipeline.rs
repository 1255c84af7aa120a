//! One message each way through the whole system.

use std::time::Duration;

use fastprep_tests::TestEnv;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn inbound_message_appears_once_even_when_injected_twice() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    env.inject(
        &sys.adapter,
        1001,
        7,
        "Hello, is the SAT course still open?",
    )
    .await;
    env.inject(
        &sys.adapter,
        1001,
        7,
        "Hello, is the SAT course still open?",
    )
    .await;
    env.inject(&sys.adapter, 1001, 8, "And the price?").await;
    let conv = env.conversation_for(&sys, 1001).await;
    let msgs = fastprep_tests::wait_for("both inbound messages", Duration::from_secs(20), || {
        let env = &env;
        let sys = &sys;
        let conv = conv.clone();
        async move {
            let m = env.messages(sys, &conv).await;
            (m.len() >= 2).then_some(m)
        }
    })
    .await;
    // Give a duplicate every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs_after = env.messages(&sys, &conv).await;
    assert_eq!(msgs_after.len(), 2, "{msgs_after:#?}");
    assert_eq!(msgs[0]["text"], "And the price?");
    assert_eq!(msgs[1]["text"], "Hello, is the SAT course still open?");
    assert!(
        msgs.iter()
            .all(|m| m["direction"] == "in" && m["status"] == "received")
    );
    let (_, list) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/conversations", sys.api.url),
            Some(&sys.token),
            None,
        )
        .await;
    let convs = list["items"].as_array().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["contact_username"], "user1001");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'message.received.v1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(events, 2, "one message.received.v1 per stored message");
    env.cleanup().await;
}

#[tokio::test]
async fn only_a_send_that_takes_a_while_is_shown_sending() {
    let mut env = TestEnv::new().await;
    let sys = env
        .start_system_with(&[("TG_SENDING_AFTER", "300ms".to_owned())])
        .await;
    env.inject(&sys.adapter, 2003, 1, "Hi").await;
    let conv = env.conversation_for(&sys, 2003).await;
    let statuses_of = |id: String| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT payload->>'status' FROM outbox WHERE event_type = 'message.status.v1' AND aggregate_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    // A send that answers at once: queued -> sent, one status event.
    let fast = env.reply(&sys, &conv, "Right away.", "c-fast").await;
    let fast = fast["id"].as_str().unwrap().to_owned();
    let (_, _, attempts, _) = env
        .wait_status(&fast, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(attempts, 1, "the send is counted without a sending mark");
    assert_eq!(statuses_of(fast).await, ["sent"]);
    // A send that takes longer than TG_SENDING_AFTER is shown sending meanwhile.
    env.set_faults(&sys.adapter, serde_json::json!({"latency_ms": 1200}))
        .await;
    let slow = env.reply(&sys, &conv, "This one is slow.", "c-slow").await;
    let slow = slow["id"].as_str().unwrap().to_owned();
    env.wait_status(&slow, "sending", Duration::from_secs(20))
        .await;
    let (_, _, attempts, _) = env
        .wait_status(&slow, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(
        attempts, 1,
        "the sending mark and the outcome count one call"
    );
    assert_eq!(statuses_of(slow).await, ["sending", "sent"]);
    env.cleanup().await;
}

#[tokio::test]
async fn reply_is_sent_exactly_once_and_marked_sent() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    env.inject(&sys.adapter, 2002, 1, "Hi").await;
    let conv = env.conversation_for(&sys, 2002).await;
    let msg = env.reply(&sys, &conv, "Hello! Yes, it is.", "c-1").await;
    assert_eq!(msg["status"], "queued");
    let id = msg["id"].as_str().unwrap();
    let (status, tg_id, attempts, error) =
        env.wait_status(id, "sent", Duration::from_secs(20)).await;
    assert_eq!(status, "sent");
    assert!(tg_id.is_some());
    assert_eq!(attempts, 1);
    assert_eq!(error, None);
    let sent = env.sent(&sys.adapter).await;
    let mine: Vec<_> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["idempotency_key"] == id)
        .collect();
    assert_eq!(mine.len(), 1, "{sent}");
    assert_eq!(mine[0]["send_count"], 1);
    assert_eq!(mine[0]["chat_id"], 2002);
    assert_eq!(mine[0]["text"], "Hello! Yes, it is.");
    assert_eq!(mine[0]["tg_message_id"].as_i64(), tg_id);
    // The status went queued -> sending -> sent, each with an event.
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'status' FROM outbox WHERE event_type = 'message.status.v1' AND aggregate_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(statuses, ["sending", "sent"]);
    let via_api = env.messages(&sys, &conv).await;
    assert_eq!(via_api[0]["status"], "sent");
    env.cleanup().await;
}

#[tokio::test]
async fn posting_the_same_client_msg_id_twice_creates_one_message() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    env.inject(&sys.adapter, 3003, 1, "Hi").await;
    let conv = env.conversation_for(&sys, 3003).await;
    let a = env.reply(&sys, &conv, "Once", "same-id").await;
    let b = env.reply(&sys, &conv, "Once", "same-id").await;
    assert_eq!(a["id"], b["id"]);
    let (status, body) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{conv}/messages", sys.api.url),
            Some(&sys.token),
            Some(serde_json::json!({"text": "Something else", "client_msg_id": "same-id"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "client_msg_id_reused");
    let outgoing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'message.outgoing.v1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(outgoing, 1);
    env.wait_status(a["id"].as_str().unwrap(), "sent", Duration::from_secs(20))
        .await;
    env.cleanup().await;
}

#[tokio::test]
async fn replies_to_one_chat_are_sent_in_the_order_they_were_posted() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    env.inject(&sys.adapter, 4242, 1, "Hi").await;
    let conv = env.conversation_for(&sys, 4242).await;
    // A slow adapter gives concurrent deliveries every chance to overtake.
    env.set_faults(&sys.adapter, serde_json::json!({"latency_ms": 30}))
        .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let msg = env
            .reply(&sys, &conv, &format!("part {i}"), &format!("ord-{i}"))
            .await;
        ids.push(msg["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        env.wait_status(id, "sent", Duration::from_secs(30)).await;
    }
    let texts = env.arrivals(&sys.adapter).await.remove(&4242).unwrap();
    let expected: Vec<String> = (0..12).map(|i| format!("part {i}")).collect();
    assert_eq!(texts, expected);
    env.cleanup().await;
}

#[tokio::test]
async fn deletions_and_read_receipts_are_acknowledged_not_dead_lettered() {
    // The MTProto backend announces both; nothing stores them yet, and a
    // dead letter per read receipt would page ops all day.
    let mut env = TestEnv::new().await;
    env.start_consumer("inbound", None, &[]).await;
    let read = serde_json::json!({
        "id": uuid::Uuid::new_v4(),
        "type": "tg.update.read.v1",
        "occurred_at": "2026-12-06T10:00:00Z",
        "aggregate_type": "tg_chat",
        "aggregate_id": "1001",
        "data": {"chat_id": 1001, "max_id": 7, "outgoing": true, "read_at": "2026-12-06T10:00:00Z"}
    });
    let deleted = serde_json::json!({
        "id": uuid::Uuid::new_v4(),
        "type": "tg.update.deleted.v1",
        "occurred_at": "2026-12-06T10:00:01Z",
        "aggregate_type": "tg_chat",
        "aggregate_id": "account",
        "data": {"tg_message_ids": [7, 8], "deleted_at": "2026-12-06T10:00:01Z"}
    });
    for (key, event) in [
        ("tg.update.read.v1", &read),
        ("tg.update.deleted.v1", &deleted),
    ] {
        let id = event["id"].as_str().unwrap().to_owned();
        env.publish_raw(key, event.to_string().as_bytes(), &id)
            .await;
    }
    let pool = env.pool.clone();
    let handled =
        fastprep_tests::wait_for("both claimed by inbound", Duration::from_secs(20), || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM processed_messages WHERE consumer = 'inbound'",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                (n == 2).then_some(n)
            }
        })
        .await;
    assert_eq!(handled, 2);
    fastprep_tests::wait_for("inbound drained", Duration::from_secs(10), || async {
        let q = env.queue("inbound").await?;
        (q["messages"].as_u64()? == 0).then_some(())
    })
    .await;
    let dlq = env.queue("inbound.dlq").await.expect("inbound.dlq");
    assert_eq!(dlq["messages"].as_u64(), Some(0), "{dlq}");
    env.cleanup().await;
}
