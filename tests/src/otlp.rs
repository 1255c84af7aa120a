//! An OTLP/HTTP receiver of the test's own: the processes export their
//! spans to it (`OTEL_EXPORTER_OTLP_ENDPOINT`), and a test rebuilds trace
//! trees from what arrived.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// One span as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_id: String,
    pub name: String,
    /// `service.name` of the process that exported it.
    pub service: String,
    /// 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
}

#[derive(Clone)]
pub struct OtlpReceiver {
    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

async fn traces(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for s in scope.spans {
                spans.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_id: hex(&s.parent_span_id),
                    name: s.name,
                    service: service.clone(),
                    kind: s.kind,
                });
            }
        }
    }
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(spans.clone());
        let (addr, server) = crate::serve_on_loopback(app).await;
        Self {
            endpoint: format!("http://{addr}"),
            spans,
            _server: server,
        }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of the trace that holds a span named `name`.
    pub fn trace_of(&self, name: &str) -> Vec<Span> {
        let spans = self.spans();
        let Some(trace) = spans
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.trace_id.clone())
        else {
            return Vec::new();
        };
        spans.into_iter().filter(|s| s.trace_id == trace).collect()
    }
}
