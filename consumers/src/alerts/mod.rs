//! `alerts`: tells on-call in Slack when replies stop reaching Telegram,
//! when a queue dead-letters, and when the Telegram account cannot send
//! (DESIGN §6).
//!
//! The handler only counts: each failure goes into its kind's sliding window
//! in Redis ([`state`]), and the one count that crosses the threshold queues
//! an alert, whichever instance made it. The sender ([`sender`]) of every
//! instance posts queued messages to Slack, retrying until Slack accepts, and
//! only then starts the kind's cooldown. Failures during the cooldown are
//! held, and one summary of them is queued when it ends.

pub mod kind;
pub mod sender;
pub mod slack;
pub mod state;

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use broker_config::{
    Context, Envelope, Event, Failure, Handler,
    events::SessionState,
    runner::DeliveryInfo,
    topology::{ALERTS, TG_DELIVERY},
};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Meter},
};
use sea_orm::DatabaseTransaction;
use tokio::sync::Notify;
use uuid::Uuid;

use kind::Kind;
use state::{AlertState, Recorded};

/// Settings of the alerts consumer.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// `FAIL_ALERT_THRESHOLD`: failures of one kind within the window that alert.
    pub threshold: u32,
    /// `FAIL_ALERT_WINDOW_SEC`.
    pub window: Duration,
    /// `FAIL_ALERT_COOLDOWN_SEC`: quiet time after an alert Slack accepted.
    pub cooldown: Duration,
    /// `FAIL_ALERT_FLOOD_WAIT_SEC`: a FLOOD_WAIT at least this long alerts.
    pub flood_wait: Duration,
    pub links: slack::Links,
}

/// The alerts' instruments.
#[derive(Clone)]
pub struct AlertMetrics {
    sent: Counter<u64>,
    suppressed: Counter<u64>,
    delivery_errors: Counter<u64>,
}

impl AlertMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            sent: meter
                .u64_counter("alerts_sent")
                .with_description(
                    "Alerts and summaries accepted by Slack (or logged without a webhook), by kind",
                )
                .build(),
            suppressed: meter
                .u64_counter("alerts_suppressed")
                .with_description(
                    "Failures held during a kind's cooldown, for its summary, by kind",
                )
                .build(),
            delivery_errors: meter
                .u64_counter("alerts_delivery_errors")
                .with_description("Failed attempts to post to Slack (each is retried)")
                .build(),
        }
    }

    fn sent(&self, kind: Kind) {
        self.sent.add(1, &[KeyValue::new("kind", kind.label())]);
    }

    fn suppressed(&self, kind: Kind) {
        self.suppressed
            .add(1, &[KeyValue::new("kind", kind.label())]);
    }

    fn delivery_error(&self) {
        self.delivery_errors.add(1, &[]);
    }
}

/// One failure to count.
#[derive(Debug, Clone, PartialEq)]
struct Failed {
    kind: Kind,
    /// Stable id of the failure: a redelivery counts once.
    id: String,
    /// A short code for "top errors" (never free text from a customer).
    code: String,
    conversation: Option<Uuid>,
}

impl Failed {
    fn member(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(60)
                .collect()
        };
        format!(
            "{}\t{}\t{}",
            clean(&self.id),
            clean(&self.code),
            self.conversation.map(|c| c.to_string()).unwrap_or_default()
        )
    }
}

fn conversation_of(event: &Event) -> Option<Uuid> {
    match event {
        Event::MessageOutgoing(e) => Some(e.conversation_id),
        Event::MessageStatus(e) => Some(e.conversation_id),
        Event::MessageDeliveryFailed(e) => Some(e.conversation_id),
        Event::MessageReceived(e) => Some(e.conversation_id),
        Event::MessageNoteAdded(e) => Some(e.conversation_id),
        Event::MessageEdited(e) => Some(e.conversation_id),
        Event::ConversationUpdated(e) => Some(e.conversation_id),
        _ => None,
    }
}

