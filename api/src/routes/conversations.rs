//! `/api/conversations`: the shared inbox. The list with its filters and
//! per-user unread counts, one conversation, assignment / status / snooze,
//! and read marks. Everything is restricted to the caller's inbox scope.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use broker_config::{Event, events::ConversationUpdated};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::cursor;
use crate::{
    AppState,
    authz::{InboxScope, Perm, change::audit, pep::Principal},
    error::{ApiError, ApiResult},
};

#[derive(Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    /// `mine`, `unassigned` or a user id.
    pub assignee: Option<String>,
    /// Only conversations with inbound messages the caller has not read.
    #[serde(default)]
    pub unread: bool,
    /// Text search over the contact's name, the title and message texts.
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct ConversationOut {
    pub id: Uuid,
    pub tg_chat_id: i64,
    pub title: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub contact_id: Option<Uuid>,
    pub contact_username: Option<String>,
    pub contact_first_name: Option<String>,
    pub contact_last_name: Option<String>,
    /// Inbound messages newer than the caller's read mark.
    pub unread_count: i64,
}

#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub const STATUSES: [&str; 4] = ["open", "pending", "resolved", "snoozed"];

/// Columns of [`ConversationOut`] for the caller `$1`, as a literal.
macro_rules! select_conversations {
    () => {
        "SELECT c.id, c.tg_chat_id, c.title, c.status, c.assignee_id, c.snoozed_until,
                c.last_message_at, c.created_at, c.contact_id,
                k.username AS contact_username, k.first_name AS contact_first_name,
                k.last_name AS contact_last_name,
                (SELECT count(*) FROM messages m
                  WHERE m.conversation_id = c.id AND m.direction = 'in'
                    AND m.created_at > COALESCE(r.last_read_at, '-infinity')) AS unread_count
         FROM conversations c
         LEFT JOIN contacts k ON k.id = c.contact_id
         LEFT JOIN conversation_reads r ON r.conversation_id = c.id AND r.user_id = $1"
    };
}

/// `%text%` for ILIKE, with the pattern characters escaped.
fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// `GET /conversations`: newest activity first, keyset-paginated.
pub async fn list(
    caller: Principal,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<ConversationOut>>> {
    let scope = caller.inbox_scope()?;
    let limit = cursor::limit(q.limit)?;
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be one of open, pending, resolved, snoozed",
        ));
    }
    let (assignee, unassigned) = match q.assignee.as_deref() {
        None => (None, false),
        Some("mine") => (Some(caller.id), false),
        Some("unassigned") => (None, true),
        Some(other) => (
            Some(Uuid::parse_str(other).map_err(|_| {
                ApiError::bad_request(
                    "invalid_assignee",
                    "assignee must be mine, unassigned or a user id",
                )
            })?),
            false,
        ),
    };
    let search =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.chars().count() > 200 || s.contains('\0') {
                    Err(ApiError::Unprocessable {
                        code: "invalid_query",
                        message: "q must be at most 200 characters, with no NUL character".into(),
                    })
                } else {
                    Ok(like_pattern(s))
                }
            })
            .transpose()?;
    let after = q.cursor.as_deref().map(cursor::decode).transpose()?;
    let mut items: Vec<ConversationOut> = sqlx::query_as(concat!(
        select_conversations!(),
        " WHERE ($2::text IS NULL OR c.status = $2)
           AND ($3::timestamptz IS NULL OR (c.last_message_at, c.id) < ($3, $4))
           AND ($6::uuid IS NULL OR c.assignee_id = $6)
           AND ($7::uuid IS NULL OR c.assignee_id = $7)
           AND (NOT $8 OR c.assignee_id IS NULL)
           AND (NOT $9 OR EXISTS (SELECT 1 FROM messages m
                 WHERE m.conversation_id = c.id AND m.direction = 'in'
                   AND m.created_at > COALESCE(r.last_read_at, '-infinity')))
           AND ($10::text IS NULL
                OR c.title ILIKE $10
                OR (coalesce(k.first_name, '') || ' ' || coalesce(k.last_name, '') || ' ' || coalesce(k.username, '')) ILIKE $10
                OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.text ILIKE $10))
         ORDER BY c.last_message_at DESC, c.id DESC
         LIMIT $5"
    ))
    .bind(caller.id)
    .bind(&q.status)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .bind(scope.assignee())
    .bind(assignee)
    .bind(unassigned)
    .bind(q.unread)
    .bind(&search)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = cursor::page(&mut items, limit, |c| (c.last_message_at, c.id));
    Ok(Json(Page { items, next_cursor }))
}

