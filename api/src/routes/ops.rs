//! `/api/ops/*` (`ops.outbox`, `ops.dlq`) and the retry of a failed reply:
//! the same operations as `fastprep-ops` (see [`crate::ops`]), audited with
//! the caller as actor.

use std::convert::Infallible;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::Response,
};
use broker_config::dlq::{DeadLetter, ReplayFilter, Summary};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use uuid::Uuid;

use crate::{
    AppState,
    authz::pep::Principal,
    error::{ApiError, ApiResult},
    inbox::messages::{self, Message},
    ops::{self, outbox::OutboxStats},
};

async fn broker(state: &AppState) -> ApiResult<lapin::Connection> {
    state
        .broker
        .open("fastprep-api-ops")
        .await
        .map_err(|e| ApiError::Unavailable {
            what: "rabbitmq",
            cause: e.to_string(),
        })
}

async fn close(conn: lapin::Connection) {
    let _ = conn.close(200, "bye".into()).await;
}

/// `GET /ops/outbox`: counts by status, the oldest due row, failed rows.
pub async fn outbox(State(state): State<AppState>) -> ApiResult<Json<OutboxStats>> {
    Ok(Json(ops::outbox::stats(&state.db).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFailedBody {
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ids: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct Retried {
    pub retried: u64,
}

/// `POST /ops/outbox/retry-failed`: failed outbox rows back to pending,
/// narrowed by type, time and ids; audited.
pub async fn outbox_retry_failed(
    caller: Principal,
    State(state): State<AppState>,
    Json(body): Json<RetryFailedBody>,
) -> ApiResult<Json<Retried>> {
    if body.ids.len() > 10_000 {
        return Err(ApiError::bad_request(
            "too_many_ids",
            "at most 10000 ids at once",
        ));
    }
    let scope = ops::outbox::RetryScope {
        event_type: body.event_type,
        since: body.since,
        ids: body.ids,
    };
    let retried = ops::cli::retry_outbox(&state.db, Some(caller.id), &scope).await?;
    Ok(Json(Retried { retried }))
}

/// `GET /ops/dlq`: every DLQ with its depth, oldest age and top reasons.
pub async fn dlq_list(State(state): State<AppState>) -> ApiResult<Json<Vec<Summary>>> {
    let conn = broker(&state).await?;
    let list = ops::dlq::list(&conn).await;
    close(conn).await;
    Ok(Json(list?))
}

#[derive(Debug, Deserialize)]
pub struct PeekQuery {
    pub n: Option<usize>,
}

/// `GET /ops/dlq/{queue}/messages?n=`: the first `n` (default 20) dead
/// letters, the queue left as it was.
pub async fn dlq_peek(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(q): Query<PeekQuery>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    broker_config::dlq::known(&queue)?;
    let conn = broker(&state).await?;
    let letters = ops::dlq::peek(&conn, &queue, q.n.unwrap_or(20)).await;
    close(conn).await;
    Ok(Json(letters?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    pub limit: Option<usize>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /ops/dlq/{queue}/replay`: answers 200 at once with a stream of
/// JSON lines (`application/x-ndjson`), one per batch replayed, the last
/// with `"done": true` (or an `error`). The replay goes on to its end if the
/// caller goes away; its audit row tells how it ended.
pub async fn dlq_replay(
    caller: Principal,
    State(state): State<AppState>,
    Path(queue): Path<String>,
    body: Option<Json<ReplayBody>>,
) -> ApiResult<Response> {
    broker_config::dlq::known(&queue)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    if body.limit == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be at least 1",
        ));
    }
    if let Some(t) = &body.event_type
        && !broker_config::events::types::ALL.contains(&t.as_str())
    {
        return Err(ApiError::bad_request(
            "unknown_event_type",
            format!("{t:?} is not an event type of this system"),
        ));
    }
    let conn = broker(&state).await?;
    let filter = ReplayFilter {
        limit: body.limit,
        event_type: body.event_type,
        since: body.since,
        dry_run: body.dry_run,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let db = state.db.clone();
    let actor = caller.id;
    tokio::spawn(async move {
        let line = |v: serde_json::Value| {
            let mut s = v.to_string();
            s.push('\n');
            Bytes::from(s)
        };
        let progress_tx = tx.clone();
        let result = ops::dlq::replay(&db, &conn, Some(actor), &queue, &filter, |p| {
            if !p.done {
                let _ = progress_tx.try_send(line(serde_json::to_value(p).unwrap_or_default()));
            }
        })
        .await;
        close(conn).await;
        let last = match result {
            Ok(summary) => serde_json::to_value(&summary).unwrap_or_default(),
            Err(e) => json!({"done": false, "error": e.to_string()}),
        };
        let _ = tx.send(line(last)).await;
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.into()))
}

#[derive(Debug, Serialize)]
pub struct Purged {
    pub queue: String,
    pub purged: u32,
}

/// `DELETE /ops/dlq/{queue}/messages`: drops every message; audited with
/// the count.
pub async fn dlq_purge(
    caller: Principal,
    State(state): State<AppState>,
    Path(queue): Path<String>,
) -> ApiResult<Json<Purged>> {
    broker_config::dlq::known(&queue)?;
    let conn = broker(&state).await?;
    let purged = ops::dlq::purge(&state.db, &conn, Some(caller.id), &queue).await;
    close(conn).await;
    Ok(Json(Purged {
        purged: purged?,
        queue,
    }))
}

/// `POST /conversations/{id}/messages/{message_id}/retry` (`inbox.reply`):
/// 202 with the reply queued again; 409 `not_failed` unless it had failed.
pub async fn retry_message(
    caller: Principal,
    State(state): State<AppState>,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let scope = caller.inbox_scope()?;
    let message = messages::retry(
        &state.db,
        Some(caller.id),
        conversation_id,
        message_id,
        scope,
    )
    .await?;
    state.relay_wake.committed();
    Ok((StatusCode::ACCEPTED, Json(message)))
}
