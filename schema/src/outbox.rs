//! The outbox writer. Every state change that others must learn of calls
//! [`enqueue`] inside the transaction that makes the change.

use broker_config::Envelope;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use tracing::Instrument;

/// Lock and insert in one statement (one round trip): the lock is a
/// materialised CTE, which the insert reads before it forms its row.
const INSERT: &str = "WITH aggregate_lock AS MATERIALIZED (
   SELECT pg_advisory_xact_lock(hashtextextended($3 || ':' || $4, 0)))
 INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, created_at, scheduled_at)
 SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()) FROM aggregate_lock RETURNING id";

/// Writes `envelope` to the outbox inside the caller's transaction (or on
/// `conn` alone, where the row is the whole change).
///
/// Takes a transaction-scoped advisory lock on the aggregate before the row
/// draws its id, so two transactions writing events of one aggregate commit
/// in the order of their outbox ids; the relay's per-aggregate ordering rests
/// on that.
///
/// When traces are exported, the row carries the W3C context of an
/// `outbox.enqueue` span, a child of the caller's: the relay continues the
/// trace from it.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, envelope: &Envelope) -> Result<i64, DbErr> {
    enqueue_scheduled(conn, envelope, None).await
}

/// Like [`enqueue`], for an event the relay must not publish before `at`
/// (a retry scheduled at a time of its own). Until then it also holds back
/// later events of its aggregate.
pub async fn enqueue_at<C: ConnectionTrait>(
    conn: &C,
    envelope: &Envelope,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<i64, DbErr> {
    enqueue_scheduled(conn, envelope, Some(at)).await
}

async fn enqueue_scheduled<C: ConnectionTrait>(
    conn: &C,
    envelope: &Envelope,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<i64, DbErr> {
    let (span, row) = row_values(envelope)?;
    let mut values = Vec::from(row);
    values.push(at.into());
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            INSERT,
            values,
        ))
        .instrument(span)
        .await?
        .ok_or_else(|| DbErr::RecordNotInserted)?;
    row.try_get_by_index(0)
}

