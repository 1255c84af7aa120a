//! The outbox writer. Every state change that others must learn of calls
//! [`enqueue`] inside the transaction that makes the change.

use broker_config::Envelope;
use sqlx::PgConnection;

/// Writes `envelope` to the outbox inside the caller's transaction.
///
/// Takes a transaction-scoped advisory lock on the aggregate first, so two
/// transactions writing events of one aggregate commit in the order of their
/// outbox ids; the relay's per-aggregate ordering rests on that.
pub async fn enqueue(
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
