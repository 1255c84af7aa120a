//! The FastPrep Admin API: REST under `/api` and the WebSocket gateway at
//! `/api/ws`. `run` is what `main` and the tests both call.

pub mod accounts;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod broker;
pub mod cli;
pub mod config;
pub mod error;
pub mod http_metrics;
pub mod inbox;
pub mod openapi;
pub mod ops;
pub mod page;
pub mod realtime;
pub mod routes;
pub mod telegram;

use std::sync::Arc;

use std::time::Duration;

use axum::{Router, http::HeaderName, middleware};
use fred::{
    interfaces::ClientLike,
    prelude::{Builder, Client as RedisClient, Config as RedisConfig, ReconnectPolicy},
};
use platform::supervisor::Supervisor;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use config::Config;

/// Longest wait for any Redis command: past it, the caller gets an error
/// (503, or the PostgreSQL fallback) instead of hanging.
const REDIS_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler can reach: one shared [`Services`]. Cloned for every
/// request (axum's `State`), so a clone is one reference count, not one per
/// service (those clones and drops were 8% of a request's CPU).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub pool: PgPool,
    /// The same pool as a sea-orm connection: the data layer of the
    /// services (ADR 0014).
    pub db: sea_orm::DatabaseConnection,
    pub redis: RedisClient,
    pub broker: Arc<broker::Broker>,
    pub keys: Arc<auth::jwt::Keys>,
    pub authz: Arc<authz::cache::Authorizer>,
    pub limiter: auth::ratelimit::LoginLimiter,
    pub hasher: Arc<auth::password::Hasher>,
    pub auth: Arc<auth::AuthSettings>,
    pub gateway: Arc<realtime::socket::Gateway>,
    /// Wakes the relay after a commit that wrote outbox rows.
    pub relay_wake: schema::RelayWake,
    /// Cancelled when the instance stops (sockets close with 1012).
    pub shutdown: CancellationToken,
    /// The attachment store and the limits on uploads.
    pub attachments: attachments::Attachments,
    /// The local store's signed blob routes (`None` with S3).
    pub blob_routes: Option<Router>,
    /// The Telegram account's session and login, at the adapter.
    pub telegram: telegram::TelegramAdmin,
}

