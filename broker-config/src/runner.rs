//! The one consumer runner (DESIGN §6): decode → span → idempotency claim in
//! `processed_messages` → handler → ack / retry tier / dead-letter. A handler
//! that [waits in place](Handler::waits_in_place) retries without a tier.
//!
//! A handler runs inside the transaction that holds its claim, so its database
//! effects and the claim commit together: a redelivered message is recognised
//! as a duplicate and acknowledged without running again.

use std::{sync::Arc, time::Duration, time::Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::{
    Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, RuntimeErr,
    Statement, TransactionTrait,
};
use std::collections::HashMap;

use tokio::{
    sync::{Semaphore, mpsc, oneshot, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    connection::connect_with_retry,
    events::Envelope,
    metrics::{ConsumerMetrics, Outcome},
    publisher::{ATTEMPT_HEADER, Outgoing, Publisher},
    retry::{RetryPolicy, tier_for},
    topology::{self, retry_queue_name},
};

/// What went wrong in a handler.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth trying again, no earlier than `after` when given.
    Retryable {
        after: Option<Duration>,
        reason: String,
    },
    /// Will never succeed: dead-letter at once.
    Permanent { reason: String },
}

impl Failure {
    pub fn retryable(reason: impl Into<String>) -> Self {
        Failure::Retryable {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Failure::Permanent {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Failure::Retryable { reason, .. } | Failure::Permanent { reason } => reason,
        }
    }
}

impl Failure {
    /// A database error of a handler: data the database refuses (SQLSTATE
    /// classes 22 and 23) is refused on every try, so it fails for good at
    /// once; anything else is worth trying again.
    pub fn from_db(e: DbErr) -> Self {
        let code = match &e {
            DbErr::Query(RuntimeErr::SqlxError(inner))
            | DbErr::Exec(RuntimeErr::SqlxError(inner)) => inner
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned()),
            _ => None,
        };
        match code {
            Some(code) if code.starts_with("22") || code.starts_with("23") => {
                Failure::permanent(format!("refused by the database: {e}"))
            }
            _ => Failure::from(e),
        }
    }
}

impl From<DbErr> for Failure {
    fn from(e: DbErr) -> Self {
        Failure::retryable(format!("database: {e}"))
    }
}

/// What became of a delivery in [`Handler::handle_batch`].
#[derive(Debug, Clone)]
pub enum Batched {
    /// Handled: its writes commit with the batch, then it is acked.
    Done,
    /// To be handled alone after the batch commits, as any delivery.
    Alone,
    /// Failed, as [`Handler::handle`]'s `Err` would: after the batch
    /// commits, the runner records the failure (`on_failure`) and retries
    /// or dead-letters the delivery, without handling it again.
    Failed(Failure),
}

/// What the runner does next with a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryAt(DateTime<Utc>),
    DeadLetter,
}

/// What the broker says about a delivery, beside its body.
#[derive(Debug, Clone)]
pub struct DeliveryInfo<'a> {
    /// The AMQP `message_id` (the event id for everything the system publishes).
    pub message_id: Option<String>,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// `x-first-death-reason` of a dead letter: `rejected`, `delivery_limit`, `expired`, …
    pub death_reason: Option<String>,
    pub body: &'a [u8],
    /// Set on a dead letter back from a retry tier (see [`Self::dead_lettered_from`]).
    pub dead_lettered_from: Option<String>,
    /// Times on-call replayed it from a dead-letter queue (0: never).
    pub replays: u32,
    /// Whether it comes back from a dead-letter queue: replayed by
    /// `fastprep-ops`, or moved by hand (a shovel keeps the dead letter's
    /// headers).
    pub from_dead_letter_queue: bool,
}

/// Carried by a dead letter that was parked in a retry tier: the queue that
/// dead-lettered it and why, which the broker's own headers no longer say
/// once the retry tier has expired it back.
pub const DEAD_LETTERED_FROM_HEADER: &str = "x-fastprep-dead-lettered-from";
/// Why a message was dead-lettered (`rejected` when its consumer gave up),
/// set by the runner where the broker's `x-first-death-reason` would not
/// say it.
pub const DEATH_REASON_HEADER: &str = "x-fastprep-death-reason";
const DEAD_LETTERED_FROM: &str = DEAD_LETTERED_FROM_HEADER;
const DEATH_REASON: &str = DEATH_REASON_HEADER;

