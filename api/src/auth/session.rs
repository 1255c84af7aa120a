//! Refresh tokens: opaque random secrets stored only as SHA-256 hashes,
//! grouped in families (one per sign-in). Each use rotates the token; using
//! one that was already rotated or revoked revokes its whole family, since one
//! of the two holders is not the user.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::routes::MeOut;
use crate::error::{ApiError, ApiResult};

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
pub async fn issue(
    conn: &mut PgConnection,
    user: Uuid,
    family: Uuid,
    ttl: Duration,
) -> ApiResult<(Uuid, String)> {
    let id = Uuid::now_v7();
    let secret = secret();
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user)
    .bind(family)
    .bind(hash(&secret))
    .bind(expiry(ttl))
    .execute(conn)
    .await?;
    Ok((id, secret))
}

/// What a presented refresh token turned out to be.
pub enum Presented {
    /// Current: rotated to `secret`; `me` is the account as read under the
    /// user row's lock (its `perm_version` is the one the access token gets).
    Rotated { me: MeOut, secret: String },
    /// Already rotated or revoked: the family must be revoked.
    Reused { user: Uuid, family: Uuid },
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    email: String,
    display_name: String,
    perm_version: i64,
    is_active: bool,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    user_id: Uuid,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    replaced_by: Option<Uuid>,
}

/// Rotates the token whose secret is `presented`, in the caller's
/// transaction (which holds the locks until it commits).
///
/// Locks go user row first (shared), token row second, as every revocation
/// locks the user row before the tokens: a reset or logout that commits
/// first is seen here, and one that comes later waits for this rotation and
/// ends the token it made.
pub async fn rotate(
    conn: &mut PgConnection,
    presented: &str,
    ttl: Duration,
) -> ApiResult<Presented> {
    let invalid = || ApiError::Unauthorized {
        code: "invalid_refresh_token",
        message: "the refresh token is not valid; sign in again",
    };
    let token_hash = hash(presented);
    let Some(account) = sqlx::query_as::<_, AccountRow>(
        "SELECT u.id, u.email, u.display_name, u.perm_version, u.is_active FROM users u
         WHERE u.id = (SELECT user_id FROM refresh_tokens WHERE token_hash = $1) FOR SHARE",
    )
    .bind(&token_hash)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Err(invalid());
    };
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, revoked_at, replaced_by
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(&token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(TokenRow {
        id,
        user_id: user,
        family_id: family,
        expires_at,
        revoked_at,
        replaced_by,
    }) = row
    else {
        return Err(invalid());
    };
    if revoked_at.is_some() || replaced_by.is_some() {
        return Ok(Presented::Reused { user, family });
    }
    if expires_at <= Utc::now() {
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
    let (next, secret) = issue(conn, user, family, ttl).await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE id = $1")
        .bind(id)
        .bind(next)
        .execute(&mut *conn)
        .await?;
    Ok(Presented::Rotated {
        me: MeOut {
            id: account.id,
            email: account.email,
            display_name: account.display_name,
            perm_version: account.perm_version,
        },
        secret,
    })
}

/// Revokes every live token of `family`; returns how many were live. The
/// user's row is locked first (see [`rotate`]).
pub async fn revoke_family(conn: &mut PgConnection, family: Uuid) -> ApiResult<u64> {
    sqlx::query(
        "SELECT 1 FROM users WHERE id IN
           (SELECT user_id FROM refresh_tokens WHERE family_id = $1 LIMIT 1) FOR UPDATE",
    )
    .bind(family)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Revokes every live token of `user`; returns how many were live. The
/// user's row is locked first (see [`rotate`]): a rotation in flight
/// finishes first, and its new token is revoked too.
pub async fn revoke_user(conn: &mut PgConnection, user: Uuid) -> ApiResult<u64> {
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user)
    .execute(conn)
    .await?
    .rows_affected())
}

/// The family of the token whose secret is `presented`, if it is `user`'s.
pub async fn family_of(
    conn: &mut PgConnection,
    user: Uuid,
    presented: &str,
) -> ApiResult<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2",
    )
    .bind(hash(presented))
    .bind(user)
    .fetch_optional(conn)
    .await?)
}
