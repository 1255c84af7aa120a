//! The command line of `fastprep-api`, shared by the shipped binary and the
//! fault tests' build with fail points.

use clap::{Parser, Subcommand};
use platform::metrics_server;

#[derive(Parser)]
#[command(about = "FastPrep Admin API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on PORT (the default).
    Serve,
    /// Create the admin account ADMIN_EMAIL / ADMIN_PASSWORD, or reset it
    /// (ending its sessions); with the same password it changes nothing.
    CreateAdmin,
    /// Print the OpenAPI document (what `GET /api/openapi.json` serves):
    /// `fastprep-api openapi > docs/openapi.json`.
    Openapi,
}

/// Parses the command line and runs what it names.
pub async fn main() -> anyhow::Result<()> {
    platform::install_crypto_provider();
    let cli = Cli::parse();
    let env = platform::Env::process();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", crate::openapi::json());
            Ok(())
        }
        Command::CreateAdmin => {
            let url: String = env.required("DATABASE_URL")?;
            let email: String = env.required("ADMIN_EMAIL")?;
            let password: String = env.required("ADMIN_PASSWORD")?;
            if !env.is_development()
                && let Some(reason) = platform::config::weakness(&password)
            {
                eprintln!(
                    "configuration error: ADMIN_PASSWORD {reason}; choose another, or set \
                     FASTPREP_ENV=development on a development machine"
                );
                std::process::exit(2);
            }
            let pool = schema::pool::connect(&url, 2).await?;
            match crate::ensure_admin(&pool, &email, &password).await? {
                crate::Ensured::Created(id) => println!("admin {email} created (id {id})"),
                crate::Ensured::Unchanged(id) => println!("admin {email} ready (id {id})"),
                crate::Ensured::Reset { id, sessions_ended } => println!(
                    "admin {email} reset (id {id}): password, activation and role set, \
                     {sessions_ended} session(s) ended"
                ),
            }
            Ok(())
        }
        Command::Serve => {
            let telemetry = platform::Telemetry::init("fastprep-api")?;
            let config = metrics_server::config_or_exit(crate::Config::from_env(&env));
            let shutdown = platform::shutdown_token();
            metrics_server::start(
                config.metrics_bind,
                config.metrics_port,
                telemetry.clone(),
                shutdown.clone(),
            )
            .await?;
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.port)).await?;
            let served = crate::run(config, listener, telemetry.clone(), shutdown).await;
            telemetry.shutdown();
            served
        }
    }
}
