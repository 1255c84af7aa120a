//! `/api/users`: accounts, their roles, deactivation (`users.manage`).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, password, session},
    authz::{PermSet, change::AuthzChange, pep::Principal},
    error::{ApiError, ApiResult},
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Serialize, sqlx::FromRow)]
pub struct UserOut {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub is_active: bool,
    pub perm_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(json)]
    pub roles: Vec<RoleRef>,
}

macro_rules! select_users {
    () => {
        "SELECT u.id, u.email, u.display_name, u.is_active, u.perm_version, u.created_at, u.updated_at,
                COALESCE(json_agg(json_build_object('id', r.id, 'name', r.name) ORDER BY r.name)
                         FILTER (WHERE r.id IS NOT NULL), '[]') AS roles
         FROM users u
         LEFT JOIN user_roles ur ON ur.user_id = u.id
         LEFT JOIN roles r ON r.id = ur.role_id"
    };
}

async fn load(conn: &mut PgConnection, id: Uuid) -> ApiResult<UserOut> {
    sqlx::query_as(concat!(select_users!(), " WHERE u.id = $1 GROUP BY u.id"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::NotFound { what: "user" })
}

/// The audited view of an account.
fn snapshot(u: &UserOut) -> serde_json::Value {
    json!({
        "email": u.email,
        "display_name": u.display_name,
        "is_active": u.is_active,
        "roles": u.roles.iter().map(|r| &r.name).collect::<Vec<_>>(),
    })
}

fn invalid(code: &'static str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        code,
        message: message.to_owned(),
    }
}

fn check_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_display_name",
            "display_name must be 1 to 100 characters, none of them control characters",
        ));
    }
    Ok(name.to_owned())
}

async fn hash_password(state: &AppState, password: String) -> ApiResult<String> {
    password::check_policy(&password)?;
    state
        .hasher
        .run(move || password::hash(&password))
        .await?
        .map_err(ApiError::Internal)
}

/// Replaces the user's roles; every id must name an existing role, and
/// `actor` (the caller's permissions, read under the change's lock) must
/// hold every permission of each role added or removed (no one hands out,
/// or takes away, rights they do not have themselves).
async fn set_roles(
    conn: &mut PgConnection,
    actor: PermSet,
    user: Uuid,
    roles: &[Uuid],
) -> ApiResult<()> {
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM roles WHERE id = ANY($1)")
        .bind(roles)
        .fetch_one(&mut *conn)
        .await?;
    let mut distinct = roles.to_vec();
    distinct.sort();
    distinct.dedup();
    if usize::try_from(known).unwrap_or(0) != distinct.len() {
        return Err(invalid("unknown_role", "a role in role_ids does not exist"));
    }
    let granted: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT rp.permission_key FROM role_permissions rp
         WHERE rp.role_id IN (
             (SELECT unnest($2::uuid[]) EXCEPT SELECT role_id FROM user_roles WHERE user_id = $1)
             UNION
             (SELECT role_id FROM user_roles WHERE user_id = $1 EXCEPT SELECT unnest($2::uuid[])))",
    )
    .bind(user)
    .bind(&distinct)
    .fetch_all(&mut *conn)
    .await?;
    if !actor.covers(PermSet::from_keys(granted.iter().map(String::as_str))) {
        return Err(ApiError::Forbidden);
    }
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO user_roles (user_id, role_id) SELECT $1, unnest($2::uuid[])")
        .bind(user)
        .bind(&distinct)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `GET /users`.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<UserOut>>> {
    let users = sqlx::query_as(concat!(select_users!(), " GROUP BY u.id ORDER BY u.email"))
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(users))
}

/// `GET /users/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<Uuid>) -> ApiResult<Json<UserOut>> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(load(&mut conn, id).await?))
}

#[derive(Deserialize)]
pub struct CreateIn {
    pub email: String,
    pub display_name: String,
    pub password: String,
    #[serde(default)]
    pub role_ids: Vec<Uuid>,
}

/// `POST /users`.
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<CreateIn>,
) -> ApiResult<(StatusCode, Json<UserOut>)> {
    let email = auth::check_email(&input.email)?;
    let display_name = check_name(&input.display_name)?;
    let hash = hash_password(&state, input.password).await?;
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(&email)
    .bind(&display_name)
    .bind(&hash)
    .execute(change.conn())
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::Conflict {
            code: "email_taken",
            message: "a user with this email already exists".into(),
        });
    }
    let actor = change.perms_of(caller.id).await?;
    set_roles(change.conn(), actor, id, &input.role_ids).await?;
    let mut user = load(change.conn(), id).await?;
    user.perm_version = change
        .user_changed(id, "user.created", None, Some(snapshot(&user)))
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
pub struct UpdateIn {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub password: Option<String>,
    pub is_active: Option<bool>,
}

