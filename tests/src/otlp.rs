//! An OTLP/HTTP receiver of the test's own: the processes export their
//! spans to it (`OTEL_EXPORTER_OTLP_ENDPOINT`), and a test rebuilds trace
//! trees from what arrived; they push their metrics to it
//! (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`), and a test reads the points.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{KeyValue, any_value::Value as AnyValue},
    metrics::v1::{metric::Data, number_data_point::Value as Number},
};
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

/// One data point of a pushed metric: a sum's or gauge's value, or a
/// histogram's count.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `service.name` and `service.instance.id` of the process that pushed it.
    pub service: String,
    pub instance: String,
    pub name: String,
    pub unit: String,
    /// `sum` (with `monotonic`), `gauge` or `histogram`.
    pub kind: &'static str,
    pub monotonic: bool,
    /// 2 cumulative (1 delta); 0 for a gauge.
    pub temporality: i32,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Clone)]
pub struct OtlpReceiver {
    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    points: Arc<Mutex<Vec<Point>>>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| text(a.value.as_ref()))
        .unwrap_or_default()
}

fn labels(attributes: &[KeyValue]) -> std::collections::BTreeMap<String, String> {
    attributes
        .iter()
        .map(|a| (a.key.clone(), text(a.value.as_ref())))
        .collect()
}

async fn metrics(State(points): State<Arc<Mutex<Vec<Point>>>>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut points = points.lock().unwrap();
    for resource in request.resource_metrics {
        let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
        let service = attribute(&attributes, "service.name");
        let instance = attribute(&attributes, "service.instance.id");
        for scope in resource.scope_metrics {
            for m in scope.metrics {
                let point = |kind, monotonic, temporality, labels, value| Point {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: m.name.clone(),
                    unit: m.unit.clone(),
                    kind,
                    monotonic,
                    temporality,
                    labels,
                    value,
                };
                let number = |v: Option<Number>| match v {
                    Some(Number::AsDouble(d)) => d,
                    Some(Number::AsInt(i)) => i as f64,
                    None => f64::NAN,
                };
                match &m.data {
                    Some(Data::Sum(sum)) => {
                        for p in &sum.data_points {
                            points.push(point(
                                "sum",
                                sum.is_monotonic,
                                sum.aggregation_temporality,
                                labels(&p.attributes),
                                number(p.value),
                            ));
                        }
                    }
                    Some(Data::Gauge(gauge)) => {
                        for p in &gauge.data_points {
                            points.push(point(
                                "gauge",
                                false,
                                0,
                                labels(&p.attributes),
                                number(p.value),
                            ));
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &h.data_points {
                            points.push(point(
                                "histogram",
                                false,
                                h.aggregation_temporality,
                                labels(&p.attributes),
                                p.count as f64,
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    StatusCode::OK
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
        let points = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(spans.clone())
            .merge(
                Router::new()
                    .route("/v1/metrics", post(metrics))
                    .with_state(points.clone()),
            );
        let (addr, server) = crate::serve_on_loopback(app).await;
        Self {
            endpoint: format!("http://{addr}"),
            spans,
            points,
            _server: server,
        }
    }

    /// Every metric point pushed so far, in arrival order.
    pub fn points(&self) -> Vec<Point> {
        self.points.lock().unwrap().clone()
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
