//! `tg-delivery`: sends `message.outgoing.v1` through the TG adapter and keeps
//! the message's delivery status, writing `message.status.v1` with every change.
//!
//! Replies to one chat reach Telegram in the order they were written, with
//! any number of instances, across retries and restarts (ADR 0011):
//! - one send per chat at a time: the handler takes the chat's turn, a
//!   transaction-scoped advisory lock, before it looks at the message;
//! - a reply that finds an earlier unfinished reply of its chat is `held`
//!   and acked; the earlier one, once sent or failed for good, hands the turn
//!   on with a `resend` event for the next held reply;
//! - a failed send is retried at a time of its own (a scheduled outbox row),
//!   not through the broker's retry tiers, so the chat waits behind it for
//!   as long as a FLOOD_WAIT asks, and other chats do not.

mod adapter;

use async_trait::async_trait;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};
use tracing::Instrument;

use broker_config::{
    Batched, Context, Envelope, Event, Failure, Handler, Next, RetryPolicy,
    adapter_api::SendRequest,
    events::{
        AttachmentRef, DeliveryStatus, MessageDeliveryFailed, MessageOutgoing, MessageStatus,
        MessageUpdated, ReplyChange,
    },
    topology::TG_DELIVERY,
};
use chrono::{DateTime, Utc};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Meter},
};
use schema::entities::{messages, outbox};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, Statement, TransactionTrait, Value,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

pub use adapter::{AdapterClient, MessageChange, SendResult};
use storage::AttachmentStore;

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

/// How tg-delivery paces its sends and retries.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// A send still running after this is shown as `sending`.
    pub sending_after: Duration,
    /// Attempts, schedule and jitter of failed sends.
    pub retry: RetryPolicy,
    /// Multiplies every wait scheduled (1 in production).
    pub clock_scale: f64,
    /// At most this many replies that are ready at once are sent together,
    /// in one transaction (1: one by one).
    pub batch_max: usize,
}

pub struct TgDelivery {
    db: DatabaseConnection,
    adapter: AdapterClient,
    metrics: DeliveryMetrics,
    relay_wake: schema::RelayWake,
    settings: DeliverySettings,
    /// Where replies' files are: the adapter gets short-lived download URLs
    /// of them. `None`: replies with files fail (`attachment_storage_unconfigured`).
    files: Option<Arc<dyn AttachmentStore>>,
    /// Replies a batch marked `sending` and gave back while their call went
    /// on: handled alone, their second call is the same try, not another,
    /// and is not marked again (a process that dies forgets them, and the
    /// redelivery is a try of its own, as after any crash).
    marked_in_batch: std::sync::Mutex<HashSet<Uuid>>,
}

impl TgDelivery {
    pub fn new(
        db: DatabaseConnection,
        adapter: AdapterClient,
        metrics: DeliveryMetrics,
        relay_wake: schema::RelayWake,
        settings: DeliverySettings,
        files: Option<Arc<dyn AttachmentStore>>,
    ) -> Self {
        Self {
            db,
            adapter,
            metrics,
            relay_wake,
            settings,
            files,
            marked_in_batch: std::sync::Mutex::new(HashSet::new()),
        }
    }

    /// Whether a batch of this process marked `id` `sending` and gave it
    /// back; forgets it.
    fn marked_in_batch(&self, id: Uuid) -> bool {
        self.marked_in_batch
            .lock()
            .map(|mut ids| ids.remove(&id))
            .unwrap_or(false)
    }
}

/// How often a reply asks again while the Telegram account needs a login.
pub const NEEDS_LOGIN_RECHECK: Duration = Duration::from_secs(30);
/// The reason a reply waiting for the account's login shows.
pub const NEEDS_LOGIN_REASON: &str = "the Telegram account needs a login";

/// Telegram's longest caption, in UTF-16 code units (as Telegram counts):
/// a longer text goes as a message of its own before the files.
pub const MAX_CAPTION_UTF16: usize = 1024;

/// One adapter call of a reply, under an idempotency key of its own: a
/// retry after a partial send sends only the parts that did not go.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub key: String,
    /// The request, its file's `url` still empty: a download URL is made
    /// right before the part is sent.
    pub request: SendRequest,
    /// The object key of the part's file.
    pub file_key: Option<String>,
}

/// A stored file of a reply: where it is and how the recipient sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileToSend {
    pub id: Uuid,
    pub object_key: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
}

