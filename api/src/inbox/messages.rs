//! Messages of a conversation: the timeline, a message's earlier texts, and
//! what staff write (replies, sent to Telegram, and notes, kept for staff).
//!
//! A reply is a message row and a `message.outgoing.v1` outbox row written in
//! one transaction; `client_msg_id` makes the POST idempotent.

use broker_config::{
    Envelope, Event,
    events::{AttachedFile, DeliveryStatus, MessageNoteAdded, MessageOutgoing, MessageStatus},
};
use chrono::{DateTime, Utc};
use schema::entities::{message_edits, messages, users};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, JoinType, QueryFilter,
    QueryOrder, QuerySelect, RelationTrait, Select, Statement, TransactionSession,
    TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{InboxScope, conversations::visible_chat};
use crate::{
    error::{ApiError, ApiResult},
    page::{self, Page, PageRequest, TimeKey},
};

/// Telegram's limit on a message's text.
pub const MAX_TEXT_CHARS: usize = 4096;
const MAX_CLIENT_MSG_ID: usize = 100;

/// A message as the timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `in` (from the customer) or `out`.
    pub direction: String,
    /// `text` or `note` (kept for staff, never sent).
    pub kind: String,
    pub author_id: Option<Uuid>,
    /// The staff member who wrote it (outbound messages and notes).
    pub author_name: Option<String>,
    pub text: String,
    pub tg_message_id: Option<i64>,
    /// Delivery state of a reply (`queued`, `sending`, `sent`, `failed`, …);
    /// `internal` for a note.
    pub status: String,
    pub error: Option<String>,
    pub client_msg_id: Option<String>,
    pub attempts: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Set when the text was replaced (by the customer, or by an operator's
    /// edit of a reply); earlier texts are at `…/versions`.
    pub edited_at: Option<DateTime<Utc>>,
    /// Deleted in Telegram: by an operator (set when asked; `change_status`
    /// says whether Telegram has done it) or by the customer. The text stays
    /// for staff.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When the customer's read receipt covered this reply.
    pub read_at: Option<DateTime<Utc>>,
    /// An operator's pending or last change of this sent reply: `edit` or
    /// `delete` (null: none).
    pub change_kind: Option<String>,
    /// How far that change got in Telegram, as a reply's `status` does:
    /// `queued`, `sent`, `retrying` (until `change_retry_at`) or `failed`
    /// (`change_error` says why).
    pub change_status: Option<String>,
    pub change_error: Option<String>,
    pub change_retry_at: Option<DateTime<Utc>>,
    /// Its files, in order: a link to one is `GET /api/attachments/{id}/url`.
    #[sea_orm(skip)]
    #[serde(default)]
    pub attachments: Vec<MessageFile>,
}

/// A file of a message.
#[derive(Debug, Clone, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct MessageFile {
    pub id: Uuid,
    #[serde(skip)]
    #[schema(ignore)]
    pub message_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
}

/// Fills in the files of `messages`, with one query for all of them.
async fn with_files<C: ConnectionTrait>(conn: &C, messages: &mut [Message]) -> ApiResult<()> {
    use schema::entities::attachments::{Column, Entity};
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let files = Entity::find()
        .select_only()
        .columns([
            Column::Id,
            Column::MessageId,
            Column::Filename,
            Column::ContentType,
            Column::SizeBytes,
        ])
        .filter(schema::finders::any_of(Column::MessageId, &ids))
        .order_by_asc(Column::Position)
        .order_by_asc(Column::Id)
        .into_model::<MessageFile>()
        .all(conn)
        .await?;
    for file in files {
        if let Some(m) = messages.iter_mut().find(|m| m.id == file.message_id) {
            m.attachments.push(file);
        }
    }
    Ok(())
}

/// Messages with their author's name, as [`Message`] reads them.
fn timeline(query: Select<messages::Entity>) -> Select<messages::Entity> {
    query
        .join(JoinType::LeftJoin, messages::Relation::Users.def())
        .column_as(users::Column::DisplayName, "author_name")
}

