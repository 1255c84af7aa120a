//! `authz-fanout`: turns `authz.role.updated.v1` and `authz.user.updated.v1`
//! into what every API instance acts on (DESIGN §6). For each affected user:
//! the `perm_version` bump where the writer did not already make it, then in
//! Redis the version floor, `DEL authz:ep:{userId}` and
//! `PUBLISH authz.user.updated {"userId","permVersion","seq"}`.
//!
//! The API does the same Redis steps itself around its commit, so this
//! consumer is the guarantee behind its announcement: it covers a writer that
//! died after its commit, and events written by hand.

use async_trait::async_trait;
use broker_config::{
    Context, Event, Failure, Handler,
    events::{AuthzRoleUpdated, AuthzUserUpdated},
    topology::AUTHZ_FANOUT,
};
use fred::prelude::Client as RedisClient;
use platform::authz_redis::{Keys, Scripts};
use schema::entities::{user_roles, users};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Expr, ExprTrait, Func},
};
use uuid::Uuid;

pub struct AuthzFanout {
    db: DatabaseConnection,
    redis: RedisClient,
    scripts: Scripts,
}

impl AuthzFanout {
    /// `vhost` names the deployment, whose keys it writes.
    pub fn new(db: DatabaseConnection, redis: RedisClient, vhost: &str) -> Self {
        Self {
            db,
            redis,
            scripts: Scripts::new(Keys::for_vhost(vhost)),
        }
    }
}

#[async_trait]
impl Handler for AuthzFanout {
    fn queue(&self) -> &'static str {
        AUTHZ_FANOUT.name
    }

    async fn handle(&self, ctx: &Context<'_>, _claim: &DatabaseTransaction) -> Result<(), Failure> {
        // The versions commit first, in their own transaction, so that what
        // is announced is what a listener reads back. Raising to a given
        // version is idempotent; a redelivered hand-written event (no
        // versions) bumps once more, which only costs its holders a refresh.
        let tx = self.db.begin().await?;
        let affected = match &ctx.envelope.event {
            Event::AuthzRoleUpdated(e) => role_holders(e, &tx).await?,
            Event::AuthzUserUpdated(e) => user(e, &tx).await?.into_iter().collect(),
            other => {
                return Err(Failure::permanent(format!(
                    "authz-fanout cannot handle {}",
                    other.event_type()
                )));
            }
        };
        tx.commit().await?;
        // Should Redis fail, the claim rolls back and the redelivery repeats
        // these steps, which are idempotent.
        self.scripts
            .invalidate(&self.redis, &affected)
            .await
            .map_err(|e| Failure::retryable(format!("redis: {e}")))?;
        tracing::info!(users = affected.len(), "permissions invalidated");
        Ok(())
    }
}

/// Raises `user` to `version` unless it is already there or beyond; returns
/// the version it has now. `None` for a user that no longer exists.
async fn raise(
    tx: &DatabaseTransaction,
    user: Uuid,
    version: Option<i64>,
) -> Result<Option<(Uuid, i64)>, DbErr> {
    use users::Column;
    let raised = match version {
        Some(v) => Expr::expr(Func::greatest([
            Expr::col(Column::PermVersion),
            Expr::value(v),
        ])),
        None => Expr::col(Column::PermVersion).add(1),
    };
    let mut update = users::Entity::update_many()
        .col_expr(Column::PermVersion, raised)
        .filter(Column::Id.eq(user));
    if version.is_none() {
        update = update.col_expr(Column::UpdatedAt, Expr::current_timestamp());
    }
    let rows = update.exec_with_returning(tx).await?;
    Ok(rows.first().map(|u| (user, u.perm_version)))
}

async fn user(
    e: &AuthzUserUpdated,
    tx: &DatabaseTransaction,
) -> Result<Option<(Uuid, i64)>, Failure> {
    Ok(raise(tx, e.user_id, e.perm_version).await?)
}

async fn role_holders(
    e: &AuthzRoleUpdated,
    tx: &DatabaseTransaction,
) -> Result<Vec<(Uuid, i64)>, Failure> {
    let targets: Vec<(Uuid, Option<i64>)> = if e.users.is_empty() {
        let holders: Vec<Uuid> = user_roles::Entity::find()
            .filter(user_roles::Column::RoleId.eq(e.role_id))
            .select_only()
            .column(user_roles::Column::UserId)
            .order_by_asc(user_roles::Column::UserId)
            .into_tuple()
            .all(tx)
            .await?;
        holders.into_iter().map(|u| (u, None)).collect()
    } else {
        e.users
            .iter()
            .map(|u| (u.user_id, Some(u.perm_version)))
            .collect()
    };
    let mut affected = Vec::with_capacity(targets.len());
    for (user, version) in targets {
        if let Some(done) = raise(tx, user, version).await? {
            affected.push(done);
        }
    }
    Ok(affected)
}
