//! The outbox as on-call sees it, and the scoped retry of its failed rows.
//!
//! A `failed` outbox row is an event the relay could not publish after
//! `OUTBOX_MAX_ATTEMPTS` tries (the broker refused it or was away). It is
//! not a reply that Telegram refused: such a reply is a `failed` message
//! with a copy in `tg-delivery.dlq`, retried with `messages retry-failed`
//! or a DLQ replay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schema::entities::outbox::{self, Column};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Order, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;

/// The outbox at a glance.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxStats {
    /// Rows by status (`pending`, `done`, `failed`).
    pub counts: BTreeMap<String, i64>,
    /// Pending rows due now: the relay's backlog.
    pub pending_due: i64,
    /// Pending rows scheduled later (tg-delivery's retries at their time).
    pub pending_scheduled: i64,
    /// When the oldest due row became due, and how long ago.
    pub oldest_due_at: Option<DateTime<Utc>>,
    pub oldest_due_age_seconds: Option<i64>,
    /// Failed rows by event type and error, most first.
    pub failed: Vec<FailedGroup>,
}

#[derive(Debug, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct FailedGroup {
    pub event_type: String,
    pub last_error: Option<String>,
    pub count: i64,
    pub last_failed_at: Option<DateTime<Utc>>,
}

pub async fn stats<C: ConnectionTrait>(conn: &C) -> ApiResult<OutboxStats> {
    let counts: Vec<(String, i64)> = outbox::Entity::find()
        .select_only()
        .column(Column::Status)
        .column_as(Column::Id.count(), "n")
        .group_by(Column::Status)
        .into_tuple()
        .all(conn)
        .await?;
    let due = |due: bool| {
        let at = Expr::col(Column::ScheduledAt);
        outbox::Entity::find()
            .select_only()
            .column_as(Column::Id.count(), "n")
            .column_as(Column::ScheduledAt.min(), "oldest")
            .filter(Column::Status.eq("pending"))
            .filter(if due {
                at.lte(Expr::current_timestamp())
            } else {
                at.gt(Expr::current_timestamp())
            })
    };
    let (pending_due, oldest_due_at): (i64, Option<DateTime<Utc>>) =
        due(true).into_tuple().one(conn).await?.unwrap_or((0, None));
    let (pending_scheduled, _): (i64, Option<DateTime<Utc>>) = due(false)
        .into_tuple()
        .one(conn)
        .await?
        .unwrap_or((0, None));
    let failed: Vec<FailedGroup> = outbox::Entity::find()
        .select_only()
        .column(Column::EventType)
        .column(Column::LastError)
        .column_as(Column::Id.count(), "count")
        .column_as(Column::UpdatedAt.max(), "last_failed_at")
        .filter(Column::Status.eq("failed"))
        .group_by(Column::EventType)
        .group_by(Column::LastError)
        .order_by(Column::Id.count(), Order::Desc)
        .order_by_asc(Column::EventType)
        .limit(50)
        .into_model()
        .all(conn)
        .await?;
    Ok(OutboxStats {
        counts: counts.into_iter().collect(),
        pending_due,
        pending_scheduled,
        oldest_due_at,
        oldest_due_age_seconds: oldest_due_at.map(|t| Ord::max((Utc::now() - t).num_seconds(), 0)),
        failed,
    })
}

/// Which failed rows a retry takes; every field narrows it, none means all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetryScope {
    /// Only rows of this event type.
    pub event_type: Option<String>,
    /// Only rows that failed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only these rows.
    #[serde(default)]
    pub ids: Vec<i64>,
}