/// One message.
pub async fn load<C: ConnectionTrait>(conn: &C, id: Uuid) -> ApiResult<Option<Message>> {
    let Some(message) = timeline(messages::Entity::find_by_id(id))
        .into_model::<Message>()
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    let mut one = [message];
    with_files(conn, &mut one).await?;
    let [message] = one;
    Ok(Some(message))
}

/// Messages by id, for the realtime gateway (those that exist).
pub async fn load_many<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
) -> ApiResult<std::collections::HashMap<Uuid, Message>> {
    let mut found = timeline(messages::Entity::find())
        .filter(schema::finders::any_of(messages::Column::Id, ids))
        .into_model::<Message>()
        .all(conn)
        .await?;
    with_files(conn, &mut found).await?;
    Ok(found.into_iter().map(|m| (m.id, m)).collect())
}

/// Newest first; the cursor pages towards older messages.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    conversation: Uuid,
    scope: InboxScope,
    page: PageRequest<TimeKey>,
) -> ApiResult<Page<Message>> {
    use messages::Column;
    visible_chat(conn, conversation, scope).await?;
    let mut query = messages::Entity::of_conversation(conversation);
    if let Some((at, id)) = page.after {
        query = query.filter(
            Expr::tuple([
                Expr::col((messages::Entity, Column::CreatedAt)),
                Expr::col((messages::Entity, Column::Id)),
            ])
            .lt(Expr::tuple([Expr::value(at), Expr::value(id)])),
        );
    }
    let mut rows = timeline(query)
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .limit(page.fetch())
        .into_model::<Message>()
        .all(conn)
        .await?;
    with_files(conn, &mut rows).await?;
    Ok(page.page(rows, |m| page::encode((m.created_at, m.id))))
}

/// An earlier text of a message.
#[derive(Debug, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct Version {
    pub text: String,
    /// When a later edit replaced this text.
    pub replaced_at: DateTime<Utc>,
}

/// A message's current text and every text it replaced.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Versions {
    pub message_id: Uuid,
    pub text: String,
    pub edited_at: Option<DateTime<Utc>>,
    /// Earlier texts, oldest first.
    pub previous: Vec<Version>,
}

pub async fn versions<C: ConnectionTrait>(
    conn: &C,
    conversation: Uuid,
    message: Uuid,
    scope: InboxScope,
) -> ApiResult<Versions> {
    visible_chat(conn, conversation, scope).await?;
    let (text, edited_at) = messages::Entity::of_conversation(conversation)
        .filter(messages::Column::Id.eq(message))
        .select_only()
        .columns([messages::Column::Text, messages::Column::EditedAt])
        .into_tuple::<(String, Option<DateTime<Utc>>)>()
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound { what: "message" })?;
    let previous = message_edits::Entity::find()
        .filter(message_edits::Column::MessageId.eq(message))
        .order_by_asc(message_edits::Column::Id)
        .into_model::<Version>()
        .all(conn)
        .await?;
    Ok(Versions {
        message_id: message,
        text,
        edited_at,
        previous,
    })
}

/// What a staff member writes into a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sent to Telegram.
    Reply,
    /// Kept for staff, never sent.
    Note,
}

impl Kind {
    /// The row's `kind` and first `status`.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Kind::Reply => ("text", "queued"),
            Kind::Note => ("note", "internal"),
        }
    }
}

/// A reply or note as asked, before it is checked.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Draft {
    /// Up to 4096 characters, no NUL; not only whitespace unless the
    /// reply carries files.
    #[serde(default)]
    #[schema(max_length = 4096, pattern = r"^[^\x00]*$")]
    pub text: String,
    /// Files to send with a reply (not with a note), in order: up to 10
    /// distinct uploads of the caller's (`POST /api/attachments`) that no
    /// message took yet. With files, `text` may be empty.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub attachment_ids: Vec<Uuid>,
    /// The client's id for this message, 1 to 100 characters: a POST
    /// repeated with the same one answers the message it created.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub client_msg_id: String,
}

