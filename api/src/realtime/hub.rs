//! The instance's view of the event stream: it consumes the instance's
//! `realtime.<instance-id>` queue, turns each event into a frame once, keeps
//! the most recent frames for `resume`, and hands new ones to every socket.
//!
//! Positions come from the relay (`x-stream-id`, drawn in publish order from
//! one sequence), so they are the same on every instance and rise along the
//! queue. The hub knows it holds *every* event above its `floor`: the floor
//! is the sequence's value read after the queue was bound (anything drawn
//! later is published later, so it reaches the queue), and it rises as old
//! frames are dropped. A resume from below the floor is answered `resync`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, RwLock},
    time::Duration,
};

use super::frames::{MessageData, ServerBody, ServerFrame};
use axum::extract::ws::Utf8Bytes;
use broker_config::{
    Envelope, Event,
    connection::connect_with_retry,
    topology::{self, STREAM_ID_HEADER},
};
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{error::ApiError, inbox::messages};

/// One server frame, rendered once for every socket.
#[derive(Debug)]
pub struct Frame {
    /// Stream position, the frame's `id`.
    pub id: i64,
    /// The event's envelope id: a republished event is dropped by it.
    pub event_id: Uuid,
    /// Who sees it under `inbox.read_assigned`: the conversation's assignee
    /// when the event was written and, for a reassignment, the previous one.
    pub assignees: [Option<Uuid>; 2],
    /// `{"id":…,"type":…,"data":…}`.
    pub text: Utf8Bytes,
}

/// What the hub tells live sockets.
#[derive(Debug, Clone)]
pub enum Signal {
    Frame(Arc<Frame>),
    /// Events were lost (the broker link dropped): every socket gets
    /// `resync` at this position.
    Reset(i64),
}

/// What a resume gets.
pub enum Replay {
    /// Every frame after the requested position, in order (maybe none).
    Frames(Vec<Arc<Frame>>),
    /// The position is older than what is kept (or unknown): resync at the
    /// given position.
    TooOld(i64),
}

struct Ring {
    frames: VecDeque<Arc<Frame>>,
    seen: HashSet<Uuid>,
    /// Every event above this position is held (or was dropped by a full
    /// ring, which raises it). `UNBOUND` while the queue is not bound.
    floor: i64,
    /// The highest position taken in.
    head: i64,
}

pub struct Hub {
    ring: RwLock<Ring>,
    live: broadcast::Sender<Signal>,
    capacity: usize,
    db: sea_orm::DatabaseConnection,
}

/// The floor while the queue is not bound: no resume is complete.
const UNBOUND: i64 = i64::MAX;

/// Frames kept for resume by default.
pub const DEFAULT_REPLAY_EVENTS: usize = 10_000;

impl Hub {
    pub fn new(db: sea_orm::DatabaseConnection, capacity: usize) -> Arc<Self> {
        let (live, _) = broadcast::channel(1024);
        Arc::new(Self {
            ring: RwLock::new(Ring {
                frames: VecDeque::new(),
                seen: HashSet::new(),
                floor: UNBOUND,
                head: 0,
            }),
            live,
            capacity: capacity.max(1),
            db,
        })
    }

    /// Whether events are flowing in (the health check reports it): the
    /// floor is known only while the queue is bound.
    pub fn is_bound(&self) -> bool {
        self.ring.read().is_ok_and(|r| r.floor != UNBOUND)
    }

