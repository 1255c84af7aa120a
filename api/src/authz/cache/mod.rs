//! The effective-permission cache, in three tiers: this instance's memory,
//! Redis (`authz:ep:{userId}` under its version floor), PostgreSQL.
//!
//! The in-memory tier answers in about a microsecond, and it must still never
//! let a revoked right through once the admin's request has returned. Two
//! rules make that hold (ADR 0005):
//!
//! - Every instance listens on `authz.user.updated` and drops what a message
//!   names. Sequenced messages carry `seq` from `authz:inv:seq`; a gap means
//!   a message was missed, and the whole tier is dropped.
//! - The tier is used only under a lease: the instance publishes a tick
//!   through Redis every `tick`, carrying the send time and the current `seq`,
//!   and the lease lasts `lease` from the send time of the last tick it heard
//!   back with no gap before it.
//! - A writer raises the version floors and publishes its invalidations
//!   before its commit, and waits `lease` from then before answering. No tier
//!   takes an entry below a floor it has read, so by the answer every instance
//!   has dropped the old entry (or stopped trusting its memory) and can only
//!   have learnt the new version since.
//!
//! The rooms: `lookup` (a read through the tiers), `local` (the in-memory
//! tier), `lease` (when that tier may be trusted, and the tick that renews
//! it), `listener` (invalidations and ticks heard), `invalidate` (what a
//! writer does around its commit).

mod invalidate;
mod lease;
mod listener;
mod local;
mod lookup;

use std::{sync::Arc, time::Duration};

use fred::prelude::Client as RedisClient;
use opentelemetry::{KeyValue, metrics::Counter};
use platform::authz_redis::{self, Scripts, UserUpdated};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::EntryKey;
use lease::Lease;
use local::Local;

/// Timing of the in-memory tier.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub tick: Duration,
    pub lease: Duration,
    pub local_ttl: Duration,
    pub local_capacity: usize,
    /// Longest wait for Redis on the request path before going to PostgreSQL.
    pub redis_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(20),
            lease: Duration::from_millis(100),
            local_ttl: Duration::from_secs(30),
            local_capacity: 100_000,
            redis_timeout: Duration::from_millis(250),
        }
    }
}

pub struct Authorizer {
    db: sea_orm::DatabaseConnection,
    redis: RedisClient,
    scripts: Scripts,
    key: EntryKey,
    settings: CacheSettings,
    instance: String,
    local: Local,
    lease: Lease,
    updates: broadcast::Sender<UserUpdated>,
    lookups: Counter<u64>,
    hit: [KeyValue; 1],
    miss: [KeyValue; 1],
    refused: [KeyValue; 1],
}

impl Authorizer {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        redis: RedisClient,
        key: EntryKey,
        keys: authz_redis::Keys,
        settings: CacheSettings,
        meter: &opentelemetry::metrics::Meter,
    ) -> Arc<Self> {
        let (updates, _) = broadcast::channel(1024);
        Arc::new(Self {
            db,
            redis,
            scripts: Scripts::new(keys),
            key,
            instance: Uuid::now_v7().simple().to_string(),
            local: Local::new(settings.local_ttl, settings.local_capacity),
            lease: Lease::new(settings.lease),
            settings,
            updates,
            lookups: meter
                .u64_counter("authz_ep_cache")
                .with_description("Effective-permission lookups by cache result")
                .build(),
            hit: [KeyValue::new("result", "hit")],
            miss: [KeyValue::new("result", "miss")],
            refused: [KeyValue::new("result", "refused")],
        })
    }

    /// This instance's id (its tick channel, and later its realtime queue).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Every `authz.user.updated` this instance hears, for the WebSocket
    /// gateway, and a nil user id when some may have been missed.
    pub fn updates(&self) -> broadcast::Receiver<UserUpdated> {
        self.updates.subscribe()
    }
}
