//! Per-chat order with several tg-delivery instances, through random server
//! errors, FLOOD_WAITs of any length, and an instance killed mid-run.

use std::{collections::HashMap, time::Duration};

use fastprep_tests::{TestEnv, system::Started, system::System, wait_for};
use futures::future::join_all;
use serde_json::json;

/// Short back-offs and a budget that random errors do not exhaust.
fn knobs() -> Vec<(&'static str, String)> {
    vec![
        ("RETRY_SCHEDULE", "100ms,200ms".into()),
        ("RETRY_MAX_ATTEMPTS", "30".into()),
    ]
}

/// One inbound message per chat, so each has a conversation; returns
/// conversation ids by chat.
async fn chats(env: &TestEnv, sys: &System, first: i64, n: i64) -> Vec<(i64, String)> {
    for chat in first..first + n {
        env.inject(&sys.adapter, chat, 1, "hello").await;
    }
    let pool = env.pool.clone();
    wait_for("every chat's conversation", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let rows: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
                "SELECT tg_chat_id, id FROM conversations
                 WHERE tg_chat_id >= $1 AND tg_chat_id < $2 ORDER BY tg_chat_id",
            )
            .bind(first)
            .bind(first + n)
            .fetch_all(&pool)
            .await
            .ok()?;
            (rows.len() as i64 == n).then(|| {
                rows.into_iter()
                    .map(|(chat, id)| (chat, id.to_string()))
                    .collect()
            })
        }
    })
    .await
}

/// Posts `per_chat` replies to every chat: chats at once, each chat's
/// replies one after the other (each POST answered before the next).
async fn post_all(env: &TestEnv, sys: &System, chats: &[(i64, String)], per_chat: usize) {
    post_range(env, sys, chats, 0..per_chat).await;
}

/// As [`post_all`], the replies numbered `range` of every chat.
async fn post_range(
    env: &TestEnv,
    sys: &System,
    chats: &[(i64, String)],
    range: std::ops::Range<usize>,
) {
    join_all(chats.iter().map(|(chat, conv)| {
        let range = range.clone();
        async move {
            for i in range {
                env.reply(sys, conv, &text(*chat, i), &format!("o-{chat}-{i}"))
                    .await;
            }
        }
    }))
    .await;
}

fn text(chat: i64, i: usize) -> String {
    format!("chat {chat} reply {i:02}")
}

/// Waits until the count of replies marked `sent` passes `test`; returns
/// the count then.
async fn wait_sent(
    env: &TestEnv,
    what: &str,
    timeout: Duration,
    test: impl Fn(i64) -> bool,
) -> i64 {
    env.wait_count(
        what,
        "SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'sent'",
        timeout,
        test,
    )
    .await
}

async fn wait_all_sent(env: &TestEnv, total: i64, timeout: Duration) {
    wait_sent(env, "every reply to be sent", timeout, |n| n == total).await;
}

/// The whole system, two instances of each; returns the second
/// tg-delivery instance beside it.
async fn with_two_deliveries(env: &mut TestEnv) -> (System, Started) {
    let sys = env.start_system_with(&knobs()).await;
    let second = sys
        .second
        .as_ref()
        .expect("two instances of each")
        .delivery
        .clone();
    (sys, second)
}

fn assert_in_send_order(arrived: &HashMap<i64, Vec<String>>, chats: &[(i64, String)], n: usize) {
    for (chat, _) in chats {
        let expected: Vec<String> = (0..n).map(|i| text(*chat, i)).collect();
        assert_eq!(
            arrived.get(chat),
            Some(&expected),
            "chat {chat}: replies out of order"
        );
    }
}

/// A figure of `process`'s metrics (0 while it has none).
async fn metric(env: &TestEnv, process: &Started, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = env.http.text(&process.metrics_url).await;
    crate::metrics::sample(&text, name, labels).unwrap_or(0.0)
}

async fn done_by(env: &TestEnv, instance: &Started) -> f64 {
    metric(
        env,
        instance,
        "outbox_processed_total",
        &[("status", "done")],
    )
    .await
}

