//! End-to-end, chaos and contract suites: the real binaries against real
//! PostgreSQL, RabbitMQ and Redis, Telegram played by the sandbox adapter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod api;
mod attachments;
mod auth_cookie;
mod authz;
mod changes;
mod cluster;
mod faults;
mod inbox;
mod metrics;
mod ops;
mod ordering;
mod pipeline;
mod realtime;
mod relay;
mod security;
mod security_accounts;
mod security_surface;
mod security_throttle;
mod traces;
