//! RabbitMQ as code: the event envelope and types, the topology and its
//! `definitions.json`, the confirmed publisher and the generic consumer runner.

pub mod adapter_api;
pub mod connection;
pub mod dlq;
pub mod events;
pub mod metrics;
pub mod publisher;
pub mod retry;
pub mod runner;
pub mod topology;

pub use events::{Envelope, Event};
pub use publisher::Publisher;
pub use retry::RetryPolicy;
pub use runner::{Batched, Context, Failure, Handler, Next, RunnerConfig};