#[tokio::test]
async fn two_instances_keep_each_chats_order_through_errors_and_flood_waits() {
    const CHATS: i64 = 50;
    const PER_CHAT: usize = 20;
    let mut env = TestEnv::new().await;
    let (sys, second) = with_two_deliveries(&mut env).await;
    let chats = chats(&env, &sys, 700_000, CHATS).await;
    // One in ten sends fails with a server error, and each chat's first
    // send meets a one-second FLOOD_WAIT.
    env.set_faults(
        &sys.adapter,
        json!({"error_percent": 10, "flood_wait_once_per_chat": true, "retry_after": 1}),
    )
    .await;
    post_all(&env, &sys, &chats, PER_CHAT).await;
    wait_all_sent(&env, CHATS * PER_CHAT as i64, Duration::from_secs(180)).await;
    let arrived = env.arrivals(&sys.adapter).await;
    assert_in_send_order(&arrived, &chats, PER_CHAT);
    let shares = [
        done_by(&env, &sys.delivery).await,
        done_by(&env, &second).await,
    ];
    eprintln!("replies sent per instance: {shares:?}");
    assert!(
        shares.iter().all(|s| *s > 0.0),
        "both instances share the work: {shares:?}"
    );
    // Nothing is left over: no reply still held, no retry row pending.
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE held")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_killed_instance_hands_its_share_over_and_order_and_once_hold() {
    const CHATS: i64 = 20;
    const PER_CHAT: usize = 15;
    let mut env = TestEnv::new().await;
    let (sys, second) = with_two_deliveries(&mut env).await;
    let chats = chats(&env, &sys, 710_000, CHATS).await;
    // Slow sends, so the kill lands with deliveries in flight on it.
    env.set_faults(&sys.adapter, json!({"error_percent": 10, "latency_ms": 20}))
        .await;
    let total = CHATS * PER_CHAT as i64;
    let posting = post_all(&env, &sys, &chats, PER_CHAT);
    let killing = wait_sent(
        &env,
        "a third of the replies sent",
        Duration::from_secs(60),
        |n| n >= total / 3,
    );
    let (_, sent_at_kill) = tokio::join!(posting, killing);
    env.proc(second.idx).kill();
    let killed = std::time::Instant::now();
    // The survivor goes on: more replies are sent within seconds.
    wait_sent(
        &env,
        "the survivor to send on",
        Duration::from_secs(10),
        |n| n > sent_at_kill + 20,
    )
    .await;
    eprintln!("survivor sent 20 more within {:?}", killed.elapsed());
    env.proc(second.idx).restart_with(&[]);
    wait_all_sent(&env, total, Duration::from_secs(120)).await;
    let arrived = env.arrivals(&sys.adapter).await;
    assert_in_send_order(&arrived, &chats, PER_CHAT);
    env.cleanup().await;
}

#[tokio::test]
async fn a_twenty_minute_flood_wait_holds_its_chat_only_and_spends_no_attempt() {
    let mut env = TestEnv::new().await;
    // At 1/200 of real time the 20-minute wait lasts 6 s. One attempt in
    // all, so a FLOOD_WAIT that spent it would fail the reply.
    let sys = env
        .start_system_with(&[
            ("RETRY_CLOCK_SCALE", "0.005".into()),
            ("RETRY_MAX_ATTEMPTS", "1".into()),
        ])
        .await;
    let chats = chats(&env, &sys, 720_000, 2).await;
    let (waiting, other) = (&chats[0], &chats[1]);
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "flood_wait", "retry_after": 1200}),
    )
    .await;
    let started = std::time::Instant::now();
    let first = env.reply(&sys, &waiting.1, "first", "fw-1").await;
    let first = first["id"].as_str().unwrap().to_owned();
    // Its first try meets the FLOOD_WAIT: the message waits, retrying.
    let pool = env.pool.clone();
    let retry_in: f64 = wait_for("the reply to wait", Duration::from_secs(20), || {
        let pool = pool.clone();
        let id = first.clone();
        async move {
            sqlx::query_scalar(
                "SELECT EXTRACT(EPOCH FROM retry_at - now())::float8 FROM messages
                 WHERE id = $1::uuid AND status = 'retrying'",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
        }
    })
    .await;
    assert!(
        retry_in > 5.0 && retry_in <= 6.0 * 1.1 + 0.1,
        "due in 6 s (20 min scaled), never earlier, at most 10% later: {retry_in}"
    );
    let second = env.reply(&sys, &waiting.1, "second", "fw-2").await;
    let second = second["id"].as_str().unwrap().to_owned();
    let elsewhere = env.reply(&sys, &other.1, "elsewhere", "fw-3").await;
    let elsewhere = elsewhere["id"].as_str().unwrap().to_owned();
    // Another chat is not held up; the waiting chat's next reply is.
    env.wait_status(&elsewhere, "sent", Duration::from_secs(5))
        .await;
    wait_for(
        "the second reply to be held",
        Duration::from_secs(5),
        || {
            let pool = pool.clone();
            let id = second.clone();
            async move {
                let held: bool =
                    sqlx::query_scalar("SELECT held FROM messages WHERE id = $1::uuid")
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                held.then_some(())
            }
        },
    )
    .await;
    assert_eq!(env.message_row(&first).await.0, "retrying");
    env.wait_status(&first, "sent", Duration::from_secs(30))
        .await;
    env.wait_status(&second, "sent", Duration::from_secs(30))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the reply waited its FLOOD_WAIT"
    );
    let (_, _, attempts, _) = env.message_row(&first).await;
    assert_eq!(attempts, 1, "waiting spent no attempt");
    let arrived = env.arrivals(&sys.adapter).await;
    assert_eq!(arrived[&waiting.0], vec!["first", "second"]);
    assert_eq!(arrived[&other.0], vec!["elsewhere"]);
    env.cleanup().await;
}

