//! Outbox rows as the relay reads, publishes and marks them.

use broker_config::publisher::Outgoing;
use broker_config::topology::{EVENTS_EXCHANGE, STREAM_ID_HEADER};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

#[derive(sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub payload: String,
    pub headers: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    /// The latest pending row of its aggregate at or below the cursor.
    behind: Option<i64>,
    /// The first pending row of its aggregate between the cursor and this
    /// row that is not yet due (backing off, or a retry scheduled later).
    first_not_due: Option<i64>,
    /// The event's position in the realtime stream (`x-stream-id`).
    pub stream_id: i64,
}

/// The next `$2` due pending rows after `$1` in id order, each with what
/// may hold it back: the latest pending row of its aggregate at or below the
/// cursor (`behind`), and the first one after the cursor that is not yet due
/// (`first_not_due`). Whether `behind` holds it back depends on whether the
/// relay published that row itself in this pass ([`Published`]). The scan is
/// bounded by the batch, whatever the backlog behind it: `behind` is one
/// backward probe of the aggregate index, and the not-due rows are looked
/// for only in the batch's own id range. Every row draws a stream position
/// in the same statement (no second round trip); [`read`] hands the lowest
/// ones, in order, to the rows that go out, and the others become gaps,
/// which the stream allows (ADR 0006).
const READ: &str = "
WITH batch AS MATERIALIZED (
  SELECT id, event_id, event_type, aggregate_type, aggregate_id, payload, headers, created_at
  FROM outbox
  WHERE status = 'pending' AND id > $1 AND scheduled_at <= now()
  ORDER BY id
  LIMIT $2),
not_due AS MATERIALIZED (
  SELECT aggregate_type, aggregate_id, min(id) AS first
  FROM outbox
  WHERE status = 'pending' AND id > $1 AND id < (SELECT max(id) FROM batch)
    AND scheduled_at > now()
  GROUP BY aggregate_type, aggregate_id)
SELECT b.id, b.event_id, b.event_type, b.aggregate_type, b.aggregate_id,
       b.payload::text AS payload, b.headers, b.created_at,
       (SELECT max(p.id) FROM outbox p
        WHERE p.status = 'pending' AND p.aggregate_type = b.aggregate_type
          AND p.aggregate_id = b.aggregate_id AND p.id <= $1) AS behind,
       (SELECT n.first FROM not_due n
        WHERE n.aggregate_type = b.aggregate_type AND n.aggregate_id = b.aggregate_id) AS first_not_due,
       nextval('event_stream_seq') AS stream_id
FROM batch b";

/// The rows the relay published in the current pass, by aggregate: the
/// highest id of each. Within a pass an aggregate's published rows are
/// contiguous among its pending rows: a row is published only when every
/// earlier pending row of its aggregate is published too, and rows of one
/// aggregate commit in id order (the writer's aggregate lock), so none can
/// appear behind one already read. So a pending row at or below an
/// aggregate's highest published id is one of the relay's own, in flight or
/// confirmed and not yet marked: it does not hold later rows back. On one
/// channel they reach the broker in order.
/// Keyed by aggregate type, then id, so a lookup borrows the row's strings.
#[derive(Default)]
pub struct Published {
    highest: std::collections::HashMap<String, std::collections::HashMap<String, i64>>,
}

impl Published {
    fn holds_back(&self, row: &Row) -> bool {
        let ours = self
            .highest
            .get(&row.aggregate_type)
            .and_then(|ids| ids.get(&row.aggregate_id))
            .copied()
            .unwrap_or(0);
        row.behind.is_some_and(|b| b > ours) || row.first_not_due.is_some_and(|f| f < row.id)
    }

    fn record(&mut self, row: &Row) {
        let ids = match self.highest.get_mut(&row.aggregate_type) {
            Some(ids) => ids,
            None => self.highest.entry(row.aggregate_type.clone()).or_default(),
        };
        match ids.get_mut(&row.aggregate_id) {
            Some(highest) => *highest = (*highest).max(row.id),
            None => {
                ids.insert(row.aggregate_id.clone(), row.id);
            }
        }
    }

    /// A new pass: nothing of the last one is pending any more.
    pub fn clear(&mut self) {
        self.highest.clear();
    }
}

/// One read: the rows to publish now, in id order with their stream
/// positions, and how far it got.
pub struct Read {
    pub rows: Vec<Row>,
    /// The highest id read (the next cursor), if any row was read.
    pub last: Option<i64>,
    /// Rows read, publishable or not.
    pub count: usize,
}

