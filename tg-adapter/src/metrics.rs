//! The adapter's instruments, created once per process from the telemetry
//! meter: send outcomes, send latency and the session's state.

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, ObservableGauge},
};
use tokio::sync::watch;

use crate::backend::{SessionState, SessionStatus};

/// `tg_session_state{state}`: 1 for the session's current state, 0 for the
/// others, read at every scrape. Keep the handle for as long as it reports.
pub fn session_gauge(
    meter: &Meter,
    session: watch::Receiver<SessionStatus>,
) -> ObservableGauge<u64> {
    meter
        .u64_observable_gauge("tg_session_state")
        .with_description(
            "1 for the Telegram session's current state (authorized, needs_login, flood_wait), 0 for the others",
        )
        .with_callback(move |observer| {
            let now = session.borrow().session;
            for state in [
                SessionState::Authorized,
                SessionState::NeedsLogin,
                SessionState::FloodWait,
            ] {
                observer.observe(
                    u64::from(state == now),
                    &[KeyValue::new("state", state.as_str())],
                );
            }
        })
        .build()
}

platform::named_enum! {
    /// `result` label of `tg_adapter_sends_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SendResult {
        Sent = "sent",
        Duplicate = "duplicate",
        FloodWait = "flood_wait",
        Permanent = "permanent",
        Transient = "transient",
    }
}

#[derive(Clone)]
pub struct Metrics {
    sends: Counter<u64>,
    duration: Histogram<f64>,
}

impl Metrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            sends: meter
                .u64_counter("tg_adapter_sends")
                .with_description(
                    "Send requests by outcome: sent, duplicate (idempotent replay), \
                     flood_wait (budget or Telegram), permanent, transient",
                )
                .build(),
            duration: meter
                .f64_histogram("tg_adapter_send_duration")
                .with_unit("s")
                .with_description("Time the Telegram backend took for one send, by outcome")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
        }
    }

    /// Counts one request's outcome.
    pub fn count(&self, result: SendResult) {
        self.sends
            .add(1, &[KeyValue::new("result", result.as_str())]);
    }

    /// Records one backend call.
    pub fn backend_call(&self, result: SendResult, seconds: f64) {
        self.duration
            .record(seconds, &[KeyValue::new("result", result.as_str())]);
    }
}
