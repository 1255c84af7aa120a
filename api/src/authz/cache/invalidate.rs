//! What a writer does around its commit: invalidate before it, announce
//! after it, and wait out the lease before answering.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Authorizer;
use crate::error::ApiError;

impl Authorizer {
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
            self.local.evict(*user);
        }
        if let Err(e) = self.scripts.invalidate(&self.redis, users).await {
            // Harmless for correctness (done before the commit); the
            // authz-fanout consumer announces it again from the outbox.
            tracing::warn!(error = %e, "post-commit announcement failed; authz-fanout will repeat it");
        }
        tokio::time::sleep_until((invalidated + self.settings.lease).into()).await;
    }
}
