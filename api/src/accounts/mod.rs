//! The accounts service: staff users, roles and their permissions, and
//! sign-in sessions. Every change runs in an [`AuthzChange`] (a sea-orm
//! transaction under the authorization lock); routes extract, call these
//! functions and answer.
//!
//! [`AuthzChange`]: crate::authz::change::AuthzChange

pub mod roles;
pub mod sessions;
pub mod users;

use sea_orm::DatabaseConnection;

use crate::{
    AppState,
    auth::password::{self, Hasher},
    authz::cache::Authorizer,
    error::{ApiError, ApiResult},
};

/// What an account change reaches beyond its transaction: the database to
/// begin it on, the authorization cache its commit invalidates, the relay
/// its outbox rows wake, and the password hashing pool.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub db: &'a DatabaseConnection,
    pub authz: &'a Authorizer,
    pub wake: &'a schema::RelayWake,
    pub hasher: &'a Hasher,
}

impl<'a> Ctx<'a> {
    pub fn of(state: &'a AppState) -> Self {
        Self {
            db: &state.db,
            authz: &state.authz,
            wake: &state.relay_wake,
            hasher: &state.hasher,
        }
    }

    /// Hashes a new password, under the password policy, in the hashing pool.
    pub async fn hash_password(&self, password: String) -> ApiResult<String> {
        password::check_policy(&password)?;
        self.hasher
            .run(move || password::hash(&password))
            .await?
            .map_err(ApiError::Internal)
    }
}

fn invalid(code: &'static str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        code,
        message: message.to_owned(),
    }
}