/// Builds the state: database pool, Redis client (connecting in the
/// background, so the API starts and reports Redis down rather than not
/// starting), RabbitMQ link, and the authorization cache with its listener.
pub async fn state(
    config: &Config,
    meter: &opentelemetry::metrics::Meter,
    tasks: &Supervisor,
) -> anyhow::Result<AppState> {
    let shutdown = tasks.shutdown().clone();
    let pool = schema::pool::connect(&config.database_url, config.database_max_connections).await?;
    // The same pool for the services (ADR 0014).
    let db = schema::pool::orm(&pool);
    let redis_config = RedisConfig::from_url(&config.redis_url)?;
    let redis = Builder::from_config(redis_config.clone())
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .with_performance_config(|p| p.default_command_timeout = REDIS_COMMAND_TIMEOUT)
        .build()?;
    redis.connect();
    // Deployments sharing one Redis keep their keys apart by vhost.
    let vhost = broker_config::connection::vhost(&config.amqp_url);
    let authz = authz::cache::Authorizer::new(
        db.clone(),
        redis.clone(),
        authz::EntryKey::derive(&config.jwt_secret),
        platform::authz_redis::Keys::for_vhost(&vhost),
        authz::cache::CacheSettings::default(),
        meter,
    );
    // Without its listener the in-memory tier stays off (no lease), so a
    // Redis that is down at start only costs speed; retry in the background.
    {
        let authz = authz.clone();
        let tasks_for_listener = tasks.clone();
        tasks.spawn("authz listener start", async move {
            let shutdown = tasks_for_listener.shutdown().clone();
            while !shutdown.is_cancelled() {
                match authz.start(redis_config.clone(), &tasks_for_listener).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "authz listener not started; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => {}
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
            shutdown.cancelled().await;
        });
    }
    let hub = realtime::hub::Hub::new(db.clone(), config.realtime_replay_events);
    tasks.spawn(
        "realtime hub",
        hub.clone().run(
            config.amqp_url.clone(),
            authz.instance().to_owned(),
            shutdown.clone(),
        ),
    );
    let gateway = realtime::socket::Gateway::new(
        hub,
        realtime::socket::Limits {
            stale_grace: config.ws_reauth_grace,
            ..Default::default()
        },
        config.cors_origins.clone(),
        (config.ws_max_connections, config.ws_max_pending_per_client),
        meter,
    );
    tasks.spawn(
        "expired sessions purge",
        periodically(Duration::from_secs(3600), shutdown.clone(), {
            let db = db.clone();
            move || purge_expired_sessions(db.clone())
        }),
    );
    let relay_wake = schema::RelayWake::start(&pool, tasks);
    tasks.spawn(
        "snoozed conversations waker",
        periodically(Duration::from_secs(15), shutdown.clone(), {
            let (db, wake) = (db.clone(), relay_wake.clone());
            move || wake_snoozed(db.clone(), wake.clone())
        }),
    );
    let opened = config
        .storage
        .open(config.attachments_url_base.clone(), None)
        .map_err(|e| anyhow::anyhow!("attachment storage: {e}"))?;
    tasks.spawn(
        "pending attachments purge",
        periodically(config.attachment_purge_interval, shutdown.clone(), {
            let (db, store) = (db.clone(), opened.store.clone());
            move || purge_pending_attachments(db.clone(), store.clone())
        }),
    );
    Ok(AppState(Arc::new(Services {
        attachments: attachments::Attachments {
            store: opened.store,
            limits: config.attachment_limits.clone(),
        },
        blob_routes: opened.blob_routes,
        telegram: telegram::TelegramAdmin::new(config.telegram.clone()),
        relay_wake,
        limiter: auth::ratelimit::LoginLimiter::new(
            redis.clone(),
            config.login_limits.clone(),
            &vhost,
        ),
        hasher: Arc::new(auth::password::Hasher::new(
            config.password_hash_concurrency,
            // A queue of a few seconds' work; past it, 503 at once.
            config.password_hash_concurrency * 32,
            std::time::Duration::from_secs(5),
        )),
        db,
        pool,
        redis,
        broker: Arc::new(broker::Broker::new(config.amqp_url.clone())),
        keys: Arc::new(auth::jwt::Keys::new(
            &config.jwt_secret,
            config.access_token_ttl,
        )?),
        authz,
        auth: Arc::new(auth::AuthSettings {
            refresh_ttl: config.refresh_token_ttl,
            trust_forwarded_for: config.trust_forwarded_for,
            origins: config.cors_origins.clone(),
        }),
        gateway,
        shutdown,
    })))
}

/// Runs `job` every `period` until `shutdown`: the API's housekeeping
/// (each run logs its own outcome).
async fn periodically<F, Fut>(period: Duration, shutdown: CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period.max(Duration::from_secs(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => job().await,
        }
    }
}

/// Deletes the uploads no message took within a day, object and row
/// (every `ATTACHMENT_PURGE_INTERVAL`).
async fn purge_pending_attachments(
    db: sea_orm::DatabaseConnection,
    store: Arc<dyn storage::AttachmentStore>,
) {
    let age = chrono::Duration::from_std(attachments::PENDING_MAX_AGE)
        .unwrap_or(chrono::Duration::days(1));
    match attachments::purge_pending(&db, store.as_ref(), chrono::Utc::now() - age).await {
        Ok(purged) if purged > 0 => {
            tracing::info!(purged, "uploads no message took within a day deleted");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging pending uploads failed"),
    }
}

/// Deletes refresh tokens a day past their expiry (hourly). Older tokens of
/// a family point at newer ones and expire first, so one statement removes
/// whole chains without breaking a reference.
async fn purge_expired_sessions(db: sea_orm::DatabaseConnection) {
    match auth::session::purge_expired(&db).await {
        Ok(deleted) if deleted > 0 => {
            tracing::info!(deleted, "expired refresh tokens purged");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging expired refresh tokens failed"),
    }
}

/// Reopens snoozed conversations whose time came (every 15 s).
async fn wake_snoozed(db: sea_orm::DatabaseConnection, wake: schema::RelayWake) {
    match inbox::conversations::wake_snoozed(&db).await {
        Ok(0) => {}
        Ok(n) => {
            wake.committed();
            tracing::info!(reopened = n, "snoozed conversations reopened");
        }
        Err(e) => tracing::warn!(error = %e, "waking snoozed conversations failed"),
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState, config: &Config, metrics: http_metrics::HttpMetrics) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = routes::router(&state);
    let origins: Vec<_> = config
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    // Credentials, so the listed origins' pages can send the refresh
    // cookie (ADR 0019); with them, methods and headers are mirrored rather
    // than `*`, which browsers refuse alongside credentials.
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        // A page on another origin reads how long to wait after a 429
        // (sign-in throttling, a Telegram flood wait).
        .expose_headers([axum::http::header::RETRY_AFTER]);
    // The duration metric needs the matched route, so it wraps each route
    // (and the fallback). Everything else wraps the router once, outside
    // it: a layer given to `Router::layer` is stacked onto every route, and
    // each `from_fn` in such a stack clones all that it wraps on every
    // request.
    let blobs = state.blob_routes.clone();
    let mut routes = api
        .layer(middleware::from_fn_with_state(
            metrics,
            http_metrics::record,
        ))
        .with_state(state);
    // The local store's signed URLs: the signature is their only
    // authorisation, so they sit outside the PEP (ADR 0017).
    if let Some(blobs) = blobs {
        routes = routes.merge(blobs);
    }
    let app = ServiceBuilder::new()
        .map_request(drop_unusable_request_id)
        .layer(SetRequestIdLayer::new(request_id.clone(), RandomRequestId))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(cors)
        .layer(middleware::from_fn(error::error_envelope))
        .service(routes);
    Router::new().fallback_service(app)
}

/// A random UUID (v4) for each request without a usable id of its own,
/// drawn from the thread's generator: `MakeRequestUuid` asks the kernel for
/// every one, a system call per request.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        axum::http::HeaderValue::from_str(&id.to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Longest client-chosen request id kept.
const MAX_REQUEST_ID: usize = 64;

/// A client's `x-request-id` is kept only when it is short and plain (1 to
/// 64 of `A-Z a-z 0-9 . _ - :`); otherwise it is dropped and a fresh one is
/// made, so answers and logs never carry what a client smuggled in.
fn drop_unusable_request_id(mut req: axum::extract::Request) -> axum::extract::Request {
    let usable = |v: &axum::http::HeaderValue| {
        let b = v.as_bytes();
        (1..=MAX_REQUEST_ID).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
    };
    let headers = req.headers_mut();
    let values = headers.get_all("x-request-id");
    let mut iter = values.iter();
    let keep = match (iter.next(), iter.next()) {
        (None, _) => true,
        (Some(v), None) => usable(v),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove("x-request-id");
    }
    req
}

/// The span of one request, a child of the caller's `traceparent` if any.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        url.path = %req.uri().path(),
        request_id,
        trace_id = tracing::field::Empty,
    );
    if platform::trace::enabled() {
        // Spans are named after the route (low cardinality), as OTel's HTTP
        // conventions ask.
        match routes::template(req.uri().path()) {
            Some(route) => {
                span.record("otel.name", format!("{} /api{route}", req.method()));
                span.record("http.route", format!("/api{route}"));
            }
            None => {
                span.record("otel.name", format!("{} unmatched", req.method()));
            }
        }
    }
    if span.is_disabled() || !req.headers().contains_key("traceparent") {
        return span;
    }
    if let Some(trace_id) =
        platform::trace::set_parent_from(&span, &platform::trace::from_http(req.headers()))
    {
        span.record("trace_id", trace_id);
    }
    span
}

/// Serves the API on `listener` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    telemetry: platform::Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let meter = telemetry.meter("fastprep-api");
    let tasks = Supervisor::new(shutdown.clone());
    let state = state(&config, &meter, &tasks).await?;
    let metrics = http_metrics::HttpMetrics::new(&meter);
    let app = router(state.clone(), &config, metrics);
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    let served = platform::metrics_server::serve_http(listener, app, shutdown.clone()).await;
    // Whatever ended the serving, the rest stops too.
    shutdown.cancel();
    let finished = tasks.finish(Some(std::time::Duration::from_secs(10))).await;
    let _ = state.redis.quit().await;
    state.pool.close().await;
    served?;
    finished
}

pub use auth::admin::{Ensured, ensure_admin};
