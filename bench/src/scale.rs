//! `fastprep-bench scale`: (a) replies delivered to the sandbox per second
//! with 1, 2 and 4 tg-delivery instances (the adapter's send budgets raised
//! out of the way); (b) raw confirmed publishing and the relay's drain
//! against a three-node RabbitMQ cluster (`scripts/cluster`), alternating;
//! (c) inbound updates stored per second by one active inbound instance
//! (a second one standing by, ADR 0012).

use std::time::{Duration, Instant};

use fastprep_tests::{TestEnv, cluster};
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{BasicProperties, options::*};
use serde_json::{Value, json};

use super::{confirm_channel, percentile, raw_publish, relay_drain};

pub struct Args {
    pub replies: usize,
    pub chats: usize,
    pub events: usize,
}

/// Queues `replies` replies over `chats` conversations in one transaction,
/// each with its `message.outgoing.v1` outbox row, as the API writes them.
async fn seed(env: &TestEnv, replies: usize, chats: usize) {
    sqlx::query(
        "WITH convs AS (
           INSERT INTO conversations (id, tg_chat_id, title)
           SELECT gen_random_uuid(), 900000 + c, 'Scale ' || c FROM generate_series(1, $2) c
           RETURNING id, tg_chat_id),
         msgs AS (
           INSERT INTO messages (id, conversation_id, direction, kind, text, status, client_msg_id, created_at)
           SELECT gen_random_uuid(), v.id, 'out', 'text', 'reply ' || r, 'queued', 's-' || r,
                  clock_timestamp() + r * interval '1 microsecond'
           FROM generate_series(1, $1) r
           JOIN (SELECT id, tg_chat_id, row_number() OVER () - 1 AS n FROM convs) v ON v.n = r % $2
           RETURNING id, conversation_id, text, created_at)
         INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload)
         SELECT gen_random_uuid(), 'message.outgoing.v1', 'message', m.id::text,
                jsonb_build_object('message_id', m.id, 'conversation_id', m.conversation_id,
                  'tg_chat_id', c.tg_chat_id, 'text', m.text, 'attachments', '[]'::jsonb)
         FROM msgs m JOIN convs c ON c.id = m.conversation_id
         ORDER BY m.created_at",
    )
    .bind(replies as i64)
    .bind(chats as i64)
    .execute(&env.pool)
    .await
    .unwrap();
    schema::outbox::notify_relay(&env.pool).await;
}

