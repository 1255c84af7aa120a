//! The database contract: migrations for every table of DESIGN §3, sea-orm
//! entities, and the outbox writer every producer uses.

pub mod entities;
pub mod finders;
pub mod migrations;
pub mod outbox;
pub mod pool;

pub use migrations::Migrator;
pub use outbox::{RelayWake, enqueue, enqueue_at, enqueue_each_with_change, enqueue_with_change};
