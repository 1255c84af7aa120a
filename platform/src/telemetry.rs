//! Tracing (JSON or pretty logs, OpenTelemetry spans exported over OTLP)
//! and OpenTelemetry metrics exported through opentelemetry-prometheus into
//! a registry that the `/metrics` server renders.
//!
//! Spans leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set:
//! then a tracer provider with a batch exporter (OTLP over HTTP, protobuf)
//! and the W3C trace-context propagator are installed, and
//! [`crate::trace::enabled`] turns on the spans that exist only for traces.
//! Unset, no layer, provider or propagator is installed and nothing is
//! exported.

use opentelemetry::{metrics::Meter, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, metrics::SdkMeterProvider, trace::SdkTracerProvider};
use prometheus::Registry;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Handles kept for the life of the process.
#[derive(Clone)]
pub struct Telemetry {
    pub registry: Registry,
    provider: SdkMeterProvider,
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sets up logging, traces and metrics for a process named `service`.
    /// Log format follows `LOG_FORMAT` (`json` or `pretty`, default pretty on a
    /// terminal), level follows `RUST_LOG` (default `info`); spans go to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set.
    pub fn init(service: &'static str) -> anyhow::Result<Self> {
        let tracer = tracer_provider(service)?;
        init_tracing(service, tracer.as_ref());
        let mut telemetry = Self::metrics_only()?;
        telemetry.tracer = tracer;
        Ok(telemetry)
    }

    /// Exports the spans still buffered; call before the process exits.
    pub fn shutdown(&self) {
        if let Some(tracer) = &self.tracer
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
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
        Ok(Self {
            registry,
            provider,
            tracer: None,
        })
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
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// The OTLP tracer provider, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The
/// exporter reads the standard `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*`
/// variables itself.
fn tracer_provider(service: &'static str) -> anyhow::Result<Option<SdkTracerProvider>> {
    let wanted = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .is_ok_and(|v| !v.trim().is_empty());
    if !wanted {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    opentelemetry::global::set_tracer_provider(provider.clone());
    crate::trace::enable();
    Ok(Some(provider))
}

fn init_tracing(service: &'static str, tracer: Option<&SdkTracerProvider>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed()
    } else {
        // Colours only for a person at a terminal: a log file or a platform's
        // log drain gets plain text (and no formatting cost per span).
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed()
    };
    // Spans are exported whatever RUST_LOG says of the logs: the project's
    // own spans, at info.
    let traces = tracer.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(
                Targets::new()
                    .with_target("api", tracing::Level::INFO)
                    .with_target("consumers", tracing::Level::INFO)
                    .with_target("broker_config", tracing::Level::INFO)
                    .with_target("tg_adapter", tracing::Level::INFO)
                    .with_target("schema", tracing::Level::INFO)
                    .with_target("platform", tracing::Level::INFO),
            )
    });
    let result = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    if result.is_ok() {
        tracing::info!(service, traces = tracer.is_some(), "telemetry initialised");
    }
}
