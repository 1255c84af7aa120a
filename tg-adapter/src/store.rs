//! The durable store on `DATA_DIR`: one redb file holding the idempotency
//! table and the sandbox's sent log, so both survive a restart together.
//!
//! Small writes go through one writer thread that commits every write
//! waiting for it in one transaction (group commit): redb runs one write
//! transaction at a time and each commit is made durable on disk, so a
//! transaction per write made concurrent sends queue behind each other's
//! commits.

use std::{any::Any, path::Path, sync::Arc};

use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

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
    #[error("store commit failed: {0}")]
    Commit(String),
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
/// every use goes through [`Store::blocking`] or [`Store::write`].
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writes: mpsc::UnboundedSender<Job>,
}

/// What a write returns, before it is handed back to its caller.
type Output = Box<dyn Any + Send>;
/// One write. `FnMut`: when a write of a shared transaction fails, the
/// others are run again, each in a transaction of its own.
type WriteOp = Box<dyn FnMut(&WriteTransaction) -> Result<Output, StoreError> + Send>;

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<Output, StoreError>>,
}

/// redb's page cache. Its reads are one key each, and a page it does not
/// hold is one `pread` from the kernel's page cache. At the soak's rates an
/// 8 MiB cache took over ten minutes to fill and cost the process 13 MiB
/// more (32.8 against 19.9 MiB after 15 minutes, side by side).
const CACHE_BYTES: usize = 2 << 20;

/// Writes committed together at most (bounds the latency of the first).
const MAX_GROUP: usize = 256;

impl Store {
    /// Opens (or creates) `DATA_DIR/idempotency.redb` and makes sure every
    /// table exists, so read transactions never meet a missing table.
    pub fn open(data_dir: &Path, tables: &[CreateTable]) -> Result<Self, StoreError> {
        // redb caches up to 1 GiB by default; the adapter's reads are one
        // key each, so a small cache keeps its memory flat as the file grows.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(data_dir.join(DB_FILE))?;
        let txn = db.begin_write()?;
        for create in tables {
            create(&txn)?;
        }
        txn.commit()?;
        let db = Arc::new(db);
        let (writes, jobs) = mpsc::unbounded_channel();
        // Weak: the database closes as soon as the last handle is dropped
        // (a reopen in the same process finds it free).
        let writer_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(&writer_db, jobs))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(Self { db, writes })
    }

    /// Runs `op` in a write transaction, committed (durably) before this
    /// returns; writes that arrive together share one commit.
    pub async fn write<F, R>(&self, mut op: F) -> Result<R, StoreError>
    where
        F: FnMut(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: WriteOp = Box::new(move |txn| op(txn).map(|r| Box::new(r) as Output));
        self.writes
            .send(Job { op, reply })
            .map_err(|_| StoreError::Task("the store writer stopped".into()))?;
        let output = answer
            .await
            .map_err(|_| StoreError::Task("the store writer stopped".into()))??;
        output
            .downcast::<R>()
            .map(|r| *r)
            .map_err(|_| StoreError::Task("store write returned another type".into()))
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

/// The writer thread: takes every write waiting, runs them in one
/// transaction and commits once; ends when every [`Store`] is dropped.
fn writer(db: &std::sync::Weak<Database>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let answers = match db.upgrade() {
            Some(db) => {
                let answers = if group.len() == 1 {
                    group
                        .into_iter()
                        .map(|job| commit_alone(&db, job))
                        .collect()
                } else {
                    commit_together(&db, group)
                };
                // Let go of the database before anyone hears back, so a
                // caller that drops its store next finds the file closed.
                drop(db);
                answers
            }
            None => return,
        };
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }
}

type Answer = (
    oneshot::Sender<Result<Output, StoreError>>,
    Result<Output, StoreError>,
);

/// Runs the group in one transaction and commits once. When one write
/// fails, the transaction is dropped and each write runs on its own, so one
/// bad write fails only its own caller.
fn commit_together(db: &Database, mut group: Vec<Job>) -> Vec<Answer> {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let message = e.to_string();
            return group
                .into_iter()
                .map(|job| (job.reply, Err(StoreError::Commit(message.clone()))))
                .collect();
        }
    };
    let mut outputs = Vec::with_capacity(group.len());
    for job in &mut group {
        match (job.op)(&txn) {
            Ok(output) => outputs.push(output),
            Err(_) => {
                drop(txn);
                return group.into_iter().map(|job| commit_alone(db, job)).collect();
            }
        }
    }
    let committed = txn.commit().map_err(|e| e.to_string());
    group
        .into_iter()
        .zip(outputs)
        .map(|(job, output)| {
            let result = match &committed {
                Ok(()) => Ok(output),
                Err(message) => Err(StoreError::Commit(message.clone())),
            };
            (job.reply, result)
        })
        .collect()
}

fn commit_alone(db: &Database, mut job: Job) -> Answer {
    let result = (|| {
        let txn = db.begin_write()?;
        let output = (job.op)(&txn)?;
        txn.commit()?;
        Ok(output)
    })();
    (job.reply, result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<u64, u64> = TableDefinition::new("group_commit_test");

    fn create(txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(T)?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_and_one_bad_write_fails_alone() {
        let dir = std::env::temp_dir().join(format!("tg-adapter-unit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir, &[create]).unwrap();
        let writes = (0..200u64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |txn| {
                        txn.open_table(T)?.insert(i, i * 2)?;
                        if i == 77 {
                            // Fails after writing: its row must not stay.
                            return Err(StoreError::Task("refused".into()));
                        }
                        Ok(i)
                    })
                    .await
            })
        });
        let results = futures::future::join_all(writes).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap();
            if i == 77 {
                assert!(r.is_err());
            } else {
                assert_eq!(r.unwrap(), i as u64);
            }
        }
        let rows = store
            .blocking(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(T)?;
                Ok((0..200u64)
                    .filter(|i| table.get(i).ok().flatten().is_some())
                    .count())
            })
            .await
            .unwrap();
        assert_eq!(rows, 199);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