/// A checked reply or note.
#[derive(Debug)]
pub struct Writing {
    text: String,
    client_msg_id: String,
    attachment_ids: Vec<Uuid>,
}

impl TryFrom<Draft> for Writing {
    type Error = ApiError;

    fn try_from(input: Draft) -> Result<Self, ApiError> {
        let invalid = |code, message: &str| ApiError::Unprocessable {
            code,
            message: message.to_owned(),
        };
        if input.attachment_ids.len() > crate::attachments::MAX_PER_MESSAGE {
            return Err(invalid(
                "too_many_attachments",
                "a message carries at most 10 attachments",
            ));
        }
        let mut distinct = input.attachment_ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != input.attachment_ids.len() {
            return Err(invalid(
                "duplicate_attachment",
                "an attachment is listed twice",
            ));
        }
        if input.text.trim().is_empty() && input.attachment_ids.is_empty() {
            return Err(invalid("empty_text", "text must not be empty"));
        }
        if input.text.contains('\0') {
            return Err(invalid(
                "invalid_text",
                "text must not contain NUL characters",
            ));
        }
        // A reply of files alone has no text, rather than blanks.
        let text = if input.text.trim().is_empty() {
            String::new()
        } else {
            input.text
        };
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(invalid(
                "text_too_long",
                "text is longer than Telegram's 4096 characters",
            ));
        }
        let client_msg_id = input.client_msg_id.trim().to_owned();
        if client_msg_id.is_empty()
            || client_msg_id.len() > MAX_CLIENT_MSG_ID
            || client_msg_id.chars().any(char::is_control)
        {
            return Err(invalid(
                "invalid_client_msg_id",
                "client_msg_id must be 1 to 100 characters, none of them control characters",
            ));
        }
        Ok(Writing {
            text,
            client_msg_id,
            attachment_ids: input.attachment_ids,
        })
    }
}

/// What [`write`] did.
#[derive(Debug)]
pub enum Written {
    /// A new message, with its outbox row.
    Created(Message),
    /// A retry of an earlier POST: what that one created.
    Repeated(Message),
}

/// The columns of an inserted message, as [`Message`] reads them.
const RETURNING: &str = "RETURNING id, conversation_id, direction, kind, author_id,
   (SELECT display_name FROM users WHERE users.id = author_id) AS author_name,
   text, tg_message_id, status, error, client_msg_id, attempts, retry_at, created_at, sent_at, edited_at,
   deleted_at, read_at, change_kind, change_status, change_error, change_retry_at";

/// The insert of a note, with its author's name, in one round trip; a
/// repeated `client_msg_id` inserts nothing.
const INSERT_NOTE: &str = "INSERT INTO messages (id, conversation_id, direction, kind, author_id, text, status, client_msg_id, created_at)
 VALUES ($1, $2, 'out', $6, $3, $4, $7, $5, clock_timestamp())
 ON CONFLICT (conversation_id, client_msg_id) DO NOTHING";

/// A reply in one round trip: the conversation's bump (last activity), which
/// also checks the caller's scope (`$8`: the assignee the caller is limited
/// to) and reads the chat and assignee for the event, then the insert with
/// its author's name. The bump's row lock orders concurrent replies to the
/// chat: the insert reads the bump's row before it forms its own, so each
/// reply is stamped with the clock once it holds the lock, and `created_at`
/// is send order. No row back: out of scope, or a repeated `client_msg_id`.
const INSERT_REPLY: &str = "WITH bump AS (
   UPDATE conversations SET last_message_at = now(), updated_at = now()
   WHERE id = $2 AND ($8::uuid IS NULL OR assignee_id = $8)
   RETURNING tg_chat_id, assignee_id)
 INSERT INTO messages (id, conversation_id, direction, kind, author_id, text, status, client_msg_id, created_at)
 SELECT $1, $2, 'out', $6, $3, $4, $7, $5, clock_timestamp() FROM bump
 ON CONFLICT (conversation_id, client_msg_id) DO NOTHING";

