//! One relay round: claim, publish with pipelined confirms, mark.

use broker_config::{Publisher, publisher::Outgoing, topology::EVENTS_EXCHANGE};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::RelayMetrics;
use crate::config::RelayConfig;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub claimed: usize,
    pub published: usize,
    pub failed: usize,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    event_id: uuid::Uuid,
    event_type: String,
    aggregate_type: String,
    aggregate_id: String,
    payload: String,
    headers: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    created_at: DateTime<Utc>,
}

/// The envelope of DESIGN §4 without `data`, which is spliced in verbatim.
#[derive(Serialize)]
struct EnvelopeHead<'a> {
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    occurred_at: DateTime<Utc>,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
}

/// The AMQP body of a row: the envelope head with the row's payload as
/// `data`. The payload is PostgreSQL's rendering of a jsonb value, so it is
/// valid JSON and is copied without being parsed again.
fn envelope_bytes(r: &Row) -> Vec<u8> {
    let mut body = Vec::with_capacity(r.payload.len() + 256);
    let head = EnvelopeHead {
        id: r.event_id,
        event_type: &r.event_type,
        occurred_at: r.created_at,
        aggregate_type: &r.aggregate_type,
        aggregate_id: &r.aggregate_id,
    };
    if serde_json::to_writer(&mut body, &head).is_err() || body.pop() != Some(b'}') {
        return Vec::new();
    }
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(r.payload.as_bytes());
    body.push(b'}');
    body
}

/// Due pending rows that are the oldest pending row of their aggregate, so
/// that no event overtakes an earlier one of the same aggregate, even with
/// several relays claiming at once.
const CLAIM: &str = "
SELECT id, event_id, event_type, aggregate_type, aggregate_id, payload::text AS payload, headers, created_at
FROM outbox o
WHERE o.status = 'pending' AND o.scheduled_at <= now()
  AND NOT EXISTS (
    SELECT 1 FROM outbox p
    WHERE p.status = 'pending' AND p.aggregate_type = o.aggregate_type
      AND p.aggregate_id = o.aggregate_id AND p.id < o.id)
ORDER BY o.id
LIMIT $1
FOR UPDATE SKIP LOCKED";

const MARK_DONE: &str = "
UPDATE outbox SET status = 'done', published_at = now(), updated_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY($1)";

/// Back-off doubles per attempt from 1 s, capped at 5 minutes.
const MARK_FAILED: &str = "
UPDATE outbox SET attempts = attempts + 1, updated_at = now(), last_error = $2,
  scheduled_at = now() + LEAST(interval '1 second' * power(2, attempts), interval '5 minutes'),
  status = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE 'pending' END
WHERE id = ANY($1)";

/// Claims up to `batch_size` rows, publishes them and records the outcome,
/// in one transaction.
pub async fn relay_batch(
    pool: &PgPool,
    publisher: &Publisher,
    config: &RelayConfig,
    metrics: &RelayMetrics,
) -> Result<BatchOutcome, RelayError> {
    let t0 = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let rows: Vec<Row> = sqlx::query_as(CLAIM)
        .bind(config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(BatchOutcome::default());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    let bodies: Vec<Vec<u8>> = rows.iter().map(envelope_bytes).collect();
    let headers: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .collect();
    let outgoing: Vec<Outgoing<'_>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: &r.event_type,
            message_id: &ids[i],
            event_type: &r.event_type,
            body: &bodies[i],
            headers: &headers[i],
            attempt: 1,
            timestamp: u64::try_from(r.created_at.timestamp()).unwrap_or_default(),
            // Events without a subscriber (e.g. no API instance running) are fine.
            mandatory: false,
        })
        .collect();
    let t_claimed = t0.elapsed();
    // A channel failure rolls the transaction back: every row stays pending.
    let results = publisher.publish_batch(&outgoing).await?;
    let t_published = t0.elapsed();
    let confirmed_at = Utc::now();

    // Fault-injection point for the crash tests (compiled out without the
    // `failpoints` feature): die after the broker confirmed, before marking done.
    fail::fail_point!("relay-after-publish", |_| std::process::abort());

    let mut done = Vec::with_capacity(rows.len());
    let mut failed = Vec::new();
    for (row, result) in rows.iter().zip(&results) {
        match result {
            Ok(()) => {
                done.push(row.id);
                metrics.record_confirm(
                    &row.event_type,
                    (confirmed_at - row.created_at).as_seconds_f64(),
                );
            }
            Err(e) => {
                tracing::warn!(outbox_id = row.id, event_type = %row.event_type, error = %e, "publish not confirmed");
                failed.push(row.id);
            }
        }
    }
    if !done.is_empty() {
        sqlx::query(MARK_DONE).bind(&done).execute(&mut *tx).await?;
    }
    if !failed.is_empty() {
        sqlx::query(MARK_FAILED)
            .bind(&failed)
            .bind("broker did not confirm the publish")
            .bind(config.max_attempts)
            .execute(&mut *tx)
            .await?;
    }
    let t_marked = t0.elapsed();
    tx.commit().await?;
    tracing::debug!(
        rows = rows.len(),
        claim_ms = t_claimed.as_secs_f64() * 1e3,
        publish_ms = (t_published - t_claimed).as_secs_f64() * 1e3,
        mark_ms = (t_marked - t_published).as_secs_f64() * 1e3,
        commit_ms = (t0.elapsed() - t_marked).as_secs_f64() * 1e3,
        "relay batch"
    );
    metrics.published(done.len() as u64);
    Ok(BatchOutcome {
        claimed: rows.len(),
        published: done.len(),
        failed: failed.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_design_envelope_with_the_payload_verbatim() {
        let row = Row {
            id: 1,
            event_id: uuid::Uuid::now_v7(),
            event_type: "message.outgoing.v1".into(),
            aggregate_type: "message".into(),
            aggregate_id: "a\"b".into(),
            payload: r#"{"text": "hi \"there\"", "tg_chat_id": 5, "attachments": []}"#.into(),
            headers: sqlx::types::Json(serde_json::Map::new()),
            created_at: Utc::now(),
        };
        let v: serde_json::Value = serde_json::from_slice(&envelope_bytes(&row)).unwrap();
        assert_eq!(v["type"], "message.outgoing.v1");
        assert_eq!(v["aggregate_id"], "a\"b");
        assert_eq!(v["data"]["text"], "hi \"there\"");
        assert_eq!(v["id"], row.event_id.to_string());
    }
}
