//! `GET/POST /api/conversations/{id}/messages`: the timeline and replies.
//!
//! A reply is a message row and a `message.outgoing.v1` outbox row written in
//! one transaction; `client_msg_id` makes the POST idempotent.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use broker_config::{
    Envelope, Event,
    events::{MessageNoteAdded, MessageOutgoing},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    conversations::{Page, visible_chat},
    cursor,
};
use crate::{
    AppState,
    authz::pep::Principal,
    error::{ApiError, ApiResult},
};

/// Telegram's limit on a message's text.
pub const MAX_TEXT_CHARS: usize = 4096;
const MAX_CLIENT_MSG_ID: usize = 100;

#[derive(Serialize, sqlx::FromRow, Clone)]
pub struct MessageOut {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub direction: String,
    pub kind: String,
    pub author_id: Option<Uuid>,
    /// The staff member who wrote it (outbound messages and notes).
    pub author_name: Option<String>,
    pub text: String,
    pub tg_message_id: Option<i64>,
    pub status: String,
    pub error: Option<String>,
    pub client_msg_id: Option<String>,
    pub attempts: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Set when the customer edited it; earlier texts are at `…/versions`.
    pub edited_at: Option<DateTime<Utc>>,
}

/// The columns of [`MessageOut`], as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, conversation_id, direction, kind, author_id,
         (SELECT display_name FROM users WHERE users.id = author_id) AS author_name,
         text, tg_message_id, status, error,
         client_msg_id, attempts, retry_at, created_at, sent_at, edited_at"
    };
}

