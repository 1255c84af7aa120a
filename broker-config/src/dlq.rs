//! Dead-letter queues, as on-call handles them (ADR 0016): list them, peek at
//! what is in one without changing it, replay it into the queue it came from,
//! or purge it.
//!
//! - **Peek** reads the whole queue without acknowledging anything, then
//!   nacks every message back in the order it came: a quorum queue without a
//!   delivery limit puts a nacked message at its back, so one full turn
//!   leaves the order as it was. Nothing is consumed or redelivered to a
//!   consumer (no process consumes a DLQ). The queue counts each hand-back
//!   in the message's `x-delivery-count`; the DLQs have no delivery limit, so
//!   the count is shown and drops nothing, and a replay does not carry it on.
//! - **Replay** consumes the DLQ through a window of unacked deliveries and
//!   republishes each message, confirmed, to the DLQ's own work queue through
//!   the default exchange (never through `fastprep.events`, which would fan
//!   it out to every bound queue again), and only then acknowledges it.
//!   Messages it leaves (filtered out, past the limit, replayed too often,
//!   or sent by this run and failed again) are handed back in order when it
//!   ends. A crash between a confirm and its ack leaves the message in the
//!   DLQ as well as in the work queue; the consumers' idempotency claim
//!   makes the second copy a duplicate that does nothing.
//! - A counter header, [`REPLAYS_HEADER`], travels with the message across
//!   replays, retry tiers and deaths; at [`MAX_REPLAYS`] a message is no
//!   longer replayed.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;

use chrono::{DateTime, Utc};
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicNackOptions, BasicQosOptions, QueueDeclareOptions, QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    publisher::{Outgoing, PublishError, Publisher},
    topology::{DLX, WORK_QUEUES, dlq_name},
};

/// The work queue whose consumer dead-lettered the message.
pub const SOURCE_HEADER: &str = "x-fastprep-dlq-source";
/// Why the consumer gave up on it (the handler's reason).
pub const FAILURE_HEADER: &str = "x-fastprep-failure";
/// When the consumer gave up on it (RFC 3339).
pub const DIED_AT_HEADER: &str = "x-fastprep-died-at";
/// How many times the message was replayed from a DLQ.
pub const REPLAYS_HEADER: &str = "x-fastprep-replays";
/// The replay run that sent the message back last: a run leaves what it
/// sent itself and that failed again.
pub const REPLAY_RUN_HEADER: &str = "x-fastprep-replay-run";
/// A message replayed this many times stays in its DLQ: it keeps failing,
/// and only a fix of its cause (or a purge) ends the loop.
pub const MAX_REPLAYS: u32 = 5;
/// Longest failure reason carried in [`FAILURE_HEADER`].
pub const MAX_FAILURE_CHARS: usize = 500;

/// Headers of a dead letter that describe its death, not the event: a replay
/// drops them, and the broker's own delivery count with them.
const DEATH_HEADERS: [&str; 10] = [
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-delivery-count",
    SOURCE_HEADER,
    FAILURE_HEADER,
    DIED_AT_HEADER,
    REPLAYS_HEADER,
    REPLAY_RUN_HEADER,
];

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(
        "{0} is not a dead-letter queue of this system (one of: tg-delivery.dlq, authz-fanout.dlq, alerts.dlq, inbound.dlq)"
    )]
    UnknownQueue(String),
    #[error(
        "{0} is not declared on this broker (no consumer has started on this vhost yet?): `fastprep-ops topology apply` declares it"
    )]
    NotDeclared(String),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("republishing failed: {0}")]
    Publish(#[from] PublishError),
}

/// The dead-letter queues, one per work queue.
pub fn queues() -> Vec<String> {
    WORK_QUEUES.iter().map(|q| dlq_name(q.name)).collect()
}

/// Checks that `queue` is one of [`queues`].
pub fn known(queue: &str) -> Result<(), DlqError> {
    if queues().iter().any(|q| q == queue) {
        Ok(())
    } else {
        Err(DlqError::UnknownQueue(queue.chars().take(100).collect()))
    }
}