/// How a reply goes out: its text alone; or its files, the first carrying
/// the text as its caption when Telegram allows one that long, else the
/// text first and then each file. The first part's key is the message's id
/// (so a reply without files keeps the key it always had); each further
/// file's is `<message id>/<attachment id>`.
pub fn parts(message_id: Uuid, chat_id: i64, text: &str, files: Vec<FileToSend>) -> Vec<Part> {
    let first_key = message_id.to_string();
    let mut parts = Vec::with_capacity(files.len() + 1);
    let caption_fits = text.encode_utf16().count() <= MAX_CAPTION_UTF16;
    if files.is_empty() || !caption_fits {
        parts.push(Part {
            key: first_key.clone(),
            request: SendRequest {
                chat_id,
                text: text.to_owned(),
                attachments: vec![],
            },
            file_key: None,
        });
    }
    for (i, f) in files.into_iter().enumerate() {
        let captioned = i == 0 && caption_fits;
        parts.push(Part {
            key: if captioned {
                first_key.clone()
            } else {
                format!("{message_id}/{}", f.id)
            },
            request: SendRequest {
                chat_id,
                text: if captioned {
                    text.to_owned()
                } else {
                    String::new()
                },
                attachments: vec![AttachmentRef {
                    url: String::new(),
                    filename: f.filename,
                    content_type: f.content_type,
                    size: f.size,
                }],
            },
            file_key: Some(f.object_key),
        });
    }
    parts
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

/// An operator's change of a sent reply (ADR 0020): `true` for a deletion.
fn reply_change(env: &Envelope) -> Option<(&ReplyChange, bool)> {
    match &env.event {
        Event::MessageOutgoingEdit(e) => Some((&e.0, false)),
        Event::MessageOutgoingDelete(e) => Some((&e.0, true)),
        _ => None,
    }
}

/// The chat an event of this queue is about.
fn chat_of(env: &Envelope) -> Option<i64> {
    reply_change(env)
        .map(|(c, _)| c.tg_chat_id)
        .or_else(|| outgoing(env).ok().map(|m| m.tg_chat_id))
}

/// How a failed delivery shows on its message: `retrying` until the time
/// the broker's retry tier holds it, or `failed` once it is dead-lettered.
fn shown_as(next: Next) -> (DeliveryStatus, Option<DateTime<Utc>>) {
    match next {
        Next::RetryAt(at) => (DeliveryStatus::Retrying, Some(at)),
        Next::DeadLetter => (DeliveryStatus::Failed, None),
    }
}

/// A sent reply as a change of it finds it.
#[derive(FromQueryResult)]
struct ChangeTurn {
    tg_message_id: Option<i64>,
    text: String,
    change_status: Option<String>,
    change_seq: i32,
}

/// Records how far the change numbered `seq` got, with the inbox's
/// `message.updated.v1`; a later change (another `seq`) or one already made
/// is left as it is. Returns whether it wrote.
async fn set_change_status<C: ConnectionTrait>(
    conn: &C,
    change: &ReplyChange,
    status: DeliveryStatus,
    error: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> Result<bool, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE messages SET change_status = $3, change_error = $4, change_retry_at = $5,
               updated_at = now()
             WHERE id = $1 AND change_seq = $2 AND change_status IS DISTINCT FROM 'sent'
             RETURNING (SELECT assignee_id FROM conversations c WHERE c.id = messages.conversation_id)",
            [
                change.message_id.into(),
                change.seq.into(),
                status.as_str().into(),
                error.map(str::to_owned).into(),
                retry_at.into(),
            ],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let assignee_id: Option<Uuid> = row.try_get_by_index(0)?;
    let updated = Envelope::new(Event::MessageUpdated(MessageUpdated {
        message_id: change.message_id,
        conversation_id: change.conversation_id,
        assignee_id,
    }));
    schema::enqueue(conn, &updated).await?;
    Ok(true)
}

/// A status write: what changes on the message row beside its status.
struct StatusChange<'a> {
    status: DeliveryStatus,
    tg_message_id: Option<i64>,
    sent_at: Option<DateTime<Utc>>,
    error: Option<&'a str>,
    retry_at: Option<DateTime<Utc>>,
    /// Whether the adapter call this records spends an attempt (a
    /// FLOOD_WAIT does not: waiting is not failing).
    counted: bool,
}

impl StatusChange<'_> {
    fn new(status: DeliveryStatus) -> Self {
        Self {
            status,
            tg_message_id: None,
            sent_at: None,
            error: None,
            retry_at: None,
            counted: true,
        }
    }
}

/// Sets a message's status and writes the matching `message.status.v1`, in
/// one statement (the update also reads the attempt number and the
/// conversation's assignee, which the event carries). Returns the attempt,
/// or `None` (writing nothing) when the event names no outgoing text reply
/// of its conversation and chat.
///
/// Every counted adapter call is counted once: by its `sending` mark when
/// the call took long enough to get one, else by the write of its outcome;
/// an uncounted outcome (a FLOOD_WAIT) takes back its mark's count. (An
/// attempt that died after its mark and is followed by a fast one leaves
/// that one uncounted; the count errs low, never high.)
async fn set_status<C: ConnectionTrait>(
    conn: &C,
    msg: &MessageOutgoing,
    change: StatusChange<'_>,
) -> Result<Option<i32>, DbErr> {
    // One tuned statement (ADR 0014): the attempt arithmetic and the chat
    // check are the row's, in one round trip.
    let values: [Value; 9] = [
        msg.message_id.into(),
        change.status.as_str().into(),
        change.tg_message_id.into(),
        change.sent_at.into(),
        change.error.map(str::to_owned).into(),
        change.retry_at.into(),
        change.counted.into(),
        msg.conversation_id.into(),
        msg.tg_chat_id.into(),
    ];
    // The attempt and the assignee are the row's, read by the update: the
    // event's copies are filled in from it, in the same statement.
    let event = Envelope::new(Event::MessageStatus(MessageStatus {
        message_id: msg.message_id,
        conversation_id: msg.conversation_id,
        status: change.status,
        tg_message_id: change.tg_message_id,
        error: change.error.map(str::to_owned),
        attempt: 0,
        retry_at: change.retry_at,
        assignee_id: None,
    }));
    let row = schema::enqueue_with_change(
        conn,
        "change AS (UPDATE messages SET status = $2, tg_message_id = COALESCE($3, tg_message_id),
           sent_at = COALESCE($4, sent_at), error = $5, retry_at = $6, updated_at = now(), held = false,
           attempts = GREATEST(attempts + CASE
             WHEN $7 THEN CASE WHEN $2 = 'sending' OR status <> 'sending' THEN 1 ELSE 0 END
             ELSE CASE WHEN status = 'sending' THEN -1 ELSE 0 END END, 0)
         WHERE id = $1 AND conversation_id = $8 AND direction = 'out' AND kind = 'text'
           AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = $8 AND c.tg_chat_id = $9)
         RETURNING attempts,
           (SELECT assignee_id FROM conversations c WHERE c.id = messages.conversation_id) AS assignee_id)",
        values.into(),
        &event,
        &[
            ("attempt", "change.attempts"),
            ("assignee_id", "change.assignee_id"),
        ],
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let attempt: i32 = row.try_get_by_index(0)?;
    Ok(Some(attempt))
}

/// The advisory lock key of a chat's turn: one send per chat at a time,
/// whichever instance holds it.
fn turn_key(tg_chat_id: i64) -> String {
    format!("tg-chat:{tg_chat_id}")
}

/// Takes the chat's turn for the rest of the transaction. The handler's
/// turn is taken by the runner, in the claim's statement
/// ([`Handler::claim_lock`]); a later statement reads what the turn allows
/// (a statement's snapshot predates any lock it waits for, so the lock must
/// come before the read, in a statement of its own).
async fn take_turn<C: ConnectionTrait>(conn: &C, tg_chat_id: i64) -> Result<(), DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        [turn_key(tg_chat_id).into()],
    ))
    .await
    .map(|_| ())
}

/// Held replies a handler sends after its own, in its transaction, at
/// most...
const IN_TURN_MAX: usize = 32;
/// ...and for at most this long (checked before each send).
const IN_TURN_BUDGET: Duration = Duration::from_secs(1);

