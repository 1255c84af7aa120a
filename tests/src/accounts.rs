//! Accounts, roles and sessions through the real API, for the
//! authorization suites and the benchmark.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestEnv, env};

/// The password every test user gets.
pub const USER_PASSWORD: &str = "operator-password-0123";

/// The seeded roles.
pub const ADMIN_ROLE: &str = "00000000-0000-7000-8000-000000000001";
pub const OPERATOR_ROLE: &str = "00000000-0000-7000-8000-000000000002";
pub const VIEWER_ROLE: &str = "00000000-0000-7000-8000-000000000003";

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access: String,
    pub refresh: String,
}

impl TestEnv {
    /// Signs in and returns both tokens.
    pub async fn sign_in(&self, api: &str, email: &str, password: &str) -> Session {
        let (status, body) = self
            .http
            .call(
                Method::POST,
                &format!("{api}/api/auth/login"),
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {email}: {body}");
        session(&body)
    }

    pub async fn admin_session(&self, api: &str) -> Session {
        self.sign_in(api, env::ADMIN_EMAIL, env::ADMIN_PASSWORD)
            .await
    }

    /// Trades a refresh token; returns status and body.
    pub async fn refresh(&self, api: &str, refresh: &str) -> (StatusCode, Value) {
        self.http
            .call(
                Method::POST,
                &format!("{api}/api/auth/refresh"),
                None,
                Some(json!({"refresh_token": refresh})),
            )
            .await
    }

    /// Creates a user with `roles` through the API; returns its id.
    pub async fn create_user(&self, api: &str, admin: &str, email: &str, roles: &[&str]) -> String {
        let (status, body) = self
            .http
            .call(
                Method::POST,
                &format!("{api}/api/users"),
                Some(admin),
                Some(json!({
                    "email": email,
                    "display_name": email.split('@').next().unwrap_or(email),
                    "password": USER_PASSWORD,
                    "role_ids": roles,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create user {email}: {body}");
        body["id"].as_str().expect("user id").to_owned()
    }

    /// Creates a role with `permissions`; returns its id.
    pub async fn create_role(
        &self,
        api: &str,
        admin: &str,
        name: &str,
        permissions: &[&str],
    ) -> String {
        let (status, body) = self
            .http
            .call(
                Method::POST,
                &format!("{api}/api/roles"),
                Some(admin),
                Some(json!({"name": name, "permissions": permissions})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create role {name}: {body}");
        body["id"].as_str().expect("role id").to_owned()
    }

    /// Replaces a role's permissions; panics unless 200.
    pub async fn set_role_permissions(
        &self,
        api: &str,
        admin: &str,
        role: &str,
        permissions: &[&str],
    ) {
        let (status, body) = self
            .http
            .call(
                Method::PUT,
                &format!("{api}/api/roles/{role}/permissions"),
                Some(admin),
                Some(json!({"permissions": permissions})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "set permissions: {body}");
    }

    /// A conversation row written straight to the database.
    pub async fn insert_conversation(&self, chat_id: i64, assignee: Option<&str>) -> String {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO conversations (id, tg_chat_id, title, assignee_id) VALUES ($1, $2, $3, $4::uuid)",
        )
        .bind(id)
        .bind(chat_id)
        .bind(format!("chat {chat_id}"))
        .bind(assignee)
        .execute(&self.pool)
        .await
        .expect("insert conversation");
        id.to_string()
    }

    /// Rows in a table, for "nothing changed" checks.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

fn session(body: &Value) -> Session {
    Session {
        user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
        access: body["access_token"].as_str().expect("access").to_owned(),
        refresh: body["refresh_token"].as_str().expect("refresh").to_owned(),
    }
}

/// Parses a login or refresh answer.
pub fn session_from(body: &Value) -> Session {
    session(body)
}