/// The runbook's "give up on it": the waiting reply shows `failed` in its
/// place, is never sent, and the chat's next reply goes out.
#[tokio::test]
async fn an_operator_gives_up_on_a_waiting_reply_and_the_chat_goes_on() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let chats = chats(&env, &sys, 730_000, 1).await;
    let conv = &chats[0].1;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "flood_wait", "retry_after": 3600}),
    )
    .await;
    let first = env.reply(&sys, conv, "stuck", "gu-1").await;
    let first = first["id"].as_str().unwrap().to_owned();
    env.wait_status(&first, "retrying", Duration::from_secs(20))
        .await;
    let second = env.reply(&sys, conv, "goes on", "gu-2").await;
    let second = second["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.message_row(&second).await.0, "queued", "held behind");
    // The runbook's statements, as an operator runs them.
    for statement in [
        "UPDATE messages SET status = 'failed', error = 'given up by an operator'
         WHERE id = $1::uuid AND status = 'retrying'",
        "UPDATE outbox SET scheduled_at = now()
         WHERE aggregate_id = $1 AND status = 'pending'",
    ] {
        sqlx::query(statement)
            .bind(&first)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    env.wait_status(&second, "sent", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.message_row(&first).await.0, "failed");
    let arrived = env.arrivals(&sys.adapter).await;
    assert_eq!(arrived[&chats[0].0], vec!["goes on"]);
    env.cleanup().await;
}

/// A waiting reply tried before its time (a duplicate of its event, as a
/// re-publish or a replay brings) and sent: its scheduled retry is dropped,
/// so its `sent` status goes out at once rather than behind that retry, an
/// hour later; and it is sent once.
#[tokio::test]
async fn a_waiting_reply_sent_early_drops_its_scheduled_retry_and_shows_sent_at_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let chats = chats(&env, &sys, 735_000, 1).await;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "flood_wait", "retry_after": 3600}),
    )
    .await;
    let reply = env.reply(&sys, &chats[0].1, "early", "se-1").await;
    let id = reply["id"].as_str().unwrap().to_owned();
    env.wait_status(&id, "retrying", Duration::from_secs(20))
        .await;
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND status = 'pending'
           AND event_type = 'message.outgoing.v1' AND scheduled_at > now() + interval '50 minutes'",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(scheduled, 1, "the retry waits an hour");
    // The reply's event again, under an id of its own, and with another
    // text: what goes out is the stored reply, not the event's copy.
    let (payload, occurred_at): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT payload::text, created_at FROM outbox
         WHERE aggregate_id = $1 AND event_type = 'message.outgoing.v1' ORDER BY id LIMIT 1",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let mut data = serde_json::from_str::<serde_json::Value>(&payload).unwrap();
    data["text"] = json!("tampered copy");
    let event_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "id": event_id,
        "type": "message.outgoing.v1",
        "occurred_at": occurred_at,
        "aggregate_type": "message",
        "aggregate_id": id,
        "data": data,
    });
    env.publish_raw(
        "message.outgoing.v1",
        &serde_json::to_vec(&body).unwrap(),
        &event_id,
    )
    .await;
    env.wait_status(&id, "sent", Duration::from_secs(20)).await;
    // Its `sent` status is published, not held behind the hour-long retry.
    let pool = env.pool.clone();
    wait_for("the sent status published", Duration::from_secs(10), || {
        let pool = pool.clone();
        let id = id.clone();
        async move {
            let published: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE aggregate_id = $1
                   AND event_type = 'message.status.v1' AND payload->>'status' = 'sent'
                   AND status = 'done')",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .ok()?;
            published.then_some(())
        }
    })
    .await;
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND status = 'pending'",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(pending, 0, "nothing of the reply is left to publish");
    let arrived = env.arrivals(&sys.adapter).await;
    assert_eq!(arrived[&chats[0].0], vec!["early"]);
    env.cleanup().await;
}