/// The chat's first unfinished reply, as [`TgDelivery::send_held`] finds it.
#[derive(FromQueryResult)]
struct NextUnfinished {
    id: Uuid,
    text: String,
    held: bool,
    files: i64,
}

/// The chat's first unfinished reply (in the order replies are sent), if
/// any. The handler holds the chat's turn.
async fn next_unfinished<C: ConnectionTrait>(
    conn: &C,
    conversation_id: Uuid,
) -> Result<Option<NextUnfinished>, DbErr> {
    NextUnfinished::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT m.id, m.text, m.held,
                (SELECT count(*) FROM attachments a WHERE a.message_id = m.id) AS files
         FROM messages m
         WHERE m.conversation_id = $1 AND m.direction = 'out'
           AND m.status IN ('queued', 'sending', 'retrying')
         ORDER BY m.created_at, m.id LIMIT 1",
        [conversation_id.into()],
    ))
    .one(conn)
    .await
}

/// The message as its chat's turn finds it.
#[derive(FromQueryResult)]
struct Turn {
    id: Uuid,
    status: String,
    attempts: i32,
    /// The reply's text as stored: what is sent, whatever the event says.
    text: String,
    /// An earlier reply of the chat is not finished yet.
    behind: bool,
    /// Another reply of the chat is held, waiting to be handed the turn.
    /// Only a handler holding the chat's turn writes `held`, so this stays
    /// true to the end of the transaction.
    held_after: bool,
    /// Files attached to the reply.
    files: i64,
}

/// The message of `msg` as its chat's turn finds it; `None` unless it is an
/// outgoing text reply of the conversation and chat the event names (an
/// event that names another chat must not send there, nor take its turn).
async fn read_turn<C: ConnectionTrait>(
    conn: &C,
    msg: &MessageOutgoing,
) -> Result<Option<Turn>, DbErr> {
    // One statement: the row and both questions about its chat's other
    // replies, under the turn already taken.
    Turn::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "SELECT {TURN_COLUMNS}
             FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.id = $1 AND m.direction = 'out' AND m.kind = 'text'
               AND m.conversation_id = $2 AND c.tg_chat_id = $3"
        ),
        [
            msg.message_id.into(),
            msg.conversation_id.into(),
            msg.tg_chat_id.into(),
        ],
    ))
    .one(conn)
    .await
}

/// What [`Turn`] reads of a message `m`.
const TURN_COLUMNS: &str = "m.id, m.status, m.attempts, m.text,
    EXISTS (SELECT 1 FROM messages e
            WHERE e.conversation_id = m.conversation_id AND e.direction = 'out'
              AND e.status IN ('queued', 'sending', 'retrying')
              AND (e.created_at, e.id) < (m.created_at, m.id)) AS behind,
    EXISTS (SELECT 1 FROM messages h
            WHERE h.conversation_id = m.conversation_id AND h.direction = 'out'
              AND h.status IN ('queued', 'sending', 'retrying')
              AND h.held AND h.id <> m.id) AS held_after,
    (SELECT count(*) FROM attachments a WHERE a.message_id = m.id) AS files";

/// [`read_turn`] for several replies (of different chats, whose turns are
/// held) in one statement, by message id; a reply that is not an outgoing
/// text reply of the conversation and chat its event names is left out.
async fn read_turns<C: ConnectionTrait>(
    conn: &C,
    msgs: &[&MessageOutgoing],
) -> Result<HashMap<Uuid, Turn>, DbErr> {
    if let [msg] = msgs {
        // One reply: the plain statement (arrays cost planning).
        return Ok(read_turn(conn, msg)
            .await?
            .map(|t| (t.id, t))
            .into_iter()
            .collect());
    }
    let ids: Vec<Uuid> = msgs.iter().map(|m| m.message_id).collect();
    let conversations: Vec<Uuid> = msgs.iter().map(|m| m.conversation_id).collect();
    let chats: Vec<i64> = msgs.iter().map(|m| m.tg_chat_id).collect();
    let turns = Turn::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "SELECT {TURN_COLUMNS}
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS v(id, conversation_id, tg_chat_id)
             JOIN messages m ON m.id = v.id AND m.conversation_id = v.conversation_id
             JOIN conversations c ON c.id = m.conversation_id AND c.tg_chat_id = v.tg_chat_id
             WHERE m.direction = 'out' AND m.kind = 'text'"
        ),
        [ids.into(), conversations.into(), chats.into()],
    ))
    .all(conn)
    .await?;
    Ok(turns.into_iter().map(|t| (t.id, t)).collect())
}

/// Writes `sent` for several replies and a `message.status.v1` for each, in
/// one statement, as [`set_status`] does for one (`counted`). Returns the
/// ids of the replies written (a reply that is not an outgoing text reply
/// of its conversation and chat is not).
async fn set_sent_many<C: ConnectionTrait>(
    conn: &C,
    sent: &[(&MessageOutgoing, i64, DateTime<Utc>, tracing::Span)],
) -> Result<HashSet<Uuid>, DbErr> {
    if let [(msg, tg_message_id, sent_at, span)] = sent {
        // One reply: the plain statement (arrays cost planning).
        let change = StatusChange {
            tg_message_id: Some(*tg_message_id),
            sent_at: Some(*sent_at),
            ..StatusChange::new(DeliveryStatus::Sent)
        };
        let written = set_status(conn, msg, change)
            .instrument(span.clone())
            .await?;
        return Ok(written.map(|_| msg.message_id).into_iter().collect());
    }
    let ids: Vec<Uuid> = sent.iter().map(|s| s.0.message_id).collect();
    let conversations: Vec<Uuid> = sent.iter().map(|s| s.0.conversation_id).collect();
    let chats: Vec<i64> = sent.iter().map(|s| s.0.tg_chat_id).collect();
    let tg_ids: Vec<i64> = sent.iter().map(|s| s.1).collect();
    let sent_at: Vec<DateTime<Utc>> = sent.iter().map(|s| s.2).collect();
    let events: Vec<(Envelope, tracing::Span)> = sent
        .iter()
        .map(|(msg, tg_message_id, _, span)| {
            let event = Envelope::new(Event::MessageStatus(MessageStatus {
                message_id: msg.message_id,
                conversation_id: msg.conversation_id,
                status: DeliveryStatus::Sent,
                tg_message_id: Some(*tg_message_id),
                error: None,
                attempt: 0,
                retry_at: None,
                assignee_id: None,
            }));
            (event, span.clone())
        })
        .collect();
    // The attempt arithmetic of `set_status` for a counted `sent`: the
    // call counts unless its `sending` mark counted it.
    let rows = schema::enqueue_each_with_change(
        conn,
        "v AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::timestamptz[])
                 WITH ORDINALITY AS v(id, conversation_id, tg_chat_id, tg_message_id, sent_at, n)),
         change AS (UPDATE messages m SET status = 'sent', tg_message_id = v.tg_message_id,
             sent_at = v.sent_at, error = NULL, retry_at = NULL, updated_at = now(), held = false,
             attempts = GREATEST(m.attempts + CASE WHEN m.status <> 'sending' THEN 1 ELSE 0 END, 0)
           FROM v
           WHERE m.id = v.id AND m.conversation_id = v.conversation_id
             AND m.direction = 'out' AND m.kind = 'text'
             AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = v.conversation_id AND c.tg_chat_id = v.tg_chat_id)
           RETURNING v.n, m.id, m.attempts,
             (SELECT assignee_id FROM conversations c WHERE c.id = m.conversation_id) AS assignee_id)",
        vec![
            ids.into(),
            conversations.into(),
            chats.into(),
            tg_ids.into(),
            sent_at.into(),
        ],
        &events,
        &[
            ("attempt", "change.attempts"),
            ("assignee_id", "change.assignee_id"),
        ],
    )
    .await?;
    rows.iter()
        .map(|row| row.try_get::<Uuid>("", "id"))
        .collect()
}

