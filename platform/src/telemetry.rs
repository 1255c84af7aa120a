//! Tracing (JSON or pretty logs, OpenTelemetry spans) and OpenTelemetry
//! metrics exported through opentelemetry-prometheus into a registry that the
//! `/metrics` server renders.

use opentelemetry::metrics::Meter;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::Registry;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Handles kept for the life of the process.
#[derive(Clone)]
pub struct Telemetry {
    pub registry: Registry,
    provider: SdkMeterProvider,
}

impl Telemetry {
    /// Sets up logging and metrics for a process named `service`.
    /// Log format follows `LOG_FORMAT` (`json` or `pretty`, default pretty on a
    /// terminal), level follows `RUST_LOG` (default `info`).
    pub fn init(service: &'static str) -> anyhow::Result<Self> {
        init_tracing(service);
        Self::metrics_only()
    }

    /// Metrics without touching the global tracing subscriber (tests run many
    /// services in one process).
    pub fn metrics_only() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build()?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        Ok(Self { registry, provider })
    }

    /// A meter whose instruments land in this process's registry.
    pub fn meter(&self, name: &'static str) -> Meter {
        use opentelemetry::metrics::MeterProvider;
        self.provider.meter(name)
    }

    /// Renders the registry as Prometheus text.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn init_tracing(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}
