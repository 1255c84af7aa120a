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
use broker_config::dlq::{DeadLetter, ReplayFilter, ReplayProgress, Summary};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use uuid::Uuid;

use crate::{
    AppState,
    authz::pep::Principal,
    error::{ApiError, ApiResult, ErrorBody},
    inbox::messages::{self, Message},
    ops::{self, outbox::OutboxStats},
};

/// The name of a dead-letter queue, for the document: one of
/// [`broker_config::dlq::queues`].
pub struct DlqName;

impl utoipa::PartialSchema for DlqName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A dead-letter queue of this system"))
            .enum_values(Some(broker_config::dlq::queues()))
            .into()
    }
}

impl utoipa::ToSchema for DlqName {}

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
#[utoipa::path(
    get,
    path = "/api/ops/outbox",
    tag = "ops",
    summary = "The outbox: rows by status, the oldest due row, failed rows by type and error",
    responses((status = 200, description = "The outbox at a glance", body = OutboxStats))
)]
pub async fn outbox(State(state): State<AppState>) -> ApiResult<Json<OutboxStats>> {
    Ok(Json(ops::outbox::stats(&state.db).await?))
}

/// Which failed outbox rows go back to pending; each field narrows it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFailedBody {
    /// Only rows of this event type.
    pub event_type: Option<String>,
    /// Only rows that failed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only these rows.
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub ids: Vec<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Retried {
    /// Rows put back to pending.
    pub retried: u64,
}

/// `POST /ops/outbox/retry-failed`: failed outbox rows back to pending,
/// narrowed by type, time and ids; audited.
#[utoipa::path(
    post,
    path = "/api/ops/outbox/retry-failed",
    tag = "ops",
    summary = "Put failed outbox rows back to pending (the runbook's SQL, narrowed); audited",
    description = "A failed outbox row is an event the broker never took. Replies Telegram refused are not outbox rows: retry them with `POST /api/conversations/{id}/messages/{message_id}/retry`.",
    request_body = RetryFailedBody,
    responses(
        (status = 200, description = "How many rows went back to pending", body = Retried),
        (status = 400, description = "`too_many_ids`", body = ErrorBody),
    )
)]
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
    let retried = ops::outbox::retry_failed_audited(&state.db, Some(caller.id), &scope).await?;
    if retried > 0 {
        state.relay_wake.committed();
    }
    Ok(Json(Retried { retried }))
}

