//! [`AuthzChange`]: the one way to change accounts, roles and permissions.
//!
//! Every change runs in one transaction that serialises with every other
//! authorization change, bumps `perm_version` of each user whose rights it
//! touches, writes its `audit_log` rows and its `authz.*` outbox event. Before
//! the commit it raises those users' version floors in Redis and invalidates
//! every instance's cache (no invalidation, no commit); after it, it
//! announces the committed versions and waits out the cache lease, so the
//! answer to the admin is sent only once the old rights are dead everywhere.

use std::collections::BTreeMap;

use broker_config::{
    Envelope, Event,
    events::{AuthzRoleUpdated, AuthzUserUpdated, UserVersion},
};
use schema::entities::{role_permissions, user_roles, users};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, QueryTrait, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use super::{PermSet, cache::Authorizer};
use crate::{
    audit::{Entry, Target},
    error::{ApiError, ApiResult},
};

/// Advisory lock key serialising authorization changes.
pub const AUTHZ_LOCK: i64 = 0x6661_7374_617a_0001;

/// The seeded `admin` role.
pub const ADMIN_ROLE: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);

pub struct AuthzChange {
    tx: DatabaseTransaction,
    actor: Option<Uuid>,
    bumped: BTreeMap<Uuid, i64>,
}

impl AuthzChange {
    /// Opens the transaction and takes the authorization lock.
    pub async fn begin(db: &DatabaseConnection, actor: Option<Uuid>) -> ApiResult<Self> {
        let tx = db.begin().await?;
        lock(&tx).await?;
        Ok(Self {
            tx,
            actor,
            bumped: BTreeMap::new(),
        })
    }

    /// The change's transaction, for the writes the change is made of.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// Bumps `perm_version` of `users`; returns their new versions.
    pub async fn bump(&mut self, users: &[Uuid]) -> ApiResult<Vec<UserVersion>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        use users::Column;
        let rows = users::Entity::update_many()
            .col_expr(Column::PermVersion, Expr::col(Column::PermVersion).add(1))
            .col_expr(Column::UpdatedAt, Expr::current_timestamp())
            .filter(Column::Id.is_in(users.iter().copied()))
            .exec_with_returning(&self.tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for users::Model {
            id: user_id,
            perm_version,
            ..
        } in rows
        {
            self.bumped.insert(user_id, perm_version);
            out.push(UserVersion {
                user_id,
                perm_version,
            });
        }
        out.sort_by_key(|u| u.user_id);
        Ok(out)
    }

    /// Bumps one user and writes `authz.user.updated.v1`; returns the version.
    pub async fn bump_user(&mut self, user: Uuid) -> ApiResult<i64> {
        let v = self
            .bump(&[user])
            .await?
            .first()
            .map(|u| u.perm_version)
            .ok_or(ApiError::NotFound { what: "user" })?;
        self.emit(Event::AuthzUserUpdated(AuthzUserUpdated {
            user_id: user,
            perm_version: Some(v),
        }))
        .await?;
        Ok(v)
    }

    /// One user's rights or account changed: bumps their version, writes
    /// `authz.user.updated.v1` and the audit row carrying the new version.
    pub async fn user_changed(
        &mut self,
        user: Uuid,
        action: &'static str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> ApiResult<i64> {
        let v = self.bump_user(user).await?;
        self.audit(action, Target::new("user", user), before, after, Some(v))
            .await?;
        Ok(v)
    }

    /// A role's rights changed for its `holders`: bumps each, writes the
    /// audit row and `authz.role.updated.v1` with their new versions.
    pub async fn role_changed(
        &mut self,
        role: Uuid,
        holders: &[Uuid],
        action: &'static str,
        before: Option<Value>,
        after: impl FnOnce(&[UserVersion]) -> Option<Value>,
    ) -> ApiResult<()> {
        let bumped = self.bump(holders).await?;
        self.audit(
            action,
            Target::new("role", role),
            before,
            after(&bumped),
            None,
        )
        .await?;
        self.emit(Event::AuthzRoleUpdated(AuthzRoleUpdated {
            role_id: role,
            users: bumped,
        }))
        .await
    }

    /// Writes one `audit_log` row by this change's actor.
    pub async fn audit(
        &mut self,
        action: &'static str,
        target: Target,
        before: Option<Value>,
        after: Option<Value>,
        perm_version: Option<i64>,
    ) -> ApiResult<()> {
        Entry::new(self.actor, action, target)
            .before(before)
            .after(after)
            .perm_version(perm_version)
            .write(&self.tx)
            .await
    }

    /// Writes an outbox event in the transaction.
    pub async fn emit(&mut self, event: Event) -> ApiResult<()> {
        schema::enqueue(&self.tx, &Envelope::new(event)).await?;
        Ok(())
    }

    /// A user's permissions as committed, read under the lock (so they
    /// cannot change before this change commits).
    pub async fn perms_of(&mut self, user: Uuid) -> ApiResult<PermSet> {
        let keys: Vec<String> = role_permissions::Entity::of_user(user)
            .select_only()
            .column(role_permissions::Column::PermissionKey)
            .distinct()
            .into_tuple()
            .all(&self.tx)
            .await?;
        Ok(PermSet::from_keys(keys.iter().map(String::as_str)))
    }

    /// Refuses (403 `outranked`) a change of `target`'s account by an actor
    /// who lacks any permission `target` holds: otherwise a lesser account
    /// could reset a greater one's password and sign in as it. Returns the
    /// actor's permissions.
    pub async fn ensure_actor_outranks(&mut self, target: Uuid) -> ApiResult<PermSet> {
        let Some(actor) = self.actor else {
            return Err(ApiError::Forbidden);
        };
        let mine = self.perms_of(actor).await?;
        if actor != target && !mine.covers(self.perms_of(target).await?) {
            return Err(ApiError::ForbiddenBecause {
                code: "outranked",
                message: "this user holds permissions you do not have, so you cannot change their account",
            });
        }
        Ok(mine)
    }

    /// Refuses a change that would leave no active user holding `admin`.
    pub async fn ensure_an_admin_remains(&mut self) -> ApiResult<()> {
        let admins = users::Entity::find()
            .filter(users::Column::IsActive.eq(true))
            .filter(
                users::Column::Id.in_subquery(
                    user_roles::Entity::of_role(ADMIN_ROLE)
                        .select_only()
                        .column(user_roles::Column::UserId)
                        .into_query(),
                ),
            )
            .count(&self.tx)
            .await?;
        if admins == 0 {
            return Err(ApiError::Conflict {
                code: "last_admin",
                message: "this would leave no active administrator".into(),
            });
        }
        Ok(())
    }

    /// Invalidates every instance (raising the version floors), commits,
    /// announces the commit and waits out the cache lease.
    pub async fn commit(self, authz: &Authorizer, wake: &schema::RelayWake) -> ApiResult<()> {
        let bumped: Vec<(Uuid, i64)> = self.bumped.into_iter().collect();
        let invalidated = authz.invalidate_before_commit(&bumped).await?;
        self.tx.commit().await?;
        wake.committed();
        authz.after_commit(&bumped, invalidated).await;
        Ok(())
    }
}

/// Takes the authorization lock in `tx`. Raw: sea-query has no advisory
/// locks.
pub async fn lock<C: ConnectionTrait>(tx: &C) -> ApiResult<()> {
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [AUTHZ_LOCK.into()],
    ))
    .await?;
    Ok(())
}
