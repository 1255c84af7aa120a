//! `fastprep-api create-admin`: the way back in when no administrator can
//! sign in. It creates the account, or brings an existing one back to a
//! known state: the password given (under the password policy), active,
//! holding `admin`. A reset ends every session of the account, since whoever
//! stole one is why it is being reset, and announces the new `perm_version`
//! through the outbox so every API instance drops its cached rights.
//! Running it again with the same password changes nothing.

use broker_config::{Envelope, Event, events::AuthzUserUpdated};
use schema::entities::{user_roles, users};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{password, session};
use crate::{
    audit::{Entry, Target},
    authz::change::{self, ADMIN_ROLE},
};

/// What `create-admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created(Uuid),
    /// Reset: password, activation or role changed; sessions ended.
    Reset {
        id: Uuid,
        sessions_ended: u64,
    },
    /// Already so: nothing was written.
    Unchanged(Uuid),
}

impl Ensured {
    pub fn id(self) -> Uuid {
        match self {
            Ensured::Created(id) | Ensured::Unchanged(id) | Ensured::Reset { id, .. } => id,
        }
    }
}

fn api(e: crate::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Creates or resets the administrator `email` with `password`.
pub async fn ensure_admin(pool: &PgPool, email: &str, password: &str) -> anyhow::Result<Ensured> {
    let outcome = ensure_admin_on(&schema::pool::orm(pool), email, password).await?;
    if matches!(outcome, Ensured::Reset { .. }) {
        schema::outbox::notify_relay(pool).await;
    }
    Ok(outcome)
}

/// [`ensure_admin`] on a sea-orm connection; the caller wakes the relay
/// after a reset.
async fn ensure_admin_on(
    db: &DatabaseConnection,
    email: &str,
    password: &str,
) -> anyhow::Result<Ensured> {
    let email = super::check_email(email).map_err(|e| anyhow::anyhow!("ADMIN_EMAIL: {e}"))?;
    password::check_policy(password).map_err(|e| anyhow::anyhow!("ADMIN_PASSWORD: {e}"))?;
    let tx = db.begin().await?;
    change::lock(&tx).await.map_err(api)?;
    let existing = users::Entity::by_email(&email)
        .lock_exclusive()
        .one(&tx)
        .await?;
    let (id, outcome, password_changed) = match existing {
        None => {
            let id = Uuid::now_v7();
            users::Entity::insert(users::ActiveModel {
                id: Set(id),
                email: Set(email.clone()),
                display_name: Set("Administrator".to_owned()),
                password_hash: Set(password::hash(password)?),
                is_active: NotSet,
                perm_version: NotSet,
                created_at: NotSet,
                updated_at: NotSet,
            })
            .exec_without_returning(&tx)
            .await?;
            (id, Ensured::Created(id), true)
        }
        Some(user) => {
            let id = user.id;
            let admin = user_roles::Entity::find_by_id((id, ADMIN_ROLE))
                .one(&tx)
                .await?
                .is_some();
            let same_password = password::verify(password, &user.password_hash);
            if same_password && user.is_active && admin {
                return Ok(Ensured::Unchanged(id));
            }
            if !same_password {
                users::Entity::update_many()
                    .col_expr(
                        users::Column::PasswordHash,
                        Expr::value(password::hash(password)?),
                    )
                    .filter(users::Column::Id.eq(id))
                    .exec(&tx)
                    .await?;
            }
            let sessions_ended = if same_password {
                0
            } else {
                session::revoke_user(&tx, id).await.map_err(api)?
            };
            (id, Ensured::Reset { id, sessions_ended }, !same_password)
        }
    };
    user_roles::Entity::insert(user_roles::ActiveModel {
        user_id: Set(id),
        role_id: Set(ADMIN_ROLE),
    })
    .on_conflict_do_nothing_on([user_roles::Column::UserId, user_roles::Column::RoleId])
    .exec_without_returning(&tx)
    .await?;
    let sessions_ended = match outcome {
        Ensured::Reset { sessions_ended, .. } => sessions_ended,
        _ => 0,
    };
    // A reset account's old rights and tokens must die everywhere: a new
    // version, and authz-fanout raising its floor and telling every API
    // instance. A new account has nothing cached.
    let version: Option<i64> = match outcome {
        Ensured::Reset { .. } => users::Entity::update_many()
            .col_expr(users::Column::IsActive, Expr::value(true))
            .col_expr(
                users::Column::PermVersion,
                Expr::col(users::Column::PermVersion).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::current_timestamp())
            .filter(users::Column::Id.eq(id))
            .exec_with_returning(&tx)
            .await?
            .first()
            .map(|u| u.perm_version),
        _ => None,
    };
    Entry::new(None, "user.admin_ensured", Target::new("user", id))
        .after(Some(json!({
            "email": email,
            "roles": ["admin"],
            "password_changed": password_changed,
            "sessions_ended": sessions_ended,
        })))
        .perm_version(version)
        .write(&tx)
        .await
        .map_err(api)?;
    if let Some(version) = version {
        schema::enqueue(
            &tx,
            &Envelope::new(Event::AuthzUserUpdated(AuthzUserUpdated {
                user_id: id,
                perm_version: Some(version),
            })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}