impl DeliveryInfo<'_> {
    /// The work queue that dead-lettered this message, when it is a dead
    /// letter (`fastprep.dlx` routes by the source queue's name; a dead
    /// letter back from a retry tier says so in a header of ours).
    pub fn dead_lettered_from(&self) -> Option<&str> {
        self.dead_lettered_from
            .as_deref()
            .or((self.exchange == topology::DLX).then_some(self.routing_key))
    }

    /// The headers that keep a dead letter's facts across a retry tier.
    fn dead_letter_headers(&self) -> Vec<(String, String)> {
        match self.dead_lettered_from() {
            Some(queue) => [(DEAD_LETTERED_FROM.to_owned(), queue.to_owned())]
                .into_iter()
                .chain(
                    self.death_reason
                        .clone()
                        .map(|r| (DEATH_REASON.to_owned(), r)),
                )
                .collect(),
            None => Vec::new(),
        }
    }

    fn of(delivery: &'_ Delivery) -> DeliveryInfo<'_> {
        let header = |name: &str| {
            header_value(delivery, name).and_then(|v| match v {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            })
        };
        let dead_lettered_from = header(DEAD_LETTERED_FROM);
        let death_reason = header(DEATH_REASON).or_else(|| header("x-first-death-reason"));
        DeliveryInfo {
            dead_lettered_from,
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
            exchange: delivery.exchange.as_str(),
            routing_key: delivery.routing_key.as_str(),
            death_reason,
            body: &delivery.data,
            replays: crate::dlq::replays_of(delivery),
            from_dead_letter_queue: crate::dlq::replays_of(delivery) > 0
                || header(crate::dlq::SOURCE_HEADER).is_some(),
        }
    }
}

/// A delivery as a handler sees it.
#[derive(Clone)]
pub struct Context<'a> {
    pub envelope: &'a Envelope,
    /// 1 for the first delivery, incremented by every retry.
    pub attempt: u32,
    pub delivery: &'a DeliveryInfo<'a>,
    /// The delivery's `consume` span (a child of the trace it came with):
    /// the current span when it is handled alone; in a batch, the handler
    /// instruments what it does for this delivery with it.
    pub span: tracing::Span,
}

