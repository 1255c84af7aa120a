//! The command line of `fastprep-consumers`, shared by the shipped binary and
//! the fault tests' build with fail points.

use clap::Parser;

use crate::{Config, Process};

#[derive(Parser)]
#[command(about = "FastPrep outbox relay and event consumers")]
struct Cli {
    /// Which process to run.
    #[arg(value_enum)]
    process: Process,
}

/// Parses the command line and runs the process it names until shutdown.
pub async fn main() -> anyhow::Result<()> {
    platform::install_crypto_provider();
    let cli = Cli::parse();
    let telemetry = platform::Telemetry::init(cli.process.service_name())?;
    let config = match Config::from_env(&platform::Env::process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    let shutdown = platform::shutdown_token();
    let metrics_listener =
        tokio::net::TcpListener::bind((config.metrics_bind, config.metrics_port)).await?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    tokio::spawn(platform::metrics_server::serve(
        metrics_listener,
        telemetry.clone(),
        shutdown.clone(),
    ));
    let ran = crate::run(cli.process, config, telemetry.clone(), shutdown).await;
    telemetry.shutdown();
    ran
}