/// Each chat's inbound messages as stored: Telegram ids in the inbox's
/// order, and in the order of their `message.received.v1` rows.
async fn inbound_orders(env: &TestEnv, chat: i64) -> (Vec<i64>, Vec<i64>) {
    let stored: Vec<i64> = sqlx::query_scalar(
        "SELECT m.tg_message_id FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE c.tg_chat_id = $1 AND m.direction = 'in' ORDER BY m.created_at, m.id",
    )
    .bind(chat)
    .fetch_all(&env.pool)
    .await
    .expect("stored messages");
    let announced: Vec<i64> = sqlx::query_scalar(
        "SELECT m.tg_message_id FROM outbox o
         JOIN messages m ON m.id = (o.payload->>'message_id')::uuid
         JOIN conversations c ON c.id = m.conversation_id
         WHERE o.event_type = 'message.received.v1' AND c.tg_chat_id = $1 ORDER BY o.id",
    )
    .bind(chat)
    .fetch_all(&env.pool)
    .await
    .expect("announced messages");
    (stored, announced)
}

/// Two inbound instances; the active one's database link is cut for a
/// second and heals, is cut again, and the instance is stopped with
/// `signal` while it holds updates it could not store. Every chat's
/// messages must be stored, and announced, in Telegram's order, once.
async fn inbound_order_through_a_cut_and_a_stop(signal: &str, first_chat: i64) {
    const CHATS: i64 = 20;
    const PER_CHAT: i64 = 40;
    let mut env = TestEnv::new().await;
    let adapter = env.start_adapter(&[]).await;
    // The first instance reaches PostgreSQL through a link the test cuts.
    // It is the active consumer: the second subscribes after it.
    let (link, via) = env.database_proxy().await;
    let knobs = knobs();
    let mut first_env = knobs.clone();
    first_env.push(("DATABASE_URL", via));
    let first = env.start_consumer("inbound", None, &first_env).await;
    env.wait_consumers("inbound", 1).await;
    let second = env.start_consumer("inbound", None, &knobs).await;
    env.wait_consumers("inbound", 2).await;
    let total = CHATS * PER_CHAT;
    let first_pid = env.proc(first.idx).pid().expect("first instance runs");
    // Every chat writes one message each 80 ms, all chats at once: about
    // 3.5 s of traffic, through which the chaos below runs.
    let writing = join_all((first_chat..first_chat + CHATS).map(|chat| {
        let env = &env;
        let adapter = &adapter;
        async move {
            for id in 1..=PER_CHAT {
                env.inject(adapter, chat, id, &format!("chat {chat} message {id:02}"))
                    .await;
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
        }
    }));
    let chaos = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        link.cut();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        link.restore();
        tokio::time::sleep(Duration::from_millis(500)).await;
        link.cut();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The cuts met the active instance: it waited in place.
        let waited = crate::metrics::handled(&env, &first, "inbound", "retry").await;
        assert!(waited > 0.0, "the first instance never waited");
        let stopped = std::process::Command::new("kill")
            .args([signal, &first_pid.to_string()])
            .status()
            .expect("kill");
        assert!(stopped.success(), "the first instance was not running");
    };
    tokio::join!(writing, chaos);
    // Stopped for good, even while its database was away.
    let first_idx = first.idx;
    wait_for(
        &format!("the first instance to stop on {signal}"),
        Duration::from_secs(5),
        || {
            let exited = env.proc(first_idx).exited();
            async move { exited.map(|_| ()) }
        },
    )
    .await;
    env.wait_inbound_stored(total, Duration::from_secs(60))
        .await;
    let expected: Vec<i64> = (1..=PER_CHAT).collect();
    for chat in first_chat..first_chat + CHATS {
        let (stored, announced) = inbound_orders(&env, chat).await;
        assert_eq!(stored, expected, "chat {chat}: stored out of order");
        assert_eq!(announced, expected, "chat {chat}: announced out of order");
    }
    let taken = crate::metrics::handled(&env, &second, "inbound", "ack").await;
    assert!(taken > 0.0, "the second instance took over nothing");
    env.cleanup().await;
}