/// `PATCH /users/{id}`: profile, password reset, (de)activation. A new
/// password or a deactivation ends every session of the user at once.
pub async fn update(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateIn>,
) -> ApiResult<Json<UserOut>> {
    // What locks an account out (its sign-in email, its activation) is
    // changed by someone else; one's own password through
    // POST /auth/password, which asks for the current one. A stolen access
    // token therefore cannot take the account from its owner.
    if caller.id == id && input.password.is_some() {
        return Err(ApiError::ForbiddenBecause {
            code: "own_password",
            message: "change your own password with POST /api/auth/password, which asks for the current one",
        });
    }
    if caller.id == id && (input.email.is_some() || input.is_active.is_some()) {
        return Err(own_account());
    }
    let email = input.email.as_deref().map(auth::check_email).transpose()?;
    let display_name = input.display_name.as_deref().map(check_name).transpose()?;
    let hash = match input.password {
        Some(p) => Some(hash_password(&state, p).await?),
        None => None,
    };
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let before = load(change.conn(), id).await?;
    change.ensure_actor_outranks(id).await?;
    if let Some(email) = &email {
        let taken: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE email = $1 AND id <> $2")
                .bind(email)
                .bind(id)
                .fetch_optional(change.conn())
                .await?;
        if taken.is_some() {
            return Err(ApiError::Conflict {
                code: "email_taken",
                message: "a user with this email already exists".into(),
            });
        }
    }
    sqlx::query(
        "UPDATE users SET email = COALESCE($2, email), display_name = COALESCE($3, display_name),
                password_hash = COALESCE($4, password_hash), is_active = COALESCE($5, is_active),
                updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&email)
    .bind(&display_name)
    .bind(&hash)
    .bind(input.is_active)
    .execute(change.conn())
    .await?;
    if hash.is_some() || input.is_active == Some(false) {
        session::revoke_user(change.conn(), id).await?;
    }
    if input.is_active == Some(false) {
        change.ensure_an_admin_remains().await?;
    }
    let mut after = load(change.conn(), id).await?;
    let mut after_json = snapshot(&after);
    if hash.is_some() {
        after_json["password_changed"] = json!(true);
    }
    after.perm_version = change
        .user_changed(
            id,
            "user.updated",
            Some(snapshot(&before)),
            Some(after_json),
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok(Json(after))
}

fn own_account() -> ApiError {
    ApiError::ForbiddenBecause {
        code: "own_account",
        message: "your own email and activation are changed by another administrator",
    }
}

/// `DELETE /users/{id}`: deactivates the account (history keeps its name).
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if caller.id == id {
        return Err(own_account());
    }
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let before = load(change.conn(), id).await?;
    change.ensure_actor_outranks(id).await?;
    if !before.is_active {
        return Ok(StatusCode::NO_CONTENT);
    }
    sqlx::query("UPDATE users SET is_active = false, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(change.conn())
        .await?;
    session::revoke_user(change.conn(), id).await?;
    change.ensure_an_admin_remains().await?;
    let after = load(change.conn(), id).await?;
    change
        .user_changed(
            id,
            "user.deactivated",
            Some(snapshot(&before)),
            Some(snapshot(&after)),
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RolesIn {
    pub role_ids: Vec<Uuid>,
}

/// `PUT /users/{id}/roles`: replaces the user's roles. No one changes their
/// own, and the caller must hold every permission the user holds.
pub async fn put_roles(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<RolesIn>,
) -> ApiResult<Json<UserOut>> {
    if caller.id == id {
        return Err(ApiError::ForbiddenBecause {
            code: "own_roles",
            message: "no one changes their own roles; ask another administrator",
        });
    }
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let before = load(change.conn(), id).await?;
    let actor = change.ensure_actor_outranks(id).await?;
    set_roles(change.conn(), actor, id, &input.role_ids).await?;
    change.ensure_an_admin_remains().await?;
    let mut after = load(change.conn(), id).await?;
    after.perm_version = change
        .user_changed(
            id,
            "user.roles_changed",
            Some(json!({"roles": before.roles})),
            Some(json!({"roles": after.roles})),
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok(Json(after))
}