/// A consumer: one queue, one handler.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The queue it consumes; also its name in `processed_messages`.
    fn queue(&self) -> &'static str;

    /// Handles one event inside `tx`, which already holds the idempotency claim.
    async fn handle(&self, ctx: &Context<'_>, tx: &DatabaseTransaction) -> Result<(), Failure>;

    /// A delivery whose body is not an event. The default dead-letters it,
    /// since nothing can be done with it; a handler that needs only what the
    /// broker says about the message (the alerts consumer counting dead
    /// letters) may take it. No idempotency claim is made for it.
    async fn handle_undecodable(&self, _delivery: &DeliveryInfo<'_>) -> Result<(), Failure> {
        Err(Failure::permanent("undecodable message"))
    }

    /// Deliveries with the same key are handled one at a time, in queue
    /// order (e.g. replies to one Telegram chat). `None`: no ordering.
    fn ordering_key(&self, _envelope: &Envelope) -> Option<String> {
        None
    }

    /// A transaction-scoped advisory lock (`pg_advisory_xact_lock` of the
    /// key's hash) that [`handle`](Self::handle) needs before it reads
    /// anything: the runner takes it in the claim's own statement, first,
    /// which saves the handler a round trip. `None`: no lock.
    fn claim_lock(&self, _envelope: &Envelope) -> Option<String> {
        None
    }

    /// At most this many deliveries that are ready at the same moment are
    /// handled together: one transaction, one claim statement, one commit
    /// ([`handle_batch`](Self::handle_batch)). 1 (the default): one by one.
    fn batch_limit(&self) -> usize {
        1
    }

    /// Whether a delivery may be handled in a batch, asked before its claim.
    /// The default: none may.
    fn batchable(&self, _ctx: &Context<'_>) -> bool {
        false
    }

    /// Handles [batchable](Self::batchable) deliveries, each of its own
    /// ordering key, inside `tx`, which holds their claims and their
    /// [claim locks](Self::claim_lock). Says for each what became of it
    /// ([`Batched`]); for a delivery not [`Batched::Done`] the handler must
    /// have written nothing in `tx`. An `Err` rolls the whole batch back
    /// and every delivery of it is handled alone. The default handles none.
    async fn handle_batch(
        &self,
        ctxs: &[Context<'_>],
        _tx: &DatabaseTransaction,
    ) -> Result<Vec<Batched>, Failure> {
        Ok(ctxs.iter().map(|_| Batched::Alone).collect())
    }

    /// Whether a delivery that can be retried waits in place, holding its
    /// ordering lane (and staying unacked), instead of going to a retry
    /// tier: a later delivery of the same key is then never handled before
    /// it. A delivery that fails for good still goes to the dead-letter
    /// queue, and its key goes on. By default, exactly the queues the
    /// topology gives a single active consumer, whose order a retry tier
    /// would break (and whose consumer must not be cancelled before its
    /// channel closes).
    fn waits_in_place(&self) -> bool {
        topology::single_active(self.queue())
    }

    /// Called after a transaction of this handler committed (`handle`'s or
    /// `on_failure`'s): a handler that writes outbox rows wakes the relay here.
    fn committed(&self) {}

    /// Records a failure in its own transaction (e.g. a delivery status),
    /// before the message is retried or dead-lettered.
    async fn on_failure(
        &self,
        _ctx: &Context<'_>,
        _failure: &Failure,
        _next: Next,
        _tx: &DatabaseTransaction,
    ) -> Result<(), DbErr> {
        Ok(())
    }
}

/// Settings of one runner.
#[derive(Clone)]
pub struct RunnerConfig {
    pub amqp_url: String,
    pub prefetch: u16,
    /// Deliveries handled at once (each holds a database connection).
    pub concurrency: usize,
    pub policy: RetryPolicy,
}

/// Consumes the handler's queue until `shutdown`; reconnects when the broker
/// goes away. In-flight deliveries finish before it returns.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    db: DatabaseConnection,
    config: RunnerConfig,
    metrics: ConsumerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue = handler.queue();
    while !shutdown.is_cancelled() {
        let Some(conn) = connect_with_retry(&config.amqp_url, queue, &shutdown).await else {
            break;
        };
        match consume(&conn, handler.clone(), &db, &config, &metrics, &shutdown).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(queue, error = %e, "consumer lost its channel; reconnecting"),
        }
        let _ = conn.close(200, "bye".into()).await;
        if !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn consume<H: Handler>(
    conn: &Connection,
    handler: Arc<H>,
    db: &DatabaseConnection,
    config: &RunnerConfig,
    metrics: &ConsumerMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let queue = handler.queue();
    let channel = conn.create_channel().await?;
    topology::declare(&channel, &topology::topology()).await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let publisher = Publisher::new(conn).await?;
    let tag = format!("{queue}-{}", uuid::Uuid::new_v4());
    // Ends waits in place: on shutdown, or when this channel is lost.
    let stop = shutdown.child_token();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, prefetch = config.prefetch, "consuming");
    let shared = Arc::new(Shared {
        handler,
        db: db.clone(),
        publisher,
        policy: config.policy.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
    });
    let mut in_flight = JoinSet::new();
    let limiter = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut lanes = Lanes::default();
    // Batchable deliveries go, once it is their key's turn, to the batcher.
    let batcher = (shared.handler.batch_limit() > 1).then(|| {
        let (ready, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(shared.clone(), waiting, limiter.clone()));
        ready
    });
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // A single active consumer's queue keeps its consumer until
                // the channel closes: a cancel would make a standby active
                // while this instance still holds a chat's earlier
                // deliveries. The close returns them all at once.
                if !shared.handler.waits_in_place() {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                }
                break Ok(());
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(queue, error = %e, "delivery task panicked");
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let decoded = serde_json::from_slice::<Envelope>(&delivery.data);
                    let lane = decoded
                        .as_ref()
                        .ok()
                        .and_then(|env| shared.handler.ordering_key(env))
                        .map(|key| lanes.join(key));
                    let shared = shared.clone();
                    let limiter = limiter.clone();
                    let batcher = batcher.clone();
                    in_flight.spawn(async move {
                        let _turn = match lane {
                            Some((mut previous, mine)) => {
                                // Wait for the previous delivery of this key to finish.
                                let _ = previous.changed().await;
                                Some(mine)
                            }
                            None => None,
                        };
                        let (delivery, decoded) = match (batcher, decoded) {
                            (Some(batcher), Ok(envelope)) if shared.batchable(&delivery, &envelope) => {
                                // Handled by the batcher; this task keeps the
                                // key's turn until it is done (`done` dropped).
                                let (done, finished) = oneshot::channel::<()>();
                                match batcher.send(Ready { delivery, envelope, done }) {
                                    Ok(()) => {
                                        let _ = finished.await;
                                        return;
                                    }
                                    // The batcher is gone: handled alone.
                                    Err(mpsc::error::SendError(ready)) => (ready.delivery, Ok(ready.envelope)),
                                }
                            }
                            (_, decoded) => (delivery, decoded),
                        };
                        // A slot is taken only once it is this delivery's turn:
                        // deliveries queued behind a busy key hold none, so
                        // other keys keep every slot (at most `prefetch`
                        // deliveries wait here).
                        let Ok(_permit) = limiter.acquire_owned().await else {
                            return;
                        };
                        if shared.handler.waits_in_place() && shared.stop.is_cancelled() {
                            // Left unacked: it goes back with the channel,
                            // after the earlier deliveries of its key.
                            return;
                        }
                        shared.process(delivery, decoded).await
                    });
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(anyhow::anyhow!("consumer stream ended")),
            },
        }
    };
    stop.cancel();
    while in_flight.join_next().await.is_some() {}
    let _ = channel.close(200, "bye".into()).await;
    result
}

