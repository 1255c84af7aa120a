//! argon2id password hashing, and [`Hasher`], which bounds how many hashes
//! run at once: each takes 19 MiB and a core for tens of milliseconds, so an
//! unbounded flood of sign-ins is a memory and CPU attack.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Checks a password against a stored hash; a malformed hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a password nobody has, verified when the account does not exist
/// so that the answer takes as long as for a real account.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| match hash("not-a-real-password-just-for-timing") {
        Ok(h) => h,
        Err(e) => {
            // Unknown accounts now answer faster than real ones.
            tracing::error!(error = %e, "the timing-equaliser hash could not be made");
            String::new()
        }
    })
}

/// Runs password hashes on the blocking pool, at most `concurrent` at a
/// time. Callers queue for a slot; when `max_waiting` already queue, or the
/// slot does not come within `wait`, the request is refused (503 `busy`)
/// rather than held.
/// The slot travels into the blocking task: a client that hangs up drops
/// the request, not the hash, and the slot is held until the hash ends.
pub struct Hasher {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    wait: Duration,
}

/// Counts a request waiting for a slot until it stops waiting, however it
/// stops (a dropped request included).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hasher {
    pub fn new(concurrent: usize, max_waiting: usize, wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            wait,
        }
    }

    /// Runs `work` (a hash or a verification) in a slot.
    pub async fn run<T, F>(&self, work: F) -> ApiResult<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let busy = || ApiError::Busy {
            what: "password checking",
        };
        let waiting = Waiting(self.waiting.clone());
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            return Err(busy());
        }
        let slot = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        drop(waiting);
        let slot = match slot {
            Ok(Ok(permit)) => permit,
            _ => return Err(busy()),
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))
    }
}

/// Shortest and longest password accepted.
pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

/// Refuses passwords outside the length policy (422).
pub fn check_policy(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::Unprocessable {
            code: "weak_password",
            message: format!("a password must be {MIN_LEN} to {MAX_LEN} characters"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[tokio::test]
    async fn the_hasher_bounds_concurrency_and_its_queue() {
        let hasher = std::sync::Arc::new(Hasher::new(1, 1, Duration::from_millis(200)));
        let running = std::sync::Arc::new(AtomicUsize::new(0));
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let (hasher, running) = (hasher.clone(), running.clone());
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        running.fetch_add(1, Ordering::SeqCst);
                        let _ = busy_rx.recv_timeout(Duration::from_secs(5));
                    })
                    .await
            })
        };
        while running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // One waits for the slot (and gives up after 200 ms); a third finds
        // the queue full at once.
        let second = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(|| ()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = hasher.run(|| ()).await;
        assert!(matches!(third, Err(ApiError::Busy { .. })));
        assert!(matches!(second.await.unwrap(), Err(ApiError::Busy { .. })));
        busy_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
        hasher.run(|| ()).await.unwrap();
    }
}
