//! Relay instruments (DESIGN §11).

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Histogram, Meter},
};

#[derive(Clone)]
pub struct RelayMetrics {
    published: Counter<u64>,
    commit_to_confirm: Histogram<f64>,
    pending_rows: Gauge<i64>,
    oldest_pending_age: Gauge<f64>,
    failed_rows: Gauge<i64>,
    leader: Gauge<i64>,
}

impl RelayMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            published: meter
                .u64_counter("outbox_published")
                .with_description("Outbox rows published and confirmed by the broker")
                .build(),
            commit_to_confirm: meter
                .f64_histogram("outbox_commit_to_confirm")
                .with_unit("s")
                .with_description("Time from an outbox row's creation to the broker's confirm")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
                .build(),
            pending_rows: meter
                .i64_gauge("outbox_pending_rows")
                .with_description("Outbox rows waiting to be published")
                .build(),
            oldest_pending_age: meter
                .f64_gauge("outbox_oldest_pending_age")
                .with_unit("s")
                .with_description("Age of the oldest pending outbox row")
                .build(),
            failed_rows: meter
                .i64_gauge("outbox_failed_rows")
                .with_description("Outbox rows that exhausted OUTBOX_MAX_ATTEMPTS")
                .build(),
            leader: meter
                .i64_gauge("outbox_relay_leader")
                .with_description("1 while this relay is the active one, 0 on standby")
                .build(),
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.record(i64::from(leader), &[]);
    }

    pub fn published(&self, n: u64) {
        self.published.add(n, &[]);
    }

    pub fn record_confirm(&self, event_type: &str, seconds: f64) {
        self.commit_to_confirm.record(
            seconds.max(0.0),
            &[KeyValue::new("event_type", static_label(event_type))],
        );
    }

    pub fn set_backlog(&self, pending: i64, oldest_age_seconds: f64, failed: i64) {
        self.pending_rows.record(pending, &[]);
        self.oldest_pending_age.record(oldest_age_seconds, &[]);
        self.failed_rows.record(failed, &[]);
    }
}

/// Event types as static labels (no allocation per event; unknown types
/// cannot blow up the label set).
pub(crate) fn static_label(event_type: &str) -> &'static str {
    broker_config::events::types::ALL
        .into_iter()
        .find(|t| *t == event_type)
        .unwrap_or("other")
}