/// The message an earlier POST with `writing`'s `client_msg_id` created in
/// the conversation, once the conversation is found in the caller's scope;
/// 409 when that id was used for a different message.
async fn earlier<C: ConnectionTrait>(
    conn: &C,
    conversation: Uuid,
    scope: InboxScope,
    writing: &Writing,
    kind: Kind,
) -> ApiResult<Option<Message>> {
    visible_chat(conn, conversation, scope).await?;
    let existing = timeline(messages::Entity::of_conversation(conversation))
        .filter(messages::Column::ClientMsgId.eq(writing.client_msg_id.as_str()))
        .into_model::<Message>()
        .one(conn)
        .await?;
    let Some(existing) = existing else {
        return Ok(None);
    };
    let mut one = [existing];
    with_files(conn, &mut one).await?;
    let [existing] = one;
    let same_files = existing
        .attachments
        .iter()
        .map(|f| f.id)
        .eq(writing.attachment_ids.iter().copied());
    if existing.text != writing.text || existing.kind != kind.columns().0 || !same_files {
        return Err(ApiError::Conflict {
            code: "client_msg_id_reused",
            message: "client_msg_id was already used for a different message".into(),
        });
    }
    Ok(Some(existing))
}

/// Writes a reply or note by `author` into a conversation in the caller's
/// scope, with its outbox event, in one transaction. A reply's files are
/// checked and pinned first ([`crate::attachments::pin`]) and attached in
/// the same transaction; a message not written leaves no copy behind.
pub async fn write<C: TransactionTrait + ConnectionTrait>(
    db: &C,
    files: &crate::attachments::Attachments,
    author: Uuid,
    conversation: Uuid,
    scope: InboxScope,
    writing: Writing,
    kind: Kind,
) -> ApiResult<Written> {
    if writing.attachment_ids.is_empty() {
        return write_message(db, author, conversation, scope, writing, kind, &[]).await;
    }
    if kind == Kind::Note {
        return Err(ApiError::Unprocessable {
            code: "attachments_on_note",
            message: "a note carries text only; send files with a reply".into(),
        });
    }
    // A repeated POST answers what the first one created: its files are
    // that message's by now.
    if let Some(existing) = earlier(db, conversation, scope, &writing, kind).await? {
        return Ok(Written::Repeated(existing));
    }
    let pinned = match crate::attachments::pin(db, files, author, &writing.attachment_ids).await {
        Ok(pinned) => pinned,
        // The same POST racing this one may have taken the files: then
        // this one answers what it created.
        Err(refused) => {
            return match earlier(db, conversation, scope, &writing, kind).await? {
                Some(existing) => Ok(Written::Repeated(existing)),
                None => Err(refused),
            };
        }
    };
    match write_message(db, author, conversation, scope, writing, kind, &pinned).await {
        Ok(written) => {
            if matches!(written, Written::Created(_)) {
                crate::attachments::release_uploads(files.store.as_ref(), &pinned).await;
            } else {
                crate::attachments::unpin(files.store.as_ref(), &pinned).await;
            }
            Ok(written)
        }
        Err(e) => {
            crate::attachments::unpin(files.store.as_ref(), &pinned).await;
            Err(e)
        }
    }
}

/// A UTC time as the API's JSON writes it (chrono's RFC 3339: no fraction,
/// or 3 or 6 digits, whichever is shortest and exact, then `Z`), as a SQL
/// expression of the `timestamptz` expression `t` (null for null).
pub fn json_time(t: &str) -> String {
    let us = format!("extract(microseconds FROM {t})::bigint % 1000000");
    format!(
        "(to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE \
         WHEN {us} = 0 THEN '' \
         WHEN {us} % 1000 = 0 THEN '.' || lpad(({us} / 1000)::text, 3, '0') \
         ELSE '.' || lpad(({us})::text, 6, '0') END || 'Z')"
    )
}

