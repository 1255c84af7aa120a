//! The relay under concurrency: two instances, every event once, in order per
//! aggregate, also when the active one dies.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use broker_config::{Envelope, Event, events::ConversationUpdated};
use fastprep_tests::{TestEnv, system::Started, wait_for};
use futures::StreamExt;
use lapin::{options::*, types::FieldTable};
use uuid::Uuid;

/// A queue of the test's own that sees every conversation event.
async fn observe(env: &TestEnv) -> (lapin::Connection, lapin::Consumer) {
    let conn = broker_config::connection::connect(&env.amqp_url(), "observer")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    broker_config::topology::declare(&ch, &broker_config::topology::topology())
        .await
        .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        "fastprep.events".into(),
        "conversation.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            q.name().clone(),
            "observer".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (conn, consumer)
}

/// Writes `per_aggregate` numbered events for each aggregate, interleaved as
/// concurrent API requests would, each in its own transaction.
fn write_sequences(
    env: &TestEnv,
    aggregates: &[Uuid],
    per_aggregate: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let pool = env.pool.clone();
    let aggregates = aggregates.to_vec();
    tokio::spawn(async move {
        for seq in 0..per_aggregate {
            for agg in &aggregates {
                let mut changed = serde_json::Map::new();
                changed.insert("seq".into(), seq.into());
                let env = Envelope::new(Event::ConversationUpdated(ConversationUpdated {
                    conversation_id: *agg,
                    changed,
                    previous_assignee_id: None,
                    assignee_id: None,
                }));
                schema::enqueue(&schema::pool::orm(&pool), &env)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(pause).await;
        }
    })
}

/// Receives until `total` distinct events arrived; returns each aggregate's
/// sequence numbers in the order of first delivery, and how many deliveries
/// were repeats (consumers drop those by event id).
async fn collect(
    env: &TestEnv,
    consumer: &mut lapin::Consumer,
    total: usize,
) -> (HashMap<Uuid, Vec<u64>>, usize) {
    let mut first_seen: HashMap<Uuid, Vec<u64>> = HashMap::new();
    let mut ids = HashSet::new();
    let mut repeats = 0;
    while ids.len() < total {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {total} distinct events arrived\n{}",
                    ids.len(),
                    env.logs()
                )
            })
            .unwrap()
            .unwrap();
        let envelope: Envelope = serde_json::from_slice(&delivery.data).unwrap();
        let Event::ConversationUpdated(e) = envelope.event else {
            panic!("unexpected event")
        };
        if ids.insert(envelope.id) {
            first_seen
                .entry(e.conversation_id)
                .or_default()
                .push(e.changed["seq"].as_u64().unwrap());
        } else {
            repeats += 1;
        }
    }
    (first_seen, repeats)
}

fn assert_in_order(
    first_seen: &HashMap<Uuid, Vec<u64>>,
    aggregates: &[Uuid],
    per_aggregate: usize,
) {
    let expected: Vec<u64> = (0..per_aggregate as u64).collect();
    for agg in aggregates {
        assert_eq!(first_seen[agg], expected, "aggregate {agg} out of order");
    }
}

async fn scrape(env: &TestEnv, relay: &Started, name: &str) -> f64 {
    let text = env.http.text(&relay.metrics_url).await;
    crate::metrics::sample(&text, name, &[]).unwrap_or(0.0)
}

#[tokio::test]
async fn two_relays_publish_every_event_in_aggregate_order() {
    const AGGREGATES: usize = 40;
    const PER_AGGREGATE: usize = 25;
    let mut env = TestEnv::new().await;
    let (conn, mut consumer) = observe(&env).await;
    // One of them is active, the other stands by.
    let relays = [
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "50".into())])
            .await,
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "50".into())])
            .await,
    ];
    let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::now_v7()).collect();
    let writers: Vec<_> = aggregates
        .chunks(AGGREGATES / 4)
        .map(|chunk| write_sequences(&env, chunk, PER_AGGREGATE, Duration::ZERO))
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let total = AGGREGATES * PER_AGGREGATE;
    let (first_seen, repeats) = collect(&env, &mut consumer, total).await;
    assert_eq!(repeats, 0, "no event is published twice without a crash");
    assert_in_order(&first_seen, &aggregates, PER_AGGREGATE);
    env.wait_outbox_drained(Duration::from_secs(10)).await;
    let mut published = Vec::new();
    for r in &relays {
        published.push(scrape(&env, r, "outbox_published_total").await);
    }
    eprintln!("events published per relay: {published:?}");
    assert_eq!(published.iter().sum::<f64>() as usize, total);
    assert!(
        published.contains(&0.0),
        "only the active relay publishes: {published:?}"
    );
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

