//! The command line of `fastprep-consumers`, shared by the shipped binary and
//! the fault tests' build with fail points.

use clap::Parser;
use platform::metrics_server;

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
    let config = metrics_server::config_or_exit(Config::from_env(&platform::Env::process()));
    let shutdown = platform::shutdown_token();
    metrics_server::start(
        config.metrics_bind,
        config.metrics_port,
        telemetry.clone(),
        shutdown.clone(),
    )
    .await?;
    let ran = crate::run(cli.process, config, telemetry.clone(), shutdown).await;
    telemetry.shutdown();
    ran
}
