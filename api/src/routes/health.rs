//! `GET /api/health`: PostgreSQL, Redis and RabbitMQ, each with a deadline,
//! and whether this instance's realtime queue is bound and consumed.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use fred::interfaces::ClientLike;
use serde_json::{Value, json};

use crate::AppState;

const DEADLINE: Duration = Duration::from_secs(2);

async fn check<F, E>(fut: F) -> bool
where
    F: std::future::Future<Output = Result<(), E>>,
{
    matches!(tokio::time::timeout(DEADLINE, fut).await, Ok(Ok(())))
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (pg, redis, rabbit) = tokio::join!(
        check(state.db.ping()),
        check(async { state.redis.ping::<()>(None).await }),
        check(state.broker.check()),
    );
    let checks = [
        ("postgres", pg),
        ("redis", redis),
        ("rabbitmq", rabbit),
        ("realtime", state.gateway.hub.is_bound()),
    ];
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let body = json!({
        "status": if down.is_empty() { "ok" } else { "unavailable" },
        "checks": checks.iter().map(|(n, ok)| (n.to_string(), json!(if *ok { "ok" } else { "down" }))).collect::<serde_json::Map<_, _>>(),
        "down": down,
    });
    let status = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
