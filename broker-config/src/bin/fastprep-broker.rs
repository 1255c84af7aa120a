//! Broker tooling: print `definitions.json`, declare the topology.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "FastPrep broker tooling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the topology in RabbitMQ's definitions format.
    Definitions,
    /// Declare the topology on the broker at AMQP_URL (idempotent).
    Declare {
        #[arg(long, env = "AMQP_URL")]
        amqp_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::install_crypto_provider();
    match Cli::parse().command {
        Command::Definitions => {
            print!(
                "{}",
                broker_config::topology::definitions_json(&broker_config::topology::topology())
            );
        }
        Command::Declare { amqp_url } => {
            broker_config::connection::check_urls(&amqp_url)
                .map_err(|reason| anyhow::anyhow!("AMQP_URL has an invalid value: {reason}"))?;
            let conn = broker_config::connection::connect(&amqp_url, "fastprep-broker").await?;
            let channel = conn.create_channel().await?;
            broker_config::topology::declare(&channel, &broker_config::topology::topology())
                .await?;
            println!("topology declared");
        }
    }
    Ok(())
}