/// One dead letter as on-call sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// 1 is the head of the queue (the oldest).
    pub position: usize,
    /// The event id (AMQP `message_id`).
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    /// The work queue it came from, and goes back to on replay.
    pub source_queue: Option<String>,
    /// The broker's word for the death: `rejected` (the consumer gave up),
    /// `delivery_limit` (it kept crashing the consumer), `expired`.
    pub reason: Option<String>,
    /// The consumer's reason, when it gave one (`user_blocked`, …).
    pub failure: Option<String>,
    pub died_at: Option<DateTime<Utc>>,
    /// When the event was first published.
    pub published_at: Option<DateTime<Utc>>,
    /// Times the DLQ handed it out (peeks included).
    pub delivery_count: u64,
    pub replays: u32,
    /// The replay run that sent it back last, if any.
    pub replay_run: Option<String>,
    /// The broker's `x-death` entries, newest first, when the broker
    /// dead-lettered it.
    pub x_death: Value,
    /// Every other header.
    pub headers: Value,
    /// The event's ids and kinds, with texts replaced by their length: a
    /// peek shows what failed, not what a customer wrote.
    pub payload: Value,
    pub size_bytes: usize,
}

impl DeadLetter {
    pub fn of(delivery: &Delivery, position: usize) -> Self {
        let headers: BTreeMap<String, &AMQPValue> = delivery
            .properties
            .headers()
            .as_ref()
            .map(|h| h.inner().iter().map(|(k, v)| (k.to_string(), v)).collect())
            .unwrap_or_default();
        let text = |name: &str| headers.get(name).and_then(|v| amqp_str(v));
        let x_death = headers.get("x-death").map_or(Value::Null, |v| to_json(v));
        let newest_death = x_death.get(0);
        // `fastprep.dlx` routes by the name of the queue that dead-lettered
        // it, whoever published it there; the header is for a copy moved
        // elsewhere by hand.
        let source_queue = (delivery.exchange.as_str() == DLX)
            .then(|| delivery.routing_key.to_string())
            .or_else(|| text(SOURCE_HEADER))
            .or_else(|| {
                newest_death
                    .and_then(|d| d.get("queue"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let reason = text(crate::runner::DEATH_REASON_HEADER)
            .or_else(|| {
                newest_death
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or_else(|| text("x-first-death-reason"));
        let died_at = text(DIED_AT_HEADER)
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| {
                newest_death
                    .and_then(|d| d.get("time"))
                    .and_then(Value::as_i64)
                    .and_then(|secs| DateTime::from_timestamp(secs, 0))
            });
        let other: Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| k.as_str() != "x-death")
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect();
        DeadLetter {
            position,
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string()),
            event_type: delivery.properties.kind().as_ref().map(|s| s.to_string()),
            source_queue,
            reason,
            failure: text(FAILURE_HEADER),
            died_at,
            published_at: delivery
                .properties
                .timestamp()
                .and_then(|t| i64::try_from(t).ok())
                .and_then(|t| DateTime::from_timestamp(t, 0)),
            delivery_count: headers
                .get("x-delivery-count")
                .and_then(|v| amqp_int(v))
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            replays: replays_of(delivery),
            replay_run: text(REPLAY_RUN_HEADER),
            x_death,
            headers: Value::Object(other),
            payload: summary(&delivery.data),
            size_bytes: delivery.data.len(),
        }
    }

    /// What most explains the death: the consumer's reason, else the broker's.
    pub fn cause(&self) -> String {
        self.failure
            .clone()
            .or_else(|| self.reason.clone())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// How many times a delivery was replayed from a DLQ.
pub fn replays_of(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(REPLAYS_HEADER))
        .and_then(|v| {
            amqp_str(v)
                .and_then(|s| s.parse().ok())
                .or(amqp_int(v).and_then(|n| u32::try_from(n).ok()))
        })
        .unwrap_or(0)
}

fn amqp_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn amqp_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// An AMQP header value as JSON (timestamps as seconds since the epoch).
pub fn to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            json!(amqp_str(v).unwrap_or_default())
        }
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => json!(format!("<{} bytes>", b.as_slice().len())),
        AMQPValue::Void => Value::Null,
        other => amqp_int(other).map_or_else(|| json!(format!("{other:?}")), |n| json!(n)),
    }
}

/// The event's envelope with every string of its data that is not an id or
/// a status replaced by its length.
fn summary(body: &[u8]) -> Value {
    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(body) else {
        return json!({ "undecodable": true, "size_bytes": body.len() });
    };
    if let Some(data) = envelope.get_mut("data") {
        redact(data);
    }
    Value::Object(envelope)
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let keep = key == "id"
                    || key.ends_with("_id")
                    || key.ends_with("_ids")
                    || matches!(key.as_str(), "status" | "state" | "error" | "code");
                match value {
                    Value::String(s) if !keep => {
                        *value = json!(format!("<{} chars>", s.chars().count()));
                    }
                    Value::Object(_) | Value::Array(_) => redact(value),
                    _ => {}
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Whether the broker answered "no such queue".
fn no_such_queue(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Messages in `queue` now (a passive declare: nothing is created).
pub async fn depth(conn: &Connection, queue: &str) -> Result<u32, DlqError> {
    let channel = conn.create_channel().await?;
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            if no_such_queue(&e) {
                DlqError::NotDeclared(queue.to_owned())
            } else {
                DlqError::Broker(e)
            }
        })?;
    let _ = channel.close(200, "depth".into()).await;
    Ok(q.message_count())
}

/// Most messages a peek reads to keep the queue's order (it reads the
/// whole queue); a longer queue is peeked at the cost of its order.
pub const MAX_PEEK_READ: usize = 100_000;

/// Takes up to `total` messages from the head of `queue` on `channel`
/// without acknowledging them, into `held`; describes the first `n`.
async fn take_unacked(
    channel: &Channel,
    queue: &str,
    (n, total): (usize, usize),
    held: &mut Vec<Delivery>,
) -> Result<Vec<DeadLetter>, DlqError> {
    let mut out = Vec::new();
    while held.len() < total {
        match channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(message) => {
                if out.len() < n {
                    out.push(DeadLetter::of(&message.delivery, out.len() + 1));
                }
                held.push(message.delivery);
            }
            None => break,
        }
    }
    Ok(out)
}

/// Hands `held` back to the queue in the order they were taken, one nack
/// each. A quorum queue without a delivery limit puts a nacked message at
/// its back, so handing back every message of the queue in order leaves
/// the order as it was. (Closing the channel instead puts them in a
/// separate returns queue served first, whose order mixes with the next
/// hand-back's: seen to shuffle them on RabbitMQ 3.10.)
async fn hand_back(channel: &Channel, held: Vec<Delivery>) -> Result<(), DlqError> {
    for delivery in held {
        channel
            .basic_nack(
                delivery.delivery_tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await?;
    }
    Ok(())
}

/// The first `n` dead letters of `queue`, leaving the queue as it was (its
/// messages' `x-delivery-count` aside). It reads the whole queue and hands
/// every message back in order (see [`hand_back`]), so a peek costs a read
/// of the queue.
pub async fn peek(conn: &Connection, queue: &str, n: usize) -> Result<Vec<DeadLetter>, DlqError> {
    known(queue)?;
    depth(conn, queue).await?;
    let channel = conn.create_channel().await?;
    let mut held = Vec::new();
    // To the end of the queue (the depth a declare reports can lag behind
    // a hand-back still being applied).
    let taken = take_unacked(&channel, queue, (n, MAX_PEEK_READ), &mut held).await;
    let returned = hand_back(&channel, held).await;
    let closed = channel.close(200, "peeked".into()).await;
    let taken = taken?;
    returned?;
    closed?;
    Ok(taken)
}

/// One DLQ at a glance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub queue: String,
    /// Whether the queue exists on the broker (every consumer declares the
    /// topology when it starts).
    pub declared: bool,
    /// A peek, replay or purge of it is running: the depth counts only the
    /// messages it does not hold, and the rest is not shown.
    pub busy: bool,
    pub depth: u32,
    pub oldest_died_at: Option<DateTime<Utc>>,
    pub oldest_age_seconds: Option<i64>,
    /// The commonest causes among the first [`SAMPLE`] messages, most first.
    pub top_reasons: Vec<Reason>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub reason: String,
    pub count: usize,
}

/// Messages a listing looks at for the causes.
pub const SAMPLE: usize = 100;

/// Every DLQ with its depth, the age of its oldest message and its top causes.
pub async fn list(conn: &Connection) -> Result<Vec<Summary>, DlqError> {
    let mut out = Vec::new();
    for queue in queues() {
        out.push(summarize(conn, &queue).await?);
    }
    Ok(out)
}

/// One DLQ with its depth, the age of its oldest message and its top causes.
pub async fn summarize(conn: &Connection, queue: &str) -> Result<Summary, DlqError> {
    let (declared, depth) = match depth(conn, queue).await {
        Ok(n) => (true, n),
        Err(DlqError::NotDeclared(_)) => (false, 0),
        Err(e) => return Err(e),
    };
    let sample = if depth > 0 {
        peek(conn, queue, SAMPLE).await?
    } else {
        Vec::new()
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for letter in &sample {
        *counts.entry(letter.cause()).or_default() += 1;
    }
    let mut top_reasons: Vec<Reason> = counts
        .into_iter()
        .map(|(reason, count)| Reason { reason, count })
        .collect();
    top_reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    top_reasons.truncate(5);
    let oldest = sample.iter().filter_map(|l| l.died_at).min();
    Ok(Summary {
        queue: queue.to_owned(),
        declared,
        busy: false,
        depth,
        oldest_died_at: oldest,
        oldest_age_seconds: oldest.map(|t| (Utc::now() - t).num_seconds().max(0)),
        top_reasons,
    })
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// At most this many are replayed.
    pub limit: Option<usize>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only those that died at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Count what would be replayed, replay nothing.
    pub dry_run: bool,
}

impl ReplayFilter {
    fn takes(&self, letter: &DeadLetter) -> bool {
        self.event_type
            .as_deref()
            .is_none_or(|t| letter.event_type.as_deref() == Some(t))
            && self
                .since
                .is_none_or(|since| letter.died_at.is_some_and(|d| d >= since))
    }
}

/// Where a replay stands; the last one is its summary.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ReplayProgress {
    pub queue: String,
    /// Messages in the DLQ when the replay began (as the broker counted
    /// them then).
    pub depth_at_start: u32,
    pub examined: usize,
    /// Republished (confirmed) and acknowledged in the DLQ; with `dry_run`,
    /// what would have been.
    pub replayed: usize,
    /// Left in place: not of the type, or died before `since`.
    pub filtered_out: usize,
    /// Left in place: replayed [`MAX_REPLAYS`] times already.
    pub over_replay_cap: usize,
    /// Left in place: no work queue of this system to go back to.
    pub unknown_source: usize,
    /// Left in place: sent back by this run and dead-lettered again (it is
    /// not replayed twice in one run).
    pub arrived_during: usize,
    /// Messages in the DLQ when the replay ended.
    pub remaining: u32,
    pub dry_run: bool,
    pub done: bool,
    /// Replayed per work queue.
    pub by_queue: BTreeMap<String, usize>,
}

/// Messages republished before their confirms are awaited together.
const REPLAY_BATCH: usize = 64;
/// Unacked deliveries a replay takes at once (those it leaves in place
/// count until it ends).
const REPLAY_WINDOW: u16 = 10_000;
/// Past the depth counted at the start, the end of the queue is this long
/// without a delivery.
const END_IDLE: Duration = Duration::from_millis(300);
/// Before that depth, a replay gives up after this long without one (the
/// queue was emptied by a purge, or its window is full of messages it left).
const STALL_IDLE: Duration = Duration::from_secs(5);

/// Replays `queue` into the work queues its messages came from (see the
/// module's documentation); `progress` is called after every batch.
pub async fn replay(
    conn: &Connection,
    queue: &str,
    filter: &ReplayFilter,
    mut progress: impl FnMut(&ReplayProgress),
) -> Result<ReplayProgress, DlqError> {
    known(queue)?;
    let depth_at_start = depth(conn, queue).await?;
    let run = uuid::Uuid::now_v7().to_string();
    // Each DLQ takes only its own queue's dead letters (`fastprep.dlx`
    // routes by the source queue's name), so that is where they go back,
    // whatever a header says.
    let target = queue.strip_suffix(".dlq").unwrap_or(queue).to_owned();
    let publisher = Publisher::new(conn).await?;
    let channel = conn.create_channel().await?;
    let mut state = ReplayProgress {
        queue: queue.to_owned(),
        depth_at_start,
        dry_run: filter.dry_run,
        ..Default::default()
    };
    progress(&state);
    let limit = filter.limit.unwrap_or(usize::MAX);
    // Messages left in place, handed back in order at the end.
    let mut held: Vec<Delivery> = Vec::new();
    // A consumer with a window of unacked deliveries, not one basic.get
    // (one queue command) per message: the queue streams the DLQ to us.
    channel
        .basic_qos(REPLAY_WINDOW, BasicQosOptions::default())
        .await?;
    let tag = format!("fastprep-ops-replay-{run}");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let result = async {
        // To the end of the queue: the depth counted at the start can lag
        // behind messages still being handed back (by a replay that died),
        // so the end is when nothing more comes.
        let most = depth_at_start as usize + MAX_PEEK_READ;
        while state.examined < most {
            // One batch: the next messages to go back, each with its
            // delivery, the others held unacked until the end.
            let mut batch: Vec<(Delivery, DeadLetter, String)> = Vec::new();
            // Nothing more came: the end of the queue (or of the window,
            // when it is full of messages left in place).
            let mut dry = false;
            while batch.len() < REPLAY_BATCH && state.examined < most {
                let wait = if !batch.is_empty() {
                    // Send what is ready rather than wait for more.
                    Duration::ZERO
                } else if state.examined >= depth_at_start as usize {
                    END_IDLE
                } else {
                    STALL_IDLE
                };
                let delivery = match tokio::time::timeout(wait, consumer.next()).await {
                    Ok(Some(delivery)) => delivery?,
                    // The channel is gone: the hand-back below says why.
                    Ok(None) => {
                        dry = true;
                        break;
                    }
                    Err(_) if batch.is_empty() => {
                        dry = true;
                        break;
                    }
                    Err(_) => break,
                };
                state.examined += 1;
                let letter = DeadLetter::of(&delivery, state.examined);
                let known_target = WORK_QUEUES.iter().any(|q| q.name == target);
                match () {
                    // Past the limit: held, so that the whole queue is
                    // handed back in order.
                    () if state.replayed + batch.len() >= limit => {}
                    () if !known_target => state.unknown_source += 1,
                    () if letter.replay_run.as_deref() == Some(run.as_str()) => {
                        state.arrived_during += 1;
                    }
                    () if !filter.takes(&letter) => state.filtered_out += 1,
                    () if letter.replays >= MAX_REPLAYS => state.over_replay_cap += 1,
                    () if filter.dry_run => state.replayed += 1,
                    () => {
                        batch.push((delivery, letter, target.clone()));
                        continue;
                    }
                }
                held.push(delivery);
            }
            if !batch.is_empty() {
                // Every confirmed copy's dead letter is acked, even when
                // another of the batch failed (that one stays, held).
                let confirmed = republish(&publisher, &batch, &run).await?;
                let mut failure = None;
                for ((delivery, _, target), result) in batch.into_iter().zip(confirmed) {
                    match result {
                        Ok(()) => {
                            delivery.ack(BasicAckOptions::default()).await?;
                            *state.by_queue.entry(target).or_default() += 1;
                            state.replayed += 1;
                        }
                        Err(e) => {
                            held.push(delivery);
                            failure.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = failure {
                    return Err(DlqError::Publish(e));
                }
                // Fault-injection point for the killed-replay test (compiled
                // out without the `failpoints` feature): slows each batch so
                // the test can kill the replay part-way.
                fail::fail_point!("dlq-replay-batch");
            }
            progress(&state);
            if dry {
                break;
            }
        }
        Ok::<(), DlqError>(())
    }
    .await;
    // No more deliveries; those already on their way are left in place too.
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(100), consumer.next()).await
    {
        held.push(delivery);
    }
    // Hands back what was left in place, in order (and, after an error,
    // whatever the batch still held, with the channel).
    let handed_back = u32::try_from(held.len()).unwrap_or(u32::MAX);
    let returned = hand_back(&channel, held).await;
    let closed = channel.close(200, "replayed".into()).await;
    let _ = publisher.close().await;
    result?;
    returned?;
    closed?;
    // What was handed back is in the queue, even when the depth read here
    // comes before the broker has put every one back.
    state.remaining = depth(conn, queue).await?.max(handed_back);
    state.done = true;
    progress(&state);
    Ok(state)
}

/// Publishes each message of `batch` to its work queue, confirmed; fails
/// unless every one is confirmed.
async fn republish(
    publisher: &Publisher,
    batch: &[(Delivery, DeadLetter, String)],
    run: &str,
) -> Result<Vec<Result<(), PublishError>>, DlqError> {
    /// What a replayed message carries beside its body.
    struct Prepared {
        headers: Vec<(String, String)>,
        id: String,
        kind: String,
        timestamp: u64,
    }
    let prepared: Vec<Prepared> = batch
        .iter()
        .map(|(delivery, letter, _)| Prepared {
            headers: replay_headers(delivery, letter.replays + 1, run),
            id: letter.message_id.clone().unwrap_or_default(),
            kind: letter.event_type.clone().unwrap_or_default(),
            timestamp: delivery.properties.timestamp().unwrap_or_default(),
        })
        .collect();
    let outgoing: Vec<Outgoing<'_>> = batch
        .iter()
        .zip(&prepared)
        .map(|((delivery, _, target), p)| Outgoing {
            exchange: "",
            routing_key: target,
            message_id: &p.id,
            event_type: &p.kind,
            body: &delivery.data,
            headers: &p.headers,
            attempt: 1,
            timestamp: p.timestamp,
            mandatory: true,
        })
        .collect();
    Ok(publisher.publish_batch(&outgoing).await?)
}

/// The headers a replayed message carries: its own string headers without
/// those of its death, and the replay count.
fn replay_headers(delivery: &Delivery, replays: u32, run: &str) -> Vec<(String, String)> {
    let headers = delivery.properties.headers();
    // A dead letter as the alerts consumer saw it keeps the facts of its
    // first death; any other message starts its life afresh.
    let seen_by_alerts = headers.as_ref().is_some_and(|h| {
        h.inner()
            .contains_key(crate::runner::DEAD_LETTERED_FROM_HEADER)
    });
    let mut out: Vec<(String, String)> = headers
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| {
                    !DEATH_HEADERS.contains(&k.as_str())
                        && k.as_str() != crate::publisher::ATTEMPT_HEADER
                        && (seen_by_alerts || k.as_str() != crate::runner::DEATH_REASON_HEADER)
                })
                .filter_map(|(k, v)| amqp_str(v).map(|s| (k.to_string(), s)))
                .collect()
        })
        .unwrap_or_default();
    out.push((REPLAYS_HEADER.to_owned(), replays.to_string()));
    out.push((REPLAY_RUN_HEADER.to_owned(), run.to_owned()));
    out
}

