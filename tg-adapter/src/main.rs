//! `fastprep-tg-adapter`: loads config, starts telemetry and the metrics
//! server, binds the HTTP port and calls [`tg_adapter::run`]. Two commands
//! beside serving work on the MTProto session file while the adapter is
//! stopped: `login` and `rotate-key` (see the runbook).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use platform::{Env, Telemetry};
use tg_adapter::Config;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "fastprep-tg-adapter", about = "FastPrep's Telegram adapter")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the adapter (the default).
    Serve,
    /// Logs the Telegram account in on the terminal (phone, code, 2FA
    /// password). Run it while the adapter is stopped.
    Login,
    /// Re-encrypts DATA_DIR/telegram.session from TDLIB_ENCRYPTION_KEY to
    /// TDLIB_ENCRYPTION_KEY_NEW. Run it while the adapter is stopped.
    RotateKey,
}

#[tokio::main]
async fn main() -> ExitCode {
    platform::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve_main().await,
        Command::Login => offline(tg_adapter::cli::login(&Env::process()).await),
        Command::RotateKey => offline(tg_adapter::cli::rotate_key(&Env::process())),
    }
}

fn offline(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastprep-tg-adapter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_main() -> ExitCode {
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
