//! W3C trace context across process boundaries: the API puts the request's
//! context into the outbox row's headers, the relay copies them into AMQP
//! headers, and the consumer runner makes its span a child of it.

use std::collections::HashMap;

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's context as `traceparent`/`tracestate` headers (empty
/// when tracing is not initialised, as in tests that run services in-process).
pub fn inject_current() -> HashMap<String, String> {
    let cx = tracing::Span::current().context();
    let mut headers = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    headers
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