/// By primary key only: a confirmed row is published whatever its status
/// says, and a `status` condition would let the planner walk the pending
/// index (which stale statistics call tiny) instead.
const MARK_DONE: &str = "
UPDATE outbox SET status = 'done', published_at = now(), updated_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY($1)";

/// Back-off doubles per attempt from 1 s, capped at 5 minutes.
const MARK_FAILED: &str = "
UPDATE outbox SET attempts = attempts + 1, updated_at = now(), last_error = $2,
  scheduled_at = now() + LEAST(interval '1 second' * power(2, attempts), interval '5 minutes'),
  status = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE 'pending' END
WHERE id = ANY($1) AND status = 'pending'";

pub async fn read(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
    published: &mut Published,
) -> Result<Read, sqlx::Error> {
    // Prepared once and planned generically (the leader session's
    // `plan_cache_mode`): planning took four times the read's own execution
    // on a short backlog. The pipeline drops the plan every
    // [`REPLAN_EVERY`], so one made while the outbox was small (a fresh
    // deploy) does not keep walking it the wrong way once it is large.
    let mut rows: Vec<Row> = sqlx::query_as(READ)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    // In id order (sorted here: a sort node would be a disabled plan node
    // for the leader session).
    rows.sort_unstable_by_key(|r| r.id);
    let count = rows.len();
    let last = rows.last().map(|r| r.id);
    let mut positions: Vec<i64> = rows.iter().map(|r| r.stream_id).collect();
    positions.sort_unstable();
    // A held-back row holds back every later row of its aggregate too: its
    // `behind` or `first_not_due` precedes them as well.
    rows.retain(|r| !published.holds_back(r));
    for row in &rows {
        published.record(row);
    }
    // Positions rise in publish order, whatever order the server drew them
    // in.
    for (row, position) in rows.iter_mut().zip(positions) {
        row.stream_id = position;
    }
    Ok(Read { rows, last, count })
}

/// How long the leader keeps its plan of the read before planning it
/// again, from the outbox's size and statistics at that time.
pub const REPLAN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A read slower than this runs a plan made from stale statistics; healthy
/// reads of a batch take a few milliseconds. Statistics taken while the
/// outbox's rows were done call the pending indexes empty, and the per-row
/// probe for an earlier row of the aggregate (`behind`) is then planned as a
/// walk of every pending row below the cursor instead of a probe of its
/// aggregate's: a backlog (after an outage, or a burst) drained at a fifth
/// of the speed until autovacuum analysed the table (ADR 0009, fifth
/// amendment).
pub const SLOW_READ: std::time::Duration = std::time::Duration::from_millis(50);

/// The least time between two statistics refreshes that slow reads ask for:
/// a read slow for another reason (a starved machine) costs one `ANALYZE`
/// (a sample of at most 30,000 rows) a minute, no more.
pub const ANALYZE_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Drops the leader session's plan of the read: the next read plans again.
pub async fn replan(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::Connection::clear_cached_statements(conn).await
}

/// Refreshes the planner's statistics of the outbox.
pub async fn analyze(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let analysed = sqlx::query("ANALYZE outbox").execute(&mut *conn).await;
    sqlx::query(READ_TIMEOUT).execute(&mut *conn).await?;
    analysed?;
    replan(conn).await
}

/// Whether a statement was cancelled by `statement_timeout`.
pub fn is_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// The leader session's statement timeout: a healthy read takes milliseconds.
pub const READ_TIMEOUT: &str = "SET statement_timeout = '2s'";

pub async fn mark_done(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query(MARK_DONE).bind(ids).execute(conn).await?;
    }
    Ok(())
}

pub async fn mark_failed(
    conn: &mut PgConnection,
    ids: &[i64],
    error: &str,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        sqlx::query(MARK_FAILED)
            .bind(ids)
            .bind(error)
            .bind(max_attempts)
            .execute(conn)
            .await?;
    }
    Ok(())
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
pub fn envelope_bytes(r: &Row) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = Vec::with_capacity(r.payload.len() + 256);
    let head = EnvelopeHead {
        id: r.event_id,
        event_type: &r.event_type,
        occurred_at: r.created_at,
        aggregate_type: &r.aggregate_type,
        aggregate_id: &r.aggregate_id,
    };
    serde_json::to_writer(&mut body, &head)?;
    if body.pop() != Some(b'}') {
        use serde::ser::Error as _;
        return Err(serde_json::Error::custom(
            "the envelope head is not a JSON object",
        ));
    }
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(r.payload.as_bytes());
    body.push(b'}');
    Ok(body)
}

