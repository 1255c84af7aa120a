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
async fn replies_wait_while_the_account_needs_login_and_go_once_it_is_back() {
    // The adapter answers 503 `session_needs_login` while the account is
    // logged out, with either backend (tg-adapter/tests/it/mtproto.rs shows
    // the MTProto one doing so without a session). Waiting for a login is
    // not failing: no attempt is spent, however long it takes.
    let mut env = TestEnv::new().await;
    let sys = env
        .start_single_system_with(&[("RETRY_CLOCK_SCALE", "0.02".into())])
        .await;
    env.inject(&sys.adapter, 4404, 1, "Hi").await;
    let conv = env.conversation_for(&sys, 4404).await;
    env.set_session(&sys.adapter, serde_json::json!({"session": "needs_login"}))
        .await;
    let first = env.reply(&sys, &conv, "first", "c-1").await;
    let second = env.reply(&sys, &conv, "second", "c-2").await;
    let first = first["id"].as_str().unwrap().to_owned();
    let second = second["id"].as_str().unwrap().to_owned();
    let (_, _, attempts, error) = env
        .wait_status(&first, "retrying", Duration::from_secs(20))
        .await;
    assert_eq!(error.as_deref(), Some("the Telegram account needs a login"));
    assert_eq!(attempts, 0);
    // Asked again every 0.6 s here (30 s in production): after several
    // asks, nothing is spent and nothing went.
    // An ask may be in flight at any instant: the row then reads `sending`
    // with the attempt counted, until the answer gives it back. So read the
    // row once it has settled in `retrying` again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, _, attempts, _) = env
        .wait_status(&first, "retrying", Duration::from_secs(20))
        .await;
    assert_eq!(attempts, 0);
    let asks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'message.status.v1'
         AND aggregate_id = $1 AND payload->>'status' = 'retrying'",
    )
    .bind(&first)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(asks >= 3, "asked {asks} times");
    assert_eq!(env.sent(&sys.adapter).await["total_sends"], 0);

    env.set_session(&sys.adapter, serde_json::json!({"session": "authorized"}))
        .await;
    env.wait_status(&first, "sent", Duration::from_secs(20))
        .await;
    env.wait_status(&second, "sent", Duration::from_secs(20))
        .await;
    let sent = env.sent(&sys.adapter).await;
    let texts: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(sent["total_sends"], 2);
    env.cleanup().await;
}

/// Every process proposes 32 KiB frames (`broker_config::connection::FRAME_MAX`),
/// as the broker reports its connections: lapin sizes each connection's two
/// buffers at 32 frames, so the broker's 128 KiB would cost 8 MiB a
/// connection.
#[tokio::test]
async fn every_process_talks_to_the_broker_in_small_frames() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    // The adapter connects when it first has an update to forward.
    env.inject(&sys.adapter, 4242, 1, "Hello").await;
    let url = format!(
        "{}/api/connections?columns=vhost,frame_max,client_properties.connection_name",
        env.services.rabbit_mgmt
    );
    let http = env.http.raw().clone();
    let vhost = env.vhost.clone();
    // The api's realtime hub, the relay, tg-delivery, inbound and the adapter.
    let connections = fastprep_tests::wait_for(
        "the processes' broker connections",
        Duration::from_secs(30),
        || {
            let (http, url, vhost) = (http.clone(), url.clone(), vhost.clone());
            async move {
                let all: Vec<serde_json::Value> =
                    http.get(url).send().await.ok()?.json().await.ok()?;
                let ours: Vec<(String, i64)> = all
                    .iter()
                    .filter(|c| c["vhost"] == vhost.as_str())
                    .map(|c| {
                        (
                            c["client_properties"]["connection_name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            c["frame_max"].as_i64().unwrap_or_default(),
                        )
                    })
                    .collect();
                let names: std::collections::HashSet<&str> =
                    ours.iter().map(|(n, _)| n.as_str()).collect();
                let processes = [
                    "api-realtime",
                    "relay",
                    "tg-delivery",
                    "inbound",
                    "tg-adapter",
                ];
                (processes
                    .iter()
                    .all(|p| names.iter().any(|n| n.contains(p))))
                .then_some(ours)
            }
        },
    )
    .await;
    for (name, frame_max) in &connections {
        assert_eq!(
            *frame_max,
            i64::from(broker_config::connection::FRAME_MAX),
            "connection {name}"
        );
    }
    env.cleanup().await;
}