    /// New frames and resets from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.live.subscribe()
    }

    /// The position a new stream starts from.
    pub fn head(&self) -> i64 {
        self.ring
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().head, |r| r.head)
    }

    /// Every frame after `since`, or `TooOld` when some may be missing.
    pub fn since(&self, since: i64) -> Replay {
        let Ok(ring) = self.ring.read() else {
            return Replay::TooOld(0);
        };
        if since < ring.floor || since > ring.head {
            return Replay::TooOld(ring.head);
        }
        let start = ring.frames.partition_point(|f| f.id <= since);
        Replay::Frames(ring.frames.range(start..).cloned().collect())
    }

    /// Starts a fresh stream at `position` after the queue was (re)bound:
    /// what came before is no longer known to be complete.
    fn reset(&self, position: i64) {
        if let Ok(mut ring) = self.ring.write() {
            ring.frames.clear();
            ring.seen.clear();
            ring.floor = position;
            // Not the max: after a database restore the sequence restarts
            // lower, and frames above the new position must not be refused.
            ring.head = position;
        }
        let _ = self.live.send(Signal::Reset(position));
    }

    /// Takes a frame in; `false` for a duplicate or an out-of-order one.
    fn push(&self, frame: Frame) -> bool {
        let frame = Arc::new(frame);
        {
            let Ok(mut ring) = self.ring.write() else {
                return false;
            };
            if frame.id <= ring.head || !ring.seen.insert(frame.event_id) {
                return false;
            }
            ring.head = frame.id;
            ring.frames.push_back(frame.clone());
            while ring.frames.len() > self.capacity {
                if let Some(old) = ring.frames.pop_front() {
                    ring.seen.remove(&old.event_id);
                    ring.floor = ring.floor.max(old.id);
                }
            }
        }
        let _ = self.live.send(Signal::Frame(frame));
        true
    }

    /// Consumes the instance's realtime queue until `shutdown`, reconnecting
    /// (and resetting the stream) whenever the link drops.
    pub async fn run(
        self: Arc<Self>,
        amqp_url: String,
        instance: String,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            // Fault-injection point for the supervision test (compiled out
            // without the `failpoints` feature): the hub's task ends.
            fail::fail_point!("realtime-hub", |_| ());
            let Some(conn) = connect_with_retry(&amqp_url, "api-realtime", &shutdown).await else {
                return;
            };
            let consumed = self.consume(&conn, &instance, &shutdown).await;
            // Events are being missed from now on: until the queue is bound
            // again, a resume cannot be answered as complete.
            if let Ok(mut ring) = self.ring.write() {
                ring.floor = UNBOUND;
            }
            if let Err(e) = consumed {
                tracing::warn!(error = %e, "realtime queue lost; reconnecting");
            }
            let _ = conn.close(200, "bye".into()).await;
            if !shutdown.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn consume(
        &self,
        conn: &lapin::Connection,
        instance: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = conn.create_channel().await?;
        let queue = topology::declare_realtime_queue(&channel, instance).await?;
        channel.basic_qos(512, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("gateway-{instance}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Bound: every position drawn from now on reaches this queue.
        let position: i64 = {
            use sea_orm::{ConnectionTrait, DbBackend, Statement};
            self.db
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_stream_seq",
                ))
                .await?
                .ok_or_else(|| anyhow::anyhow!("event_stream_seq has no row"))?
                .try_get_by_index(0)?
        };
        self.reset(position);
        tracing::info!(queue, position, "realtime stream bound");
        // Deliveries already at hand are taken together: their messages are
        // loaded in one query and acked at once, so the cost per event falls
        // as the rate rises.
        let mut consumer = consumer.ready_chunks(BATCH);
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = consumer.next() => match next {
                    Some(batch) => batch,
                    None => anyhow::bail!("consumer cancelled"),
                },
            };
            let mut deliveries = Vec::with_capacity(batch.len());
            let mut failed = None;
            for d in batch {
                match d {
                    Ok(d) => deliveries.push(d),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let rendered = self.frames(&deliveries, &queue).await;
            // Acked whatever happened to them: a frame that could not be
            // rendered is lost to this stream, which then starts over.
            if let Some(last) = deliveries.last() {
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            match rendered {
                Ok(frames) => {
                    for frame in frames {
                        self.push(frame);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime events not rendered; resetting the stream");
                    return Err(e.into());
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
    }

    /// Renders deliveries in order, skipping events sockets do not get; the
    /// messages they show are loaded in one query.
    async fn frames(
        &self,
        deliveries: &[lapin::message::Delivery],
        queue: &str,
    ) -> Result<Vec<Frame>, ApiError> {
        let events: Vec<_> = deliveries.iter().map(|d| (d, decode(d))).collect();
        let wanted: Vec<Uuid> = events
            .iter()
            .filter_map(|(_, e)| e.as_ref().and_then(|(_, env)| shown_message(env)))
            .collect();
        let loaded = if wanted.is_empty() {
            HashMap::new()
        } else {
            messages::load_many(&self.db, &wanted).await?
        };
        let mut frames = Vec::with_capacity(events.len());
        for (delivery, event) in &events {
            let Some((id, envelope)) = event else {
                continue;
            };
            // With traces exported, rendering the frame continues the trace
            // of the event it shows.
            let span = platform::trace::span_if_enabled(|| {
                let span = tracing::info_span!(
                    "realtime.frame",
                    otel.name = "realtime process",
                    otel.kind = "consumer",
                    messaging.system = "rabbitmq",
                    messaging.operation.type = "process",
                    messaging.destination.name = %queue,
                );
                platform::trace::set_parent_from(
                    &span,
                    &broker_config::runner::trace_headers(delivery),
                );
                span
            });
            if let Some(frame) = span.in_scope(|| render(*id, envelope, &loaded)) {
                frames.push(frame);
            }
        }
        Ok(frames)
    }
}

/// Deliveries taken together at most.
const BATCH: usize = 256;

/// A delivery's stream position and event, or `None` (logged) for one
/// sockets cannot use.
fn decode(delivery: &lapin::message::Delivery) -> Option<(i64, Envelope)> {
    let Some(id) = stream_id(delivery) else {
        tracing::warn!("realtime event without a stream position ignored");
        return None;
    };
    match serde_json::from_slice(&delivery.data) {
        Ok(envelope) => Some((id, envelope)),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable realtime event ignored");
            None
        }
    }
}

/// The message a frame of this event shows, when it must be loaded: the
/// event does not carry it as REST renders it (`view`).
fn shown_message(envelope: &Envelope) -> Option<Uuid> {
    match &envelope.event {
        Event::MessageOutgoing(e) if !e.resend && e.view.is_none() => Some(e.message_id),
        Event::MessageNoteAdded(e) if e.view.is_none() => Some(e.message_id),
        Event::MessageReceived(e) => Some(e.message_id),
        Event::MessageEdited(e) => Some(e.message_id),
        Event::MessageUpdated(e) => Some(e.message_id),
        _ => None,
    }
}

/// One event's frame, or `None` for an event sockets do not get (or whose
/// message is gone). Each event names the conversation's assignee as of its
/// write, so every instance filters it alike, whatever the order it reads
/// in. Message frames carry the row as REST renders it.
fn render<'a>(
    id: i64,
    envelope: &'a Envelope,
    loaded: &'a HashMap<Uuid, messages::Message>,
) -> Option<Frame> {
    // The event's own rendering of its message, else the loaded row.
    let message = |id: &Uuid, view: Option<&'a serde_json::Value>| match view {
        Some(v) => Some(MessageData::Written(v)),
        None => loaded.get(id).map(MessageData::Row),
    };
    let (assignees, body) = match &envelope.event {
        // A retry or a chat's next turn: the message is not new.
        Event::MessageOutgoing(e) if e.resend => return None,
        Event::MessageOutgoing(e) => (
            [e.assignee_id, None],
            ServerBody::MessageCreated(message(&e.message_id, e.view.as_ref())?),
        ),
        Event::MessageReceived(e) => (
            [e.assignee_id, None],
            ServerBody::MessageCreated(message(&e.message_id, None)?),
        ),
        Event::MessageNoteAdded(e) => (
            [e.assignee_id, None],
            ServerBody::MessageCreated(message(&e.message_id, e.view.as_ref())?),
        ),
        Event::MessageEdited(e) => (
            [e.assignee_id, None],
            ServerBody::MessageUpdated(message(&e.message_id, None)?),
        ),
        Event::MessageUpdated(e) => (
            [e.assignee_id, None],
            ServerBody::MessageUpdated(message(&e.message_id, None)?),
        ),
        Event::MessageStatus(e) => ([e.assignee_id, None], ServerBody::MessageStatus(e.into())),
        Event::ConversationUpdated(e) => (
            [e.assignee_id, e.previous_assignee_id],
            ServerBody::ConversationUpdated {
                conversation_id: e.conversation_id,
                changed: &e.changed,
            },
        ),
        _ => return None,
    };
    let text = ServerFrame { id, body }.text();
    Some(Frame {
        id,
        event_id: envelope.id,
        assignees,
        text: text.into(),
    })
}

fn stream_id(delivery: &lapin::message::Delivery) -> Option<i64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(STREAM_ID_HEADER)? {
        AMQPValue::LongString(s) => s.to_string().parse().ok(),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: i64) -> Frame {
        Frame {
            id,
            event_id: Uuid::now_v7(),
            assignees: [None, None],
            text: format!("{id}").into(),
        }
    }

    fn hub(capacity: usize) -> Arc<Hub> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .unwrap();
        Hub::new(schema::pool::orm(&pool), capacity)
    }

    fn ids(r: Replay) -> Option<Vec<i64>> {
        match r {
            Replay::Frames(f) => Some(f.iter().map(|f| f.id).collect()),
            Replay::TooOld(_) => None,
        }
    }

    #[tokio::test]
    async fn resume_replays_what_follows_and_refuses_what_is_gone() {
        let hub = hub(3);
        assert!(
            ids(hub.since(0)).is_none(),
            "nothing is known before the queue is bound"
        );
        hub.reset(10);
        for id in [11, 13, 14] {
            assert!(hub.push(frame(id)));
        }
        assert_eq!(ids(hub.since(10)), Some(vec![11, 13, 14]));
        assert_eq!(ids(hub.since(12)), Some(vec![13, 14]));
        assert_eq!(ids(hub.since(14)), Some(vec![]));
        assert!(ids(hub.since(9)).is_none(), "below the floor");
        assert!(ids(hub.since(15)).is_none(), "beyond the head");
        assert!(hub.push(frame(20)));
        assert!(ids(hub.since(10)).is_none(), "11 was dropped");
        assert_eq!(ids(hub.since(11)), Some(vec![13, 14, 20]));
    }

    #[tokio::test]
    async fn a_stream_restarted_lower_takes_frames_again() {
        let hub = hub(10);
        hub.reset(100);
        assert!(hub.push(frame(101)));
        // A restored database: the sequence starts over below the head.
        hub.reset(5);
        assert!(hub.push(frame(6)), "a frame above the new position is kept");
        assert_eq!(ids(hub.since(5)), Some(vec![6]));
        assert!(
            ids(hub.since(101)).is_none(),
            "positions of the old stream are unknown"
        );
    }

    #[tokio::test]
    async fn republished_and_late_frames_are_dropped() {
        let hub = hub(10);
        hub.reset(0);
        let first = frame(1);
        let again = Frame {
            id: 2,
            event_id: first.event_id,
            ..frame(2)
        };
        assert!(hub.push(first));
        assert!(!hub.push(again), "same event, new position");
        assert!(!hub.push(frame(1)), "not after the head");
        assert_eq!(ids(hub.since(0)), Some(vec![1]));
    }
}
