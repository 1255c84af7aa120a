//! Conversations: the list with its filters and per-user unread counts, one
//! conversation, assignment / status / snooze, read marks, and reopening
//! snoozed conversations when their time comes.

use broker_config::{Envelope, Event, events::ConversationUpdated};
use chrono::{DateTime, Utc};
use schema::entities::{conversation_reads, conversations, users};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect, Statement, TransactionSession, TransactionTrait, Value,
    sea_query::{Expr, ExprTrait, LockBehavior, LockType, OnConflict, Query},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use uuid::Uuid;

use super::{ConversationStatus, InboxScope, STATUS_CHOICES};
use crate::{
    audit::{Entry, Target},
    error::{ApiError, ApiResult},
    page::{self, Page, PageRequest, TimeKey},
};

/// A conversation as the inbox shows it to one user.
#[derive(Debug, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    pub tg_chat_id: i64,
    pub title: String,
    #[schema(value_type = super::ConversationStatus)]
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

/// The read model: a conversation with its contact and the caller's (`$1`)
/// unread count. One statement, so it stays SQL; the filters follow it.
const SELECT: &str = "SELECT c.id, c.tg_chat_id, c.title, c.status, c.assignee_id, c.snoozed_until,
        c.last_message_at, c.created_at, c.contact_id,
        k.username AS contact_username, k.first_name AS contact_first_name,
        k.last_name AS contact_last_name,
        (SELECT count(*) FROM messages m
          WHERE m.conversation_id = c.id AND m.direction = 'in'
            AND m.created_at > COALESCE(r.last_read_at, '-infinity')) AS unread_count
 FROM conversations c
 LEFT JOIN contacts k ON k.id = c.contact_id
 LEFT JOIN conversation_reads r ON r.conversation_id = c.id AND r.user_id = $1";

/// Whose conversations to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AssigneeFilter {
    #[default]
    Anyone,
    User(Uuid),
    Unassigned,
}

impl AssigneeFilter {
    /// `mine`, `unassigned` or a user id.
    pub fn from_request(text: Option<&str>, caller: Uuid) -> ApiResult<Self> {
        Ok(match text {
            None => Self::Anyone,
            Some("mine") => Self::User(caller),
            Some("unassigned") => Self::Unassigned,
            Some(other) => Self::User(Uuid::parse_str(other).map_err(|_| {
                ApiError::bad_request(
                    "invalid_assignee",
                    "assignee must be mine, unassigned or a user id",
                )
            })?),
        })
    }
}

/// A search over the contact's name, the title and message texts: a
/// trimmed, non-empty text of at most 200 characters.
#[derive(Debug, Clone)]
pub struct Search(String);

impl Search {
    pub fn from_request(text: Option<&str>) -> ApiResult<Option<Self>> {
        let Some(text) = text.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if text.chars().count() > 200 || text.contains('\0') {
            return Err(ApiError::Unprocessable {
                code: "invalid_query",
                message: "q must be at most 200 characters, with no NUL character".into(),
            });
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// `%text%` for ILIKE, with the pattern characters escaped.
    fn pattern(&self) -> String {
        let escaped = self
            .0
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    }
}

/// What `GET /conversations` filters on.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<ConversationStatus>,
    pub assignee: AssigneeFilter,
    /// Only conversations with inbound messages the caller has not read.
    pub unread: bool,
    pub search: Option<Search>,
}

/// Newest activity first, keyset-paginated.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    caller: Uuid,
    scope: InboxScope,
    filter: &ListFilter,
    page: PageRequest<TimeKey>,
) -> ApiResult<Page<Conversation>> {
    let (assignee, unassigned) = match filter.assignee {
        AssigneeFilter::Anyone => (None, false),
        AssigneeFilter::User(u) => (Some(u), false),
        AssigneeFilter::Unassigned => (None, true),
    };
    let sql = format!(
        "{SELECT} WHERE ($2::text IS NULL OR c.status = $2)
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
    );
    let values: Vec<Value> = vec![
        caller.into(),
        filter.status.map(|s| s.as_str().to_owned()).into(),
        page.after.map(|a| a.0).into(),
        page.after.map(|a| a.1).into(),
        i64::try_from(page.fetch()).unwrap_or(i64::MAX).into(),
        scope.assignee().into(),
        assignee.into(),
        unassigned.into(),
        filter.unread.into(),
        filter.search.as_ref().map(Search::pattern).into(),
    ];
    let rows = Conversation::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .all(conn)
    .await?;
    Ok(page.page(rows, |c| page::encode((c.last_message_at, c.id))))
}