/// What of a delivery is a failure to count, if anything.
fn classify(
    envelope: &Envelope,
    delivery: &DeliveryInfo<'_>,
    settings: &AlertSettings,
) -> Option<Failed> {
    if let Some(source) = delivery.dead_lettered_from() {
        let reason = delivery.death_reason.as_deref().unwrap_or("dead_lettered");
        // tg-delivery reports what it rejects as message.delivery_failed.v1:
        // its dead-letter copy is the same failure, not a second one. A reply
        // dead-lettered otherwise (delivery limit) was never reported.
        if source == TG_DELIVERY.name
            && reason == "rejected"
            && matches!(envelope.event, Event::MessageOutgoing(_))
        {
            return None;
        }
        return Some(Failed {
            kind: Kind::dead_letter(source)?,
            id: envelope.id.to_string(),
            code: format!("{} {reason}", envelope.event_type()),
            conversation: conversation_of(&envelope.event),
        });
    }
    match &envelope.event {
        Event::MessageDeliveryFailed(e) => Some(Failed {
            kind: Kind::Delivery,
            id: envelope.id.to_string(),
            code: e.error.clone(),
            conversation: Some(e.conversation_id),
        }),
        Event::TgSessionChanged(e) => {
            let long_wait = e.until.is_some_and(|until| {
                (until - envelope.occurred_at)
                    .to_std()
                    .is_ok_and(|wait| wait >= settings.flood_wait)
            });
            let alerting = match e.state {
                SessionState::NeedsLogin => true,
                SessionState::FloodWait => long_wait,
                SessionState::Authorized => false,
            };
            alerting.then(|| Failed {
                kind: Kind::TelegramSession,
                id: envelope.id.to_string(),
                code: e.state.as_str().to_owned(),
                conversation: None,
            })
        }
        _ => None,
    }
}

pub struct Alerts {
    state: AlertState,
    settings: Arc<AlertSettings>,
    metrics: AlertMetrics,
    /// Wakes this instance's sender when it queued an alert.
    wake: Arc<Notify>,
}