/// One message as the timeline shows it, for the realtime gateway.
pub async fn load_one(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<MessageOut>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

#[derive(Serialize, sqlx::FromRow)]
pub struct VersionOut {
    pub text: String,
    /// When a later edit replaced this text.
    pub replaced_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct VersionsOut {
    pub message_id: Uuid,
    pub text: String,
    pub edited_at: Option<DateTime<Utc>>,
    /// Earlier texts, oldest first.
    pub previous: Vec<VersionOut>,
}

/// `GET /conversations/{id}/messages/{message_id}/versions`: a message's
/// current text and every text it replaced.
pub async fn versions(
    caller: Principal,
    State(state): State<AppState>,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<VersionsOut>> {
    let scope = caller.inbox_scope()?;
    let mut conn = state.pool.acquire().await?;
    visible_chat(&mut conn, conversation_id, scope).await?;
    let (text, edited_at): (String, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT text, edited_at FROM messages WHERE id = $1 AND conversation_id = $2",
    )
    .bind(message_id)
    .bind(conversation_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ApiError::NotFound { what: "message" })?;
    let previous = sqlx::query_as(
        "SELECT text, replaced_at FROM message_edits WHERE message_id = $1 ORDER BY id",
    )
    .bind(message_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(VersionsOut {
        message_id,
        text,
        edited_at,
        previous,
    }))
}

#[derive(Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Newest first; `next_cursor` pages towards older messages.
pub async fn list(
    caller: Principal,
    State(state): State<AppState>,
    Path(conversation_id): Path<Uuid>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<MessageOut>>> {
    let scope = caller.inbox_scope()?;
    let limit = cursor::limit(q.limit)?;
    let before = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let mut conn = state.pool.acquire().await?;
    visible_chat(&mut conn, conversation_id, scope).await?;
    let mut items: Vec<MessageOut> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages
         WHERE conversation_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    ))
    .bind(conversation_id)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let next_cursor = cursor::page(&mut items, limit, |m| (m.created_at, m.id));
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Deserialize)]
pub struct CreateIn {
    pub text: String,
    #[serde(default)]
    pub attachment_ids: Vec<Uuid>,
    pub client_msg_id: String,
}

/// Parsed and checked reply.
struct Reply {
    text: String,
    client_msg_id: String,
}

impl TryFrom<CreateIn> for Reply {
    type Error = ApiError;

    fn try_from(input: CreateIn) -> Result<Self, ApiError> {
        let invalid = |code, message: &str| ApiError::Unprocessable {
            code,
            message: message.to_owned(),
        };
        if !input.attachment_ids.is_empty() {
            return Err(invalid(
                "attachments_unavailable",
                "attachments cannot be sent yet; send text only",
            ));
        }
        if input.text.trim().is_empty() {
            return Err(invalid("empty_text", "text must not be empty"));
        }
        if input.text.contains('\0') {
            return Err(invalid(
                "invalid_text",
                "text must not contain NUL characters",
            ));
        }
        if input.text.chars().count() > MAX_TEXT_CHARS {
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
        Ok(Reply {
            text: input.text,
            client_msg_id,
        })
    }
}

/// What a staff member writes into a conversation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Sent to Telegram.
    Reply,
    /// Kept for staff, never sent.
    Note,
}

/// `POST /conversations/{id}/messages` (`inbox.reply`, within the caller's
/// inbox scope).
pub async fn create(
    caller: Principal,
    State(state): State<AppState>,
    Path(conversation_id): Path<Uuid>,
    Json(input): Json<CreateIn>,
) -> ApiResult<(StatusCode, Json<MessageOut>)> {
    write(caller, state, conversation_id, input, Kind::Reply).await
}

/// `POST /conversations/{id}/notes` (`inbox.reply`): a private note.
pub async fn create_note(
    caller: Principal,
    State(state): State<AppState>,
    Path(conversation_id): Path<Uuid>,
    Json(input): Json<CreateIn>,
) -> ApiResult<(StatusCode, Json<MessageOut>)> {
    let (_, Json(note)) = write(caller, state, conversation_id, input, Kind::Note).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn write(
    caller: Principal,
    state: AppState,
    conversation_id: Uuid,
    input: CreateIn,
    kind: Kind,
) -> ApiResult<(StatusCode, Json<MessageOut>)> {
    let scope = caller.inbox_scope()?;
    let reply = Reply::try_from(input)?;
    let mut tx = state.pool.begin().await?;
    // A reply bumps the conversation's last activity; the same statement
    // checks the caller's scope and reads the chat (one round trip). Its row
    // lock orders concurrent replies to the chat: each is stamped with the
    // clock once it holds the lock, so `created_at` is send order.
    let chat = match kind {
        Kind::Reply => sqlx::query_as(
            "UPDATE conversations SET last_message_at = now(), updated_at = now()
             WHERE id = $1 AND ($2::uuid IS NULL OR assignee_id = $2)
             RETURNING tg_chat_id, assignee_id",
        )
        .bind(conversation_id)
        .bind(scope.assignee())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound {
            what: "conversation",
        })?,
        Kind::Note => visible_chat(&mut tx, conversation_id, scope).await?,
    };
    let (kind_col, status) = match kind {
        Kind::Reply => ("text", "queued"),
        Kind::Note => ("note", "internal"),
    };
    let inserted: Option<MessageOut> = sqlx::query_as(concat!(
        "INSERT INTO messages (id, conversation_id, direction, kind, author_id, text, status, client_msg_id, created_at)
         VALUES ($1, $2, 'out', $6, $3, $4, $7, $5, clock_timestamp())
         ON CONFLICT (conversation_id, client_msg_id) DO NOTHING
         RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(conversation_id)
    .bind(caller.id)
    .bind(&reply.text)
    .bind(&reply.client_msg_id)
    .bind(kind_col)
    .bind(status)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(message) = inserted else {
        // A retry of an earlier POST: answer with what it created.
        let existing: MessageOut = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM messages WHERE conversation_id = $1 AND client_msg_id = $2"
        ))
        .bind(conversation_id)
        .bind(&reply.client_msg_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.rollback().await?;
        if existing.text != reply.text || existing.kind != kind_col {
            return Err(ApiError::Conflict {
                code: "client_msg_id_reused",
                message: "client_msg_id was already used for a different message".into(),
            });
        }
        return Ok((StatusCode::ACCEPTED, Json(existing)));
    };
    let assignee_id = chat.assignee_id;
    let event = match kind {
        Kind::Reply => Event::MessageOutgoing(MessageOutgoing {
            message_id: message.id,
            conversation_id,
            tg_chat_id: chat.tg_chat_id,
            text: message.text.clone(),
            attachments: vec![],
            assignee_id,
            resend: false,
        }),
        Kind::Note => Event::MessageNoteAdded(MessageNoteAdded {
            message_id: message.id,
            conversation_id,
            author_id: caller.id,
            preview: message.text.chars().take(120).collect(),
            assignee_id,
        }),
    };
    schema::enqueue(&mut tx, &Envelope::new(event)).await?;
    tx.commit().await?;
    state.relay_wake.committed();
    Ok((StatusCode::ACCEPTED, Json(message)))
}
