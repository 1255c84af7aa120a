//! `fastprep-tg-adapter`: loads config, starts telemetry and the metrics
//! server, binds the HTTP port and calls [`tg_adapter::run`].

use std::process::ExitCode;

use anyhow::Context;
use platform::{Env, Telemetry};
use tg_adapter::Config;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    platform::install_crypto_provider();
    let telemetry = match Telemetry::init("fastprep-tg-adapter") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fastprep-tg-adapter: telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::from_env(&Env::process()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("fastprep-tg-adapter: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config, telemetry).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "tg-adapter failed");
            eprintln!("fastprep-tg-adapter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, telemetry: Telemetry) -> anyhow::Result<()> {
    let shutdown = platform::shutdown_token();
    let listener = TcpListener::bind(("0.0.0.0", config.port))
        .await
        .with_context(|| format!("binding PORT {}", config.port))?;
    if let Some(port) = config.metrics_port {
        platform::metrics_server::start(
            config.metrics_bind,
            port,
            telemetry.clone(),
            shutdown.clone(),
        )
        .await?;
    }
    let served = tg_adapter::run(config, listener, telemetry.clone(), shutdown).await;
    telemetry.shutdown();
    served
}
