//! Refresh tokens: opaque random secrets stored only as SHA-256 hashes,
//! grouped in families (one per sign-in). Each use rotates the token; using
//! one that was already rotated or revoked revokes its whole family, since one
//! of the two holders is not the user.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use schema::entities::{refresh_tokens, users};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    accounts::sessions::Me,
    error::{ApiError, ApiResult},
};

/// A fresh secret: 32 random bytes, hex.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(14))
}

/// Stores a new refresh token in `family` and returns its secret.
pub async fn issue<C: ConnectionTrait>(
    conn: &C,
    user: Uuid,
    family: Uuid,
    ttl: Duration,
) -> ApiResult<(Uuid, String)> {
    let id = Uuid::now_v7();
    let secret = secret();
    refresh_tokens::Entity::insert(refresh_tokens::ActiveModel {
        id: Set(id),
        user_id: Set(user),
        family_id: Set(family),
        token_hash: Set(hash(&secret)),
        expires_at: Set(expiry(ttl)),
        revoked_at: NotSet,
        replaced_by: NotSet,
        created_at: NotSet,
    })
    .exec_without_returning(conn)
    .await?;
    Ok((id, secret))
}

/// What a presented refresh token turned out to be.
pub enum Presented {
    /// Current: rotated to `secret`; `me` is the account as read under the
    /// user row's lock (its `perm_version` is the one the access token gets).
    Rotated { me: Me, secret: String },
    /// Already rotated or revoked: the family must be revoked.
    Reused { user: Uuid, family: Uuid },
}

/// Rotates the token whose secret is `presented`, in the caller's
/// transaction (which holds the locks until it commits).
///
/// Locks go user row first (shared), token row second, as every revocation
/// locks the user row before the tokens: a reset or logout that commits
/// first is seen here, and one that comes later waits for this rotation and
/// ends the token it made.
pub async fn rotate<C: ConnectionTrait>(
    conn: &C,
    presented: &str,
    ttl: Duration,
) -> ApiResult<Presented> {
    let invalid = || ApiError::Unauthorized {
        code: "invalid_refresh_token",
        message: "the refresh token is not valid; sign in again",
    };
    let token_hash = hash(presented);
    let Some(account) = users::Entity::find()
        .filter(
            users::Column::Id.in_subquery(
                Query::select()
                    .column(refresh_tokens::Column::UserId)
                    .from(refresh_tokens::Entity)
                    .and_where(refresh_tokens::Column::TokenHash.eq(&token_hash))
                    .to_owned(),
            ),
        )
        .lock_shared()
        .one(conn)
        .await?
    else {
        return Err(invalid());
    };
    let Some(token) = refresh_tokens::Entity::by_hash(&token_hash)
        .lock_exclusive()
        .one(conn)
        .await?
    else {
        return Err(invalid());
    };
    if token.revoked_at.is_some() || token.replaced_by.is_some() {
        return Ok(Presented::Reused {
            user: token.user_id,
            family: token.family_id,
        });
    }
    if token.expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized {
            code: "refresh_expired",
            message: "the session has expired; sign in again",
        });
    }
    if !account.is_active {
        return Err(ApiError::Unauthorized {
            code: "account_disabled",
            message: "this account is deactivated",
        });
    }
    let (next, secret) = issue(conn, token.user_id, token.family_id, ttl).await?;
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::current_timestamp())
        .col_expr(refresh_tokens::Column::ReplacedBy, Expr::value(next))
        .filter(refresh_tokens::Column::Id.eq(token.id))
        .exec(conn)
        .await?;
    Ok(Presented::Rotated {
        me: Me::from(account),
        secret,
    })
}

/// Locks (`FOR UPDATE`) the user rows `ids` selects: the first step of every
/// revocation (see [`rotate`]).
async fn lock_users<C: ConnectionTrait>(
    conn: &C,
    ids: sea_orm::sea_query::SelectStatement,
) -> ApiResult<()> {
    users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::Id.in_subquery(ids))
        .lock_exclusive()
        .into_tuple::<Uuid>()
        .all(conn)
        .await?;
    Ok(())
}

/// Revokes every live token of `family`; returns how many were live. The
/// user's row is locked first (see [`rotate`]).
pub async fn revoke_family<C: ConnectionTrait>(conn: &C, family: Uuid) -> ApiResult<u64> {
    use refresh_tokens::Column;
    lock_users(
        conn,
        Query::select()
            .column(Column::UserId)
            .from(refresh_tokens::Entity)
            .and_where(Column::FamilyId.eq(family))
            .limit(1)
            .to_owned(),
    )
    .await?;
    Ok(refresh_tokens::Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::current_timestamp())
        .filter(Column::FamilyId.eq(family))
        .filter(refresh_tokens::Entity::live())
        .exec(conn)
        .await?
        .rows_affected)
}

/// Revokes every live token of `user`; returns how many were live. The
/// user's row is locked first (see [`rotate`]): a rotation in flight
/// finishes first, and its new token is revoked too.
pub async fn revoke_user<C: ConnectionTrait>(conn: &C, user: Uuid) -> ApiResult<u64> {
    use refresh_tokens::Column;
    users::Entity::find_by_id(user)
        .select_only()
        .column(users::Column::Id)
        .lock_exclusive()
        .into_tuple::<Uuid>()
        .one(conn)
        .await?;
    Ok(refresh_tokens::Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::current_timestamp())
        .filter(Column::UserId.eq(user))
        .filter(refresh_tokens::Entity::live())
        .exec(conn)
        .await?
        .rows_affected)
}

/// The family of the token whose secret is `presented`, if it is `user`'s.
pub async fn family_of<C: ConnectionTrait>(
    conn: &C,
    user: Uuid,
    presented: &str,
) -> ApiResult<Option<Uuid>> {
    Ok(refresh_tokens::Entity::by_hash(&hash(presented))
        .filter(refresh_tokens::Column::UserId.eq(user))
        .select_only()
        .column(refresh_tokens::Column::FamilyId)
        .into_tuple()
        .one(conn)
        .await?)
}

/// Deletes tokens that expired over a day ago; returns how many.
pub async fn purge_expired<C: ConnectionTrait>(conn: &C) -> ApiResult<u64> {
    Ok(refresh_tokens::Entity::delete_many()
        .filter(
            Expr::col(refresh_tokens::Column::ExpiresAt).lt(Expr::cust("now() - interval '1 day'")),
        )
        .exec(conn)
        .await?
        .rows_affected)
}