async fn sent(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'out' AND status = 'sent'")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Publishes `n` Telegram updates over `chats` chats to the events
/// exchange, confirmed, as the adapter publishes them.
async fn publish_updates(env: &TestEnv, n: usize, chats: usize) {
    let (conn, ch) = confirm_channel(env, "bench-inbound").await;
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        let chat = 950_000 + (i % chats) as i64;
        let id = uuid::Uuid::now_v7();
        let body = serde_json::to_vec(&json!({
            "id": id, "type": "tg.update.received.v1", "occurred_at": chrono::Utc::now(),
            "aggregate_type": "tg_chat", "aggregate_id": chat.to_string(),
            "data": {"chat": {"id": chat, "kind": "private"},
                     "sender": {"id": chat, "first_name": "Student"},
                     "tg_message_id": i as i64 + 1, "date": chrono::Utc::now(),
                     "text": "Hello, when is the next SAT practice test?"}
        }))
        .unwrap();
        if in_flight.len() >= 1_000 {
            let c: Result<lapin::Confirmation, _> = in_flight.next().await.unwrap();
            assert!(c.unwrap().is_ack());
        }
        in_flight.push(
            ch.basic_publish(
                "fastprep.events".into(),
                "tg.update.received.v1".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.to_string().into())
                    .with_content_type("application/json".into()),
            )
            .await
            .unwrap(),
        );
    }
    while let Some(c) = in_flight.next().await {
        assert!(c.unwrap().is_ack());
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// (c) `n` updates queued while no inbound instance runs, then stored by
/// one active instance with one standing by.
async fn inbound(n: usize, chats: usize) -> Value {
    let mut env = TestEnv::new().await;
    publish_updates(&env, n, chats).await;
    let first = env.start_consumer("inbound", None, &[]).await;
    let second = env.start_consumer("inbound", None, &[]).await;
    let cpu_before: f64 = [&first, &second]
        .iter()
        .map(|p| env.proc(p.idx).cpu_seconds().unwrap_or(0.0))
        .sum();
    let started = Instant::now();
    loop {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'in'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        if stored >= n as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the updates were not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu: f64 = [&first, &second]
        .iter()
        .map(|p| env.proc(p.idx).cpu_seconds().unwrap_or(0.0))
        .sum::<f64>()
        - cpu_before;
    let rate = n as f64 / secs;
    println!(
        "    one active inbound instance (one standing by): {rate:>6.0} updates/s stored ({secs:.2}s), inbound CPU {:.2} ms per update",
        cpu / n as f64 * 1e3
    );
    env.cleanup().await;
    json!({"updates": n, "chats": chats, "updates_per_sec": rate, "seconds": secs})
}

pub async fn run(args: Args) -> Value {
    println!(
        "(a) {} replies over {} chats, queued at once, delivered to the sandbox",
        args.replies, args.chats
    );
    let mut delivery = Vec::new();
    for instances in [1usize, 2, 4] {
        let mut env = TestEnv::new().await;
        let adapter = env
            .start_adapter(&[
                ("TG_CHAT_RATE_PER_SEC", "10000".into()),
                ("TG_CHAT_BURST", "10000".into()),
                ("TG_GLOBAL_RATE_PER_SEC", "100000".into()),
                ("TG_GLOBAL_BURST", "100000".into()),
            ])
            .await;
        env.start_consumer("relay", None, &[]).await;
        let mut procs = Vec::new();
        for _ in 0..instances {
            procs.push(
                env.start_consumer(
                    "tg-delivery",
                    Some(&adapter),
                    &[("TG_SENDING_AFTER", "250ms".into())],
                )
                .await,
            );
        }
        let cpu_before: f64 = procs
            .iter()
            .map(|p| env.proc(p.idx).cpu_seconds().unwrap_or(0.0))
            .sum();
        let started = Instant::now();
        seed(&env, args.replies, args.chats).await;
        while sent(&env).await < args.replies as i64 {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the replies were not delivered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu: f64 = procs
            .iter()
            .map(|p| env.proc(p.idx).cpu_seconds().unwrap_or(0.0))
            .sum::<f64>()
            - cpu_before;
        let rate = args.replies as f64 / secs;
        println!(
            "    {instances} tg-delivery instance(s): {rate:>6.0} replies/s ({secs:.2}s), tg-delivery CPU {:.2} ms per reply",
            cpu / args.replies as f64 * 1e3
        );
        delivery.push(json!({"instances": instances, "replies_per_sec": rate, "seconds": secs}));
        env.cleanup().await;
    }

    println!("(b) a three-node cluster (scripts/cluster), quorum queues on all three nodes");
    let mut env = TestEnv::new().await;
    let vhost = format!("{}_scale", env.vhost);
    env.set_for_all("AMQP_URL", &cluster::start_with_vhost(&vhost));
    env.start_consumer("relay", None, &[]).await;
    let mut raws = Vec::new();
    let mut relays = Vec::new();
    for round in 1..=3 {
        let raw = raw_publish(&env, args.events).await;
        let (relay, secs) = relay_drain(&env, args.events, 0).await;
        println!(
            "    round {round}: raw {raw:>6.0} events/s, relay {relay:>6.0} events/s ({secs:.2}s, {:.1}%)",
            relay / raw * 100.0
        );
        raws.push(raw);
        relays.push(relay);
    }
    raws.sort_by(f64::total_cmp);
    relays.sort_by(f64::total_cmp);
    let (raw, relay) = (percentile(&raws, 0.5), percentile(&relays, 0.5));
    println!(
        "    medians: raw {raw:.0} events/s, relay {relay:.0} events/s, relay / raw = {:.1}%",
        relay / raw * 100.0
    );
    env.cleanup().await;
    cluster::finish(&vhost);

    println!(
        "(c) {} inbound updates over {} chats, queued at once, stored",
        args.replies, args.chats
    );
    let inbound = inbound(args.replies, args.chats).await;
    json!({
        "at": chrono::Utc::now(),
        "replies": args.replies,
        "chats": args.chats,
        "delivery": delivery,
        "inbound": inbound,
        "cluster": {"events": args.events, "raw_rounds": raws, "relay_rounds": relays,
                     "raw_events_per_sec": raw, "relay_events_per_sec": relay},
    })
}
