//! The dead-letter queues (see [`broker_config::dlq`]), one operation per
//! queue at a time, each change audited with its actor and counts.
//!
//! A peek, replay or purge holds its queue's lock, a PostgreSQL advisory
//! lock in a transaction of its own, for as long as it runs: two of them on
//! one queue would each see only the messages the other does not hold (a
//! peek would show a DLQ half empty, a replay would stop early). A second one
//! waits up to [`LOCK_WAIT`], then answers 409 `dlq_busy`. A listing does not
//! wait: it shows a busy queue as `busy`.

use std::time::Duration;

use broker_config::dlq::{self, DeadLetter, DlqError, ReplayFilter, ReplayProgress, Summary};
use lapin::Connection;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, RuntimeErr,
    Statement, TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    audit::{Entry, Target},
    error::{ApiError, ApiResult},
};

/// Most messages one peek shows.
pub const MAX_PEEK: usize = 1000;
/// How long an operation waits for another one on the same queue.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

impl From<DlqError> for ApiError {
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::UnknownQueue(_) => ApiError::NotFound {
                what: "dead-letter queue",
            },
            DlqError::NotDeclared(_) => ApiError::NotFound {
                what: "dead-letter queue on this broker (not declared yet: no consumer has started)",
            },
            other => ApiError::Unavailable {
                what: "rabbitmq",
                cause: other.to_string(),
            },
        }
    }
}

fn busy() -> ApiError {
    ApiError::Conflict {
        code: "dlq_busy",
        message: "another peek, replay or purge of this queue is running; try again when it ends"
            .into(),
    }
}

fn sqlstate(e: &DbErr) -> Option<String> {
    match e {
        DbErr::Query(RuntimeErr::SqlxError(inner)) | DbErr::Exec(RuntimeErr::SqlxError(inner)) => {
            inner
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned())
        }
        _ => None,
    }
}

/// Takes `queue`'s lock in a new transaction, waiting up to [`LOCK_WAIT`]
/// (`wait: false`: not at all); `None` when another operation holds it.
async fn lock(
    db: &DatabaseConnection,
    queue: &str,
    wait: bool,
) -> ApiResult<Option<DatabaseTransaction>> {
    let tx = db.begin().await?;
    let key = format!("fastprep-dlq:{queue}");
    if wait {
        tx.execute_unprepared(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            LOCK_WAIT.as_millis()
        ))
        .await?;
        let locked = tx
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [key.into()],
            ))
            .await;
        match locked {
            Ok(_) => Ok(Some(tx)),
            // lock_not_available: the wait ran out.
            Err(e) if sqlstate(&e).as_deref() == Some("55P03") => Ok(None),
            Err(e) => Err(e.into()),
        }
    } else {
        let row = tx
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
                [key.into()],
            ))
            .await?;
        let got: bool = row
            .map(|r| r.try_get_by_index(0))
            .transpose()?
            .unwrap_or(false);
        Ok(got.then_some(tx))
    }
}

/// Every DLQ at a glance; one another operation holds is shown `busy`.
pub async fn list(db: &DatabaseConnection, broker: &Connection) -> ApiResult<Vec<Summary>> {
    let mut out = Vec::new();
    for queue in dlq::queues() {
        match lock(db, &queue, false).await? {
            Some(tx) => {
                out.push(dlq::summarize(broker, &queue).await?);
                tx.commit().await?;
            }
            None => out.push(Summary {
                depth: dlq::depth(broker, &queue).await?,
                queue,
                declared: true,
                busy: true,
                oldest_died_at: None,
                oldest_age_seconds: None,
                top_reasons: Vec::new(),
            }),
        }
    }
    Ok(out)
}

pub async fn peek(
    db: &DatabaseConnection,
    broker: &Connection,
    queue: &str,
    n: usize,
) -> ApiResult<Vec<DeadLetter>> {
    dlq::known(queue)?;
    if n == 0 || n > MAX_PEEK {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("n must be between 1 and {MAX_PEEK}"),
        ));
    }
    let tx = lock(db, queue, true).await?.ok_or_else(busy)?;
    let letters = dlq::peek(broker, queue, n).await?;
    tx.commit().await?;
    Ok(letters)
}

/// `queue`'s lock for an operation, waiting up to [`LOCK_WAIT`]; 409
/// `dlq_busy` when another one holds it. Held until the transaction ends.
pub async fn hold(db: &DatabaseConnection, queue: &str) -> ApiResult<DatabaseTransaction> {
    dlq::known(queue)?;
    lock(db, queue, true).await?.ok_or_else(busy)
}

/// Replays `queue` under its lock `tx` (from [`hold`]). An audit row is
/// written when it starts (committed at once, so a replay cut short by a
/// crash is on record) and another when it ends, with the summary or the
/// error.
pub async fn replay(
    db: &DatabaseConnection,
    tx: DatabaseTransaction,
    broker: &Connection,
    actor: Option<Uuid>,
    queue: &str,
    filter: &ReplayFilter,
    progress: impl FnMut(&ReplayProgress),
) -> ApiResult<ReplayProgress> {
    let asked = json!({
        "limit": filter.limit, "event_type": filter.event_type,
        "since": filter.since, "dry_run": filter.dry_run,
    });
    Entry::new(actor, "dlq.replay_started", Target::new("queue", queue))
        .after(Some(asked.clone()))
        .write(db)
        .await?;
    let mut last = ReplayProgress::default();
    let mut progress = progress;
    let result = dlq::replay(broker, queue, filter, |p| {
        last = p.clone();
        progress(p);
    })
    .await;
    let (after, outcome) = match &result {
        Ok(summary) => (serde_json::to_value(summary).unwrap_or_default(), "done"),
        Err(e) => (
            json!({"progress": serde_json::to_value(&last).unwrap_or_default(), "error": e.to_string()}),
            "stopped",
        ),
    };
    Entry::new(actor, "dlq.replay", Target::new("queue", queue))
        .before(Some(asked))
        .after(Some(json!({"outcome": outcome, "summary": after})))
        .write(&tx)
        .await?;
    tx.commit().await?;
    Ok(result?)
}

/// Empties `queue` under its lock; the audit row, with the count, commits
/// with the lock's transaction once the broker has purged.
pub async fn purge(
    db: &DatabaseConnection,
    broker: &Connection,
    actor: Option<Uuid>,
    queue: &str,
) -> ApiResult<u32> {
    dlq::known(queue)?;
    let tx = lock(db, queue, true).await?.ok_or_else(busy)?;
    let purged = dlq::purge(broker, queue).await?;
    Entry::new(actor, "dlq.purge", Target::new("queue", queue))
        .after(Some(json!({"purged": purged})))
        .write(&tx)
        .await?;
    tx.commit().await?;
    Ok(purged)
}
