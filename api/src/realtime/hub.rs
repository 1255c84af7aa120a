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
    collections::{HashSet, VecDeque},
    sync::{Arc, RwLock},
    time::Duration,
};

use super::frames::{ServerBody, ServerFrame};
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
use tracing::Instrument;
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
        let mut consumer = channel
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
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("consumer cancelled"),
                },
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
                    &broker_config::runner::trace_headers(&delivery),
                );
                span
            });
            match self.frame(&delivery).instrument(span).await {
                Ok(Some(frame)) => {
                    self.push(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    // PostgreSQL could not answer: the frame is lost, so the
                    // stream is no longer complete.
                    tracing::warn!(error = %e, "realtime event not rendered; resetting the stream");
                    delivery.ack(BasicAckOptions::default()).await?;
                    return Err(e.into());
                }
            }
            delivery.ack(BasicAckOptions::default()).await?;
        }
    }

    /// Renders one delivery, or `None` for an event sockets do not get.
    async fn frame(&self, delivery: &lapin::message::Delivery) -> Result<Option<Frame>, ApiError> {
        let Some(id) = stream_id(delivery) else {
            tracing::warn!("realtime event without a stream position ignored");
            return Ok(None);
        };
        let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable realtime event ignored");
                return Ok(None);
            }
        };
        // Each event names the conversation's assignee as of its write, so
        // every instance filters it alike, whatever the order it reads in.
        // Message frames carry the row as REST renders it.
        let (assignees, body) = match &envelope.event {
            // A retry or a chat's next turn: the message is not new.
            Event::MessageOutgoing(e) if e.resend => return Ok(None),
            Event::MessageOutgoing(e) => (
                [e.assignee_id, None],
                Body::Load(e.message_id, |m| ServerBody::MessageCreated(m)),
            ),
            Event::MessageReceived(e) => (
                [e.assignee_id, None],
                Body::Load(e.message_id, |m| ServerBody::MessageCreated(m)),
            ),
            Event::MessageNoteAdded(e) => (
                [e.assignee_id, None],
                Body::Load(e.message_id, |m| ServerBody::MessageCreated(m)),
            ),
            Event::MessageEdited(e) => (
                [e.assignee_id, None],
                Body::Load(e.message_id, |m| ServerBody::MessageUpdated(m)),
            ),
            Event::MessageStatus(e) => (
                [e.assignee_id, None],
                Body::Ready(ServerBody::MessageStatus(e.into())),
            ),
            Event::ConversationUpdated(e) => (
                [e.assignee_id, e.previous_assignee_id],
                Body::Ready(ServerBody::ConversationUpdated {
                    conversation_id: e.conversation_id,
                    changed: &e.changed,
                }),
            ),
            _ => return Ok(None),
        };
        let loaded;
        let body = match body {
            Body::Ready(body) => body,
            Body::Load(message, render) => {
                let Some(m) = messages::load(&self.db, message).await? else {
                    return Ok(None);
                };
                loaded = m;
                render(&loaded)
            }
        };
        let text = ServerFrame { id, body }.text();
        Ok(Some(Frame {
            id,
            event_id: envelope.id,
            assignees,
            text: text.into(),
        }))
    }
}

/// A frame's body: given by the event, or a message row to load.
enum Body<'a> {
    Ready(ServerBody<'a>),
    /// The message to load, and the frame it makes.
    Load(Uuid, fn(&messages::Message) -> ServerBody<'_>),
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
