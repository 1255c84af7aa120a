//! `fastprep-api create-admin`: the way back in when no administrator can
//! sign in. It creates the account, or brings an existing one back to a
//! known state: the password given (under the password policy), active,
//! holding `admin`. A reset ends every session of the account, since whoever
//! stole one is why it is being reset, and announces the new `perm_version`
//! through the outbox so every API instance drops its cached rights.
//! Running it again with the same password changes nothing.

use broker_config::{Envelope, Event, events::AuthzUserUpdated};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{password, session};
use crate::{
    audit::{Entry, Target},
    authz::change::{ADMIN_ROLE, AUTHZ_LOCK},
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

/// Creates or resets the administrator `email` with `password`.
pub async fn ensure_admin(pool: &PgPool, email: &str, password: &str) -> anyhow::Result<Ensured> {
    let email = super::check_email(email).map_err(|e| anyhow::anyhow!("ADMIN_EMAIL: {e}"))?;
    password::check_policy(password).map_err(|e| anyhow::anyhow!("ADMIN_PASSWORD: {e}"))?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUTHZ_LOCK)
        .execute(&mut *tx)
        .await?;
    let existing: Option<(Uuid, String, bool, bool)> = sqlx::query_as(
        "SELECT u.id, u.password_hash, u.is_active,
                EXISTS (SELECT 1 FROM user_roles WHERE user_id = u.id AND role_id = $2)
         FROM users u WHERE u.email = $1 FOR UPDATE",
    )
    .bind(&email)
    .bind(ADMIN_ROLE)
    .fetch_optional(&mut *tx)
    .await?;
    let (id, outcome, password_changed) = match existing {
        None => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(&email)
            .bind("Administrator")
            .bind(password::hash(password)?)
            .execute(&mut *tx)
            .await?;
            (id, Ensured::Created(id), true)
        }
        Some((id, stored, active, admin)) => {
            let same_password = password::verify(password, &stored);
            if same_password && active && admin {
                return Ok(Ensured::Unchanged(id));
            }
            if !same_password {
                sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                    .bind(id)
                    .bind(password::hash(password)?)
                    .execute(&mut *tx)
                    .await?;
            }
            let sessions_ended = if same_password {
                0
            } else {
                session::revoke_user(&mut tx, id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            };
            (id, Ensured::Reset { id, sessions_ended }, !same_password)
        }
    };
    sqlx::query("INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(ADMIN_ROLE)
        .execute(&mut *tx)
        .await?;
    let sessions_ended = match outcome {
        Ensured::Reset { sessions_ended, .. } => sessions_ended,
        _ => 0,
    };
    // A reset account's old rights and tokens must die everywhere: a new
    // version, and authz-fanout raising its floor and telling every API
    // instance. A new account has nothing cached.
    let version: Option<i64> = match outcome {
        Ensured::Reset { .. } => Some(
            sqlx::query_scalar(
                "UPDATE users SET is_active = true, perm_version = perm_version + 1,
                        updated_at = now()
                 WHERE id = $1 RETURNING perm_version",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?,
        ),
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
        .write_on_sqlx(&mut tx)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(version) = version {
        schema::outbox::on_sqlx::enqueue(
            &mut tx,
            &Envelope::new(Event::AuthzUserUpdated(AuthzUserUpdated {
                user_id: id,
                perm_version: Some(version),
            })),
        )
        .await?;
    }
    tx.commit().await?;
    if version.is_some() {
        schema::outbox::notify_relay(pool).await;
    }
    Ok(outcome)
}
