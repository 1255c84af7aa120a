//! Hands inbound Telegram updates to the rest of the system: each becomes a
//! `tg.update.received.v1` event published with a broker confirm, and only a
//! confirmed update is acknowledged back to the backend. Changes of the
//! session's state go out the same way as `tg.session.changed.v1`, retried
//! until confirmed (the newest state wins).

use std::time::Duration;

use broker_config::{
    Envelope, Event, Publisher, connection,
    events::{SessionState, TgSessionChanged},
    topology::{self, topology},
};
use lapin::Connection;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{InboundUpdate, PublishFailed, SessionStatus};

/// Connection name shown in the RabbitMQ management UI.
const CONNECTION_NAME: &str = "tg-adapter";
/// Longest wait for connecting (with topology) or for one confirm.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// One lazily opened AMQP connection and its confirming publisher.
struct Link {
    connection: Connection,
    publisher: Publisher,
}

/// Publishes updates; (re)connects on demand.
pub struct Forwarder {
    amqp_url: SecretString,
    link: Option<Link>,
}

impl Forwarder {
    pub fn new(amqp_url: SecretString) -> Self {
        Self {
            amqp_url,
            link: None,
        }
    }

    /// Receives updates and session changes until `shutdown` or until every
    /// sender is gone.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<InboundUpdate>,
        mut session: watch::Receiver<SessionStatus>,
        shutdown: CancellationToken,
    ) {
        // A session that starts out unable to send is news; one that starts
        // authorized is not.
        let mut announced: Option<SessionState> = Some(SessionState::Authorized);
        let mut session_due = session.borrow_and_update().session != SessionState::Authorized;
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The backend may drop its end of the session (it has no sessions to
        // report): stop listening then, rather than spin.
        let mut session_open = true;
        loop {
            if session_due {
                let now = session.borrow().clone();
                let event = Envelope::new(Event::TgSessionChanged(TgSessionChanged {
                    state: now.session,
                    until: now.until,
                    previous: announced.filter(|p| *p != now.session),
                }));
                match self.publish(&event).await {
                    Ok(()) => {
                        tracing::info!(state = now.session.as_str(), "session change announced");
                        announced = Some(now.session);
                        session_due = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "session change not announced; retrying"),
                }
            }
            let next = tokio::select! {
                _ = shutdown.cancelled() => None,
                changed = session.changed(), if session_open => {
                    if changed.is_ok() {
                        session.borrow_and_update();
                        session_due = true;
                    } else {
                        session_open = false;
                    }
                    continue;
                }
                _ = retry.tick(), if session_due => continue,
                next = updates.recv() => next,
            };
            let Some(InboundUpdate { update, ack, trace }) = next else {
                break;
            };
            let envelope = Envelope::new(update.into_event());
            let (span, headers) = publish_context(&envelope, &trace);
            let result = self
                .publish_with(&envelope, &headers)
                .instrument(span)
                .await
                .map(|()| envelope.id);
            if let Err(e) = &result {
                tracing::warn!(event_id = %envelope.id, error = %e, "inbound update not published");
            }
            // The backend may have given up waiting; nothing else to do then.
            let _ = ack.send(result);
        }
        if let Some(link) = self.link.take() {
            let _ = link.connection.close(200, "shutdown".into()).await;
        }
    }

    /// Publishes with a confirm; on failure reconnects once and tries again.
    pub async fn publish(&mut self, envelope: &Envelope) -> Result<(), PublishFailed> {
        self.publish_with(envelope, &[]).await
    }

    async fn publish_with(
        &mut self,
        envelope: &Envelope,
        headers: &[(String, String)],
    ) -> Result<(), PublishFailed> {
        let mut last = None;
        for _ in 0..2 {
            match self.try_publish(envelope, headers).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.link = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PublishFailed("not attempted".into())))
    }

    async fn try_publish(
        &mut self,
        envelope: &Envelope,
        headers: &[(String, String)],
    ) -> Result<(), PublishFailed> {
        if self
            .link
            .as_ref()
            .is_none_or(|l| !l.publisher.is_connected())
        {
            self.link = Some(self.connect().await?);
        }
        let Some(link) = self.link.as_ref() else {
            return Err(PublishFailed("no broker connection".into()));
        };
        match tokio::time::timeout(
            STEP_TIMEOUT,
            link.publisher.publish_envelope(envelope, headers),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PublishFailed(e.to_string())),
            Err(_) => Err(PublishFailed("broker confirm timed out".into())),
        }
    }

    async fn connect(&self) -> Result<Link, PublishFailed> {
        let url = self.amqp_url.expose_secret().to_owned();
        let attempt = async move {
            let connection = connection::connect(&url, CONNECTION_NAME)
                .await
                .map_err(|e| PublishFailed(format!("connecting to RabbitMQ: {e}")))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| PublishFailed(format!("opening a channel: {e}")))?;
            topology::declare(&channel, &topology())
                .await
                .map_err(|e| PublishFailed(format!("declaring the topology: {e}")))?;
            let _ = channel.close(200, "topology declared".into()).await;
            let publisher = Publisher::new(&connection)
                .await
                .map_err(|e| PublishFailed(format!("opening a confirm channel: {e}")))?;
            tracing::info!("connected to RabbitMQ for inbound updates");
            Ok(Link {
                connection,
                publisher,
            })
        };
        tokio::time::timeout(STEP_TIMEOUT, attempt)
            .await
            .map_err(|_| PublishFailed("connecting to RabbitMQ timed out".into()))?
    }
}

/// With traces exported, a `publish` span that continues the trace the
/// update came with, and its context for the message; else nothing.
fn publish_context(
    envelope: &Envelope,
    received: &std::collections::HashMap<String, String>,
) -> (tracing::Span, Vec<(String, String)>) {
    if !platform::trace::enabled() {
        return (tracing::Span::none(), Vec::new());
    }
    let span = tracing::info_span!(
        "tg.update.publish",
        otel.name = %format!("{} publish", envelope.event_type()),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "publish",
        messaging.destination.name = broker_config::topology::EVENTS_EXCHANGE,
        messaging.message.id = %envelope.id,
    );
    platform::trace::set_parent_from(&span, received);
    let headers = platform::trace::inject(&span).into_iter().collect();
    (span, headers)
}