/// A busy aggregate moves a batch at a time, in order; a row that is not yet
/// due (backing off) holds back the later rows of its own aggregate only,
/// even when they fill whole batches ahead of everything else.
#[tokio::test]
async fn a_row_backing_off_holds_back_only_its_own_aggregate() {
    const HELD: usize = 12;
    const BUSY: usize = 120;
    let mut env = TestEnv::new().await;
    let (conn, mut consumer) = observe(&env).await;
    let held = Uuid::now_v7();
    let busy = Uuid::now_v7();
    // The held aggregate's first row backs off for 5 s; its later rows (more
    // than two batches of 5) and then the busy aggregate's rows are due.
    write_sequences(&env, &[held], HELD, Duration::ZERO)
        .await
        .unwrap();
    // Taken before the row's time is set: the held rows may come no earlier
    // than 5 s after it, however long the writes below take.
    let scheduled = std::time::Instant::now();
    sqlx::query(
        "UPDATE outbox SET scheduled_at = now() + interval '5 seconds'
         WHERE id = (SELECT min(id) FROM outbox WHERE aggregate_id = $1)",
    )
    .bind(held.to_string())
    .execute(&env.pool)
    .await
    .unwrap();
    write_sequences(&env, &[busy], BUSY, Duration::ZERO)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "5".into())])
        .await;
    let (first_seen, repeats) = collect(&env, &mut consumer, BUSY).await;
    assert_eq!(repeats, 0);
    assert_eq!(
        first_seen.get(&held),
        None,
        "nothing of the held aggregate overtakes its backing-off row"
    );
    assert_in_order(&first_seen, &[busy], BUSY);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the busy aggregate did not wait behind the held one's batches"
    );
    let (first_seen, _) = collect(&env, &mut consumer, HELD).await;
    assert!(
        scheduled.elapsed() >= Duration::from_millis(4900),
        "the held row waited for its time"
    );
    assert_in_order(&first_seen, &[held], HELD);
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

/// A backlog written after the outbox's statistics were taken while its
/// rows were done (they call the pending indexes empty, as after a quiet
/// spell): the relay's first slow read has it analyse the outbox, instead
/// of every later read walking all the pending rows below its cursor for
/// each row it reads until autovacuum comes by.
#[tokio::test]
async fn a_backlog_under_stale_statistics_has_the_relay_analyse_the_outbox() {
    const DONE: i64 = 30_000;
    const LATER: i64 = 3_000;
    const DUE: i64 = 5_000;
    let mut env = TestEnv::new().await;
    let insert = |status: &'static str, n: i64, delay: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, status, scheduled_at)
                 SELECT gen_random_uuid(), 'conversation.updated.v1', 'conversation', gen_random_uuid()::text,
                        '{}', $1, now() + $3::interval
                 FROM generate_series(1, $2)",
            )
            .bind(status)
            .bind(n)
            .bind(delay)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    insert("done", DONE, "0 s").await;
    sqlx::query("ANALYZE outbox")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox")
        .execute(&env.pool)
        .await
        .unwrap();
    // Rows backing off for an hour (as after an outage), then rows due
    // now, each of its own aggregate.
    insert("pending", LATER, "1 hour").await;
    insert("pending", DUE, "0 s").await;
    let pool = env.pool.clone();
    let pending_in_statistics = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT coalesce(bool_or('pending' = ANY(most_common_vals::text::text[])), false)
                 FROM pg_stats WHERE tablename = 'outbox' AND attname = 'status'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(!pending_in_statistics().await, "the statistics are stale");

    env.start_consumer("relay", None, &[]).await;
    env.wait_count(
        "the due rows to be published",
        "SELECT count(*) FROM outbox WHERE status = 'done'",
        Duration::from_secs(120),
        |done| done == DUE,
    )
    .await;
    assert!(
        env.logs().contains("relay read slow; analysing the outbox"),
        "the relay did not analyse the outbox\n{}",
        env.logs()
    );
    assert!(
        pending_in_statistics().await,
        "the statistics were refreshed"
    );
    let later: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE status = 'pending' AND scheduled_at > now()",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(later, LATER, "the rows backing off wait for their time");
    env.cleanup().await;
}

