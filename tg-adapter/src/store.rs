//! The durable store on `DATA_DIR`: one redb file holding the idempotency
//! table and the sandbox's sent log, so both survive a restart together.

use std::{path::Path, sync::Arc};

use redb::Database;

/// File name of the store inside `DATA_DIR`.
pub const DB_FILE: &str = "idempotency.redb";

/// A store failure. The adapter answers 503 and the caller retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("store record does not decode: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("store task failed: {0}")]
    Task(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Creates one table inside the start-up write transaction.
pub type CreateTable = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// A shared handle on the redb database. redb calls block (they fsync), so
/// every use goes through [`Store::blocking`].
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) `DATA_DIR/idempotency.redb` and makes sure every
    /// table exists, so read transactions never meet a missing table.
    pub fn open(data_dir: &Path, tables: &[CreateTable]) -> Result<Self, StoreError> {
        let db = Database::create(data_dir.join(DB_FILE))?;
        let txn = db.begin_write()?;
        for create in tables {
            create(&txn)?;
        }
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `f` on the blocking pool.
    pub async fn blocking<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Database) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}
