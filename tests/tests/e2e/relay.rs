//! The relay under concurrency: two instances, every event once, in order per aggregate.

use std::{collections::HashMap, time::Duration};

use broker_config::{Envelope, Event, events::ConversationUpdated};
use fastprep_tests::{TestEnv, wait_for};
use futures::StreamExt;
use lapin::{options::*, types::FieldTable};
use uuid::Uuid;

#[tokio::test]
async fn two_relays_publish_every_event_in_aggregate_order() {
    const AGGREGATES: usize = 40;
    const PER_AGGREGATE: usize = 25;
    let mut env = TestEnv::new().await;
    // Declare the topology and a queue that sees every conversation event.
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
    let mut consumer = ch
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
    let relays = [
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "50".into())])
            .await,
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "50".into())])
            .await,
    ];
    // Writers interleave aggregates, as concurrent API requests would.
    let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::now_v7()).collect();
    let mut writers = Vec::new();
    for chunk in aggregates.chunks(AGGREGATES / 4) {
        let pool = env.pool.clone();
        let chunk = chunk.to_vec();
        writers.push(tokio::spawn(async move {
            for seq in 0..PER_AGGREGATE {
                for agg in &chunk {
                    let mut changed = serde_json::Map::new();
                    changed.insert("seq".into(), seq.into());
                    let env = Envelope::new(Event::ConversationUpdated(ConversationUpdated {
                        conversation_id: *agg,
                        changed,
                    }));
                    let mut tx = pool.begin().await.unwrap();
                    schema::enqueue(&mut tx, &env, &serde_json::json!({}))
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = AGGREGATES * PER_AGGREGATE;
    let mut seen: HashMap<Uuid, Vec<u64>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut received = 0;
    while received < total {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {total} events arrived\n{}", env.logs()))
            .unwrap()
            .unwrap();
        let envelope: Envelope = serde_json::from_slice(&delivery.data).unwrap();
        let Event::ConversationUpdated(e) = envelope.event else {
            panic!("unexpected event")
        };
        assert!(
            ids.insert(envelope.id),
            "event {} published twice",
            envelope.id
        );
        seen.entry(e.conversation_id)
            .or_default()
            .push(e.changed["seq"].as_u64().unwrap());
        received += 1;
    }
    for agg in &aggregates {
        let seqs = &seen[agg];
        let expected: Vec<u64> = (0..PER_AGGREGATE as u64).collect();
        assert_eq!(seqs, &expected, "aggregate {agg} out of order");
    }
    wait_for("all rows done", Duration::from_secs(10), || {
        let pool = env.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status <> 'done'")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;
    let mut published = Vec::new();
    for r in &relays {
        let text = env
            .http
            .raw()
            .get(&r.metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        published.push(crate::metrics::sample(&text, "outbox_published_total", &[]).unwrap_or(0.0));
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
async fn standby_relay_takes_over_when_the_active_one_dies() {
    const AGGREGATES: usize = 10;
    const PER_AGGREGATE: usize = 60;
    let mut env = TestEnv::new().await;
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
    let mut consumer = ch
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
    let relays = [
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "20".into())])
            .await,
        env.start_consumer("relay", None, &[("RELAY_BATCH_SIZE", "20".into())])
            .await,
    ];
    let leader_of =
        |text: &str| crate::metrics::sample(text, "outbox_relay_leader", &[]).unwrap_or(0.0);
    let http = env.http.raw().clone();
    let urls: Vec<String> = relays.iter().map(|r| r.metrics_url.clone()).collect();
    let active = wait_for(
        "one relay to become active",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            let urls = urls.clone();
            async move {
                let mut leaders = Vec::new();
                for (i, url) in urls.iter().enumerate() {
                    let text = http.get(url).send().await.ok()?.text().await.ok()?;
                    if leader_of(&text) == 1.0 {
                        leaders.push(i);
                    }
                }
                (leaders.len() == 1).then(|| leaders[0])
            }
        },
    )
    .await;
    let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::now_v7()).collect();
    let writer = {
        let pool = env.pool.clone();
        let aggregates = aggregates.clone();
        tokio::spawn(async move {
            for seq in 0..PER_AGGREGATE {
                for agg in &aggregates {
                    let mut changed = serde_json::Map::new();
                    changed.insert("seq".into(), seq.into());
                    let env = Envelope::new(Event::ConversationUpdated(ConversationUpdated {
                        conversation_id: *agg,
                        changed,
                    }));
                    let mut tx = pool.begin().await.unwrap();
                    schema::enqueue(&mut tx, &env, &serde_json::json!({}))
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Kill the active relay while events are flowing.
    tokio::time::sleep(Duration::from_millis(150)).await;
    env.proc(relays[active].idx).kill();
    writer.await.unwrap();
    let total = AGGREGATES * PER_AGGREGATE;
    let mut first_seen: HashMap<Uuid, Vec<u64>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
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
        // A takeover may publish again what the dead relay published but did
        // not mark; consumers drop such duplicates by id, so only first
        // deliveries count for order.
        if ids.insert(envelope.id) {
            first_seen
                .entry(e.conversation_id)
                .or_default()
                .push(e.changed["seq"].as_u64().unwrap());
        }
    }
    for agg in &aggregates {
        let expected: Vec<u64> = (0..PER_AGGREGATE as u64).collect();
        assert_eq!(first_seen[agg], expected, "aggregate {agg} out of order");
    }
    let survivor = &relays[1 - active];
    let text = env
        .http
        .raw()
        .get(&survivor.metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(leader_of(&text), 1.0, "the standby took over");
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}