/// A reply as [`Message`] renders it, in SQL, from the `change` row of
/// [`REPLY_IN_ONE`]: the event's `view`. The e2e test
/// `a_replys_view_is_its_json` holds the two together.
static REPLY_VIEW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "jsonb_build_object('id', change.id, 'conversation_id', change.conversation_id, \
         'direction', change.direction, 'kind', change.kind, 'author_id', change.author_id, \
         'author_name', change.author_name, 'text', change.text, 'tg_message_id', change.tg_message_id, \
         'status', change.status, 'error', change.error, 'client_msg_id', change.client_msg_id, \
         'attempts', change.attempts, 'retry_at', {}, 'created_at', {}, 'sent_at', {}, \
         'edited_at', {}, 'deleted_at', {}, 'read_at', {}, 'change_kind', change.change_kind, \
         'change_status', change.change_status, 'change_error', change.change_error, \
         'change_retry_at', {}, 'attachments', '[]'::jsonb)",
        json_time("change.retry_at"),
        json_time("change.created_at"),
        json_time("change.sent_at"),
        json_time("change.edited_at"),
        json_time("change.deleted_at"),
        json_time("change.read_at"),
        json_time("change.change_retry_at"),
    )
});

/// A reply without files in one statement, outside any transaction (so one
/// round trip in all, its commit included): the conversation's bump, the
/// insert and, through [`schema::enqueue_with_change`], its outbox row. The
/// bump skips a repeated `client_msg_id` (it would otherwise move the
/// conversation's last activity for a message that is not new).
const REPLY_IN_ONE: &str = "bump AS (
   UPDATE conversations SET last_message_at = now(), updated_at = now()
   WHERE id = $2 AND ($8::uuid IS NULL OR assignee_id = $8)
     AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = $2 AND m.client_msg_id = $5)
   RETURNING tg_chat_id, assignee_id),
 change AS (
   INSERT INTO messages (id, conversation_id, direction, kind, author_id, text, status, client_msg_id, created_at)
   SELECT $1, $2, 'out', $6, $3, $4, $7, $5, clock_timestamp() FROM bump
   ON CONFLICT (conversation_id, client_msg_id) DO NOTHING
   RETURNING id, conversation_id, direction, kind, author_id,
     (SELECT display_name FROM users WHERE users.id = author_id) AS author_name,
     text, tg_message_id, status, error, client_msg_id, attempts, retry_at, created_at, sent_at, edited_at,
     deleted_at, read_at, change_kind, change_status, change_error, change_retry_at,
     (SELECT tg_chat_id FROM bump) AS chat_tg_chat_id, (SELECT assignee_id FROM bump) AS chat_assignee_id)";

/// `$1`..`$7` of the inserts of a message: id, conversation, author, text,
/// client_msg_id, kind, status.
fn message_values(
    id: Uuid,
    conversation: Uuid,
    author: Uuid,
    writing: &Writing,
    kind: Kind,
) -> Vec<sea_orm::Value> {
    let (kind_col, status) = kind.columns();
    vec![
        id.into(),
        conversation.into(),
        author.into(),
        writing.text.clone().into(),
        writing.client_msg_id.clone().into(),
        kind_col.into(),
        status.into(),
    ]
}

/// A reply without files: [`REPLY_IN_ONE`], then, only when it wrote
/// nothing, the read that tells a repeated POST from a conversation out of
/// scope.
async fn write_reply_in_one<C: ConnectionTrait>(
    db: &C,
    author: Uuid,
    conversation: Uuid,
    scope: InboxScope,
    writing: Writing,
) -> ApiResult<Written> {
    let id = Uuid::now_v7();
    let mut values = message_values(id, conversation, author, &writing, Kind::Reply);
    values.push(scope.assignee().into());
    // The chat, the assignee and the rendering come from the row.
    let event = Envelope::new(Event::MessageOutgoing(MessageOutgoing {
        message_id: id,
        conversation_id: conversation,
        tg_chat_id: 0,
        text: writing.text.clone(),
        attachments: vec![],
        assignee_id: None,
        resend: false,
        view: None,
    }));
    let row = schema::enqueue_with_change(
        db,
        REPLY_IN_ONE,
        values,
        &event,
        &[
            ("tg_chat_id", "change.chat_tg_chat_id"),
            ("assignee_id", "change.chat_assignee_id"),
            ("view", REPLY_VIEW.as_str()),
        ],
    )
    .await?;
    match row {
        Some(row) => Ok(Written::Created(Message::from_query_result(&row, "")?)),
        None => {
            let existing = earlier(db, conversation, scope, &writing, Kind::Reply)
                .await?
                .ok_or(ApiError::NotFound { what: "message" })?;
            Ok(Written::Repeated(existing))
        }
    }
}

