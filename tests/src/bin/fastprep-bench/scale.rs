//! `fastprep-bench scale`: (a) replies delivered to the sandbox per second
//! with 1, 2 and 4 tg-delivery instances (the adapter's send budgets raised
//! out of the way); (b) raw confirmed publishing and the relay's drain
//! against a three-node RabbitMQ cluster (`scripts/cluster`), alternating.

use std::time::{Duration, Instant};

use fastprep_tests::{TestEnv, cluster};
use serde_json::{Value, json};

use super::{percentile, raw_publish, relay_drain};

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
    json!({
        "at": chrono::Utc::now(),
        "replies": args.replies,
        "chats": args.chats,
        "delivery": delivery,
        "cluster": {"events": args.events, "raw_rounds": raws, "relay_rounds": relays,
                     "raw_events_per_sec": raw, "relay_events_per_sec": relay},
    })
}
