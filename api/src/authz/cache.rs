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

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface},
    prelude::{Builder, Client as RedisClient, Config as RedisConfig, ReconnectPolicy},
    types::Message,
};
use opentelemetry::{KeyValue, metrics::Counter};
use platform::authz_redis::{self, Scripts, UserUpdated};
use sqlx::PgPool;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{EntryError, EntryKey, Ep, PermSet};
use crate::error::ApiError;

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

struct Local {
    entries: HashMap<Uuid, (Arc<Ep>, Instant)>,
    /// Bumped by every invalidation: a fill that raced one is not kept.
    generation: u64,
}

pub struct Authorizer {
    pool: PgPool,
    redis: RedisClient,
    scripts: Scripts,
    key: EntryKey,
    settings: CacheSettings,
    instance: String,
    origin: Instant,
    local: RwLock<Local>,
    /// Send time (µs since `origin`, 0 = never) of the last tick heard.
    lease_from: AtomicU64,
    updates: broadcast::Sender<UserUpdated>,
    lookups: Counter<u64>,
    hit: [KeyValue; 1],
    miss: [KeyValue; 1],
    refused: [KeyValue; 1],
}

impl Authorizer {
    pub fn new(
        pool: PgPool,
        redis: RedisClient,
        key: EntryKey,
        settings: CacheSettings,
        meter: &opentelemetry::metrics::Meter,
    ) -> Arc<Self> {
        let (updates, _) = broadcast::channel(1024);
        Arc::new(Self {
            pool,
            redis,
            scripts: Scripts::new(),
            key,
            settings,
            instance: Uuid::now_v7().simple().to_string(),
            origin: Instant::now(),
            local: RwLock::new(Local {
                entries: HashMap::new(),
                generation: 0,
            }),
            lease_from: AtomicU64::new(0),
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

    /// Starts listening for invalidations and ticking. Returns once the
    /// subscription is in place; the tasks end with `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        redis_config: RedisConfig,
        tasks: &platform::supervisor::Supervisor,
    ) -> anyhow::Result<()> {
        let shutdown = tasks.shutdown().clone();
        let subscriber = Builder::from_config(redis_config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_subscriber_client()?;
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        subscriber.init().await?;
        let tick_channel = authz_redis::tick_channel(&self.instance);
        subscriber
            .subscribe(vec![authz_redis::CHANNEL.to_owned(), tick_channel.clone()])
            .await?;
        let _resubscribe = subscriber.manage_subscriptions();
        let me = self.clone();
        let stop = shutdown.clone();
        tasks.spawn("authz invalidation listener", async move {
            let mut last_seq: Option<u64> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    msg = messages.recv() => match msg {
                        Ok(m) => me.on_message(&m, &tick_channel, &mut last_seq),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "invalidation listener lagged; dropping the local tier");
                            me.clear_local(true);
                            last_seq = None;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = reconnects.recv() => {
                        tracing::info!("invalidation listener reconnected; dropping the local tier");
                        me.clear_local(true);
                        last_seq = None;
                    }
                }
            }
            let _ = subscriber.quit().await;
        });
        let me = self.clone();
        tasks.spawn("authz clock tick", async move {
            let channel = authz_redis::tick_channel(&me.instance);
            let mut every = tokio::time::interval(me.settings.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = every.tick() => {
                        let sent = me.now_micros().to_string();
                        if let Err(e) = me.scripts.tick(&me.redis, &channel, &sent).await {
                            tracing::debug!(error = %e, "authz tick not published");
                        }
                    }
                }
            }
        });
        Ok(())
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn lease_valid(&self) -> bool {
        let from = self.lease_from.load(Ordering::Acquire);
        from != 0
            && u128::from(self.now_micros().saturating_sub(from)) < self.settings.lease.as_micros()
    }

    fn on_message(&self, msg: &Message, tick_channel: &str, last_seq: &mut Option<u64>) {
        let Some(payload) = msg.value.as_str() else {
            return;
        };
        if &*msg.channel == tick_channel {
            let Some((sent, seq)) = payload
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                return;
            };
            // The tick follows every invalidation it counts: having missed
            // one, or having gone unheard past the lease, the tier is dropped
            // before the lease is renewed.
            let missed = last_seq.is_none_or(|last| last < seq);
            if *last_seq != Some(seq) || !self.lease_valid() {
                self.clear_local(missed);
                *last_seq = Some(seq);
            }
            self.lease_from.fetch_max(sent, Ordering::AcqRel);
            return;
        }
        let update: UserUpdated = match serde_json::from_str(&payload) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable authz.user.updated message ignored");
                return;
            }
        };
        match (update.seq, *last_seq) {
            (Some(seq), Some(last)) if seq > last + 1 => {
                tracing::warn!(seq, last, "missed invalidations; dropping the local tier");
                self.clear_local(true);
                *last_seq = Some(seq);
            }
            (Some(seq), Some(last)) => *last_seq = Some(last.max(seq)),
            (Some(seq), None) => *last_seq = Some(seq),
            (None, _) => {}
        }
        self.evict(update.user_id);
        if update.perm_version.is_none() {
            // The runbook's manual path: whoever forgot the DEL, the cached
            // entry goes too.
            let redis = self.redis.clone();
            let key = authz_redis::ep_key(update.user_id);
            tokio::spawn(async move {
                let _: Result<i64, _> = redis.del(key).await;
            });
        }
        let _ = self.updates.send(update);
    }

    fn evict(&self, user: Uuid) {
        if let Ok(mut l) = self.local.write() {
            l.entries.remove(&user);
            l.generation += 1;
        }
    }

    /// Drops the whole tier. When announcements may have been `missed`, the
    /// WebSocket gateway is told too (a nil user id: every socket re-reads
    /// its user's permissions).
    fn clear_local(&self, missed: bool) {
        if let Ok(mut l) = self.local.write() {
            l.entries.clear();
            l.generation += 1;
        }
        if missed {
            let _ = self.updates.send(UserUpdated {
                user_id: Uuid::nil(),
                perm_version: None,
                seq: None,
            });
        }
    }

    fn local_get(&self, user: Uuid) -> Option<Arc<Ep>> {
        if !self.lease_valid() {
            return None;
        }
        let l = self.local.read().ok()?;
        let (ep, at) = l.entries.get(&user)?;
        (at.elapsed() < self.settings.local_ttl).then(|| ep.clone())
    }

    /// The user's effective permissions; `None` for a user that does not
    /// exist.
    pub async fn effective(&self, user: Uuid) -> Result<Option<Arc<Ep>>, ApiError> {
        if let Some(ep) = self.local_get(user) {
            self.lookups.add(1, &self.hit);
            return Ok(Some(ep));
        }
        self.load(user, true).await
    }

    /// As [`Self::effective`], skipping the in-memory tier.
    pub async fn fresh(&self, user: Uuid) -> Result<Option<Arc<Ep>>, ApiError> {
        self.load(user, false).await
    }

    async fn load(&self, user: Uuid, use_redis: bool) -> Result<Option<Arc<Ep>>, ApiError> {
        let generation = self.local.read().map(|l| l.generation).unwrap_or(0);
        // The floor is read even when the entry is not wanted: nothing below
        // it may be cached anywhere.
        let mut refused = None;
        let (cached, floor) = match tokio::time::timeout(
            self.settings.redis_timeout,
            Scripts::read(&self.redis, user),
        )
        .await
        {
            Ok(Ok((raw, floor))) => {
                let floor = floor.unwrap_or(0);
                let cached = match raw.filter(|_| use_redis) {
                    None => None,
                    Some(raw) => match Ep::from_json(user, &raw, &self.key) {
                        Ok(ep) => Some(ep).filter(|ep| ep.version >= floor),
                        Err(e) => {
                            if e == EntryError::Forged {
                                tracing::warn!(
                                    user = %user,
                                    "cached permissions fail their seal (written without the key); \
                                     refused and reloaded from the database"
                                );
                            }
                            self.lookups.add(1, &self.refused);
                            refused = Some(raw);
                            None
                        }
                    },
                };
                (cached, Some(floor))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "EP cache unreadable; using the database");
                (None, None)
            }
            Err(_) => {
                tracing::warn!("EP cache timed out; using the database");
                (None, None)
            }
        };
        let ep = match cached {
            Some(ep) => {
                self.lookups.add(1, &self.hit);
                Arc::new(ep)
            }
            None => {
                self.lookups.add(1, &self.miss);
                let Some(ep) = self.from_db(user).await? else {
                    return Ok(None);
                };
                let ep = Arc::new(ep);
                if floor.is_some_and(|f| ep.version >= f) {
                    let json = ep.to_json(&self.key);
                    let write = self.scripts.write_ep(
                        &self.redis,
                        user,
                        ep.version,
                        &json,
                        refused.as_deref(),
                    );
                    match tokio::time::timeout(self.settings.redis_timeout, write).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "EP not cached"),
                        Err(_) => tracing::warn!("EP cache write timed out"),
                    }
                }
                ep
            }
        };
        // Memory takes only what is at or above a floor read just now, and
        // only if no invalidation arrived meanwhile.
        if floor.is_some_and(|f| ep.version >= f)
            && self.lease_valid()
            && let Ok(mut l) = self.local.write()
            && l.generation == generation
        {
            if l.entries.len() >= self.settings.local_capacity {
                l.entries.clear();
            }
            l.entries.insert(user, (ep.clone(), Instant::now()));
        }
        Ok(Some(ep))
    }

    /// Reads the user's permissions and version in one statement.
    pub async fn from_db(&self, user: Uuid) -> Result<Option<Ep>, sqlx::Error> {
        let row: Option<(bool, i64, Vec<String>)> = sqlx::query_as(
            "SELECT u.is_active, u.perm_version,
                    COALESCE(array_agg(DISTINCT rp.permission_key)
                             FILTER (WHERE rp.permission_key IS NOT NULL), '{}')
             FROM users u
             LEFT JOIN user_roles ur ON ur.user_id = u.id
             LEFT JOIN role_permissions rp ON rp.role_id = ur.role_id
             WHERE u.id = $1
             GROUP BY u.id",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(active, version, keys)| Ep {
            user_id: user,
            version,
            active,
            perms: PermSet::from_keys(keys.iter().map(String::as_str)),
        }))
    }

    /// Before a change commits: raise the version floors of the users it
    /// bumps, drop their cached entries and tell every instance. From here no
    /// tier can take an entry below the new version, so the old rights can
    /// only come back from PostgreSQL, and only until the commit. When Redis
    /// cannot take this the change must not commit. Returns when Redis
    /// acknowledged it, the start of the lease the writer waits out.
    pub async fn invalidate_before_commit(
        &self,
        users: &[(Uuid, i64)],
    ) -> Result<Instant, ApiError> {
        if users.is_empty() {
            return Ok(Instant::now());
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.scripts.invalidate(&self.redis, users),
        )
        .await
        {
            Ok(Ok(())) => Ok(Instant::now()),
            Ok(Err(e)) => Err(ApiError::Unavailable {
                what: "redis",
                cause: e.to_string(),
            }),
            Err(_) => Err(ApiError::Unavailable {
                what: "redis",
                cause: "timed out".into(),
            }),
        }
    }

    /// After the commit: announce the committed versions (what listeners
    /// re-read now is the new state), then wait until the lease that began
    /// at `invalidated` has run out, so that when this returns no instance
    /// still trusts what it had.
    pub async fn after_commit(&self, users: &[(Uuid, i64)], invalidated: Instant) {
        if users.is_empty() {
            return;
        }
        for (user, _) in users {
            self.evict(*user);
        }
        if let Err(e) = self.scripts.invalidate(&self.redis, users).await {
            // Harmless for correctness (done before the commit); the
            // authz-fanout consumer announces it again from the outbox.
            tracing::warn!(error = %e, "post-commit announcement failed; authz-fanout will repeat it");
        }
        tokio::time::sleep_until((invalidated + self.settings.lease).into()).await;
    }
}