/// One conversation the caller may read; 404 otherwise.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    caller: Uuid,
    id: Uuid,
    scope: InboxScope,
) -> ApiResult<Conversation> {
    Conversation::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("{SELECT} WHERE c.id = $2 AND ($3::uuid IS NULL OR c.assignee_id = $3)"),
        [caller.into(), id.into(), scope.assignee().into()],
    ))
    .one(conn)
    .await?
    .ok_or(ApiError::NotFound {
        what: "conversation",
    })
}

/// The Telegram chat and assignee of a conversation.
#[derive(Debug, Clone, Copy)]
pub struct Chat {
    pub tg_chat_id: i64,
    pub assignee_id: Option<Uuid>,
}

/// The chat of a conversation the caller may read; 404 for one that does not
/// exist or is out of scope (its existence is not revealed).
pub async fn visible_chat<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    scope: InboxScope,
) -> ApiResult<Chat> {
    use conversations::Column;
    let (tg_chat_id, assignee_id) = conversations::Entity::in_scope(scope.assignee())
        .filter(Column::Id.eq(id))
        .select_only()
        .columns([Column::TgChatId, Column::AssigneeId])
        .into_tuple::<(i64, Option<Uuid>)>()
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound {
            what: "conversation",
        })?;
    Ok(Chat {
        tg_chat_id,
        assignee_id,
    })
}

/// A change of assignment, status or snooze, as asked.
#[derive(Debug, Default)]
pub struct Change {
    /// `Some(None)` unassigns.
    pub assignee_id: Option<Option<Uuid>>,
    pub status: Option<String>,
    /// With status `snoozed` (implied when given alone): when it reopens.
    pub snoozed_until: Option<DateTime<Utc>>,
}

fn unprocessable(code: &'static str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        code,
        message: message.to_owned(),
    }
}

impl Change {
    /// The status and snooze the change sets, checked.
    fn status(&self) -> ApiResult<Option<(ConversationStatus, Option<DateTime<Utc>>)>> {
        let status = match (&self.status, self.snoozed_until) {
            (None, Some(_)) => ConversationStatus::Snoozed,
            (None, None) => return Ok(None),
            (Some(s), _) => ConversationStatus::parse(s)
                .ok_or_else(|| unprocessable("invalid_status", STATUS_CHOICES))?,
        };
        let snoozed_until = match status {
            ConversationStatus::Snoozed => match self.snoozed_until {
                Some(t) if t > Utc::now() => Some(t),
                Some(_) => {
                    return Err(unprocessable(
                        "invalid_snooze",
                        "snoozed_until must be in the future",
                    ));
                }
                None => {
                    return Err(unprocessable(
                        "invalid_snooze",
                        "snoozing needs snoozed_until",
                    ));
                }
            },
            _ => None,
        };
        Ok(Some((status, snoozed_until)))
    }
}