impl Alerts {
    pub fn new(
        state: AlertState,
        settings: Arc<AlertSettings>,
        metrics: AlertMetrics,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            state,
            settings,
            metrics,
            wake,
        }
    }

    async fn count(&self, failed: Failed) -> Result<(), Failure> {
        let threshold = match failed.kind {
            // The account cannot send at all: one is enough.
            Kind::TelegramSession => 1,
            _ => self.settings.threshold,
        };
        let recorded = self
            .state
            .record(
                failed.kind.label(),
                &failed.member(),
                threshold,
                self.settings.window,
                self.settings.cooldown,
            )
            .await
            .map_err(|e| Failure::retryable(format!("redis: {e}")))?;
        match recorded {
            Recorded::Fired(n) => {
                tracing::warn!(
                    kind = failed.kind.label(),
                    count = n,
                    "threshold crossed; alert queued"
                );
                self.wake.notify_one();
            }
            Recorded::Held(true) => self.metrics.suppressed(failed.kind),
            Recorded::Held(false) | Recorded::Counted(_) => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for Alerts {
    fn queue(&self) -> &'static str {
        ALERTS.name
    }

    async fn handle(&self, ctx: &Context<'_>, _claim: &DatabaseTransaction) -> Result<(), Failure> {
        match classify(ctx.envelope, ctx.delivery, &self.settings) {
            Some(failed) => self.count(failed).await,
            None => Ok(()),
        }
    }

    /// A poison message (not even an event) that another queue
    /// dead-lettered is exactly what the dead-letter alert is for.
    async fn handle_undecodable(&self, delivery: &DeliveryInfo<'_>) -> Result<(), Failure> {
        let Some(kind) = delivery.dead_lettered_from().and_then(Kind::dead_letter) else {
            return Err(Failure::permanent(
                "undecodable message that is no dead letter",
            ));
        };
        let id = delivery.message_id.clone().unwrap_or_else(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            delivery.body.hash(&mut h);
            format!("body-{:016x}", h.finish())
        });
        self.count(Failed {
            kind,
            id,
            code: format!(
                "undecodable {}",
                delivery.death_reason.as_deref().unwrap_or("dead_lettered")
            ),
            conversation: None,
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use broker_config::events::{
        MessageDeliveryFailed, MessageOutgoing, TgSessionChanged, TgUpdateReceived,
    };

    use super::*;

    fn settings() -> AlertSettings {
        AlertSettings {
            threshold: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(600),
            flood_wait: Duration::from_secs(300),
            links: slack::Links::default(),
        }
    }

    fn direct(body: &[u8]) -> DeliveryInfo<'_> {
        DeliveryInfo {
            message_id: None,
            exchange: "fastprep.events",
            routing_key: "x",
            death_reason: None,
            body,
            dead_lettered_from: None,
            replays: 0,
            from_dead_letter_queue: false,
        }
    }

    fn dead<'a>(from: &'a str, reason: &str, body: &'a [u8]) -> DeliveryInfo<'a> {
        DeliveryInfo {
            message_id: None,
            exchange: broker_config::topology::DLX,
            routing_key: from,
            death_reason: Some(reason.to_owned()),
            body,
            dead_lettered_from: None,
            replays: 0,
            from_dead_letter_queue: false,
        }
    }

    fn outgoing() -> Envelope {
        Envelope::new(Event::MessageOutgoing(MessageOutgoing {
            message_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            tg_chat_id: 1,
            text: "a customer's words".into(),
            attachments: vec![],
            assignee_id: None,
            resend: false,
            view: None,
        }))
    }

    #[test]
    fn a_failed_reply_counts_once_and_its_dead_letter_copy_not_again() {
        let failed = Envelope::new(Event::MessageDeliveryFailed(MessageDeliveryFailed {
            message_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
            error: "chat_not_found".into(),
            attempts: 1,
        }));
        let counted = classify(&failed, &direct(b""), &settings()).unwrap();
        assert_eq!(counted.kind, Kind::Delivery);
        assert_eq!(counted.code, "chat_not_found");
        assert_eq!(
            classify(
                &outgoing(),
                &dead("tg-delivery", "rejected", b""),
                &settings()
            ),
            None
        );
        // Dead-lettered by the delivery limit: never reported, so counted.
        let limit = classify(
            &outgoing(),
            &dead("tg-delivery", "delivery_limit", b""),
            &settings(),
        )
        .unwrap();
        assert_eq!(limit.kind, Kind::DeadLetter("tg-delivery"));
        assert!(!limit.member().contains("customer"), "{}", limit.member());
    }

    #[test]
    fn a_dead_letter_back_from_a_retry_tier_is_still_one() {
        let retried = DeliveryInfo {
            message_id: None,
            exchange: "",
            routing_key: "alerts",
            death_reason: Some("rejected".into()),
            body: b"",
            dead_lettered_from: Some("inbound".into()),
            replays: 0,
            from_dead_letter_queue: false,
        };
        assert_eq!(retried.dead_lettered_from(), Some("inbound"));
        let f = classify(&outgoing(), &retried, &settings()).unwrap();
        assert_eq!(f.kind, Kind::DeadLetter("inbound"));
    }

    #[test]
    fn dead_letters_count_per_source_queue() {
        let update = Envelope::new(Event::TgUpdateReceived(TgUpdateReceived {
            chat: broker_config::events::TgChat {
                id: 1,
                kind: "private".into(),
                title: None,
            },
            sender: broker_config::events::TgSender {
                id: 1,
                username: None,
                first_name: Some("Ann".into()),
                last_name: None,
            },
            tg_message_id: 1,
            text: "hello".into(),
            media: vec![],
            date: chrono::Utc::now(),
            edited_at: None,
        }));
        let f = classify(&update, &dead("inbound", "rejected", b""), &settings()).unwrap();
        assert_eq!(f.kind, Kind::DeadLetter("inbound"));
        assert_eq!(f.code, "tg.update.received.v1 rejected");
        assert!(!f.member().contains("Ann") && !f.member().contains("hello"));
    }

    #[test]
    fn the_session_alerts_on_needs_login_and_long_waits_only() {
        let session = |state, wait: Option<i64>| {
            let env = Envelope::new(Event::TgSessionChanged(TgSessionChanged {
                state,
                until: wait.map(|s| chrono::Utc::now() + chrono::Duration::seconds(s)),
                previous: None,
            }));
            classify(&env, &direct(b""), &settings()).map(|f| f.kind)
        };
        assert_eq!(
            session(SessionState::NeedsLogin, None),
            Some(Kind::TelegramSession)
        );
        assert_eq!(
            session(SessionState::FloodWait, Some(3600)),
            Some(Kind::TelegramSession)
        );
        assert_eq!(session(SessionState::FloodWait, Some(30)), None);
        assert_eq!(session(SessionState::Authorized, None), None);
    }
}