/// The trace headers a row's message carries: with traces exported, those
/// of a `publish` span, a child of the context the writer stored; else the
/// stored ones as they are.
fn publish_context(
    r: &Row,
    stored: std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, String> {
    if !platform::trace::enabled() || !stored.contains_key("traceparent") {
        return stored;
    }
    let span = tracing::info_span!(
        "outbox.publish",
        otel.name = %format!("{} publish", r.event_type),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "publish",
        messaging.destination.name = EVENTS_EXCHANGE,
        messaging.message.id = %r.event_id,
    );
    platform::trace::set_parent_from(&span, &stored);
    platform::trace::inject(&span)
}

/// Everything a row's AMQP message borrows, built once per batch.
pub struct Prepared {
    ids: Vec<String>,
    bodies: Vec<Vec<u8>>,
    headers: Vec<Vec<(String, String)>>,
}

impl Prepared {
    /// Fails when a row's envelope does not encode: nothing of the batch
    /// is published (never an empty body).
    pub fn new(rows: &[Row]) -> Result<Self, serde_json::Error> {
        Ok(Self {
            ids: rows.iter().map(|r| r.event_id.to_string()).collect(),
            bodies: rows.iter().map(envelope_bytes).collect::<Result<_, _>>()?,
            headers: rows
                .iter()
                .map(|r| {
                    let stored = r
                        .headers
                        .iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())));
                    publish_context(r, stored.collect())
                        .into_iter()
                        .chain([(STREAM_ID_HEADER.to_owned(), r.stream_id.to_string())])
                        .collect()
                })
                .collect(),
        })
    }

    pub fn outgoing<'a>(&'a self, rows: &'a [Row]) -> Vec<Outgoing<'a>> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| Outgoing {
                exchange: EVENTS_EXCHANGE,
                routing_key: &r.event_type,
                message_id: &self.ids[i],
                event_type: &r.event_type,
                body: &self.bodies[i],
                headers: &self.headers[i],
                attempt: 1,
                timestamp: u64::try_from(r.created_at.timestamp()).unwrap_or_default(),
                // Events without a subscriber (e.g. no API instance running) are fine.
                mandatory: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, aggregate: &str, behind: Option<i64>, first_not_due: Option<i64>) -> Row {
        Row {
            id,
            event_id: uuid::Uuid::now_v7(),
            event_type: "conversation.updated.v1".into(),
            aggregate_type: "conversation".into(),
            aggregate_id: aggregate.into(),
            payload: "{}".into(),
            headers: sqlx::types::Json(serde_json::Map::new()),
            created_at: Utc::now(),
            behind,
            first_not_due,
            stream_id: 0,
        }
    }

    #[test]
    fn only_rows_the_relay_published_itself_do_not_hold_back() {
        let mut published = Published::default();
        // Nothing behind it: goes out.
        let first = row(10, "a", None, None);
        assert!(!published.holds_back(&first));
        published.record(&first);
        // Behind the relay's own row 10 (in flight): goes out too.
        let second = row(20, "a", Some(10), None);
        assert!(!published.holds_back(&second));
        published.record(&second);
        // Behind a pending row the relay did not publish (committed late,
        // or skipped): waits.
        assert!(published.holds_back(&row(30, "a", Some(25), None)));
        // Behind a row not yet due: waits, whatever else.
        assert!(published.holds_back(&row(40, "a", Some(20), Some(35))));
        // Another aggregate knows nothing of a's rows.
        assert!(published.holds_back(&row(50, "b", Some(5), None)));
        assert!(!published.holds_back(&row(50, "b", None, None)));
        // A new pass forgets them: rows left pending then are not in flight.
        published.clear();
        assert!(published.holds_back(&row(60, "a", Some(20), None)));
    }

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
            behind: None,
            first_not_due: None,
            stream_id: 7,
        };
        let v: serde_json::Value = serde_json::from_slice(&envelope_bytes(&row).unwrap()).unwrap();
        assert_eq!(v["type"], "message.outgoing.v1");
        assert_eq!(v["aggregate_id"], "a\"b");
        assert_eq!(v["data"]["text"], "hi \"there\"");
        assert_eq!(v["id"], row.event_id.to_string());
    }
}
