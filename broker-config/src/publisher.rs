//! A publisher with pipelined publisher confirms: every message of a batch is
//! written to the channel first, then all confirms are awaited together.

use lapin::{
    BasicProperties, Channel, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::events::Envelope;
use crate::topology::EVENTS_EXCHANGE;

/// Header carrying the delivery attempt (1 for the first delivery).
pub const ATTEMPT_HEADER: &str = "x-attempt";

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub message_id: &'a str,
    pub event_type: &'a str,
    pub body: &'a [u8],
    /// W3C trace headers and the like, copied into AMQP headers.
    pub headers: &'a [(String, String)],
    pub attempt: u32,
    /// Creation time of the event, seconds since the epoch.
    pub timestamp: u64,
    /// Whether a message no queue takes is an error. Events may legitimately
    /// have no subscriber; a publish to one named queue must reach it.
    pub mandatory: bool,
}

impl Outgoing<'_> {
    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in self.headers {
            headers.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
        headers.insert(
            ShortString::from(ATTEMPT_HEADER),
            AMQPValue::LongLongInt(i64::from(self.attempt)),
        );
        BasicProperties::default()
            .with_message_id(ShortString::from(self.message_id))
            .with_type(ShortString::from(self.event_type))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_timestamp(self.timestamp)
            .with_headers(headers)
    }
}

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue took the message (returned as unroutable)")]
    Unroutable,
    #[error("channel error: {0}")]
    Channel(#[from] lapin::Error),
    #[error("the event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A channel in confirm mode.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a channel on `conn` and turns on publisher confirms.
    pub async fn new(conn: &Connection) -> Result<Self, lapin::Error> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// Closes the channel.
    pub async fn close(&self) -> Result<(), lapin::Error> {
        self.channel.close(200, "done".into()).await
    }

    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes every message, pipelined, and returns one result per message
    /// in order. A channel failure fails the whole batch: nothing of it can be
    /// assumed delivered.
    pub async fn publish_batch(
        &self,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<Result<(), PublishError>>, lapin::Error> {
        let pending = self.send(messages).await?;
        Self::confirmations(pending).await
    }

    /// Writes every message to the channel without waiting for confirms;
    /// the returned handles resolve as the broker confirms. Lets a caller keep
    /// several batches in flight.
    pub async fn send(
        &self,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<PublisherConfirm>, lapin::Error> {
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(m.exchange),
                    ShortString::from(m.routing_key),
                    BasicPublishOptions {
                        mandatory: m.mandatory,
                        ..Default::default()
                    },
                    m.body,
                    m.properties(),
                )
                .await?;
            pending.push(confirm);
        }
        Ok(pending)
    }

    /// Waits for the confirms of [`Publisher::send`], one result per message.
    pub async fn confirmations(
        pending: Vec<PublisherConfirm>,
    ) -> Result<Vec<Result<(), PublishError>>, lapin::Error> {
        let mut results = Vec::with_capacity(pending.len());
        for confirm in pending {
            let confirmation = confirm.await?;
            results.push(if confirmation.is_nack() {
                Err(PublishError::Nacked)
            } else if confirmation.take_message().is_some() {
                Err(PublishError::Unroutable)
            } else {
                Ok(())
            });
        }
        Ok(results)
    }

    /// Publishes one message and waits for its confirm.
    pub async fn publish(&self, message: &Outgoing<'_>) -> Result<(), PublishError> {
        let mut results = self.publish_batch(std::slice::from_ref(message)).await?;
        results.pop().unwrap_or(Err(PublishError::Nacked))
    }

    /// Publishes an event envelope to `fastprep.events`, confirmed. Used by
    /// producers that are not behind the outbox (the TG adapter's inbound path).
    pub async fn publish_envelope(
        &self,
        envelope: &Envelope,
        headers: &[(String, String)],
    ) -> Result<(), PublishError> {
        let body = serde_json::to_vec(envelope)?;
        let id = envelope.id.to_string();
        let timestamp = u64::try_from(envelope.occurred_at.timestamp()).unwrap_or_default();
        self.publish(&Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: envelope.event_type(),
            message_id: &id,
            event_type: envelope.event_type(),
            body: &body,
            headers,
            attempt: 1,
            timestamp,
            mandatory: true,
        })
        .await
    }
}
