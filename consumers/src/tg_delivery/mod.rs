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
    relay_wake: schema::RelayWake,
    /// A send still running after this is shown as `sending`.
    sending_after: std::time::Duration,
}

impl TgDelivery {
    pub fn new(
        pool: PgPool,
        adapter: AdapterClient,
        metrics: DeliveryMetrics,
        relay_wake: schema::RelayWake,
        sending_after: std::time::Duration,
    ) -> Self {
        Self {
            pool,
            adapter,
            metrics,
            relay_wake,
            sending_after,
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

/// A status write: what changes on the message row beside its status.
struct StatusChange<'a> {
    status: DeliveryStatus,
    tg_message_id: Option<i64>,
    sent_at: Option<DateTime<Utc>>,
    error: Option<&'a str>,
    retry_at: Option<DateTime<Utc>>,
}

/// Sets a message's status and writes the matching `message.status.v1`, in
/// one statement for the row (which also reads the attempt number and the
/// conversation's assignee) and one for the outbox row. Returns the attempt.
///
/// Every adapter call is counted once: by its `sending` mark when the call
/// took long enough to get one, else by the write of its outcome. (An
/// attempt that died after its mark and is followed by a fast one leaves
/// that one uncounted; the count errs low, never high.)
async fn set_status(
    conn: &mut PgConnection,
    msg: &MessageOutgoing,
    change: StatusChange<'_>,
) -> Result<i32, sqlx::Error> {
    let row: Option<(i32, Option<Uuid>)> = sqlx::query_as(
        "UPDATE messages SET status = $2, tg_message_id = COALESCE($3, tg_message_id),
           sent_at = COALESCE($4, sent_at), error = $5, retry_at = $6, updated_at = now(),
           attempts = attempts + CASE WHEN $2 = 'sending' OR status <> 'sending' THEN 1 ELSE 0 END
         WHERE id = $1
         RETURNING attempts, (SELECT assignee_id FROM conversations c WHERE c.id = messages.conversation_id)",
    )
    .bind(msg.message_id)
    .bind(change.status.as_str())
    .bind(change.tg_message_id)
    .bind(change.sent_at)
    .bind(change.error)
    .bind(change.retry_at)
    .fetch_optional(&mut *conn)
    .await?;
    let (attempt, assignee_id) = row.unwrap_or_default();
    let event = Envelope::new(Event::MessageStatus(MessageStatus {
        message_id: msg.message_id,
        conversation_id: msg.conversation_id,
        status: change.status,
        tg_message_id: change.tg_message_id,
        error: change.error.map(str::to_owned),
        attempt,
        retry_at: change.retry_at,
        assignee_id,
    }));
    schema::enqueue(conn, &event).await?;
    Ok(attempt)
}

/// Whether the message still needs sending, read inside the handler's
/// transaction (without a row lock: the `sending` mark takes one on its own
/// connection while the adapter call runs).
async fn needs_sending(conn: &mut PgConnection, msg: &MessageOutgoing) -> Result<bool, Failure> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
        .bind(msg.message_id)
        .fetch_optional(conn)
        .await?;
    match status {
        None => Err(Failure::permanent(format!(
            "message {} does not exist",
            msg.message_id
        ))),
        Some(s) => Ok(s != DeliveryStatus::Sent.as_str()),
    }
}

impl TgDelivery {
    /// Marks the message `sending` (counting the attempt) in its own
    /// committed transaction, so the inbox shows a send that takes a while.
    async fn mark_sending(&self, msg: &MessageOutgoing) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        set_status(
            &mut tx,
            msg,
            StatusChange {
                status: DeliveryStatus::Sending,
                tg_message_id: None,
                sent_at: None,
                error: None,
                retry_at: None,
            },
        )
        .await?;
        tx.commit().await?;
        self.relay_wake.committed();
        Ok(())
    }

    /// Calls the adapter; a call still running after `sending_after` marks
    /// the message `sending` meanwhile. Returns the adapter's answer.
    async fn send(&self, msg: &MessageOutgoing) -> Result<SendResult, Failure> {
        if self.sending_after.is_zero() {
            // Every send is marked, before the call (not racing a timer).
            self.mark_sending(msg).await?;
            return Ok(self.adapter.send(msg).await);
        }
        let call = self.adapter.send(msg);
        tokio::pin!(call);
        tokio::select! {
            result = &mut call => Ok(result),
            () = tokio::time::sleep(self.sending_after) => {
                let (marked, result) = tokio::join!(self.mark_sending(msg), call);
                marked?;
                Ok(result)
            }
        }
    }
}

#[async_trait]
impl Handler for TgDelivery {
    fn queue(&self) -> &'static str {
        TG_DELIVERY.name
    }

    fn committed(&self) {
        self.relay_wake.committed();
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
        if !needs_sending(tx, msg).await? {
            tracing::info!(message_id = %msg.message_id, "already sent; nothing to do");
            return Ok(());
        }
        match self.send(msg).await? {
            SendResult::Sent {
                tg_message_id,
                sent_at,
            } => {
                set_status(
                    tx,
                    msg,
                    StatusChange {
                        status: DeliveryStatus::Sent,
                        tg_message_id: Some(tg_message_id),
                        sent_at: Some(sent_at),
                        error: None,
                        retry_at: None,
                    },
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
        let (status, retry_at) = match next {
            Next::RetryAt(at) => (DeliveryStatus::Retrying, Some(at)),
            Next::DeadLetter => (DeliveryStatus::Failed, None),
        };
        let attempt = set_status(
            tx,
            msg,
            StatusChange {
                status,
                tg_message_id: None,
                sent_at: None,
                error: Some(failure.reason()),
                retry_at,
            },
        )
        .await?;
        if retry_at.is_some() {
            self.metrics.count("retry");
        } else {
            let failed = Envelope::new(Event::MessageDeliveryFailed(MessageDeliveryFailed {
                message_id: msg.message_id,
                conversation_id: msg.conversation_id,
                error: failure.reason().to_owned(),
                attempts: attempt,
            }));
            schema::enqueue(tx, &failed).await?;
            self.metrics.count("failed");
        }
        Ok(())
    }
}