/// `GET /ops/dlq`: every DLQ with its depth, oldest age and top reasons.
#[utoipa::path(
    get,
    path = "/api/ops/dlq",
    tag = "ops",
    summary = "Every dead-letter queue with its depth, oldest message and top reasons",
    responses(
        (status = 200, description = "One entry per dead-letter queue", body = Vec<Summary>),
        (status = 503, description = "`unavailable`: RabbitMQ cannot be reached", body = ErrorBody),
    )
)]
pub async fn dlq_list(State(state): State<AppState>) -> ApiResult<Json<Vec<Summary>>> {
    let conn = broker(&state).await?;
    let list = ops::dlq::list(&state.db, &conn).await;
    close(conn).await;
    Ok(Json(list?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeekQuery {
    /// How many messages from the head (default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub n: Option<usize>,
}

/// `GET /ops/dlq/{queue}/messages?n=`: the first `n` (default 20) dead
/// letters, the queue left as it was.
#[utoipa::path(
    get,
    path = "/api/ops/dlq/{queue}/messages",
    tag = "ops",
    summary = "The first messages of a dead-letter queue, leaving the queue as it was",
    description = "Texts in the events are replaced by their length. Each peek raises the messages' `x-delivery-count` by one.",
    params(("queue" = DlqName, Path, description = "A dead-letter queue"), PeekQuery),
    responses(
        (status = 200, description = "The dead letters, head first", body = Vec<DeadLetter>),
        (status = 400, description = "`invalid_limit`: n is not between 1 and 1000", body = ErrorBody),
        (status = 404, description = "`not_found`: not a dead-letter queue of this system, or not declared on the broker yet", body = ErrorBody),
        (status = 409, description = "`dlq_busy`: another peek, replay or purge of this queue ran for 5 s and still runs", body = ErrorBody),
        (status = 503, description = "`unavailable`: RabbitMQ cannot be reached", body = ErrorBody),
    )
)]
pub async fn dlq_peek(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(q): Query<PeekQuery>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    broker_config::dlq::known(&queue)?;
    let conn = broker(&state).await?;
    let letters = ops::dlq::peek(&state.db, &conn, &queue, q.n.unwrap_or(20)).await;
    close(conn).await;
    Ok(Json(letters?))
}

/// Which dead letters a replay takes; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Replay at most this many.
    #[schema(minimum = 1)]
    pub limit: Option<usize>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only those that died at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Count what would be replayed; replay nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /ops/dlq/{queue}/replay`: answers 200 at once with a stream of
/// JSON lines (`application/x-ndjson`), one per batch replayed, the last
/// with `"done": true` (or an `error`). The replay goes on to its end if the
/// caller goes away; its audit row tells how it ended.
#[utoipa::path(
    post,
    path = "/api/ops/dlq/{queue}/replay",
    tag = "ops",
    summary = "Send dead letters back to the queue each came from; audited",
    description = "Each message goes back alone to its own work queue and leaves the DLQ once the broker confirmed the copy; a message replayed 5 times stays. The answer is a stream of JSON lines (`application/x-ndjson`), one `ReplayProgress` per batch, the last with `done: true` (or `done: false` and an `error`). The replay finishes even if the caller goes away.",
    params(("queue" = DlqName, Path, description = "A dead-letter queue")),
    request_body(content = ReplayBody, description = "Optional; no body replays everything"),
    responses(
        (status = 200, description = "Progress lines, then the summary", content_type = "application/x-ndjson", body = ReplayProgress),
        (status = 400, description = "`invalid_limit`, `unknown_event_type`", body = ErrorBody),
        (status = 404, description = "`not_found`: not a dead-letter queue of this system, or not declared on the broker yet", body = ErrorBody),
        (status = 409, description = "`dlq_busy`: another peek, replay or purge of this queue ran for 5 s and still runs", body = ErrorBody),
        (status = 503, description = "`unavailable`: RabbitMQ cannot be reached", body = ErrorBody),
    )
)]
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
    // A queue not declared yet (404) or busy (409) answers here, not in the
    // stream.
    if let Err(e) = broker_config::dlq::depth(&conn, &queue).await {
        close(conn).await;
        return Err(e.into());
    }
    let held = match ops::dlq::hold(&state.db, &queue).await {
        Ok(tx) => tx,
        Err(e) => {
            close(conn).await;
            return Err(e);
        }
    };
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
        let result = ops::dlq::replay(&db, held, &conn, Some(actor), &queue, &filter, |p| {
            if !p.done {
                let _ = progress_tx.try_send(line(serde_json::to_value(p).unwrap_or_default()));
            }
        })
        .await;
        close(conn).await;
        let last = match result {
            Ok(summary) => serde_json::to_value(&summary).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "dlq replay stopped");
                let (code, message) = e.public();
                json!({"done": false, "error": {"code": code, "message": message}})
            }
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Purged {
    pub queue: String,
    pub purged: u32,
}

/// `DELETE /ops/dlq/{queue}/messages`: drops every message; audited with
/// the count.
#[utoipa::path(
    delete,
    path = "/api/ops/dlq/{queue}/messages",
    tag = "ops",
    summary = "Drop every message of a dead-letter queue; audited with the count",
    params(("queue" = DlqName, Path, description = "A dead-letter queue")),
    responses(
        (status = 200, description = "How many messages were dropped", body = Purged),
        (status = 404, description = "`not_found`: not a dead-letter queue of this system, or not declared on the broker yet", body = ErrorBody),
        (status = 409, description = "`dlq_busy`: another peek, replay or purge of this queue ran for 5 s and still runs", body = ErrorBody),
        (status = 503, description = "`unavailable`: RabbitMQ cannot be reached", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/messages/{message_id}/retry",
    tag = "inbox",
    summary = "Send again a reply that failed at Telegram; audited",
    description = "The reply goes back to `queued` with a fresh attempt budget, in its place in its chat's order. It cannot be sent twice.",
    params(
        ("id" = Uuid, Path, description = "The conversation's id"),
        ("message_id" = Uuid, Path, description = "The reply's id"),
    ),
    responses(
        (status = 202, description = "Queued again", body = Message),
        (status = 403, description = "`forbidden`: the caller may read no conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or message, or not the caller's to read", body = ErrorBody),
        (status = 409, description = "`not_failed`: only a reply that failed can be retried", body = ErrorBody),
    )
)]
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
