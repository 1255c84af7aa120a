//! W3C trace context across process boundaries: the API puts the request's
//! context into the outbox row's headers, the relay copies them into AMQP
//! headers, and the consumer runner makes its span a child of it.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` set). Spans that
/// exist only for traces (one per published event, say) are made only then.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// `make()` when traces are exported, else a disabled span (nothing built).
pub fn span_if_enabled(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The context of `span` as `traceparent`/`tracestate` headers; nothing
/// (and no work) when traces are not exported.
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    if !enabled() {
        return HashMap::new();
    }
    let cx = span.context();
    let mut headers = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    headers
}

/// The current span's context as `traceparent`/`tracestate` headers (empty
/// when tracing is not initialised, as in tests that run services in-process).
pub fn inject_current() -> HashMap<String, String> {
    inject(&tracing::Span::current())
}

/// Makes `span` a child of the context carried in `headers`; returns the
/// trace id (hex) when there was one, for logging.
pub fn set_parent_from(span: &tracing::Span, headers: &HashMap<String, String>) -> Option<String> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(headers));
    let trace_id = cx.span().span_context().trace_id();
    let _ = span.set_parent(cx);
    Some(trace_id.to_string())
}

/// `traceparent`/`tracestate` of an HTTP request.
pub fn from_http(headers: &axum::http::HeaderMap) -> HashMap<String, String> {
    ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| {
            headers
                .get(*k)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*k).to_owned(), v.to_owned()))
        })
        .collect()
}