/// Drops the scheduled retries of `msg` still to come: the message was
/// tried earlier than they are due (a duplicate or replayed event), and is
/// now finished or scheduled afresh. Left in place, a due-later row of the
/// message's aggregate would hold back every event written after it (its
/// `sent` status among them) until its time.
async fn drop_scheduled_retries<C: ConnectionTrait>(
    conn: &C,
    msg: &MessageOutgoing,
) -> Result<(), DbErr> {
    use outbox::Column;
    let dropped = outbox::Entity::delete_many()
        .filter(Column::AggregateType.eq("message"))
        .filter(Column::AggregateId.eq(msg.message_id.to_string()))
        .filter(Column::Status.eq("pending"))
        .filter(Column::EventType.eq(broker_config::events::types::MESSAGE_OUTGOING))
        .filter(Expr::col(Column::ScheduledAt).gt(Expr::current_timestamp()))
        .exec(conn)
        .await?
        .rows_affected;
    if dropped > 0 {
        tracing::info!(message_id = %msg.message_id, dropped, "tried before its scheduled retry; the retry is dropped");
    }
    Ok(())
}

/// Hands the chat's turn on once `msg` is finished (sent or failed for
/// good): when the next unfinished reply of the conversation is held, it is
/// released with a `resend` event. A next reply that is not held has its
/// own event still to come, and needs none.
async fn hand_on<C: ConnectionTrait>(conn: &C, msg: &MessageOutgoing) -> Result<(), DbErr> {
    // One statement: find the chat's next unfinished reply and release it
    // only if it is held.
    let next = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE messages SET held = false
         WHERE id = (SELECT id FROM messages
                     WHERE conversation_id = $1 AND direction = 'out'
                       AND status IN ('queued', 'sending', 'retrying') AND id <> $2
                     ORDER BY created_at, id LIMIT 1)
           AND held
         RETURNING id, text",
            [msg.conversation_id.into(), msg.message_id.into()],
        ))
        .await?;
    if let Some(row) = next {
        let (message_id, text): (Uuid, String) = row.try_get_many_by_index()?;
        tracing::debug!(%message_id, "the chat's turn passes to a held reply");
        let turn = Envelope::new(Event::MessageOutgoing(MessageOutgoing {
            message_id,
            conversation_id: msg.conversation_id,
            tg_chat_id: msg.tg_chat_id,
            text,
            attachments: vec![],
            assignee_id: msg.assignee_id,
            resend: true,
            view: None,
        }));
        schema::enqueue(conn, &turn).await?;
    }
    Ok(())
}