async fn load(
    conn: &mut sqlx::PgConnection,
    caller: Uuid,
    id: Uuid,
    scope: InboxScope,
) -> ApiResult<ConversationOut> {
    sqlx::query_as(concat!(
        select_conversations!(),
        " WHERE c.id = $2 AND ($3::uuid IS NULL OR c.assignee_id = $3)"
    ))
    .bind(caller)
    .bind(id)
    .bind(scope.assignee())
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound {
        what: "conversation",
    })
}

/// `GET /conversations/{id}`.
pub async fn get(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ConversationOut>> {
    let scope = caller.inbox_scope()?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(load(&mut conn, caller.id, id, scope).await?))
}

/// The Telegram chat and assignee of a conversation.
#[derive(sqlx::FromRow)]
pub struct Chat {
    pub tg_chat_id: i64,
    pub assignee_id: Option<Uuid>,
}

/// The chat of a conversation the caller may read; 404 for one that does not
/// exist or is out of scope (its existence is not revealed).
pub async fn visible_chat(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    scope: InboxScope,
) -> ApiResult<Chat> {
    sqlx::query_as(
        "SELECT tg_chat_id, assignee_id FROM conversations WHERE id = $1 AND ($2::uuid IS NULL OR assignee_id = $2)",
    )
    .bind(id)
    .bind(scope.assignee())
    .fetch_optional(conn)
    .await?
    .ok_or(ApiError::NotFound {
        what: "conversation",
    })
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
pub struct UpdateIn {
    /// A user id, or `null` to unassign.
    #[serde(default, deserialize_with = "present")]
    pub assignee_id: Option<Option<Uuid>>,
    pub status: Option<String>,
    /// With status `snoozed` (implied when given alone): when it reopens.
    pub snoozed_until: Option<DateTime<Utc>>,
}

/// `PATCH /conversations/{id}` (`inbox.assign`): assignment, status and
/// snooze. Writes `conversation.updated.v1` with the changed fields and an
/// audit row, in one transaction.
pub async fn update(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateIn>,
) -> ApiResult<Json<ConversationOut>> {
    caller.require(Perm::InboxAssign)?;
    let scope = caller.inbox_scope()?;
    let invalid = |code, message: &str| ApiError::Unprocessable {
        code,
        message: message.to_owned(),
    };
    let status = match (&input.status, input.snoozed_until) {
        (None, Some(_)) => Some("snoozed".to_owned()),
        (s, _) => s.clone(),
    };
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(invalid(
            "invalid_status",
            "status must be one of open, pending, resolved, snoozed",
        ));
    }
    let snoozed_until = match status.as_deref() {
        Some("snoozed") => match input.snoozed_until {
            Some(t) if t > Utc::now() => Some(t),
            Some(_) => {
                return Err(invalid(
                    "invalid_snooze",
                    "snoozed_until must be in the future",
                ));
            }
            None => {
                return Err(invalid("invalid_snooze", "snoozing needs snoozed_until"));
            }
        },
        _ => None,
    };
    let mut tx = state.pool.begin().await?;
    let before: (String, Option<Uuid>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT status, assignee_id, snoozed_until FROM conversations
         WHERE id = $1 AND ($2::uuid IS NULL OR assignee_id = $2) FOR UPDATE",
    )
    .bind(id)
    .bind(scope.assignee())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound {
        what: "conversation",
    })?;
    if let Some(Some(assignee)) = input.assignee_id {
        let active: Option<bool> = sqlx::query_scalar("SELECT is_active FROM users WHERE id = $1")
            .bind(assignee)
            .fetch_optional(&mut *tx)
            .await?;
        if active != Some(true) {
            return Err(invalid(
                "invalid_assignee",
                "assignee_id must be an active user",
            ));
        }
    }
    let mut changed = Map::new();
    let (mut new_status, mut new_assignee, mut new_snooze) = before.clone();
    if let Some(a) = input.assignee_id
        && a != before.1
    {
        new_assignee = a;
        changed.insert("assignee_id".into(), json!(a));
    }
    if let Some(s) = status {
        if s != before.0 {
            changed.insert("status".into(), json!(s));
        }
        if snoozed_until != before.2 {
            changed.insert("snoozed_until".into(), json!(snoozed_until));
        }
        new_status = s;
        new_snooze = snoozed_until;
    }
    if !changed.is_empty() {
        sqlx::query(
            "UPDATE conversations SET status = $2, assignee_id = $3, snoozed_until = $4, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(&new_status)
        .bind(new_assignee)
        .bind(new_snooze)
        .execute(&mut *tx)
        .await?;
        let before_json =
            json!({"status": before.0, "assignee_id": before.1, "snoozed_until": before.2});
        audit(
            &mut tx,
            Some(caller.id),
            "conversation.updated",
            ("conversation", id.to_string()),
            Some(before_json),
            Some(Value::Object(changed.clone())),
            None,
        )
        .await?;
        let previous_assignee_id = before.1.filter(|_| changed.contains_key("assignee_id"));
        let event = broker_config::Envelope::new(Event::ConversationUpdated(ConversationUpdated {
            conversation_id: id,
            changed,
            previous_assignee_id,
            assignee_id: new_assignee,
        }));
        schema::enqueue(&mut tx, &event).await?;
    }
    let out = load(&mut tx, caller.id, id, InboxScope::All).await?;
    tx.commit().await?;
    state.relay_wake.committed();
    Ok(Json(out))
}

