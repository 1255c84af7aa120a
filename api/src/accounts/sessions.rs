//! Sign-in sessions: opening one over a checked password, refreshing
//! (rotation, and ending a family whose token was reused), signing out, and
//! a password change that ends every session and opens a new one. The
//! throttle and the hashing stay with the routes; this is what the database
//! must see, under which locks.

use std::time::Duration;

use schema::entities::users;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
    TransactionSession, TransactionTrait, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::Ctx;
use crate::{
    auth::session,
    authz::change::AuthzChange,
    error::{ApiError, ApiResult},
};

/// The signed-in account, as `GET /auth/me` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub perm_version: i64,
}

impl From<users::Model> for Me {
    fn from(u: users::Model) -> Self {
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            perm_version: u.perm_version,
        }
    }
}

/// What a sign-in checks the password against.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Credentials {
    pub id: Uuid,
    pub password_hash: String,
    pub is_active: bool,
}

/// The credentials of `email`, if an account has it.
pub async fn credentials<C: ConnectionTrait>(
    conn: &C,
    email: &str,
) -> ApiResult<Option<Credentials>> {
    use users::Column;
    Ok(users::Entity::by_email(email)
        .select_only()
        .columns([Column::Id, Column::PasswordHash, Column::IsActive])
        .into_model::<Credentials>()
        .one(conn)
        .await?)
}

/// The password hash stored for `user`.
pub async fn stored_hash<C: ConnectionTrait>(conn: &C, user: Uuid) -> ApiResult<String> {
    users::Entity::find_by_id(user)
        .select_only()
        .column(users::Column::PasswordHash)
        .into_tuple::<String>()
        .one(conn)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("user {user} has no row")))
}

/// `GET /auth/me`.
pub async fn me<C: ConnectionTrait>(conn: &C, user: Uuid) -> ApiResult<Me> {
    users::Entity::find_by_id(user)
        .one(conn)
        .await?
        .map(Me::from)
        .ok_or(ApiError::NotFound { what: "user" })
}

/// Opens a session for `user`, whose password checked against `checked`;
/// `None` if the account changed meanwhile.
///
/// Under the user's row lock: a reset or deactivation that committed while
/// the password was being checked wins, and one that comes later waits for
/// this session and ends it.
pub async fn open<C: TransactionTrait>(
    db: &C,
    user: Uuid,
    checked: &str,
    ttl: Duration,
) -> ApiResult<Option<(Me, String)>> {
    let tx = db.begin().await?;
    let current = users::Entity::find_by_id(user)
        .lock_shared()
        .one(&tx)
        .await?;
    let me = match current {
        Some(u) if u.is_active && u.password_hash == checked => Me::from(u),
        _ => return Ok(None),
    };
    let (_, refresh) = session::issue(&tx, user, Uuid::now_v7(), ttl).await?;
    tx.commit().await?;
    Ok(Some((me, refresh)))
}

/// Rotates the refresh token `presented`: the account and the new secret.
/// A token already spent ends its whole family (and, through a new
/// `perm_version`, every access token minted from it) and is refused with
/// `refresh_reused`.
pub async fn refresh(ctx: Ctx<'_>, presented: &str, ttl: Duration) -> ApiResult<(Me, String)> {
    let tx = ctx.db.begin().await?;
    match session::rotate(&tx, presented, ttl).await? {
        session::Presented::Rotated { me, secret } => {
            tx.commit().await?;
            // The token carries the version read under the user row's lock,
            // never one read after the commit: a reuse detected after that
            // commit bumps the version past this one, and so kills this
            // access token too.
            Ok((me, secret))
        }
        session::Presented::Reused { user, family } => {
            tx.rollback().await?;
            // Someone holds a copy: end the family and every access token
            // minted from it.
            let mut change = AuthzChange::begin(ctx.db, None).await?;
            if session::revoke_family(change.conn(), family).await? > 0 {
                change
                    .user_changed(
                        user,
                        "auth.refresh_reused",
                        None,
                        Some(json!({"family_id": family})),
                    )
                    .await?;
            }
            change.commit(ctx.authz, ctx.wake).await?;
            Err(ApiError::Unauthorized {
                code: "refresh_reused",
                message: "this refresh token was already used; the session is ended, sign in again",
            })
        }
    }
}

/// Which sessions a sign-out ends.
#[derive(Debug, Clone, Copy)]
pub enum Ending<'a> {
    /// The family of this refresh token.
    Session(&'a str),
    /// Every session of the caller.
    All,
}

/// Ends `caller`'s sessions; access tokens already issued stop working at
/// once.
pub async fn logout(ctx: Ctx<'_>, caller: Uuid, ending: Ending<'_>) -> ApiResult<()> {
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let ended = match ending {
        Ending::All => session::revoke_user(change.conn(), caller).await?,
        Ending::Session(presented) => {
            match session::family_of(change.conn(), caller, presented).await? {
                Some(family) => session::revoke_family(change.conn(), family).await?,
                None => 0,
            }
        }
    };
    change
        .user_changed(
            caller,
            "auth.logout",
            None,
            Some(json!({"all": matches!(ending, Ending::All), "tokens_revoked": ended})),
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await
}

/// Sets `caller`'s password to `hash`, only over `checked` (the hash the
/// current password was verified against: a reset by an administrator in
/// between wins, and this change is refused), ends every session and opens
/// a new one.
pub async fn change_password(
    ctx: Ctx<'_>,
    caller: Uuid,
    checked: &str,
    hash: &str,
    ttl: Duration,
) -> ApiResult<(Me, String)> {
    use users::Column;
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let changed = users::Entity::update_many()
        .col_expr(Column::PasswordHash, Expr::value(hash))
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.eq(caller))
        .filter(Column::PasswordHash.eq(checked))
        .exec(change.conn())
        .await?
        .rows_affected;
    if changed == 0 {
        return Err(ApiError::Conflict {
            code: "password_changed_meanwhile",
            message: "the password was changed by someone else meanwhile; sign in again".into(),
        });
    }
    session::revoke_user(change.conn(), caller).await?;
    let perm_version = change
        .user_changed(caller, "user.password_changed", None, None)
        .await?;
    let (_, refresh) = session::issue(change.conn(), caller, Uuid::now_v7(), ttl).await?;
    change.commit(ctx.authz, ctx.wake).await?;
    let mut me = me(ctx.db, caller).await?;
    me.perm_version = perm_version;
    Ok((me, refresh))
}