async fn write_message<C: TransactionTrait + ConnectionTrait>(
    db: &C,
    author: Uuid,
    conversation: Uuid,
    scope: InboxScope,
    writing: Writing,
    kind: Kind,
    pinned: &[crate::attachments::Pinned],
) -> ApiResult<Written> {
    if kind == Kind::Reply && pinned.is_empty() {
        return write_reply_in_one(db, author, conversation, scope, writing).await;
    }
    let tx = db.begin().await?;
    let mut values = message_values(Uuid::now_v7(), conversation, author, &writing, kind);
    // The new message with its chat and the conversation's assignee.
    let inserted: Option<(Message, i64, Option<Uuid>)> = match kind {
        Kind::Reply => {
            values.push(scope.assignee().into());
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "{INSERT_REPLY} {RETURNING},
   (SELECT tg_chat_id FROM bump) AS chat_tg_chat_id, (SELECT assignee_id FROM bump) AS chat_assignee_id"
                    ),
                    values,
                ))
                .await?;
            match row {
                Some(row) => Some((
                    Message::from_query_result(&row, "")?,
                    row.try_get("", "chat_tg_chat_id")?,
                    row.try_get("", "chat_assignee_id")?,
                )),
                None => None,
            }
        }
        Kind::Note => {
            let chat = visible_chat(&tx, conversation, scope).await?;
            Message::find_by_statement(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("{INSERT_NOTE} {RETURNING}"),
                values,
            ))
            .one(&tx)
            .await?
            .map(|m| (m, chat.tg_chat_id, chat.assignee_id))
        }
    };
    let Some((message, tg_chat_id, assignee_id)) = inserted else {
        // No row: a conversation out of the caller's scope (404), or a
        // repeated POST of one in it.
        let existing = earlier(&tx, conversation, scope, &writing, kind)
            .await?
            .ok_or(ApiError::NotFound { what: "message" })?;
        tx.rollback().await?;
        return Ok(Written::Repeated(existing));
    };
    crate::attachments::attach(&tx, author, message.id, pinned).await?;
    let mut message = message;
    message.attachments = pinned
        .iter()
        .map(|p| MessageFile {
            id: p.id,
            message_id: message.id,
            filename: p.filename.clone(),
            content_type: p.content_type.clone(),
            size_bytes: p.size,
        })
        .collect();
    // The message as this POST answers it: realtime gateways send it as
    // it is instead of reading the row back.
    let view = serde_json::to_value(&message).ok();
    let event = match kind {
        Kind::Reply => Event::MessageOutgoing(MessageOutgoing {
            message_id: message.id,
            conversation_id: conversation,
            tg_chat_id,
            text: message.text.clone(),
            attachments: pinned
                .iter()
                .map(|p| AttachedFile {
                    id: p.id,
                    filename: p.filename.clone(),
                    content_type: p.content_type.clone(),
                    size: p.size,
                })
                .collect(),
            assignee_id,
            resend: false,
            view,
        }),
        Kind::Note => Event::MessageNoteAdded(MessageNoteAdded {
            message_id: message.id,
            conversation_id: conversation,
            author_id: author,
            preview: message.text.chars().take(120).collect(),
            assignee_id,
            view,
        }),
    };
    schema::enqueue(&tx, &Envelope::new(event)).await?;
    tx.commit().await?;
    Ok(Written::Created(message))
}

