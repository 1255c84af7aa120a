//! What every FastPrep process stands on: typed configuration from the
//! environment, tracing and OpenTelemetry metrics exported as Prometheus text,
//! the `/metrics` server and graceful shutdown.

pub mod authz_redis;
pub mod config;
pub mod metrics_server;
pub mod names;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod trace;

pub use config::{ConfigError, Env};
pub use shutdown::shutdown_token;
pub use telemetry::Telemetry;

/// Installs the process-wide rustls crypto provider. Two providers end up
/// compiled in (sqlx brings ring, others aws-lc-rs); without an explicit
/// choice the first TLS client panics. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