impl TgDelivery {
    /// Makes an operator's edit or deletion of a sent reply in Telegram:
    /// the latest text, or the deletion, as the row has it. A change that a
    /// later one superseded, or that is already made, does nothing. The
    /// adapter's refusals are retried and dead-lettered by the runner, as
    /// any handler's are; `on_failure` shows them on the message.
    async fn change(
        &self,
        ctx: &Context<'_>,
        tx: &DatabaseTransaction,
        change: &ReplyChange,
        delete: bool,
    ) -> Result<(), Failure> {
        let Some(turn) = ChangeTurn::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT m.tg_message_id, m.text, m.change_status, m.change_seq
             FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.id = $1 AND m.direction = 'out' AND m.kind = 'text'
               AND m.conversation_id = $2 AND c.tg_chat_id = $3",
            [
                change.message_id.into(),
                change.conversation_id.into(),
                change.tg_chat_id.into(),
            ],
        ))
        .one(tx)
        .await?
        else {
            return Err(Failure::permanent(format!(
                "message {} is not a reply of conversation {} in chat {}",
                change.message_id, change.conversation_id, change.tg_chat_id
            )));
        };
        if turn.change_seq != change.seq {
            tracing::info!(message_id = %change.message_id, seq = change.seq, "a later change supersedes this one");
            return Ok(());
        }
        let status = turn.change_status.as_deref();
        if status == Some(DeliveryStatus::Sent.as_str()) {
            tracing::info!(message_id = %change.message_id, "change already made; nothing to do");
            return Ok(());
        }
        if status == Some(DeliveryStatus::Failed.as_str()) && !ctx.delivery.from_dead_letter_queue {
            tracing::info!(message_id = %change.message_id, "change failed for good; not tried again");
            return Ok(());
        }
        let Some(tg_message_id) = turn.tg_message_id else {
            return Err(Failure::permanent("the reply has no Telegram message id"));
        };
        let request = if delete {
            MessageChange::Delete {
                chat_id: change.tg_chat_id,
                tg_message_id,
            }
        } else {
            MessageChange::Edit {
                chat_id: change.tg_chat_id,
                tg_message_id,
                text: turn.text,
            }
        };
        match self.adapter.change(&request).await {
            Ok(()) => {
                set_change_status(tx, change, DeliveryStatus::Sent, None, None).await?;
                self.metrics.count("done");
                Ok(())
            }
            Err(SendResult::FloodWait { retry_after }) => Err(Failure::Retryable {
                after: Some(retry_after.mul_f64(self.settings.clock_scale)),
                reason: format!("flood wait {}s", retry_after.as_secs()),
            }),
            Err(SendResult::NeedsLogin) => Err(Failure::Retryable {
                after: Some(NEEDS_LOGIN_RECHECK.mul_f64(self.settings.clock_scale)),
                reason: NEEDS_LOGIN_REASON.into(),
            }),
            Err(SendResult::Permanent { code }) => Err(Failure::permanent(code)),
            Err(SendResult::Transient { reason }) => Err(Failure::retryable(reason)),
            Err(SendResult::Sent { .. }) => Ok(()),
        }
    }

    /// Marks the message `sending` (counting the attempt) in its own
    /// committed transaction, so the inbox shows a send that takes a while.
    async fn mark_sending(&self, msg: &MessageOutgoing) -> Result<(), DbErr> {
        let tx = self.db.begin().await?;
        set_status(&tx, msg, StatusChange::new(DeliveryStatus::Sending)).await?;
        tx.commit().await?;
        self.relay_wake.committed();
        Ok(())
    }

    /// [`Self::mark_sending`] for several replies, in one transaction of
    /// its own.
    async fn mark_sending_all(&self, msgs: &[&MessageOutgoing]) -> Result<(), DbErr> {
        let tx = self.db.begin().await?;
        for msg in msgs {
            set_status(&tx, msg, StatusChange::new(DeliveryStatus::Sending)).await?;
        }
        tx.commit().await?;
        self.relay_wake.committed();
        Ok(())
    }

    /// The files of the reply, in their order.
    async fn files_of(
        &self,
        tx: &DatabaseTransaction,
        msg: &MessageOutgoing,
    ) -> Result<Vec<FileToSend>, Failure> {
        use schema::entities::attachments::{Column, Entity};
        let rows = Entity::find()
            .filter(Column::MessageId.eq(msg.message_id))
            .order_by_asc(Column::Position)
            .order_by_asc(Column::Id)
            .all(tx)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| FileToSend {
                id: row.id,
                object_key: row.object_key,
                filename: row.filename,
                content_type: row.content_type,
                size: row.size_bytes,
            })
            .collect())
    }

    /// The part as the adapter gets it: its file's download URL made now
    /// (valid 300 s), and the time the call may take (the adapter fetches
    /// the file within it).
    async fn ready(&self, part: &Part) -> Result<(SendRequest, Duration), SendResult> {
        let mut request = part.request.clone();
        let Some(key) = &part.file_key else {
            return Ok((request, Duration::ZERO));
        };
        let Some(store) = &self.files else {
            // Settings can be fixed: the send is tried again, not given up.
            return Err(SendResult::Transient {
                reason: "attachment_storage_unconfigured".into(),
            });
        };
        let transient = |e: String| SendResult::Transient {
            reason: format!("attachment storage: {e}"),
        };
        let key = storage::ObjectKey::new(key.clone()).map_err(|e| transient(e.to_string()))?;
        let mut extra = Duration::ZERO;
        for file in &mut request.attachments {
            let url = store
                .presign_get(
                    &key,
                    &file.content_type,
                    &file.filename,
                    storage::GET_URL_TTL,
                )
                .await
                .map_err(|e| transient(e.to_string()))?;
            file.url = url.to_string();
            // At least 512 KiB/s for the adapter to fetch and send it.
            extra += Duration::from_secs(u64::try_from(file.size).unwrap_or(0) / (512 * 1024));
        }
        Ok((request, extra))
    }

    /// Sends the parts in order, each under its own idempotency key, and
    /// stops at the first that does not go: a later try sends again only
    /// what did not go (the adapter answers a known key with its first
    /// result). The reply's Telegram id is its first part's.
    async fn send_parts(&self, parts: &[Part]) -> SendResult {
        let mut first: Option<i64> = None;
        let mut last = None;
        for part in parts {
            let (request, extra) = match self.ready(part).await {
                Ok(ready) => ready,
                Err(not_ready) => return not_ready,
            };
            match self.adapter.send(&part.key, &request, extra).await {
                SendResult::Sent {
                    tg_message_id,
                    sent_at,
                } => {
                    first.get_or_insert(tg_message_id);
                    last = Some(sent_at);
                }
                other => return other,
            }
        }
        match (first, last) {
            (Some(tg_message_id), Some(sent_at)) => SendResult::Sent {
                tg_message_id,
                sent_at,
            },
            _ => SendResult::Permanent {
                code: "empty_message".into(),
            },
        }
    }

    /// Calls the adapter; a call still running after `sending_after` marks
    /// the message `sending` meanwhile, unless `marked` (a send a batch of
    /// this process marked and gave back: this call is the same try).
    /// Returns the adapter's answer.
    async fn send(
        &self,
        msg: &MessageOutgoing,
        parts: &[Part],
        marked: bool,
    ) -> Result<SendResult, Failure> {
        let sending_after = self.settings.sending_after;
        if marked {
            return Ok(self.send_parts(parts).await);
        }
        if sending_after.is_zero() {
            // Every send is marked, before the call (not racing a timer).
            self.mark_sending(msg).await?;
            return Ok(self.send_parts(parts).await);
        }
        let call = self.send_parts(parts);
        tokio::pin!(call);
        tokio::select! {
            result = &mut call => Ok(result),
            () = tokio::time::sleep(sending_after) => {
                let (marked, result) = tokio::join!(self.mark_sending(msg), call);
                if let Err(e) = marked {
                    // Only the display of `sending` is lost; the send's
                    // outcome is still written below.
                    tracing::warn!(message_id = %msg.message_id, error = %e, "marking the send failed");
                }
                Ok(result)
            }
        }
    }

    /// Sends the chat's held replies that follow `msg`, in their order, in
    /// this transaction and under the chat's turn, as long as each goes
    /// through at once (at most [`IN_TURN_MAX`] of them, for at most
    /// [`IN_TURN_BUDGET`]): a chat that fell behind catches up at the
    /// adapter's pace, not at one trip through the outbox, the relay and
    /// the broker per reply. The first that does not go through, or the one
    /// past the limit, is handed the turn by an event ([`hand_on`]), and
    /// its own handler counts, retries or fails it as it would any reply.
    ///
    /// No `sending` mark is written for these sends: the mark commits on
    /// its own, and a rollback of this transaction would leave the reply
    /// neither held nor with an event to come. A crash before the commit
    /// rolls the statuses back; the redelivered event sends the same
    /// replies again under the same idempotency keys, which the adapter
    /// answers from its store.
    async fn send_held(
        &self,
        tx: &DatabaseTransaction,
        msg: &MessageOutgoing,
    ) -> Result<(), Failure> {
        let started = std::time::Instant::now();
        for _ in 0..IN_TURN_MAX {
            if started.elapsed() >= IN_TURN_BUDGET {
                break;
            }
            let Some(next) = next_unfinished(tx, msg.conversation_id).await? else {
                return Ok(());
            };
            if !next.held {
                // Its event is on its way (or its retry is scheduled).
                return Ok(());
            }
            let held = MessageOutgoing {
                message_id: next.id,
                conversation_id: msg.conversation_id,
                tg_chat_id: msg.tg_chat_id,
                text: next.text,
                attachments: vec![],
                assignee_id: msg.assignee_id,
                resend: true,
                view: None,
            };
            let files = if next.files > 0 {
                self.files_of(tx, &held).await?
            } else {
                Vec::new()
            };
            let parts = parts(held.message_id, held.tg_chat_id, &held.text, files);
            let SendResult::Sent {
                tg_message_id,
                sent_at,
            } = self.send_parts(&parts).await
            else {
                break;
            };
            set_status(
                tx,
                &held,
                StatusChange {
                    tg_message_id: Some(tg_message_id),
                    sent_at: Some(sent_at),
                    ..StatusChange::new(DeliveryStatus::Sent)
                },
            )
            .await?;
            tracing::debug!(message_id = %held.message_id, "held reply sent in its chat's turn");
            self.metrics.count("done");
        }
        hand_on(tx, msg).await?;
        Ok(())
    }

    /// Schedules the next try of `msg` after `wait` (scaled by the clock
    /// setting): the message shows `retrying` until then, and a `resend`
    /// outbox row comes due at that time. The chat's later replies wait.
    async fn retry_later(
        &self,
        tx: &DatabaseTransaction,
        msg: &MessageOutgoing,
        wait: Duration,
        reason: &str,
        counted: bool,
    ) -> Result<(), Failure> {
        let wait = wait.mul_f64(self.settings.clock_scale);
        // At most `MAX_DELAY` plus its jitter (the policy caps it): in range.
        let at =
            Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(30));
        set_status(
            tx,
            msg,
            StatusChange {
                error: Some(reason),
                retry_at: Some(at),
                counted,
                ..StatusChange::new(DeliveryStatus::Retrying)
            },
        )
        .await?;
        let retry = Envelope::new(Event::MessageOutgoing(MessageOutgoing {
            resend: true,
            view: None,
            ..msg.clone()
        }));
        schema::enqueue_at(tx, &retry, at).await?;
        tracing::info!(message_id = %msg.message_id, ?wait, reason, "send retried later");
        self.metrics.count("retry");
        Ok(())
    }
}

