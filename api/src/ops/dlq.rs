//! The dead-letter queues (see [`broker_config::dlq`]), each change audited
//! with its actor and counts once the broker has done it.

use broker_config::dlq::{self, DeadLetter, DlqError, ReplayFilter, ReplayProgress, Summary};
use lapin::Connection;
use sea_orm::ConnectionTrait;
use serde_json::json;
use uuid::Uuid;

use crate::{
    audit::{Entry, Target},
    error::{ApiError, ApiResult},
};

/// Most messages one peek shows.
pub const MAX_PEEK: usize = 1000;

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

pub async fn list(broker: &Connection) -> ApiResult<Vec<Summary>> {
    Ok(dlq::list(broker).await?)
}

pub async fn peek(broker: &Connection, queue: &str, n: usize) -> ApiResult<Vec<DeadLetter>> {
    dlq::known(queue)?;
    if n == 0 || n > MAX_PEEK {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("n must be between 1 and {MAX_PEEK}"),
        ));
    }
    Ok(dlq::peek(broker, queue, n).await?)
}

/// Replays `queue` and audits what it did (also when it stopped part-way).
pub async fn replay<C: ConnectionTrait>(
    db: &C,
    broker: &Connection,
    actor: Option<Uuid>,
    queue: &str,
    filter: &ReplayFilter,
    progress: impl FnMut(&ReplayProgress),
) -> ApiResult<ReplayProgress> {
    dlq::known(queue)?;
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
        .before(Some(json!({
            "limit": filter.limit, "event_type": filter.event_type,
            "since": filter.since, "dry_run": filter.dry_run,
        })))
        .after(Some(json!({"outcome": outcome, "summary": after})))
        .write(db)
        .await?;
    Ok(result?)
}

/// Empties `queue`; audited with the count dropped.
pub async fn purge<C: ConnectionTrait>(
    db: &C,
    broker: &Connection,
    actor: Option<Uuid>,
    queue: &str,
) -> ApiResult<u32> {
    let purged = dlq::purge(broker, queue).await?;
    Entry::new(actor, "dlq.purge", Target::new("queue", queue))
        .after(Some(json!({"purged": purged})))
        .write(db)
        .await?;
    Ok(purged)
}
