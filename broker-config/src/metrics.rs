//! Instruments of the consumer runner, created once per process.

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

#[derive(Clone)]
pub struct ConsumerMetrics {
    messages: Counter<u64>,
    duration: Histogram<f64>,
    batches: Histogram<u64>,
}

/// Outcome label of `consumer_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Retry,
    Dead,
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead",
            Outcome::Duplicate => "duplicate",
        }
    }
}

impl ConsumerMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            messages: meter
                .u64_counter("consumer_messages")
                .with_description("Deliveries handled by a consumer, by queue and outcome")
                .build(),
            duration: meter
                .f64_histogram("consumer_handler_duration")
                .with_unit("s")
                .with_description("Time spent handling one delivery, by queue")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            batches: meter
                .u64_histogram("consumer_batch_deliveries")
                .with_description(
                    "Deliveries a committed batch of two or more handled together in one transaction, by queue",
                )
                .with_boundaries(vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                .build(),
        }
    }

    /// Records the `size` deliveries a committed batch handled together.
    pub fn batch(&self, queue: &'static str, size: usize) {
        self.batches.record(
            u64::try_from(size).unwrap_or(u64::MAX),
            &[KeyValue::new("queue", queue)],
        );
    }

    pub fn record(&self, queue: &'static str, outcome: Outcome, seconds: f64) {
        self.count(queue, outcome);
        self.duration
            .record(seconds, &[KeyValue::new("queue", queue)]);
    }

    /// Counts an outcome without timing it (a try that waits in place).
    pub fn count(&self, queue: &'static str, outcome: Outcome) {
        self.messages.add(
            1,
            &[
                KeyValue::new("queue", queue),
                KeyValue::new("outcome", outcome.as_str()),
            ],
        );
    }
}