/// `POST /conversations/{id}/read`: marks everything up to now read for the
/// caller.
pub async fn mark_read(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let scope = caller.inbox_scope()?;
    let mut conn = state.pool.acquire().await?;
    visible_chat(&mut conn, id, scope).await?;
    sqlx::query(
        "INSERT INTO conversation_reads (user_id, conversation_id, last_read_at) VALUES ($1, $2, now())
         ON CONFLICT (user_id, conversation_id)
         DO UPDATE SET last_read_at = GREATEST(conversation_reads.last_read_at, EXCLUDED.last_read_at)",
    )
    .bind(caller.id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reopens snoozed conversations whose time has come, each with its
/// `conversation.updated.v1`. Safe to run on every instance at once: each row
/// is updated, and announced, once.
pub async fn wake_snoozed(
    pool: &sqlx::PgPool,
    wake: &schema::RelayWake,
) -> Result<usize, ApiError> {
    let mut tx = pool.begin().await?;
    let woken: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "UPDATE conversations SET status = 'open', snoozed_until = NULL, updated_at = now()
         WHERE id IN (SELECT id FROM conversations
                      WHERE status = 'snoozed' AND snoozed_until <= now()
                      FOR UPDATE SKIP LOCKED LIMIT 500)
         RETURNING id, assignee_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (id, assignee_id) in &woken {
        let mut changed = Map::new();
        changed.insert("status".into(), json!("open"));
        changed.insert("snoozed_until".into(), Value::Null);
        let event = broker_config::Envelope::new(Event::ConversationUpdated(ConversationUpdated {
            conversation_id: *id,
            changed,
            previous_assignee_id: None,
            assignee_id: *assignee_id,
        }));
        schema::enqueue(&mut tx, &event).await?;
    }
    tx.commit().await?;
    wake.committed();
    Ok(woken.len())
}