/// Makes a change and writes `envelope` to the outbox in one statement: one
/// round trip where [`enqueue`] after the change would take two, and, run
/// outside a transaction, a whole atomic write in one round trip.
///
/// `ctes` are common table expressions whose last is named `change`: a
/// data-modifying statement with a `RETURNING` clause that yields at most one
/// row (their parameters `$1`..`$n` are `values`). The event's payload is
/// completed from that row: each `(key, expression)` of `fields` sets `key`
/// in the event's data to the SQL expression, which may read `change.*`
/// (a key whose value is null is left out, as the events' optional members
/// are; nulls inside a value stay).
///
/// Returns the changed row, or `None` when `change` changed nothing, in
/// which case no event is written either. The aggregate's lock is taken
/// after the change, as it is when the two statements run one after the
/// other.
pub async fn enqueue_with_change<C: ConnectionTrait>(
    conn: &C,
    ctes: &str,
    mut values: Vec<Value>,
    envelope: &Envelope,
    fields: &[(&'static str, &str)],
) -> Result<Option<sea_orm::QueryResult>, DbErr> {
    let (span, row) = row_values(envelope)?;
    let [id, ty, at, aid, payload, headers, occurred] = row_placeholders(values.len());
    let completion = completion(fields);
    let sql = format!(
        "WITH {ctes},
 aggregate_lock AS MATERIALIZED (
   SELECT pg_advisory_xact_lock(hashtextextended({at} || ':' || {aid}, 0)) FROM change),
 written AS (
   INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, created_at, scheduled_at)
   SELECT {id}, {ty}, {at}, {aid},
          {payload}::jsonb || {completion},
          {headers}, {occurred}, now()
   FROM change, aggregate_lock RETURNING id)
 SELECT change.* FROM change, written",
    );
    values.extend(row);
    conn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .instrument(span)
    .await
}

/// Like [`enqueue_with_change`], for a change of many rows in one statement:
/// one event for each row `change` returns. `change` must return a column
/// `n`, the 1-based position in `events` of the event of its row (rows are
/// matched to events by it); an event whose row is not returned is not
/// written. Each event's `outbox.enqueue` span is a child of the span given
/// with it. The aggregates' locks are taken after the change, in the order
/// of their hashes. Returns the changed rows.
pub async fn enqueue_each_with_change<C: ConnectionTrait>(
    conn: &C,
    ctes: &str,
    mut values: Vec<Value>,
    events: &[(Envelope, tracing::Span)],
    fields: &[(&'static str, &str)],
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut aggregate_types = Vec::with_capacity(events.len());
    let mut aggregate_ids = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut carried_headers = Vec::with_capacity(events.len());
    let mut occurred_ats = Vec::with_capacity(events.len());
    // Each event's span lasts until the write returns.
    let mut spans = Vec::with_capacity(events.len());
    for (envelope, parent) in events {
        let (span, carried) = parent.in_scope(|| producer_span(envelope));
        spans.push(span);
        ids.push(envelope.id);
        types.push(envelope.event_type().to_owned());
        aggregate_types.push(envelope.aggregate_type.clone());
        aggregate_ids.push(envelope.aggregate_id.clone());
        payloads.push(payload_of(envelope)?);
        carried_headers.push(carried);
        occurred_ats.push(envelope.occurred_at);
    }
    let [id, ty, at, aid, payload, headers, occurred] = row_placeholders(values.len());
    let completion = completion(fields);
    let sql = format!(
        "WITH {ctes},
 events AS (
   SELECT * FROM unnest({id}::uuid[], {ty}::text[], {at}::text[], {aid}::text[], {payload}::jsonb[], {headers}::jsonb[], {occurred}::timestamptz[])
     WITH ORDINALITY AS e(event_id, event_type, aggregate_type, aggregate_id, payload, headers, occurred_at, n)),
 aggregate_lock AS MATERIALIZED (
   SELECT count(pg_advisory_xact_lock(h)) AS held
   FROM (SELECT DISTINCT hashtextextended(e.aggregate_type || ':' || e.aggregate_id, 0) AS h
         FROM change JOIN events e ON e.n = change.n ORDER BY h) AS aggregates),
 written AS (
   INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, created_at, scheduled_at)
   SELECT e.event_id, e.event_type, e.aggregate_type, e.aggregate_id,
          e.payload || {completion},
          e.headers, e.occurred_at, now()
   FROM change JOIN events e ON e.n = change.n, aggregate_lock
   ORDER BY e.n
   RETURNING id)
 SELECT change.* FROM change",
    );
    values.extend([
        ids.into(),
        types.into(),
        aggregate_types.into(),
        aggregate_ids.into(),
        payloads.into(),
        carried_headers.into(),
        occurred_ats.into(),
    ]);
    let written = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await;
    drop(spans);
    written
}

/// The parameters of an outbox row's seven values (event id, type,
/// aggregate type and id, payload, headers, occurred at) after the
/// caller's `n`: `$n+1` to `$n+7`.
fn row_placeholders(n: usize) -> [String; 7] {
    std::array::from_fn(|i| format!("${}", n + i + 1))
}

/// The JSON object of the event's data members that `fields` complete from
/// the changed row (`(key, SQL expression)`; a null value is left out).
fn completion(fields: &[(&'static str, &str)]) -> String {
    let pairs = fields
        .iter()
        .map(|(key, expression)| format!("'{key}', {expression}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "COALESCE(
            (SELECT jsonb_object_agg(f.key, f.value)
             FROM jsonb_each(jsonb_build_object({pairs})) AS f
             WHERE f.value <> 'null'::jsonb), '{{}}'::jsonb)"
    )
}

/// The event's data, as the outbox row's payload.
fn payload_of(envelope: &Envelope) -> Result<serde_json::Value, DbErr> {
    envelope
        .event
        .data_json()
        .map_err(|e| DbErr::Custom(format!("event {} does not encode: {e}", envelope.id)))
}

/// The span of the write and the outbox row's values: event id, type,
/// aggregate type and id, payload, headers, occurred at.
fn row_values(envelope: &Envelope) -> Result<(tracing::Span, [Value; 7]), DbErr> {
    let (span, headers) = producer_span(envelope);
    let payload = payload_of(envelope)?;
    Ok((
        span,
        [
            envelope.id.into(),
            envelope.event_type().into(),
            envelope.aggregate_type.clone().into(),
            envelope.aggregate_id.clone().into(),
            payload.into(),
            headers.into(),
            envelope.occurred_at.into(),
        ],
    ))
}

/// The `outbox.enqueue` span and the trace headers the row carries.
fn producer_span(envelope: &Envelope) -> (tracing::Span, serde_json::Value) {
    let span = platform::trace::span_if_enabled(|| {
        tracing::info_span!(
            "outbox.enqueue",
            otel.name = %format!("outbox create {}", envelope.event_type()),
            otel.kind = "producer",
            messaging.system = "postgresql",
            messaging.operation.type = "create",
            messaging.destination.name = "outbox",
            messaging.message.id = %envelope.id,
        )
    });
    let headers = serde_json::Value::Object(
        platform::trace::inject(&span)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    );
    (span, headers)
}

/// Wakes the relay (`NOTIFY outbox`) after a transaction that wrote outbox
/// rows has committed.
///
/// The notification is sent here, after the commit and on a connection of
/// its own, rather than from an insert trigger: PostgreSQL serialises every
/// committing transaction that issued a `NOTIFY` on one cluster-wide lock,
/// held through the commit's WAL flush, which turned all writers of the
/// outbox into a queue (ADR 0009). Wakes coalesce: pokes that arrive while a
/// `NOTIFY` is on its way cost one more at most. A lost wake (the connection
/// is down, the process dies after its commit) delays the rows until the
/// relay's next poll; it loses nothing.
#[derive(Clone)]
pub struct RelayWake {
    poke: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl RelayWake {
    /// Starts the waker of this process on a dedicated connection to `pool`'s
    /// database (opened on first use, again after an error), as one of the
    /// process's supervised tasks: it ends at shutdown, and should it panic
    /// the process stops rather than go on without waking its relay.
    pub fn start(pool: &sqlx::PgPool, tasks: &platform::supervisor::Supervisor) -> Self {
        let poke = std::sync::Arc::new(tokio::sync::Notify::new());
        let options = pool.connect_options().as_ref().clone();
        let shutdown = tasks.shutdown().clone();
        let waker = notifier(options, poke.clone());
        tasks.spawn("relay wake", async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = waker => {}
            }
        });
        Self { poke: Some(poke) }
    }

    /// A waker that does nothing: the relay finds the rows on its next poll.
    pub fn none() -> Self {
        Self { poke: None }
    }

    /// Call after committing a transaction that called [`enqueue`].
    pub fn committed(&self) {
        if let Some(poke) = &self.poke {
            poke.notify_one();
        }
    }
}

/// Wakes the relay once, from a process that writes to the outbox too
/// rarely to keep a [`RelayWake`] (a command-line tool). Failure only means
/// the relay finds the rows on its next poll.
pub async fn notify_relay(pool: &sqlx::PgPool) {
    if let Err(e) = sqlx::query("SELECT pg_notify('outbox', '')")
        .execute(pool)
        .await
    {
        tracing::debug!(error = %e, "relay wake failed; the relay polls");
    }
}

async fn notifier(
    options: sqlx::postgres::PgConnectOptions,
    poke: std::sync::Arc<tokio::sync::Notify>,
) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn: Option<sqlx::PgConnection> = None;
    loop {
        poke.notified().await;
        if conn.is_none() {
            match options.connect().await {
                // The notification needs no durable commit of its own.
                Ok(mut c) => match sqlx::query("SET synchronous_commit = off")
                    .execute(&mut c)
                    .await
                {
                    Ok(_) => conn = Some(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "relay wake connection refused a setting")
                    }
                },
                Err(e) => tracing::debug!(error = %e, "relay wake cannot connect; the relay polls"),
            }
        }
        let Some(c) = conn.as_mut() else {
            // Not reachable now: the relay's poll covers; try at the next poke.
            continue;
        };
        if let Err(e) = sqlx::query("SELECT pg_notify('outbox', '')")
            .execute(&mut *c)
            .await
        {
            tracing::debug!(error = %e, "relay wake failed; the relay polls");
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
        }
    }
}
