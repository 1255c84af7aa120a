//! The outbox writer. Every state change that others must learn of calls
//! [`enqueue`] inside the transaction that makes the change.

use broker_config::Envelope;
use sqlx::PgConnection;
use tracing::Instrument;

/// Writes `envelope` to the outbox inside the caller's transaction.
///
/// Takes a transaction-scoped advisory lock on the aggregate first, so two
/// transactions writing events of one aggregate commit in the order of their
/// outbox ids; the relay's per-aggregate ordering rests on that.
///
/// When traces are exported, the row carries the W3C context of an
/// `outbox.enqueue` span, a child of the caller's: the relay continues the
/// trace from it.
pub async fn enqueue(conn: &mut PgConnection, envelope: &Envelope) -> Result<i64, sqlx::Error> {
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
    write(conn, envelope, &headers).instrument(span).await
}

async fn write(
    conn: &mut PgConnection,
    envelope: &Envelope,
    headers: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .execute(&mut *conn)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(envelope.id)
    .bind(envelope.event_type())
    .bind(&envelope.aggregate_type)
    .bind(&envelope.aggregate_id)
    .bind(envelope.event.data_json())
    .bind(headers)
    .bind(envelope.occurred_at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}
