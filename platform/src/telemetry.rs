//! Tracing (JSON or pretty logs, OpenTelemetry spans exported over OTLP)
//! and OpenTelemetry metrics exported through opentelemetry-prometheus into
//! a registry that the `/metrics` server renders.
//!
//! Metrics are also pushed, over OTLP/HTTP (protobuf), when
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set: every
//! `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 000), cumulative, with
//! `service.name` and a `service.instance.id` of this process. That is how
//! processes no scraper can reach (Render's background workers) report
//! (ADR 0022). `/metrics` is served either way.
//!
//! Spans leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set:
//! then a tracer provider with a batch exporter (OTLP over HTTP, protobuf)
//! and the W3C trace-context propagator are installed, and
//! [`crate::trace::enabled`] turns on the spans that exist only for traces.
//! Unset, no layer, provider or propagator is installed and nothing is
//! exported.

use opentelemetry::{metrics::Meter, trace::TracerProvider as _};
use opentelemetry_otlp::MetricExporter;
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
    /// Whether metrics are pushed over OTLP too (flushed at shutdown).
    pushes: bool,
}

impl Telemetry {
    /// Sets up logging, traces and metrics for a process named `service`.
    /// Log format follows `LOG_FORMAT` (`json` or `pretty`, default pretty on a
    /// terminal), level follows `RUST_LOG` (default `info`); spans go to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set.
    pub fn init(service: &'static str) -> anyhow::Result<Self> {
        let tracer = tracer_provider(service)?;
        init_tracing(service, tracer.as_ref());
        let mut telemetry = Self::metrics(metrics_push(service)?)?;
        telemetry.tracer = tracer;
        if telemetry.pushes {
            tracing::info!(service, "metrics are pushed over OTLP");
        }
        Ok(telemetry)
    }

    /// Exports the spans and metrics still buffered; call before the
    /// process exits.
    pub fn shutdown(&self) {
        if let Some(tracer) = &self.tracer
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
        if self.pushes
            && let Err(e) = self.provider.shutdown()
        {
            eprintln!("flushing metrics failed: {e}");
        }
    }

    /// Metrics without touching the global tracing subscriber (tests run many
    /// services in one process).
    pub fn metrics_only() -> anyhow::Result<Self> {
        Self::metrics(None)
    }

    fn metrics(push: Option<(MetricExporter, Resource)>) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build()?;
        let mut provider = SdkMeterProvider::builder().with_reader(exporter);
        let pushes = push.is_some();
        if let Some((push, resource)) = push {
            provider = provider
                .with_periodic_exporter(push)
                .with_resource(resource);
        }
        let provider = provider.build();
        // One series every process has from its start, traffic or not: a
        // process that pushes (or shows) nothing is down, not idle.
        {
            use opentelemetry::metrics::MeterProvider;
            provider
                .meter("platform")
                .u64_observable_gauge("fastprep_build_info")
                .with_description("1 for each running process, labelled with its version")
                .with_callback(|gauge| {
                    gauge.observe(
                        1,
                        &[opentelemetry::KeyValue::new(
                            "version",
                            env!("CARGO_PKG_VERSION"),
                        )],
                    );
                })
                .build();
        }
        Ok(Self {
            registry,
            provider,
            tracer: None,
            pushes,
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

/// The OTLP metrics exporter and this process's resource, when
/// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set (only that variable: the
/// traces' `OTEL_EXPORTER_OTLP_ENDPOINT` alone does not push metrics to a
/// collector that may take spans only). The exporter reads the other
/// `OTEL_EXPORTER_OTLP_METRICS_*` variables (headers, timeout) itself.
fn metrics_push(service: &'static str) -> anyhow::Result<Option<(MetricExporter, Resource)>> {
    let wanted =
        std::env::var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_ok_and(|v| !v.trim().is_empty());
    if !wanted {
        return Ok(None);
    }
    // The exporter reads the headers itself and skips a malformed pair
    // without a word: a bad credential would look like a silent backend.
    if let Ok(headers) = std::env::var("OTEL_EXPORTER_OTLP_METRICS_HEADERS") {
        check_headers(&headers)
            .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_METRICS_HEADERS: {e}"))?;
    }
    let exporter = MetricExporter::builder().with_http().build()?;
    // Two instances of one service push the same series: the instance id
    // keeps them apart (a new one per start, as OpenTelemetry advises).
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ))
        .build();
    Ok(Some((exporter, resource)))
}

/// OTLP's header list: `key=value` pairs separated by commas (values
/// URL-encoded), e.g. `Authorization=Basic%20dXNlcjpwYXNz`.
fn check_headers(list: &str) -> Result<(), String> {
    for (i, pair) in list.split(',').enumerate() {
        if pair.trim().is_empty() {
            continue;
        }
        // Only the key is ever named: the value is a credential.
        match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {}
            Some((key, _)) if !key.trim().is_empty() => {
                return Err(format!("{:?} has no value", key.trim()));
            }
            _ => {
                return Err(format!(
                    "item {} is not key=value (the list is key=value pairs separated by commas, values URL-encoded)",
                    i + 1
                ));
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::check_headers;

    #[test]
    fn a_header_list_is_key_value_pairs() {
        assert!(check_headers("Authorization=Basic%20abc").is_ok());
        assert!(check_headers("a=1, b=2").is_ok());
        assert!(check_headers("").is_ok());
        // The secret itself never shows in the error.
        let e = check_headers("a=1,Authorization Basic abc").unwrap_err();
        assert!(e.contains("item 2 is not key=value"), "{e}");
        assert!(!e.contains("abc"), "{e}");
        let e = check_headers("Authorization=").unwrap_err();
        assert!(e.contains("\"Authorization\" has no value"), "{e}");
        assert!(check_headers("=x").is_err());
    }
}
