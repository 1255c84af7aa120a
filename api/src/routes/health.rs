//! `GET /api/health`: PostgreSQL, Redis and RabbitMQ, each with a deadline,
//! and whether this instance's realtime queue is bound and consumed.

use std::{collections::BTreeMap, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use fred::interfaces::ClientLike;
use serde::Serialize;

use crate::AppState;

const DEADLINE: Duration = Duration::from_secs(2);

/// The instance's health, and which dependency is down.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: Overall,
    /// `postgres`, `redis`, `rabbitmq` and `realtime`, each `ok` or `down`.
    pub checks: BTreeMap<&'static str, Check>,
    /// The names of the checks that are down.
    #[schema(value_type = Vec<String>)]
    pub down: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Ok,
    Unavailable,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Ok,
    Down,
}

async fn check<F, E>(fut: F) -> bool
where
    F: std::future::Future<Output = Result<(), E>>,
{
    matches!(tokio::time::timeout(DEADLINE, fut).await, Ok(Ok(())))
}

#[utoipa::path(
    get,
    path = "/api/health",
    tag = "system",
    summary = "Whether this instance and its dependencies are up",
    responses(
        (status = 200, description = "Every check passes", body = Health),
        (status = 503, description = "A check fails; `down` names which", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
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
    let down: Vec<&'static str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let (status, overall) = if down.is_empty() {
        (StatusCode::OK, Overall::Ok)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Overall::Unavailable)
    };
    let body = Health {
        status: overall,
        checks: checks
            .into_iter()
            .map(|(n, ok)| (n, if ok { Check::Ok } else { Check::Down }))
            .collect(),
        down,
    };
    (status, Json(body))
}
