//! One async mutex per idempotency key, so two concurrent requests with the
//! same key never both reach Telegram. Entries vanish when nobody holds or
//! waits for them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<()>>;

/// A map of per-key locks.
#[derive(Clone, Default)]
pub struct KeyLocks {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Held while a key's request is in its critical section.
pub struct KeyGuard {
    key: String,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits until no other holder of `key` remains.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key.to_owned()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        KeyGuard {
            key: key.to_owned(),
            slots: self.slots.clone(),
            guard: Some(guard),
        }
    }

    /// Keys with a holder or a waiter.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .map_or_else(|poisoned| poisoned.into_inner().len(), |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The map and our guard are the only owners: nobody waits, drop the slot.
        if slots
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 2)
        {
            slots.remove(&self.key);
        }
        self.guard.take();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_is_serialised_and_slots_are_freed() {
        let locks = KeyLocks::default();
        let first = locks.lock("k").await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("k").await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        // Another key is not blocked.
        drop(locks.lock("other").await);
        drop(first);
        waiter.await.unwrap();
        assert!(locks.is_empty());
    }
}
