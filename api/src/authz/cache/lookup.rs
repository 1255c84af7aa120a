//! A read through the tiers: memory (under the lease), then Redis (at or
//! above the version floor, and sealed), then PostgreSQL, filling the tiers
//! on the way back.

use std::sync::Arc;

use uuid::Uuid;

use super::Authorizer;
use crate::{
    authz::{EntryError, Ep, PermSet},
    error::ApiError,
};

impl Authorizer {
    /// The in-memory tier's entry, while the lease holds.
    fn local_get(&self, user: Uuid) -> Option<Arc<Ep>> {
        if !self.lease.valid() {
            return None;
        }
        self.local.get(user)
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
        let generation = self.local.generation();
        // The floor is read even when the entry is not wanted: nothing below
        // it may be cached anywhere.
        let mut refused = None;
        let (cached, floor) = match tokio::time::timeout(
            self.settings.redis_timeout,
            self.scripts.read(&self.redis, user),
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
        if floor.is_some_and(|f| ep.version >= f) && self.lease.valid() {
            self.local.fill(user, ep.clone(), generation);
        }
        Ok(Some(ep))
    }

    /// Reads the user's permissions and version in one statement.
    pub async fn from_db(&self, user: Uuid) -> Result<Option<Ep>, sea_orm::DbErr> {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        // One statement: the user and the union of their roles' rights,
        // aggregated where they are (ADR 0014).
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT u.is_active, u.perm_version,
                    COALESCE(array_agg(DISTINCT rp.permission_key)
                             FILTER (WHERE rp.permission_key IS NOT NULL), '{}')
             FROM users u
             LEFT JOIN user_roles ur ON ur.user_id = u.id
             LEFT JOIN role_permissions rp ON rp.role_id = ur.role_id
             WHERE u.id = $1
             GROUP BY u.id",
                [user.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (active, version, keys): (bool, i64, Vec<String>) = row.try_get_many_by_index()?;
        Ok(Some(Ep {
            user_id: user,
            version,
            active,
            perms: PermSet::from_keys(keys.iter().map(String::as_str)),
        }))
    }
}