/// The runbook's `UPDATE outbox SET status = 'pending', attempts = 0,
/// scheduled_at = NOW() WHERE status = 'failed'`, narrowed by `scope`.
/// Returns the number of rows put back; the caller wakes the relay.
pub async fn retry_failed<C: ConnectionTrait>(conn: &C, scope: &RetryScope) -> ApiResult<u64> {
    let mut update = outbox::Entity::update_many()
        .col_expr(Column::Status, Expr::value("pending"))
        .col_expr(Column::Attempts, Expr::value(0))
        .col_expr(Column::ScheduledAt, Expr::current_timestamp())
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Status.eq("failed"));
    if let Some(t) = &scope.event_type {
        update = update.filter(Column::EventType.eq(t.as_str()));
    }
    if let Some(since) = scope.since {
        update = update.filter(Column::UpdatedAt.gte(since));
    }
    if !scope.ids.is_empty() {
        update = update.filter(Column::Id.is_in(scope.ids.iter().copied()));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// [`retry_failed`] with its audit row, in one transaction. The caller
/// wakes the relay when rows went back.
pub async fn retry_failed_audited(
    db: &sea_orm::DatabaseConnection,
    actor: Option<uuid::Uuid>,
    scope: &RetryScope,
) -> ApiResult<u64> {
    use sea_orm::TransactionTrait;
    let tx = db.begin().await?;
    let retried = retry_failed(&tx, scope).await?;
    crate::audit::Entry::new(
        actor,
        "outbox.retry_failed",
        crate::audit::Target::new("outbox", "failed"),
    )
    .before(Some(serde_json::to_value(scope).unwrap_or_default()))
    .after(Some(serde_json::json!({"retried": retried})))
    .write(&tx)
    .await?;
    tx.commit().await?;
    Ok(retried)
}

/// Which unfinished replies [`resume_unfinished`] hands out again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeScope {
    /// Only the replies of this conversation.
    pub conversation: Option<uuid::Uuid>,
    /// Count them; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The replies a resume hands out again: each reply that is still
/// `queued`, `sending` or `retrying`, not held behind an earlier one, whose
/// latest `message.outgoing.v1` row is `done` and that has no row of that
/// type still pending. After a restore these are the replies whose events
/// went out after the backup point: the restored outbox holds them as
/// published, and the first of each chat would hold the chat's later
/// replies for good. One row per reply: its latest.
const UNFINISHED: &str = "SELECT DISTINCT ON (o.aggregate_id) o.id \
     FROM outbox o JOIN messages m ON o.aggregate_id = m.id::text \
     WHERE o.event_type = 'message.outgoing.v1' \
       AND m.direction = 'out' AND m.status IN ('queued', 'sending', 'retrying') AND NOT m.held \
       AND ($1::uuid IS NULL OR m.conversation_id = $1) \
       AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.aggregate_id = o.aggregate_id \
                       AND p.event_type = o.event_type AND p.status = 'pending') \
     ORDER BY o.aggregate_id, o.id DESC";

/// What a resume did (or, dry, would do).
#[derive(Debug, Serialize, Deserialize)]
pub struct Resumed {
    /// The replies handed out again.
    pub message_ids: Vec<uuid::Uuid>,
    pub dry_run: bool,
}

/// After a database restore: hands out again the replies the restored
/// database holds unfinished (the RUNBOOK's step, which was a hand-written
/// `UPDATE`). Their latest outbox row goes back to `pending`, due now, and
/// the relay publishes them in their order; the adapter answers those it
/// already sent from its idempotency store, without a second send. Audited,
/// in one transaction; the caller wakes the relay.
///
/// Run outside a restore it is harmless: a reply in flight at tg-delivery
/// gets a second event, which tg-delivery and the adapter answer without a
/// second send.
pub async fn resume_unfinished(
    db: &sea_orm::DatabaseConnection,
    actor: Option<uuid::Uuid>,
    scope: &ResumeScope,
) -> ApiResult<Resumed> {
    use sea_orm::{DbBackend, Statement, TransactionTrait};
    let tx = db.begin().await?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "UPDATE outbox SET status = 'pending', attempts = 0, scheduled_at = now(), \
                 updated_at = now() WHERE status = 'done' AND id IN ({UNFINISHED}) \
                 RETURNING aggregate_id"
            ),
            [scope.conversation.into()],
        ))
        .await?;
    let mut message_ids = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect::<Vec<uuid::Uuid>>();
    message_ids.sort();
    if scope.dry_run {
        tx.rollback().await?;
    } else {
        crate::audit::Entry::new(
            actor,
            "messages.resume_unfinished",
            crate::audit::Target::new(
                "conversation",
                scope
                    .conversation
                    .map_or_else(|| "*".to_owned(), |c| c.to_string()),
            ),
        )
        .after(Some(serde_json::json!({"message_ids": message_ids})))
        .write(&tx)
        .await?;
        tx.commit().await?;
    }
    Ok(Resumed {
        message_ids,
        dry_run: scope.dry_run,
    })
}
