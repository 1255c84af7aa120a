//! The in-memory tier: each user's permissions with the time they were
//! filled, and a generation bumped by every invalidation, so that a fill that
//! raced one is not kept. Trust in it is the lease's business, not this
//! tier's.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::authz::Ep;

pub(super) struct Local {
    tier: RwLock<Tier>,
    ttl: Duration,
    capacity: usize,
}

struct Tier {
    entries: HashMap<Uuid, (Arc<Ep>, Instant)>,
    /// Bumped by every invalidation: a fill that raced one is not kept.
    generation: u64,
}

impl Local {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            tier: RwLock::new(Tier {
                entries: HashMap::new(),
                generation: 0,
            }),
            ttl,
            capacity,
        }
    }

    /// The user's entry, unless older than the TTL.
    pub(super) fn get(&self, user: Uuid) -> Option<Arc<Ep>> {
        let l = self.tier.read().ok()?;
        let (ep, at) = l.entries.get(&user)?;
        (at.elapsed() < self.ttl).then(|| ep.clone())
    }

    /// The generation to hand back to [`Self::fill`], read before a load.
    pub(super) fn generation(&self) -> u64 {
        self.tier.read().map(|l| l.generation).unwrap_or(0)
    }

    /// Keeps what a load found, unless an invalidation came after
    /// `generation` was read. A full tier is emptied first.
    pub(super) fn fill(&self, user: Uuid, ep: Arc<Ep>, generation: u64) {
        if let Ok(mut l) = self.tier.write()
            && l.generation == generation
        {
            if l.entries.len() >= self.capacity {
                l.entries.clear();
            }
            l.entries.insert(user, (ep, Instant::now()));
        }
    }

    pub(super) fn evict(&self, user: Uuid) {
        if let Ok(mut l) = self.tier.write() {
            l.entries.remove(&user);
            l.generation += 1;
        }
    }

    pub(super) fn clear(&self) {
        if let Ok(mut l) = self.tier.write() {
            l.entries.clear();
            l.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::PermSet;

    fn ep(user: Uuid, version: i64) -> Arc<Ep> {
        Arc::new(Ep {
            user_id: user,
            version,
            active: true,
            perms: PermSet::default(),
        })
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_dropped() {
        let local = Local::new(Duration::from_secs(30), 10);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let generation = local.generation();
        local.evict(b);
        local.fill(a, ep(a, 1), generation);
        assert!(local.get(a).is_none());
        local.fill(a, ep(a, 1), local.generation());
        assert_eq!(local.get(a).map(|e| e.version), Some(1));
        local.clear();
        assert!(local.get(a).is_none());
    }

    #[test]
    fn entries_expire_and_a_full_tier_starts_over() {
        let local = Local::new(Duration::ZERO, 1);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        local.fill(a, ep(a, 1), local.generation());
        assert!(local.get(a).is_none(), "past its TTL");
        let local = Local::new(Duration::from_secs(30), 1);
        local.fill(a, ep(a, 1), local.generation());
        local.fill(b, ep(b, 1), local.generation());
        assert!(local.get(a).is_none());
        assert!(local.get(b).is_some());
    }
}