/// Sends again a reply that failed at Telegram (`failed`), in the caller's
/// scope: the reply is `queued` again, with a fresh attempt budget, in its
/// place in its chat's order, and a `message.outgoing.v1` asks tg-delivery to
/// send it; one transaction, audited. It can never go out twice: only a
/// `failed` reply is taken (a second retry meets `queued` and is refused),
/// tg-delivery sends nothing for a reply already `sent`, and the adapter
/// sends at most once per message id. The reply's dead letter, if replayed
/// later, finds it sent and does nothing.
pub async fn retry<C: TransactionTrait>(
    db: &C,
    actor: Option<Uuid>,
    conversation: Uuid,
    message: Uuid,
    scope: InboxScope,
) -> ApiResult<Message> {
    use messages::Column;
    let tx = db.begin().await?;
    let chat = visible_chat(&tx, conversation, scope).await?;
    let retried = messages::Entity::update_many()
        .col_expr(Column::Status, Expr::value(DeliveryStatus::Queued.as_str()))
        .col_expr(Column::Attempts, Expr::value(0))
        .col_expr(Column::Error, Expr::value(sea_orm::Value::String(None)))
        .col_expr(
            Column::RetryAt,
            Expr::value(sea_orm::Value::ChronoDateTimeUtc(None)),
        )
        .col_expr(Column::Held, Expr::value(false))
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.eq(message))
        .filter(Column::ConversationId.eq(conversation))
        .filter(Column::Direction.eq("out"))
        .filter(Column::Kind.eq("text"))
        .filter(Column::Status.eq(DeliveryStatus::Failed.as_str()))
        .exec(&tx)
        .await?
        .rows_affected;
    let Some(row) = load(&tx, message)
        .await?
        .filter(|m| m.conversation_id == conversation)
    else {
        return Err(ApiError::NotFound { what: "message" });
    };
    if retried == 0 {
        return Err(ApiError::Conflict {
            code: "not_failed",
            message: format!(
                "only a reply that failed at Telegram can be retried; this message is {}",
                if row.kind == "text" && row.direction == "out" {
                    row.status.as_str()
                } else {
                    "not a reply"
                }
            ),
        });
    }
    let status = Event::MessageStatus(MessageStatus {
        message_id: message,
        conversation_id: conversation,
        status: DeliveryStatus::Queued,
        tg_message_id: None,
        error: None,
        attempt: 0,
        retry_at: None,
        assignee_id: chat.assignee_id,
    });
    let send = Event::MessageOutgoing(MessageOutgoing {
        message_id: message,
        conversation_id: conversation,
        tg_chat_id: chat.tg_chat_id,
        text: row.text.clone(),
        attachments: vec![],
        assignee_id: chat.assignee_id,
        resend: false,
        view: None,
    });
    schema::enqueue(&tx, &Envelope::new(status)).await?;
    schema::enqueue(&tx, &Envelope::new(send)).await?;
    crate::audit::Entry::new(
        actor,
        "message.retry",
        crate::audit::Target::new("message", message),
    )
    .before(Some(serde_json::json!({"status": "failed"})))
    .after(Some(
        serde_json::json!({"status": "queued", "conversation_id": conversation}),
    ))
    .write(&tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// The replies that failed at Telegram, oldest first, optionally of one
/// conversation and failed at or after `since`: `(conversation, message)`.
pub async fn failed_replies<C: ConnectionTrait>(
    conn: &C,
    conversation: Option<Uuid>,
    since: Option<DateTime<Utc>>,
) -> ApiResult<Vec<(Uuid, Uuid)>> {
    use messages::Column;
    let mut query = messages::Entity::find()
        .filter(Column::Direction.eq("out"))
        .filter(Column::Kind.eq("text"))
        .filter(Column::Status.eq(DeliveryStatus::Failed.as_str()));
    if let Some(c) = conversation {
        query = query.filter(Column::ConversationId.eq(c));
    }
    if let Some(since) = since {
        query = query.filter(Column::UpdatedAt.gte(since));
    }
    Ok(query
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .select_only()
        .columns([Column::ConversationId, Column::Id])
        .into_tuple()
        .all(conn)
        .await?)
}
