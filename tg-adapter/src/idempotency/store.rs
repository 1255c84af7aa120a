//! The durable `Idempotency-Key → first successful result` table. Only
//! successful sends are stored, so a failed attempt can be retried.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency_keys");

/// What a key's first successful send returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSend {
    pub chat_id: i64,
    pub random_id: i64,
    pub tg_message_id: i64,
    pub sent_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
}

/// The idempotency table of the store.
#[derive(Clone)]
pub struct IdempotencyStore {
    store: Store,
}

impl IdempotencyStore {
    /// Creates the table inside the start-up transaction of [`Store::open`].
    pub fn create_table(txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(TABLE)?;
        Ok(())
    }

    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn get(&self, key: &str) -> Result<Option<StoredSend>, StoreError> {
        let key = key.to_owned();
        self.store
            .blocking(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(TABLE)?;
                match table.get(key.as_str())? {
                    Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                    None => Ok(None),
                }
            })
            .await
    }

    /// Stores a key's result unless one is already there; returns the result
    /// that is stored afterwards (the first one wins).
    pub async fn put_first(&self, key: &str, value: StoredSend) -> Result<StoredSend, StoreError> {
        let key = key.to_owned();
        self.store
            .write(move |txn| {
                let stored = {
                    let mut table = txn.open_table(TABLE)?;
                    let existing = match table.get(key.as_str())? {
                        Some(v) => Some(serde_json::from_slice::<StoredSend>(v.value())?),
                        None => None,
                    };
                    match existing {
                        Some(first) => first,
                        None => {
                            let bytes = serde_json::to_vec(&value)?;
                            table.insert(key.as_str(), bytes.as_slice())?;
                            value.clone()
                        }
                    }
                };
                Ok(stored)
            })
            .await
    }

    /// Deletes entries stored more than `max_age` ago; returns how many.
    pub async fn prune(&self, max_age: Duration) -> Result<usize, StoreError> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        self.store
            .blocking(move |db| {
                let txn = db.begin_write()?;
                let mut removed = 0usize;
                {
                    let mut table = txn.open_table(TABLE)?;
                    table.retain(|_, v| {
                        // Undecodable entries are kept: pruning never guesses.
                        let keep = serde_json::from_slice::<StoredSend>(v)
                            .map(|s| s.stored_at >= cutoff)
                            .unwrap_or(true);
                        if !keep {
                            removed += 1;
                        }
                        keep
                    })?;
                }
                txn.commit()?;
                Ok(removed)
            })
            .await
    }

    /// Number of stored keys.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.store
            .blocking(|db| {
                let txn = db.begin_read()?;
                Ok(txn.open_table(TABLE)?.len()?)
            })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tg-adapter-unit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample(tg_message_id: i64, stored_at: DateTime<Utc>) -> StoredSend {
        StoredSend {
            chat_id: 1,
            random_id: 2,
            tg_message_id,
            sent_at: stored_at,
            stored_at,
        }
    }

    #[tokio::test]
    async fn first_result_wins_and_old_entries_are_pruned() {
        let dir = temp_dir();
        let store = Store::open(&dir, &[IdempotencyStore::create_table]).unwrap();
        let ids = IdempotencyStore::new(store);
        assert_eq!(ids.get("k").await.unwrap(), None);
        let now = Utc::now();
        let first = ids.put_first("k", sample(10, now)).await.unwrap();
        assert_eq!(first.tg_message_id, 10);
        let again = ids.put_first("k", sample(11, now)).await.unwrap();
        assert_eq!(again.tg_message_id, 10);
        assert_eq!(ids.get("k").await.unwrap(), Some(first));

        let old = now - chrono::Duration::days(31);
        ids.put_first("old", sample(12, old)).await.unwrap();
        assert_eq!(ids.count().await.unwrap(), 2);
        assert_eq!(ids.prune(Duration::from_secs(30 * 86400)).await.unwrap(), 1);
        assert_eq!(ids.get("old").await.unwrap(), None);
        assert!(ids.get("k").await.unwrap().is_some());
        drop(ids);
        let _ = std::fs::remove_dir_all(dir);
    }
}
