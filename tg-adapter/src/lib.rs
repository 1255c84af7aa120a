//! The Telegram adapter: the only process that talks to Telegram. It sends
//! replies exactly once per idempotency key within Telegram's budgets and
//! publishes inbound updates as `tg.update.received.v1` (DESIGN §7).

pub mod backend;
pub mod budget;
pub mod cli;
pub mod config;
pub mod http;
pub mod idempotency;
pub mod inbound;
pub mod metrics;
pub mod send;
pub mod store;
pub mod telegram;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use platform::supervisor::Supervisor;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{BackendKind, BudgetConfig, Config};

use backend::{Backend, SandboxBackend};
use budget::Budgets;
use idempotency::IdempotencyStore;
use send::SendService;
use store::Store;

/// Idempotency results older than this are pruned.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(30 * 86_400);
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
const FORGET_IDLE_CHATS_EVERY: Duration = Duration::from_secs(60);

/// Serves the adapter on `listener` until `shutdown` is cancelled, then
/// finishes in-flight requests and sends and closes the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    telemetry: platform::Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating DATA_DIR {}", config.data_dir.display()))?;
    let store = Store::open(
        &config.data_dir,
        &[
            IdempotencyStore::create_table,
            SandboxBackend::create_tables,
        ],
    )
    .with_context(|| {
        format!(
            "opening the store in DATA_DIR {}",
            config.data_dir.display()
        )
    })?;

    // The forwarder and housekeeping stop after the last request (on
    // `background`); either ending before that stops the adapter with an
    // error. `tasks` holds sends whose callers hung up.
    let background = CancellationToken::new();
    let supervised = Supervisor::new(shutdown.clone());
    let tasks = TaskTracker::new();

    let (backend, sandbox): (Arc<dyn Backend>, Option<Arc<SandboxBackend>>) = match config.backend {
        BackendKind::Sandbox => {
            let sandbox = Arc::new(SandboxBackend::new(store.clone()));
            (sandbox.clone(), Some(sandbox))
        }
        BackendKind::Mtproto => {
            let settings = config
                .mtproto
                .as_ref()
                .context("TG_BACKEND=mtproto without its settings")?;
            let telegram = telegram::start(&config.data_dir, settings, background.clone())?;
            supervised.spawn("telegram connections", telegram.connections);
            supervised.spawn("telegram updates", telegram.updates);
            (telegram.backend, None)
        }
    };
    let meter = telemetry.meter("tg-adapter");
    let metrics = metrics::Metrics::new(&meter);
    let _session_gauge = metrics::session_gauge(&meter, backend.session());
    let sender = Arc::new(SendService::new(
        backend.clone(),
        IdempotencyStore::new(store.clone()),
        Budgets::new(&config.budgets),
        metrics,
    ));

    if let Some(updates) = backend.take_updates() {
        let forwarder = inbound::Forwarder::new(config.amqp_url.clone());
        supervised.spawn(
            "inbound forwarder",
            forwarder.run(updates, backend.session(), background.clone()),
        );
    }
    supervised.spawn(
        "housekeeping",
        housekeeping(sender.clone(), background.clone()),
    );

    let app = http::router(
        http::auth::BearerAuth::new(&config.token),
        http::v1::V1State {
            sender,
            backend,
            tasks: tasks.clone(),
        },
        sandbox.zip(
            config
                .sandbox_token
                .as_ref()
                .map(http::auth::BearerAuth::new),
        ),
    );
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        backend = %config.backend,
        data_dir = %config.data_dir.display(),
        "tg-adapter listening"
    );
    let served = platform::metrics_server::serve_http(listener, app, shutdown.clone()).await;
    // Requests are done; stop the forwarder and housekeeping, and wait for
    // sends whose callers hung up, so the store is closed when we return.
    shutdown.cancel();
    background.cancel();
    tasks.close();
    tasks.wait().await;
    let finished = supervised.finish(None).await;
    served.context("serving HTTP")?;
    finished?;
    tracing::info!("tg-adapter stopped");
    Ok(())
}

/// Prunes old idempotency results and forgets idle chats' budgets.
async fn housekeeping(sender: Arc<SendService>, stop: CancellationToken) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut forget = tokio::time::interval(FORGET_IDLE_CHATS_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = prune.tick() => match sender.results().prune(IDEMPOTENCY_RETENTION).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "pruned old idempotency keys"),
                Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
            },
            _ = forget.tick() => sender.budgets().forget_idle_chats(),
        }
    }
}