struct Shared<H> {
    handler: Arc<H>,
    db: DatabaseConnection,
    publisher: Publisher,
    policy: RetryPolicy,
    metrics: ConsumerMetrics,
    /// Ends a wait in place (shutdown, or the channel lost): the delivery is
    /// left unacked and goes back to the queue with the channel.
    stop: CancellationToken,
}

/// The `consume` span of a delivery, a child of the trace it came with.
fn consume_span(
    queue: &'static str,
    envelope: &Envelope,
    attempt: u32,
    delivery: &Delivery,
) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = tracing::field::Empty,
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation = "process",
        messaging.destination.name = queue,
        messaging.message.id = %envelope.id,
        event.r#type = envelope.event_type(),
        attempt,
        trace_id = tracing::field::Empty,
    );
    if platform::trace::enabled() {
        span.record("otel.name", format!("{queue} process"));
    }
    if let Some(trace_id) = platform::trace::set_parent_from(&span, &trace_headers(delivery)) {
        span.record("trace_id", trace_id);
    }
    span
}

/// `traceparent`/`tracestate` of a delivery.
pub fn trace_headers(delivery: &Delivery) -> HashMap<String, String> {
    delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| k.as_str() == "traceparent" || k.as_str() == "tracestate")
                .filter_map(|(k, v)| match v {
                    AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One header of a delivery, as sent.
fn header_value(delivery: &Delivery, name: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
}

/// Reads `x-attempt` (1 when absent).
fn attempt_of(delivery: &Delivery) -> u32 {
    header_value(delivery, ATTEMPT_HEADER)
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(n),
            _ => None,
        })
        .unwrap_or(1)
        .max(1)
}

enum Step {
    Done(Outcome),
    Failed(Failure),
}

/// A batchable delivery whose key's turn it is, waiting for the batcher.
struct Ready {
    delivery: Delivery,
    envelope: Envelope,
    /// Dropped once the delivery is handled (or left unacked): its key goes on.
    done: oneshot::Sender<()>,
}

impl Ready {
    /// The delivery as its handler sees it, with a `consume` span of its own.
    fn context<'a>(&'a self, queue: &'static str, info: &'a DeliveryInfo<'a>) -> Context<'a> {
        let attempt = attempt_of(&self.delivery);
        Context {
            envelope: &self.envelope,
            attempt,
            delivery: info,
            span: consume_span(queue, &self.envelope, attempt, &self.delivery),
        }
    }
}

/// What became of a delivery in a batch.
#[derive(Debug, Clone)]
enum Fate {
    /// Handled: to be acked.
    Done(Outcome),
    /// To be handled alone, after the batch.
    Alone,
    /// Failed: its failure to be recorded, and it retried or dead-lettered.
    Failed(Failure),
}