/// Assignment, status and snooze (`inbox.assign`). Writes
/// `conversation.updated.v1` with the changed fields and an audit row, in
/// one transaction; returns the conversation as the caller sees it, and
/// whether anything changed (an outbox row to wake the relay for).
pub async fn update<C: TransactionTrait>(
    db: &C,
    caller: Uuid,
    id: Uuid,
    scope: InboxScope,
    change: &Change,
) -> ApiResult<(Conversation, bool)> {
    use conversations::Column;
    let status = change.status()?;
    let tx = db.begin().await?;
    let before = conversations::Entity::in_scope(scope.assignee())
        .filter(Column::Id.eq(id))
        .lock_exclusive()
        .one(&tx)
        .await?
        .ok_or(ApiError::NotFound {
            what: "conversation",
        })?;
    if let Some(Some(assignee)) = change.assignee_id {
        let active = users::Entity::find_by_id(assignee)
            .select_only()
            .column(users::Column::IsActive)
            .into_tuple::<bool>()
            .one(&tx)
            .await?;
        if active != Some(true) {
            return Err(unprocessable(
                "invalid_assignee",
                "assignee_id must be an active user",
            ));
        }
    }
    let mut changed = Map::new();
    let mut after: conversations::ActiveModel = before.clone().into();
    if let Some(a) = change.assignee_id
        && a != before.assignee_id
    {
        after.assignee_id = Set(a);
        changed.insert("assignee_id".into(), json!(a));
    }
    if let Some((s, snoozed_until)) = status {
        if s.as_str() != before.status {
            changed.insert("status".into(), json!(s));
        }
        if snoozed_until != before.snoozed_until {
            changed.insert("snoozed_until".into(), json!(snoozed_until));
        }
        after.status = Set(s.as_str().to_owned());
        after.snoozed_until = Set(snoozed_until);
    }
    let wrote = !changed.is_empty();
    if wrote {
        after.updated_at = Set(Utc::now());
        let after = conversations::Entity::update(after).exec(&tx).await?;
        Entry::new(
            Some(caller),
            "conversation.updated",
            Target::new("conversation", id),
        )
        .before(Some(json!({
            "status": before.status,
            "assignee_id": before.assignee_id,
            "snoozed_until": before.snoozed_until,
        })))
        .after(Some(serde_json::Value::Object(changed.clone())))
        .write(&tx)
        .await?;
        let previous_assignee_id = before
            .assignee_id
            .filter(|_| changed.contains_key("assignee_id"));
        let event = Envelope::new(Event::ConversationUpdated(ConversationUpdated {
            conversation_id: id,
            changed,
            previous_assignee_id,
            assignee_id: after.assignee_id,
        }));
        schema::enqueue(&tx, &event).await?;
    }
    let out = get(&tx, caller, id, InboxScope::All).await?;
    tx.commit().await?;
    Ok((out, wrote))
}

/// Marks everything up to now read for `user`. A later mark never moves
/// back.
pub async fn mark_read<C: ConnectionTrait>(
    conn: &C,
    user: Uuid,
    id: Uuid,
    scope: InboxScope,
) -> ApiResult<()> {
    use conversation_reads::Column;
    visible_chat(conn, id, scope).await?;
    let mut insert = Query::insert();
    insert
        .into_table(conversation_reads::Entity)
        .columns([Column::UserId, Column::ConversationId, Column::LastReadAt])
        .values_panic([user.into(), id.into(), Expr::current_timestamp()])
        .on_conflict(
            OnConflict::columns([Column::UserId, Column::ConversationId])
                .value(
                    Column::LastReadAt,
                    Expr::cust("GREATEST(conversation_reads.last_read_at, EXCLUDED.last_read_at)"),
                )
                .to_owned(),
        );
    conn.execute(&insert).await?;
    Ok(())
}

/// Reopens snoozed conversations whose time has come, each with its
/// `conversation.updated.v1`, and returns how many. Safe to run on every
/// instance at once: each row is updated, and announced, once.
pub async fn wake_snoozed<C: TransactionTrait>(db: &C) -> ApiResult<usize> {
    use conversations::Column;
    let tx = db.begin().await?;
    let due = Query::select()
        .column(Column::Id)
        .from(conversations::Entity)
        .and_where(Column::Status.eq(ConversationStatus::Snoozed.as_str()))
        .and_where(Expr::col(Column::SnoozedUntil).lte(Expr::current_timestamp()))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .limit(500)
        .to_owned();
    let woken = conversations::Entity::update_many()
        .col_expr(
            Column::Status,
            Expr::value(ConversationStatus::Open.as_str()),
        )
        .col_expr(
            Column::SnoozedUntil,
            Expr::value(Value::ChronoDateTimeUtc(None)),
        )
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.in_subquery(due))
        .exec_with_returning(&tx)
        .await?;
    for c in &woken {
        let mut changed = Map::new();
        changed.insert("status".into(), json!(ConversationStatus::Open));
        changed.insert("snoozed_until".into(), serde_json::Value::Null);
        let event = Envelope::new(Event::ConversationUpdated(ConversationUpdated {
            conversation_id: c.id,
            changed,
            previous_assignee_id: None,
            assignee_id: c.assignee_id,
        }));
        schema::enqueue(&tx, &event).await?;
    }
    tx.commit().await?;
    Ok(woken.len())
}