/// The headers that travel with a message through retry tiers and deaths:
/// its replay count and its last replay run.
pub fn carried_headers(delivery: &Delivery) -> Vec<(String, String)> {
    let Some(headers) = delivery.properties.headers().as_ref() else {
        return Vec::new();
    };
    [REPLAYS_HEADER, REPLAY_RUN_HEADER]
        .into_iter()
        .filter_map(|name| {
            headers
                .inner()
                .get(name)
                .and_then(amqp_str)
                .map(|v| (name.to_owned(), v))
        })
        .collect()
}

/// Empties `queue`; returns how many messages it dropped.
pub async fn purge(conn: &Connection, queue: &str) -> Result<u32, DlqError> {
    known(queue)?;
    depth(conn, queue).await?;
    let channel = conn.create_channel().await?;
    let purged = channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    let _ = channel.close(200, "purged".into()).await;
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_ids_and_hides_texts() {
        let body = serde_json::to_vec(&json!({
            "id": "e1", "type": "message.outgoing.v1",
            "data": {"message_id": "m1", "tg_chat_id": 42, "text": "my phone is 555",
                     "attachments": [{"filename": "passport.pdf", "size": 3}]}
        }))
        .unwrap();
        let s = summary(&body);
        assert_eq!(s["data"]["message_id"], "m1");
        assert_eq!(s["data"]["tg_chat_id"], 42);
        assert_eq!(s["data"]["text"], "<15 chars>");
        assert_eq!(s["data"]["attachments"][0]["filename"], "<12 chars>");
        assert_eq!(summary(b"\xff")["undecodable"], true);
    }

    #[test]
    fn only_the_systems_dlqs_are_known() {
        assert!(known("tg-delivery.dlq").is_ok());
        assert!(known("tg-delivery").is_err());
        assert!(known("realtime.x").is_err());
        assert_eq!(queues().len(), WORK_QUEUES.len());
    }
}