/// Batches a batching handler runs at once.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// Starts batches of the deliveries that are ready: each batch takes one of
/// [`BATCHES_IN_FLIGHT`] slots and as many ready deliveries as came (up to
/// the handler's limit) while it waited for it. While a slot is free each
/// delivery is a batch of its own, handled at once; once both are busy,
/// deliveries gather and the next free slot takes them together, so the
/// busier the consumer, the fuller its batches (as a database's group
/// commit). What a batch gives back is handled alone under the runner's
/// `limiter`, with the slot free for the next batch.
async fn batch_loop<H: Handler>(
    shared: Arc<Shared<H>>,
    mut waiting: mpsc::UnboundedReceiver<Ready>,
    limiter: Arc<Semaphore>,
) {
    let queue = shared.handler.queue();
    let limit = shared.handler.batch_limit();
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut running = JoinSet::new();
    loop {
        let first = tokio::select! {
            next = waiting.recv() => match next {
                Some(first) => first,
                None => break,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(queue, error = %e, "batch task panicked");
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < limit {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        let limiter = limiter.clone();
        running.spawn(async move { shared.run_batch(batch, slot, &limiter).await });
    }
    while let Some(done) = running.join_next().await {
        if let Err(e) = done {
            tracing::error!(queue, error = %e, "batch task panicked");
        }
    }
}

impl<H: Handler> Shared<H> {
    fn batchable(&self, delivery: &Delivery, envelope: &Envelope) -> bool {
        let info = DeliveryInfo::of(delivery);
        self.handler.batchable(&Context {
            envelope,
            attempt: attempt_of(delivery),
            delivery: &info,
            span: tracing::Span::none(),
        })
    }

    /// Handles a batch in its slot, then, with the slot free for the next
    /// batch, what it gave back, each under a permit of `limiter`: those to
    /// handle alone, and those whose failure is to be recorded.
    async fn run_batch(
        &self,
        batch: Vec<Ready>,
        slot: tokio::sync::OwnedSemaphorePermit,
        limiter: &Semaphore,
    ) {
        if self.handler.waits_in_place() && self.stop.is_cancelled() {
            // Left unacked: they go back with the channel.
            return;
        }
        let given_back = self.process_batch(batch).await;
        drop(slot);
        futures::future::join_all(given_back.into_iter().map(|(ready, failure)| async move {
            let Ok(_permit) = limiter.acquire().await else {
                return;
            };
            match failure {
                None => self.process(ready.delivery, Ok(ready.envelope)).await,
                Some(failure) => self.fail_alone(&ready, failure).await,
            }
            drop(ready.done);
        }))
        .await;
    }

    /// A delivery that failed in a batch goes the way a failed delivery
    /// goes ([`Self::fail`]).
    async fn fail_alone(&self, ready: &Ready, failure: Failure) {
        let queue = self.handler.queue();
        let started = Instant::now();
        let info = DeliveryInfo::of(&ready.delivery);
        let ctx = ready.context(queue, &info);
        let span = ctx.span.clone();
        let outcome = self
            .fail(&ctx, &ready.delivery, failure)
            .instrument(span)
            .await;
        self.metrics
            .record(queue, outcome, started.elapsed().as_secs_f64());
    }

    /// Claims and handles the batch in one transaction and acks what it
    /// handled; returns the deliveries to handle alone (`None`) or whose
    /// failure is to be recorded.
    async fn process_batch(&self, batch: Vec<Ready>) -> Vec<(Ready, Option<Failure>)> {
        let queue = self.handler.queue();
        let started = Instant::now();
        let infos: Vec<DeliveryInfo<'_>> = batch
            .iter()
            .map(|ready| DeliveryInfo::of(&ready.delivery))
            .collect();
        let ctxs: Vec<Context<'_>> = batch
            .iter()
            .zip(&infos)
            .map(|(ready, info)| ready.context(queue, info))
            .collect();
        let fates = match self.claim_and_handle_batch(&ctxs).await {
            Ok(fates) => fates,
            Err(e) => {
                tracing::warn!(queue, error = %e, size = ctxs.len(), "batch failed; its deliveries are handled alone");
                vec![Fate::Alone; ctxs.len()]
            }
        };
        drop(ctxs);
        drop(infos);
        let mut given_back = Vec::new();
        for (ready, fate) in batch.into_iter().zip(fates) {
            match fate {
                Fate::Done(outcome) => {
                    self.ack(&ready.delivery).await;
                    self.metrics
                        .record(queue, outcome, started.elapsed().as_secs_f64());
                }
                Fate::Alone => given_back.push((ready, None)),
                Fate::Failed(failure) => given_back.push((ready, Some(failure))),
            }
        }
        given_back
    }

    async fn claim_and_handle_batch(&self, ctxs: &[Context<'_>]) -> Result<Vec<Fate>, DbErr> {
        let queue = self.handler.queue();
        let tx = self.db.begin().await?;
        let ids: Vec<uuid::Uuid> = ctxs.iter().map(|c| c.envelope.id).collect();
        let keys: Vec<String> = ctxs
            .iter()
            .map(|c| self.handler.claim_lock(c.envelope).unwrap_or_default())
            .collect();
        // Each delivery's lock is tried, never waited for: a delivery whose
        // lock another transaction holds (its chat's turn, taken by another
        // instance) is not claimed, and is handled alone, where it waits.
        // So a batch waits on no one and no cycle of waits can form. A
        // delivery not claimed because it was handled already is found so
        // alone too.
        // A batch of one (most of them, below the consumer's capacity)
        // runs the plain statement: arrays cost planning.
        let claim = match (ids.as_slice(), keys.as_slice()) {
            ([id], [key]) => Statement::from_sql_and_values(
                DbBackend::Postgres,
                "WITH handler_lock AS MATERIALIZED (
                   SELECT $3 = '' OR pg_try_advisory_xact_lock(hashtextextended($3, 0)) AS held)
                 INSERT INTO processed_messages (consumer, message_id)
                 SELECT $1, $2 FROM handler_lock WHERE held
                 ON CONFLICT DO NOTHING RETURNING message_id",
                [queue.into(), (*id).into(), key.clone().into()],
            ),
            _ => Statement::from_sql_and_values(
                DbBackend::Postgres,
                "WITH handler_lock AS MATERIALIZED (
                   SELECT id, k = '' OR pg_try_advisory_xact_lock(hashtextextended(k, 0)) AS held
                   FROM unnest($2::uuid[], $3::text[]) AS d(id, k))
                 INSERT INTO processed_messages (consumer, message_id)
                 SELECT $1, id FROM handler_lock WHERE held
                 ON CONFLICT DO NOTHING RETURNING message_id",
                [queue.into(), ids.into(), keys.into()],
            ),
        };
        let claimed = tx
            .query_all_raw(claim)
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<uuid::Uuid>(0))
            .collect::<Result<std::collections::HashSet<_>, _>>()?;
        let mut fates = vec![Fate::Alone; ctxs.len()];
        let mine: Vec<usize> = (0..ctxs.len())
            .filter(|&i| claimed.contains(&ctxs[i].envelope.id))
            .collect();
        if mine.is_empty() {
            tx.rollback().await?;
            return Ok(fates);
        }
        let handled_ctxs: Vec<Context<'_>> = mine.iter().map(|&i| ctxs[i].clone()).collect();
        let batched = match self.handler.handle_batch(&handled_ctxs, &tx).await {
            Ok(batched) if batched.len() == mine.len() => batched,
            Ok(batched) => {
                tracing::error!(
                    queue,
                    asked = mine.len(),
                    answered = batched.len(),
                    "the handler answered for another number of deliveries; the batch is handled alone"
                );
                tx.rollback().await?;
                return Ok(fates);
            }
            Err(failure) => {
                tracing::warn!(
                    queue,
                    reason = failure.reason(),
                    "batch failed; its deliveries are handled alone"
                );
                tx.rollback().await?;
                return Ok(fates);
            }
        };
        let given_back: Vec<uuid::Uuid> = mine
            .iter()
            .zip(&batched)
            .filter(|(_, b)| !matches!(b, Batched::Done))
            .map(|(&i, _)| ctxs[i].envelope.id)
            .collect();
        if !given_back.is_empty() {
            tx.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM processed_messages WHERE consumer = $1 AND message_id = ANY($2::uuid[])",
                [queue.into(), given_back.into()],
            ))
            .await?;
        }
        tx.commit().await?;
        self.handler.committed();
        if ctxs.len() > 1 {
            // What the batch handled together, once it is committed.
            let handled = batched
                .iter()
                .filter(|b| matches!(b, Batched::Done))
                .count();
            self.metrics.batch(queue, handled);
        }
        for (&i, b) in mine.iter().zip(batched) {
            fates[i] = match b {
                Batched::Done => Fate::Done(Outcome::Ack),
                Batched::Alone => Fate::Alone,
                Batched::Failed(failure) => Fate::Failed(failure),
            };
        }
        Ok(fates)
    }

    async fn process(&self, delivery: Delivery, decoded: Result<Envelope, serde_json::Error>) {
        let queue = self.handler.queue();
        let started = Instant::now();
        let attempt = attempt_of(&delivery);
        let info = DeliveryInfo::of(&delivery);
        let envelope: Envelope = match decoded {
            Ok(env) => env,
            Err(e) => {
                let outcome = match self.handler.handle_undecodable(&info).await {
                    Ok(()) => {
                        self.ack(&delivery).await;
                        Outcome::Ack
                    }
                    Err(Failure::Retryable { reason, .. }) if self.policy.should_retry(attempt) => {
                        tracing::warn!(
                            queue,
                            reason,
                            "undecodable message not taken yet; retrying"
                        );
                        let delay = tier_for(self.policy.delay(attempt, None));
                        self.park(&delivery, &info, attempt + 1, delay).await
                    }
                    Err(_) => {
                        tracing::error!(queue, error = %e, "undecodable message; dead-lettering");
                        self.dead_letter(&delivery, &info, &format!("undecodable: {e}"))
                            .await
                    }
                };
                self.metrics
                    .record(queue, outcome, started.elapsed().as_secs_f64());
                return;
            }
        };
        let span = consume_span(queue, &envelope, attempt, &delivery);
        let outcome: Option<Outcome> = async {
            let mut attempt = attempt;
            loop {
                let ctx = Context {
                    envelope: &envelope,
                    attempt,
                    delivery: &info,
                    span: tracing::Span::current(),
                };
                let wait = match self.claim_and_handle(&ctx).await {
                    Ok(Step::Done(outcome)) => {
                        self.ack(&delivery).await;
                        return Some(outcome);
                    }
                    Ok(Step::Failed(failure)) => match self.in_place(&ctx, &failure).await {
                        Some(wait) => {
                            attempt += 1;
                            wait
                        }
                        None => return Some(self.fail(&ctx, &delivery, failure).await),
                    },
                    Err(e) if self.handler.waits_in_place() => {
                        tracing::warn!(error = %e, "infrastructure error; waiting in place");
                        Duration::from_secs(1)
                    }
                    Err(e) => {
                        // Infrastructure trouble (database down): wait in a retry
                        // tier without spending the message's attempt budget.
                        tracing::warn!(error = %e, "infrastructure error; parking in retry tier");
                        return Some(
                            self.park(&delivery, &info, attempt, Duration::from_secs(1))
                                .await,
                        );
                    }
                };
                self.metrics.count(queue, Outcome::Retry);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    // Left unacked: the channel's close (or its loss) hands
                    // it back to the head of the queue, with the deliveries
                    // queued behind it, for whichever instance is active next.
                    () = self.stop.cancelled() => return None,
                }
            }
        }
        .instrument(span)
        .await;
        if let Some(outcome) = outcome {
            self.metrics
                .record(queue, outcome, started.elapsed().as_secs_f64());
        }
    }

    /// For a handler that waits in place: how long to wait before trying a
    /// failed delivery again, or `None` when it is not retried (it fails for
    /// good, or its attempts are spent) and goes the usual way.
    async fn in_place(&self, ctx: &Context<'_>, failure: &Failure) -> Option<Duration> {
        let Failure::Retryable { after, .. } = failure else {
            return None;
        };
        if !self.handler.waits_in_place() || !self.policy.should_retry(ctx.attempt) {
            return None;
        }
        let wait = self
            .policy
            .jittered_delay(ctx.attempt, *after, rand::random());
        let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        tracing::warn!(
            reason = failure.reason(),
            ?wait,
            "handler failed; waiting in place"
        );
        if let Err(e) = self.record_failure(ctx, failure, Next::RetryAt(at)).await {
            tracing::warn!(error = %e, "recording the failure failed");
        }
        Some(wait)
    }

    async fn claim_and_handle(&self, ctx: &Context<'_>) -> Result<Step, DbErr> {
        let tx = self.db.begin().await?;
        // The claim keeps its one statement (ADR 0014), with the handler's
        // lock taken first in it when it asks for one: a materialised CTE
        // the insert reads before it forms its row.
        let claim = match self.handler.claim_lock(ctx.envelope) {
            None => Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [self.handler.queue().into(), ctx.envelope.id.into()],
            ),
            Some(key) => Statement::from_sql_and_values(
                DbBackend::Postgres,
                "WITH handler_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($3, 0)))
                 INSERT INTO processed_messages (consumer, message_id)
                 SELECT $1, $2 FROM handler_lock ON CONFLICT DO NOTHING",
                [
                    self.handler.queue().into(),
                    ctx.envelope.id.into(),
                    key.into(),
                ],
            ),
        };
        let claimed = tx.execute_raw(claim).await?.rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            tracing::info!("duplicate delivery; already processed");
            return Ok(Step::Done(Outcome::Duplicate));
        }
        match self.handler.handle(ctx, &tx).await {
            Ok(()) => {
                tx.commit().await?;
                self.handler.committed();
                Ok(Step::Done(Outcome::Ack))
            }
            Err(failure) => {
                tx.rollback().await?;
                Ok(Step::Failed(failure))
            }
        }
    }

    async fn fail(&self, ctx: &Context<'_>, delivery: &Delivery, failure: Failure) -> Outcome {
        let next = match &failure {
            Failure::Retryable { after, .. } if self.policy.should_retry(ctx.attempt) => {
                let delay = tier_for(self.policy.delay(ctx.attempt, *after));
                Some(delay)
            }
            _ => None,
        };
        let next_step = match next {
            Some(delay) => {
                Next::RetryAt(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default())
            }
            None => Next::DeadLetter,
        };
        tracing::warn!(reason = failure.reason(), ?next_step, "handler failed");
        if let Err(e) = self.record_failure(ctx, &failure, next_step).await {
            tracing::warn!(error = %e, "recording the failure failed; parking in retry tier");
            return self
                .park(delivery, ctx.delivery, ctx.attempt, Duration::from_secs(1))
                .await;
        }
        match next {
            Some(delay) => {
                self.park(delivery, ctx.delivery, ctx.attempt + 1, delay)
                    .await
            }
            None => {
                self.dead_letter(delivery, ctx.delivery, failure.reason())
                    .await
            }
        }
    }

    async fn record_failure(
        &self,
        ctx: &Context<'_>,
        failure: &Failure,
        next: Next,
    ) -> Result<(), DbErr> {
        let tx = self.db.begin().await?;
        self.handler.on_failure(ctx, failure, next, &tx).await?;
        tx.commit().await?;
        self.handler.committed();
        Ok(())
    }

    /// Republishes the delivery to the retry tier of at least `delay`, with
    /// `attempt`, confirmed, then acks the original. When that fails the
    /// delivery is returned to the queue (the delivery limit is the backstop).
    async fn park(
        &self,
        delivery: &Delivery,
        info: &DeliveryInfo<'_>,
        attempt: u32,
        delay: Duration,
    ) -> Outcome {
        let queue = self.handler.queue();
        let tier = retry_queue_name(queue, tier_for(delay));
        let props = &delivery.properties;
        let message_id = props
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let event_type = props
            .kind()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let headers: Vec<(String, String)> = trace_headers(delivery)
            .into_iter()
            .chain(info.dead_letter_headers())
            .chain(crate::dlq::carried_headers(delivery))
            .collect();
        let outgoing = Outgoing {
            exchange: "",
            routing_key: &tier,
            message_id: &message_id,
            event_type: &event_type,
            body: &delivery.data,
            headers: &headers,
            attempt,
            timestamp: props.timestamp().unwrap_or_default(),
            mandatory: true,
        };
        match self.publisher.publish(&outgoing).await {
            Ok(()) => {
                self.ack(delivery).await;
                Outcome::Retry
            }
            Err(e) => {
                tracing::error!(error = %e, tier, "publishing to retry tier failed; requeueing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                Outcome::Retry
            }
        }
    }

    /// Dead-letters the delivery with the reason its handler gave up: a
    /// confirmed publish to `fastprep.dlx` (routed by this queue's name, as
    /// the broker's own dead-lettering would) carrying the reason, then the
    /// ack. Should the publish fail, the delivery is rejected and the broker
    /// dead-letters it without the reason. A crash between the confirm and
    /// the ack dead-letters it twice; a replay of both sends it once.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        info: &DeliveryInfo<'_>,
        reason: &str,
    ) -> Outcome {
        let queue = self.handler.queue();
        let props = &delivery.properties;
        let text =
            |v: Option<&lapin::types::ShortString>| v.map(|s| s.to_string()).unwrap_or_default();
        let message_id = text(props.message_id().as_ref());
        let event_type = text(props.kind().as_ref());
        let mut headers: Vec<(String, String)> = trace_headers(delivery)
            .into_iter()
            .chain(info.dead_letter_headers())
            .collect();
        if info.dead_lettered_from().is_none() {
            headers.push((DEATH_REASON.to_owned(), "rejected".to_owned()));
        }
        headers.extend(crate::dlq::carried_headers(delivery));
        headers.push((crate::dlq::SOURCE_HEADER.to_owned(), queue.to_owned()));
        headers.push((
            crate::dlq::FAILURE_HEADER.to_owned(),
            reason.chars().take(crate::dlq::MAX_FAILURE_CHARS).collect(),
        ));
        headers.push((
            crate::dlq::DIED_AT_HEADER.to_owned(),
            Utc::now().to_rfc3339(),
        ));
        let outgoing = Outgoing {
            exchange: topology::DLX,
            routing_key: queue,
            message_id: &message_id,
            event_type: &event_type,
            body: &delivery.data,
            headers: &headers,
            attempt: attempt_of(delivery),
            timestamp: props.timestamp().unwrap_or_default(),
            mandatory: true,
        };
        match self.publisher.publish(&outgoing).await {
            Ok(()) => self.ack(delivery).await,
            Err(e) => {
                tracing::warn!(error = %e, "publishing the dead letter failed; rejecting it to the broker's dead-lettering");
                self.reject(delivery).await;
            }
        }
        Outcome::Dead
    }

    async fn ack(&self, delivery: &Delivery) {
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
        }
    }

    async fn reject(&self, delivery: &Delivery) {
        if let Err(e) = delivery.reject(BasicRejectOptions { requeue: false }).await {
            tracing::warn!(error = %e, "reject failed; the message will be redelivered");
        }
    }
}

/// Per-key ordering: each delivery of a key waits until the previous one of
/// the same key has finished (its sender is dropped).
#[derive(Default)]
struct Lanes {
    last: HashMap<String, watch::Receiver<()>>,
}

impl Lanes {
    /// Returns the receiver to wait on (closed at once for a new key) and the
    /// sender to drop when this delivery is done.
    fn join(&mut self, key: String) -> (watch::Receiver<()>, watch::Sender<()>) {
        if self.last.len() > 10_000 {
            self.last.retain(|_, rx| rx.has_changed().is_ok());
        }
        let (tx, rx) = watch::channel(());
        let previous = self.last.insert(key, rx).unwrap_or_else(|| {
            let (_, closed) = watch::channel(());
            closed
        });
        (previous, tx)
    }
}