impl TgDelivery {
    /// Replies that are ready at once, each of its own chat: those that
    /// find their chat free are sent together and written `sent` in one
    /// statement, those behind an earlier reply are held. Given back, to be
    /// handled alone, before any send: a reply that is not simply `queued`
    /// (a duplicate, a retry, a replay), one with files, and one with held
    /// replies after it (it sends them in its turn); after its send, one
    /// still running after `sending_after` (its call under the same key
    /// waits for this one's answer at the adapter, which serialises the
    /// calls of a key). A send that failed for good is handed to the
    /// runner's failure path, without another call.
    async fn deliver_batch(
        &self,
        ctxs: &[Context<'_>],
        tx: &DatabaseTransaction,
    ) -> Result<Vec<Batched>, Failure> {
        let msgs = ctxs
            .iter()
            .map(|c| outgoing(c.envelope))
            .collect::<Result<Vec<_>, _>>()?;
        let turns = read_turns(tx, &msgs).await?;
        let mut batched = vec![Batched::Alone; msgs.len()];
        let (mut held, mut to_send) = (Vec::new(), Vec::new());
        for (i, msg) in msgs.iter().enumerate() {
            match turns.get(&msg.message_id) {
                Some(turn)
                    if turn.status == DeliveryStatus::Queued.as_str()
                        && turn.files == 0
                        && !turn.held_after =>
                {
                    if turn.behind {
                        held.push(i);
                    } else {
                        to_send.push((i, turn));
                    }
                }
                _ => {}
            }
        }
        if !held.is_empty() {
            let ids: Vec<Uuid> = held.iter().map(|&i| msgs[i].message_id).collect();
            messages::Entity::update_many()
                .col_expr(messages::Column::Held, Expr::value(true))
                .filter(messages::Column::Id.is_in(ids))
                .exec(tx)
                .await?;
            for &i in &held {
                tracing::info!(parent: &ctxs[i].span, message_id = %msgs[i].message_id, "held behind an earlier reply to the chat");
                self.metrics.count("held");
                batched[i] = Batched::Done;
            }
        }
        // A send still running after `sending_after` holds up the other
        // chats of its batch that long at most: it is given back.
        let sending_after = self.settings.sending_after;
        let results = futures::future::join_all(to_send.iter().map(|&(i, turn)| {
            let msg = msgs[i];
            async move {
                let parts = parts(msg.message_id, msg.tg_chat_id, &turn.text, Vec::new());
                tokio::time::timeout(sending_after, self.send_parts(&parts))
                    .await
                    .ok()
            }
            .instrument(ctxs[i].span.clone())
        }))
        .await;
        let (mut sent, mut unsent, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        for (&(i, turn), result) in to_send.iter().zip(results) {
            match result {
                Some(SendResult::Sent {
                    tg_message_id,
                    sent_at,
                }) => sent.push((msgs[i], tg_message_id, sent_at, ctxs[i].span.clone())),
                Some(other) => unsent.push((i, turn, other)),
                None => slow.push(msgs[i]),
            }
        }
        if !slow.is_empty() {
            // Shown `sending` now, as they would be alone: their second
            // call only waits for the first one's answer.
            match self.mark_sending_all(&slow).await {
                Ok(()) => {
                    if let Ok(mut ids) = self.marked_in_batch.lock() {
                        if ids.len() > 10_000 {
                            // Left by replies never handled alone here.
                            ids.clear();
                        }
                        ids.extend(slow.iter().map(|m| m.message_id));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "marking slow sends failed"),
            }
        }
        let written = if sent.is_empty() {
            HashSet::new()
        } else {
            set_sent_many(tx, &sent).await?
        };
        // Only the replies that went are in `written`.
        for &(i, _) in &to_send {
            if written.contains(&msgs[i].message_id) {
                self.metrics.count("done");
                batched[i] = Batched::Done;
            }
        }
        for (i, turn, result) in unsent {
            let attempt = u32::try_from(turn.attempts).unwrap_or(0) + 1;
            batched[i] = match self
                .settle_unsent(tx, msgs[i], attempt, result)
                .instrument(ctxs[i].span.clone())
                .await
            {
                Ok(()) => Batched::Done,
                Err(failure) => Batched::Failed(failure),
            };
        }
        Ok(batched)
    }

    /// A send of `msg` (its `attempt`) that did not go through: retried at
    /// a time of its own, or failed for good (`Err`, nothing written).
    async fn settle_unsent(
        &self,
        tx: &DatabaseTransaction,
        msg: &MessageOutgoing,
        attempt: u32,
        result: SendResult,
    ) -> Result<(), Failure> {
        let policy = &self.settings.retry;
        match result {
            SendResult::FloodWait { retry_after } => {
                // Waiting is not failing: no attempt is spent, however long.
                let wait = policy.jittered_delay(attempt, Some(retry_after), rand::random());
                let reason = format!("flood wait {}s", retry_after.as_secs());
                self.retry_later(tx, msg, wait, &reason, false).await
            }
            SendResult::NeedsLogin => {
                // Asked again every so often, however long the account is
                // out: the reply goes once it is back.
                let wait =
                    policy.jittered_delay(attempt, Some(NEEDS_LOGIN_RECHECK), rand::random());
                self.retry_later(tx, msg, wait, NEEDS_LOGIN_REASON, false)
                    .await
            }
            SendResult::Transient { reason } if policy.should_retry(attempt) => {
                let wait = policy.jittered_delay(attempt, None, rand::random());
                self.retry_later(tx, msg, wait, &reason, true).await
            }
            SendResult::Transient { reason } => Err(Failure::permanent(format!(
                "{reason} (gave up after {attempt} attempts)"
            ))),
            SendResult::Permanent { code } => Err(Failure::permanent(code)),
            SendResult::Sent { .. } => Err(Failure::permanent(
                "a send that went through is not settled as one that did not",
            )),
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

    /// Replies to one chat go out in the order they were queued; the key
    /// keeps them apart in this process, the chat's turn across processes.
    /// An edit or deletion keeps the chat's key and turn too: the changes
    /// of one reply never race each other at Telegram.
    fn ordering_key(&self, envelope: &Envelope) -> Option<String> {
        chat_of(envelope).map(|chat| chat.to_string())
    }

    /// The chat's turn, taken with the claim.
    fn claim_lock(&self, envelope: &Envelope) -> Option<String> {
        chat_of(envelope).map(turn_key)
    }

    /// With `TG_SENDING_AFTER=0` every send is marked before its call, in
    /// a transaction of its own; replies then go one by one.
    fn batch_limit(&self) -> usize {
        if self.settings.sending_after.is_zero() {
            1
        } else {
            self.settings.batch_max
        }
    }

    /// A first delivery of a reply without files; retries, replays,
    /// resends, edits and deletions go one by one.
    fn batchable(&self, ctx: &Context<'_>) -> bool {
        ctx.attempt == 1
            && !ctx.delivery.from_dead_letter_queue
            && matches!(&ctx.envelope.event,
                Event::MessageOutgoing(m) if !m.resend && m.attachments.is_empty())
    }

    async fn handle_batch(
        &self,
        ctxs: &[Context<'_>],
        tx: &DatabaseTransaction,
    ) -> Result<Vec<Batched>, Failure> {
        self.deliver_batch(ctxs, tx).await
    }

    async fn handle(&self, ctx: &Context<'_>, tx: &DatabaseTransaction) -> Result<(), Failure> {
        if let Some((change, delete)) = reply_change(ctx.envelope) {
            return self.change(ctx, tx, change, delete).await;
        }
        let msg = outgoing(ctx.envelope)?;
        // The chat's turn is held: the runner took it in the claim's
        // statement (`claim_lock`).
        let Some(turn) = read_turn(tx, msg).await? else {
            return Err(Failure::permanent(format!(
                "message {} is not an outgoing reply of conversation {} in chat {}",
                msg.message_id, msg.conversation_id, msg.tg_chat_id
            )));
        };
        if turn.status == DeliveryStatus::Sent.as_str() {
            tracing::info!(message_id = %msg.message_id, "already sent; nothing to do");
            return Ok(());
        }
        if turn.status == DeliveryStatus::Failed.as_str() && !ctx.delivery.from_dead_letter_queue {
            // Failed for good, and not sent back from a dead-letter queue:
            // the redelivery of the event that failed (its dead letter was
            // published, its ack lost), or the scheduled retry of a reply an
            // operator gave up on. Not sent again; its chat goes on.
            tracing::info!(message_id = %msg.message_id, "failed for good; not sent again");
            if turn.held_after {
                hand_on(tx, msg).await?;
            }
            return Ok(());
        }
        let mut attempts = turn.attempts;
        if turn.status == DeliveryStatus::Failed.as_str() {
            // A replay from the dead-letter queue (of the original event, or
            // of the `resend` that released it from hold): the reply starts
            // over, queued in its place, with a fresh budget, and the inbox
            // is told. In a transaction of its own: the `sending` mark below
            // writes the row from another one, and would wait forever on
            // this one's row lock.
            use messages::Column;
            let reset = self.db.begin().await.map_err(Failure::from_db)?;
            messages::Entity::update_many()
                .col_expr(Column::Status, Expr::value(DeliveryStatus::Queued.as_str()))
                .col_expr(Column::Attempts, Expr::value(0))
                .col_expr(Column::Error, Expr::value(Value::String(None)))
                .col_expr(Column::RetryAt, Expr::value(Value::ChronoDateTimeUtc(None)))
                .filter(Column::Id.eq(msg.message_id))
                .filter(Column::Status.eq(DeliveryStatus::Failed.as_str()))
                .exec(&reset)
                .await?;
            set_status(
                &reset,
                msg,
                StatusChange {
                    counted: false,
                    ..StatusChange::new(DeliveryStatus::Queued)
                },
            )
            .await?;
            reset.commit().await?;
            self.relay_wake.committed();
            attempts = 0;
        }
        // A `retrying` reply is tried whenever an event for it comes: its
        // scheduled one at its time, or earlier a replay or a broker retry.
        // An early try supersedes the scheduled one (which would otherwise
        // hold back the try's own status events until its time); a try
        // that meets the same wait schedules it again.
        if turn.status == DeliveryStatus::Retrying.as_str() {
            drop_scheduled_retries(tx, msg).await?;
        }
        if turn.behind {
            messages::Entity::update_many()
                .col_expr(messages::Column::Held, Expr::value(true))
                .filter(messages::Column::Id.eq(msg.message_id))
                .exec(tx)
                .await?;
            tracing::info!(message_id = %msg.message_id, "held behind an earlier reply to the chat");
            self.metrics.count("held");
            return Ok(());
        }
        let attempt = u32::try_from(attempts).unwrap_or(0) + 1;
        // The stored text and files go out, not the event's copies of them:
        // an event is only a request to send the reply it names.
        let files = if turn.files > 0 {
            self.files_of(tx, msg).await?
        } else {
            Vec::new()
        };
        let parts = parts(msg.message_id, msg.tg_chat_id, &turn.text, files);
        let marked =
            turn.status == DeliveryStatus::Sending.as_str() && self.marked_in_batch(msg.message_id);
        match self.send(msg, &parts, marked).await? {
            SendResult::Sent {
                tg_message_id,
                sent_at,
            } => {
                set_status(
                    tx,
                    msg,
                    StatusChange {
                        tg_message_id: Some(tg_message_id),
                        sent_at: Some(sent_at),
                        ..StatusChange::new(DeliveryStatus::Sent)
                    },
                )
                .await?;
                self.metrics.count("done");
                // Only a held reply needs the turn; the others have their
                // own events coming.
                if turn.held_after {
                    self.send_held(tx, msg).await?;
                }
                Ok(())
            }
            unsent => self.settle_unsent(tx, msg, attempt, unsent).await,
        }
    }

    /// A send that failed for good (or a message the handler cannot use):
    /// the message is `failed` in its place, the chat's turn passes on, and
    /// the delivery goes to the dead-letter queue. A database error inside
    /// the handler also gets here, with `Next::RetryAt`: the message shows
    /// `retrying` while the broker's retry tier holds it. Errors at the claim
    /// or the commit never get here; they wait in a tier without a record.
    async fn on_failure(
        &self,
        ctx: &Context<'_>,
        failure: &Failure,
        next: Next,
        tx: &DatabaseTransaction,
    ) -> Result<(), DbErr> {
        if let Some((change, _)) = reply_change(ctx.envelope) {
            // The change shows `retrying` while the broker's retry tier
            // holds it, `failed` with its reason once it is dead-lettered.
            let (status, retry_at) = shown_as(next);
            set_change_status(tx, change, status, Some(failure.reason()), retry_at).await?;
            self.metrics.count(if retry_at.is_some() {
                "retry"
            } else {
                "failed"
            });
            return Ok(());
        }
        let Ok(msg) = outgoing(ctx.envelope) else {
            return Ok(());
        };
        take_turn(tx, msg.tg_chat_id).await?;
        let (status, retry_at) = shown_as(next);
        // The handler retries failed sends itself; a retry here is the
        // runner's, after a database error, which is not a try of the send.
        let Some(attempt) = set_status(
            tx,
            msg,
            StatusChange {
                error: Some(failure.reason()),
                retry_at,
                counted: retry_at.is_none(),
                ..StatusChange::new(status)
            },
        )
        .await?
        else {
            // Not one of our replies (a malformed or forged event): there
            // is no message to mark, no chat to hand on.
            tracing::warn!(message_id = %msg.message_id, "the event names no reply of its conversation and chat");
            return Ok(());
        };
        // Failed for good, or retried by the broker's tier: a retry the
        // handler scheduled earlier is not wanted either way.
        drop_scheduled_retries(tx, msg).await?;
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
            hand_on(tx, msg).await?;
            self.metrics.count("failed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u128) -> FileToSend {
        FileToSend {
            id: Uuid::from_u128(n),
            object_key: format!("attached/{n}"),
            filename: format!("{n}.pdf"),
            content_type: "application/pdf".into(),
            size: 10,
        }
    }

    #[test]
    fn a_text_reply_is_one_part_under_the_message_id() {
        let id = Uuid::from_u128(7);
        let p = parts(id, 42, "hi", vec![]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, id.to_string());
        assert_eq!(p[0].request.text, "hi");
        assert!(p[0].request.attachments.is_empty());
    }

    #[test]
    fn a_short_text_is_the_first_files_caption() {
        let id = Uuid::from_u128(7);
        let p = parts(id, 42, "homework", vec![file(1), file(2)]);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [id.to_string(), format!("{id}/{}", Uuid::from_u128(2))]
        );
        assert_eq!(p[0].request.text, "homework");
        assert_eq!(p[0].request.attachments[0].filename, "1.pdf");
        assert_eq!(p[1].request.text, "");
        assert_eq!(p[1].request.attachments[0].filename, "2.pdf");
    }

    #[test]
    fn a_text_longer_than_a_caption_goes_first_on_its_own() {
        let id = Uuid::from_u128(7);
        let long = "x".repeat(MAX_CAPTION_UTF16 + 1);
        let p = parts(id, 42, &long, vec![file(1)]);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].key, id.to_string());
        assert_eq!(p[0].request.text, long);
        assert!(p[0].request.attachments.is_empty());
        assert_eq!(p[1].key, format!("{id}/{}", Uuid::from_u128(1)));
        assert_eq!(p[1].request.text, "");
        assert_eq!(p[1].file_key.as_deref(), Some("attached/1"));
        // Exactly a caption's length still rides on the file; Telegram
        // counts UTF-16 units, so 600 emoji (1,200 units) do not.
        let fits = "y".repeat(MAX_CAPTION_UTF16);
        assert_eq!(parts(id, 42, &fits, vec![file(1)]).len(), 1);
        let emoji = "😀".repeat(600);
        assert_eq!(parts(id, 42, &emoji, vec![file(1)]).len(), 2);
    }
}