#[tokio::test]
async fn standby_relay_takes_over_when_the_active_one_dies() {
    const AGGREGATES: usize = 10;
    const PER_AGGREGATE: usize = 60;
    let mut env = TestEnv::new().await;
    let (conn, mut consumer) = observe(&env).await;
    let relays = [
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "20".into())])
            .await,
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "20".into())])
            .await,
    ];
    let active = wait_for(
        "one relay to become active",
        Duration::from_secs(20),
        || {
            let env = &env;
            let relays = &relays;
            async move {
                let mut leaders = Vec::new();
                for (i, r) in relays.iter().enumerate() {
                    if scrape(env, r, "outbox_relay_leader").await == 1.0 {
                        leaders.push(i);
                    }
                }
                (leaders.len() == 1).then(|| leaders[0])
            }
        },
    )
    .await;
    let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::now_v7()).collect();
    let writer = write_sequences(&env, &aggregates, PER_AGGREGATE, Duration::from_millis(5));
    // Kill the active relay while events are flowing.
    tokio::time::sleep(Duration::from_millis(150)).await;
    env.proc(relays[active].idx).kill();
    writer.await.unwrap();
    // A takeover may publish again what the dead relay published but had not
    // marked; only first deliveries count for order.
    let (first_seen, _) = collect(&env, &mut consumer, AGGREGATES * PER_AGGREGATE).await;
    assert_in_order(&first_seen, &aggregates, PER_AGGREGATE);
    assert_eq!(
        scrape(&env, &relays[1 - active], "outbox_relay_leader").await,
        1.0,
        "the standby took over"
    );
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn retention_deletes_only_old_done_rows() {
    let env = TestEnv::new().await;
    for (status, age) in [
        ("done", "10 days"),
        ("done", "1 day"),
        ("pending", "10 days"),
        ("failed", "10 days"),
    ] {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, status, published_at, created_at)
             VALUES ($1, 'conversation.updated.v1', 'conversation', 'x', '{}', $2, now() - $3::interval, now() - $3::interval)",
        )
        .bind(Uuid::now_v7())
        .bind(status)
        .bind(age)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    let deleted = consumers::relay::purge(&env.pool, 7.0 * 86_400.0)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT status FROM outbox ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(left, ["done", "pending", "failed"]);
    // The runbook's manual retry works on this schema.
    let retried = sqlx::query("UPDATE outbox SET status = 'pending', attempts = 0, scheduled_at = NOW() WHERE status = 'failed'")
        .execute(&env.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(retried, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn refused_publishes_back_off_then_fail_and_the_runbook_retry_sends_them() {
    let mut env = TestEnv::new().await;
    let mgmt = env.services.rabbit_mgmt.clone();
    let policy = format!("{mgmt}/api/policies/{}/full-tg-delivery", env.vhost);
    let relay = env
        .start_consumer("relay", None, &[("OUTBOX_MAX_ATTEMPTS", "2".into())])
        .await;
    // A full queue with `x-overflow: reject-publish` makes the broker nack.
    let put = env
        .http
        .raw()
        .put(&policy)
        .json(&serde_json::json!({"pattern": "^tg-delivery$", "apply-to": "queues", "definition": {"max-length": 0}}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "policy: {}", put.status());
    wait_for("the policy to apply", Duration::from_secs(20), || async {
        let q = env.queue("tg-delivery").await?;
        (q["effective_policy_definition"]["max-length"] == 0).then_some(())
    })
    .await;
    // A quorum queue refuses once it is over its limit, and it learns of the
    // policy a moment after the management API shows it. A channel that has
    // published before hears of the refusal as a notice that may come late; a
    // new one asks the queue when it first publishes. So each filler goes on a
    // new channel, until one is refused, and the relay's publish meets a
    // refusing queue.
    let (mut conn, _) = observe(&env).await;
    let mut seen = (0u32, 0u32, Vec::<String>::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let confirmation = ch
                .basic_publish(
                    "".into(),
                    "tg-delivery".into(),
                    BasicPublishOptions::default(),
                    b"filler",
                    lapin::BasicProperties::default(),
                )
                .await?
                .await?;
            let _ = ch.close(200, "filler".into()).await;
            Ok::<_, lapin::Error>(confirmation.is_nack())
        }
        .await;
        match outcome {
            Ok(true) => break,
            Ok(false) => seen.0 += 1,
            Err(e) => {
                seen.1 += 1;
                seen.2.push(e.to_string());
                if !conn.status().connected() {
                    conn = broker_config::connection::connect(&env.amqp_url(), "observer")
                        .await
                        .unwrap();
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let depth = env
                .queue("tg-delivery")
                .await
                .map(|q| q["messages"].clone());
            panic!(
                "the full queue never refused a filler in 30 s: {} taken, {} failed \
             (last errors {:?}), queue depth {depth:?}",
                seen.0,
                seen.1,
                seen.2.iter().rev().take(3).collect::<Vec<_>>(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ch = conn.create_channel().await.unwrap();
    let event = Envelope::new(Event::MessageOutgoing(
        broker_config::events::MessageOutgoing {
            message_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            tg_chat_id: 7,
            text: "refused".into(),
            attachments: vec![],
            assignee_id: None,
            resend: false,
            view: None,
        },
    ));
    schema::enqueue(&schema::pool::orm(&env.pool), &event)
        .await
        .unwrap();
    let row = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, i32, Option<String>)>(
            "SELECT status, attempts, last_error FROM outbox",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let (_, attempts, error) = wait_for("the row to fail", Duration::from_secs(30), || {
        let pool = env.pool.clone();
        async move {
            let r = row(pool).await;
            assert_ne!(r.0, "done", "the broker took a publish to the full queue");
            (r.0 == "failed").then_some(r)
        }
    })
    .await;
    assert_eq!(attempts, 2);
    assert!(error.unwrap_or_default().contains("confirm"));
    // Ops fix the queue (lift the limit, drain it) and run the runbook's retry.
    env.http.raw().delete(&policy).send().await.unwrap();
    ch.queue_purge("tg-delivery".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    wait_for("the policy to go", Duration::from_secs(20), || async {
        let q = env.queue("tg-delivery").await?;
        q["effective_policy_definition"]
            .get("max-length")
            .is_none()
            .then_some(())
    })
    .await;
    sqlx::query("UPDATE outbox SET status = 'pending', attempts = 0, scheduled_at = NOW() WHERE status = 'failed'")
        .execute(&env.pool)
        .await
        .unwrap();
    wait_for(
        "the retried row to be published",
        Duration::from_secs(30),
        || {
            let pool = env.pool.clone();
            async move { (row(pool).await.0 == "done").then_some(()) }
        },
    )
    .await;
    assert_eq!(scrape(&env, &relay, "outbox_published_total").await, 1.0);
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}

#[tokio::test]
async fn migrating_again_changes_nothing() {
    let env = TestEnv::new().await;
    schema::pool::migrate(&env.pool).await.unwrap();
    schema::pool::migrate(&env.pool).await.unwrap();
    let roles: Vec<String> = sqlx::query_scalar("SELECT name FROM roles ORDER BY name")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(roles, ["admin", "operator", "viewer"]);
    let permissions: i64 = sqlx::query_scalar("SELECT count(*) FROM permissions")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(permissions, 12);
    env.cleanup().await;
}
