//! `tg-delivery`: sends `message.outgoing.v1` through the TG adapter and keeps
//! the message's delivery status, writing `message.status.v1` with every change.

mod adapter;

use async_trait::async_trait;
use broker_config::{
    Context, Envelope, Event, Failure, Handler, Next,
    events::{DeliveryStatus, MessageDeliveryFailed, MessageOutgoing, MessageStatus},
    topology::TG_DELIVERY,
};
use chrono::{DateTime, Utc};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Meter},
};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

pub use adapter::{AdapterClient, SendResult};

/// Instruments kept from the original runbook (DESIGN §11).
#[derive(Clone)]
pub struct DeliveryMetrics {
    processed: Counter<u64>,
}

impl DeliveryMetrics {
    pub fn new(meter: &Meter) -> (Self, opentelemetry::metrics::Histogram<f64>) {
        let processed = meter
            .u64_counter("outbox_processed")
            .with_description("Outcomes of Telegram delivery attempts: done, retry or failed")
            .build();
        let latency = meter
            .f64_histogram("adapter_latency")
            .with_unit("s")
            .with_description("Latency of TG adapter calls")
            .with_boundaries(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .build();
        (Self { processed }, latency)
    }

    fn count(&self, status: &'static str) {
        self.processed.add(1, &[KeyValue::new("status", status)]);
    }
}

pub struct TgDelivery {
    pool: PgPool,
    adapter: AdapterClient,
    metrics: DeliveryMetrics,
}

impl TgDelivery {
    pub fn new(pool: PgPool, adapter: AdapterClient, metrics: DeliveryMetrics) -> Self {
        Self {
            pool,
            adapter,
            metrics,
        }
    }
}

fn outgoing(env: &Envelope) -> Result<&MessageOutgoing, Failure> {
    match &env.event {
        Event::MessageOutgoing(m) => Ok(m),
        other => Err(Failure::permanent(format!(
            "tg-delivery cannot handle {}",
            other.event_type()
        ))),
    }
}

/// Sets a message's status and writes the matching `message.status.v1`.
#[allow(clippy::too_many_arguments)]
async fn set_status(
    conn: &mut PgConnection,
    msg: &MessageOutgoing,
    status: DeliveryStatus,
    attempt: i32,
    tg_message_id: Option<i64>,
    sent_at: Option<DateTime<Utc>>,
    error: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let assignee_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE messages SET status = $2, tg_message_id = COALESCE($3, tg_message_id),
           sent_at = COALESCE($4, sent_at), error = $5, retry_at = $6, updated_at = now()
         WHERE id = $1
         RETURNING (SELECT assignee_id FROM conversations c WHERE c.id = messages.conversation_id)",
    )
    .bind(msg.message_id)
    .bind(status.as_str())
    .bind(tg_message_id)
    .bind(sent_at)
    .bind(error)
    .bind(retry_at)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let event = Envelope::new(Event::MessageStatus(MessageStatus {
        message_id: msg.message_id,
        conversation_id: msg.conversation_id,
        status,
        tg_message_id,
        error: error.map(str::to_owned),
        attempt,
        retry_at,
        assignee_id,
    }));
    schema::enqueue(conn, &event).await?;
    Ok(())
}

impl TgDelivery {
    /// Marks the message `sending` in its own committed transaction, so the
    /// inbox shows it while the adapter is called. Returns the attempt number,
    /// or `None` when the message is already sent (nothing to do).
    async fn mark_sending(&self, msg: &MessageOutgoing) -> Result<Option<i32>, Failure> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, i32)> =
            sqlx::query_as("SELECT status, attempts FROM messages WHERE id = $1 FOR UPDATE")
                .bind(msg.message_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((status, attempts)) = row else {
            return Err(Failure::permanent(format!(
                "message {} does not exist",
                msg.message_id
            )));
        };
        if status == DeliveryStatus::Sent.as_str() {
            return Ok(None);
        }
        let attempt = attempts + 1;
        sqlx::query("UPDATE messages SET attempts = $2 WHERE id = $1")
            .bind(msg.message_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
        set_status(
            &mut tx,
            msg,
            DeliveryStatus::Sending,
            attempt,
            None,
            None,
            None,
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(attempt))
    }

    async fn attempts_of(conn: &mut PgConnection, id: Uuid) -> Result<i32, sqlx::Error> {
        let n: Option<i32> = sqlx::query_scalar("SELECT attempts FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
        Ok(n.unwrap_or_default())
    }
}

#[async_trait]
impl Handler for TgDelivery {
    fn queue(&self) -> &'static str {
        TG_DELIVERY.name
    }

    /// Replies to one chat go out in the order they were queued.
    fn ordering_key(&self, envelope: &Envelope) -> Option<String> {
        outgoing(envelope).ok().map(|m| m.tg_chat_id.to_string())
    }

    async fn handle(
        &self,
        ctx: &Context<'_>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), Failure> {
        let msg = outgoing(ctx.envelope)?;
        let Some(attempt) = self.mark_sending(msg).await? else {
            tracing::info!(message_id = %msg.message_id, "already sent; nothing to do");
            return Ok(());
        };
        match self.adapter.send(msg).await {
            SendResult::Sent {
                tg_message_id,
                sent_at,
            } => {
                set_status(
                    tx,
                    msg,
                    DeliveryStatus::Sent,
                    attempt,
                    Some(tg_message_id),
                    Some(sent_at),
                    None,
                    None,
                )
                .await?;
                self.metrics.count("done");
                Ok(())
            }
            SendResult::FloodWait { retry_after } => Err(Failure::Retryable {
                after: Some(retry_after),
                reason: format!("flood wait {}s", retry_after.as_secs()),
            }),
            SendResult::Transient { reason } => Err(Failure::retryable(reason)),
            SendResult::Permanent { code } => Err(Failure::permanent(code)),
        }
    }

    async fn on_failure(
        &self,
        ctx: &Context<'_>,
        failure: &Failure,
        next: Next,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), sqlx::Error> {
        let Ok(msg) = outgoing(ctx.envelope) else {
            return Ok(());
        };
        let attempt = Self::attempts_of(tx, msg.message_id).await?;
        match next {
            Next::RetryAt(at) => {
                set_status(
                    tx,
                    msg,
                    DeliveryStatus::Retrying,
                    attempt,
                    None,
                    None,
                    Some(failure.reason()),
                    Some(at),
                )
                .await?;
                self.metrics.count("retry");
            }
            Next::DeadLetter => {
                set_status(
                    tx,
                    msg,
                    DeliveryStatus::Failed,
                    attempt,
                    None,
                    None,
                    Some(failure.reason()),
                    None,
                )
                .await?;
                let failed = Envelope::new(Event::MessageDeliveryFailed(MessageDeliveryFailed {
                    message_id: msg.message_id,
                    conversation_id: msg.conversation_id,
                    error: failure.reason().to_owned(),
                    attempts: attempt,
                }));
                schema::enqueue(tx, &failed).await?;
                self.metrics.count("failed");
            }
        }
        Ok(())
    }
}