#[tokio::test]
async fn two_inbound_instances_keep_each_chats_order_through_a_database_cut_and_a_kill() {
    inbound_order_through_a_cut_and_a_stop("-KILL", 730_000).await;
}

#[tokio::test]
async fn two_inbound_instances_keep_each_chats_order_through_a_database_cut_and_a_graceful_stop() {
    inbound_order_through_a_cut_and_a_stop("-TERM", 735_000).await;
}

#[tokio::test]
async fn a_chats_held_replies_go_out_in_the_turn_that_sends_the_one_before_them() {
    // A reply that comes while an earlier one to its chat is unfinished is
    // held. When the earlier one is sent, its handler sends the held ones
    // after it, in order and in the same turn: a chat that fell behind
    // catches up at the adapter's pace, with no trip through the outbox,
    // the relay and the broker for each held reply.
    let mut env = TestEnv::new().await;
    let sys = env
        .start_single_system_with(&[
            ("RETRY_SCHEDULE", "3s".into()),
            ("RETRY_MAX_ATTEMPTS", "5".into()),
        ])
        .await;
    env.inject(&sys.adapter, 4545, 1, "Hi").await;
    let conv = env.conversation_for(&sys, 4545).await;
    // The first send fails once: the reply waits for its retry, and the
    // chat's later replies are held behind it.
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "server_error"}),
    )
    .await;
    let first = env.reply(&sys, &conv, "part 0", "held-0").await;
    let first = first["id"].as_str().unwrap().to_owned();
    env.wait_status(&first, "retrying", Duration::from_secs(20))
        .await;
    let mut ids = vec![first.clone()];
    for i in 1..10 {
        let msg = env
            .reply(&sys, &conv, &format!("part {i}"), &format!("held-{i}"))
            .await;
        ids.push(msg["id"].as_str().unwrap().to_owned());
    }
    let pool = env.pool.clone();
    wait_for("nine replies held", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let held: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE held")
                .fetch_one(&pool)
                .await
                .unwrap();
            (held == 9).then_some(())
        }
    })
    .await;
    let still_retrying: String =
        sqlx::query_scalar("SELECT status FROM messages WHERE id = $1::uuid")
            .bind(&first)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        still_retrying, "retrying",
        "the retry came before the replies were held"
    );
    for id in &ids {
        env.wait_status(id, "sent", Duration::from_secs(30)).await;
    }
    let texts = env.arrivals(&sys.adapter).await.remove(&4545).unwrap();
    let expected: Vec<String> = (0..10).map(|i| format!("part {i}")).collect();
    assert_eq!(texts, expected);
    assert_eq!(env.sent(&sys.adapter).await["total_sends"], 10);
    // The only event that handed a reply its turn again is the first
    // reply's own retry.
    let handed: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM outbox
         WHERE event_type = 'message.outgoing.v1' AND (payload->>'resend')::boolean",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(handed, vec![first]);
    env.cleanup().await;
}

/// Deliveries `tg-delivery` handled in batches of two or more, as its
/// metrics say.
async fn batched_by(env: &TestEnv, instance: &Started) -> f64 {
    metric(
        env,
        instance,
        "consumer_batch_deliveries_sum",
        &[("queue", "tg-delivery")],
    )
    .await
}

