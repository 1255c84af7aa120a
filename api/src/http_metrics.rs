//! HTTP server duration per route (`http_server_request_duration_seconds`).

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use opentelemetry::{
    KeyValue, StringValue, Value,
    metrics::{Histogram, Meter},
};

#[derive(Clone)]
pub struct HttpMetrics {
    duration: Histogram<f64>,
    /// `http.route` values of the declared routes, made once: recording a
    /// request copies no strings.
    routes: Arc<HashMap<String, Value>>,
}

impl HttpMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            duration: meter
                .f64_histogram("http_server_request_duration")
                .with_unit("s")
                .with_description("Duration of HTTP requests by route, method and status")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
            routes: Arc::new(
                crate::routes::table()
                    .into_iter()
                    .map(|r| {
                        let route = format!("/api{}", r.path);
                        let value =
                            Value::String(StringValue::from(Arc::<str>::from(route.as_str())));
                        (route, value)
                    })
                    .collect(),
            ),
        }
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

pub async fn record(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| metrics.routes.get(p.as_str()).cloned())
        .unwrap_or(Value::String(StringValue::from("unmatched")));
    let method = method_name(req.method());
    let resp = next.run(req).await;
    if platform::trace::enabled() {
        tracing::Span::current().record("http.response.status_code", resp.status().as_u16());
    }
    metrics.duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("http.route", route),
            KeyValue::new("http.request.method", method),
            KeyValue::new(
                "http.response.status_code",
                i64::from(resp.status().as_u16()),
            ),
        ],
    );
    resp
}