/// Replies that pile up (two batches at a time, slow sends, a backlog after
/// a kill) go out in batches: one transaction for several chats' replies.
/// With the instance SIGKILLed with batches in flight, then through server
/// errors, every reply arrives once, each chat's in order, with one `sent`
/// event each, and no reply is left held or unfinished.
#[tokio::test]
async fn replies_that_pile_up_go_out_in_batches_once_each_and_in_order_through_a_kill_and_errors() {
    const CHATS: i64 = 40;
    const FIRST: usize = 10;
    const THEN: usize = 4;
    let mut env = TestEnv::new().await;
    let mut knobs = knobs();
    // As deployed: only a send that takes a while is marked `sending`.
    knobs.push(("TG_SENDING_AFTER", "250ms".to_owned()));
    let sys = env.start_single_system_with(&knobs).await;
    let chats = chats(&env, &sys, 740_000, CHATS).await;
    env.set_faults(&sys.adapter, json!({"latency_ms": 15}))
        .await;
    let first = CHATS * FIRST as i64;
    let some_sent = wait_sent(
        &env,
        "a quarter of the replies sent",
        Duration::from_secs(90),
        |n| n >= first / 4,
    );
    tokio::join!(post_range(&env, &sys, &chats, 0..FIRST), some_sent);
    let before_kill = batched_by(&env, &sys.delivery).await;
    env.proc(sys.delivery.idx).kill();
    // The backlog grows while no instance sends, then drains in batches.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.proc(sys.delivery.idx).restart_with(&[]);
    wait_all_sent(&env, first, Duration::from_secs(120)).await;
    let after_restart = batched_by(&env, &sys.delivery).await;
    eprintln!(
        "{first} replies: {before_kill} in batches before the kill, {after_restart} after the restart"
    );
    assert!(
        after_restart > 0.0 && before_kill + after_restart >= (first / 2) as f64,
        "most replies that pile up go in batches"
    );
    // Then through server errors, retried at their times.
    env.set_faults(&sys.adapter, json!({"error_percent": 10, "latency_ms": 15}))
        .await;
    post_range(&env, &sys, &chats, FIRST..FIRST + THEN).await;
    let total = CHATS * (FIRST + THEN) as i64;
    wait_all_sent(&env, total, Duration::from_secs(120)).await;
    let arrived = env.arrivals(&sys.adapter).await;
    assert_in_send_order(&arrived, &chats, FIRST + THEN);
    let (held, unfinished, sent_events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE held),
                (SELECT count(*) FROM messages WHERE direction = 'out' AND status <> 'sent'),
                (SELECT count(*) FROM outbox WHERE event_type = 'message.status.v1'
                   AND payload->>'status' = 'sent')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((held, unfinished), (0, 0));
    assert_eq!(sent_events, total, "one `sent` event per reply");
    env.cleanup().await;
}

/// Backend calls of the adapter that ended in `result`, as its metrics say.
async fn backend_calls(env: &TestEnv, adapter: &Started, result: &str) -> f64 {
    metric(
        env,
        adapter,
        "tg_adapter_send_duration_seconds_count",
        &[("result", result)],
    )
    .await
}

/// In batches: a send that fails for good (a chat that blocked the account)
/// goes the failure path at once, with one call to Telegram per reply, not
/// two; a send slower than `TG_SENDING_AFTER` is given back, shown
/// `sending`, and its second call is answered from the adapter's store, so
/// every reply still arrives once and in order.
#[tokio::test]
async fn a_batch_fails_a_blocked_chat_with_one_call_and_gives_back_slow_sends() {
    const CHATS: i64 = 30;
    let mut env = TestEnv::new().await;
    let mut knobs = knobs();
    knobs.push(("TG_SENDING_AFTER", "250ms".to_owned()));
    let sys = env.start_single_system_with(&knobs).await;
    let chats = chats(&env, &sys, 750_000, CHATS).await;
    let blocked = chats[0].0;
    env.set_faults(
        &sys.adapter,
        json!({"latency_ms": 15, "blocked_chats": [blocked]}),
    )
    .await;
    post_range(&env, &sys, &chats, 0..4).await;
    let total = CHATS * 4;
    env.wait_count(
        "every reply finished",
        "SELECT count(*) FROM messages WHERE direction = 'out' AND status IN ('sent', 'failed')",
        Duration::from_secs(60),
        |n| n == total,
    )
    .await;
    let failed: Vec<(i64, String)> = sqlx::query_as(
        "SELECT c.tg_chat_id, m.error FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.status = 'failed'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|(chat, error)| *chat == blocked && error.contains("user_blocked"))
    );
    assert!(
        batched_by(&env, &sys.delivery).await > 0.0,
        "batches formed"
    );
    assert_eq!(
        backend_calls(&env, &sys.adapter, "permanent").await,
        4.0,
        "one call per reply to the blocked chat"
    );
    // Slow sends: every one outlasts TG_SENDING_AFTER.
    env.set_faults(&sys.adapter, json!({"latency_ms": 400}))
        .await;
    let others = &chats[1..];
    post_range(&env, &sys, others, 4..6).await;
    wait_sent(
        &env,
        "the slow replies sent",
        Duration::from_secs(60),
        |n| n == total - 4 + 2 * (CHATS - 1),
    )
    .await;
    let arrived = env.arrivals(&sys.adapter).await;
    for (chat, _) in others {
        let expected: Vec<String> = (0..6).map(|i| text(*chat, i)).collect();
        assert_eq!(arrived.get(chat), Some(&expected), "chat {chat}");
    }
    let sending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'message.status.v1'
           AND payload->>'status' = 'sending'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(sending > 0, "slow sends are shown sending");
    let attempts: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT attempts FROM messages WHERE direction = 'out' AND status = 'sent'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(attempts, [1], "each send counted once, slow or not");
    env.cleanup().await;
}
