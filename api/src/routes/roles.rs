//! `/api/roles` and `/api/permissions` (`roles.manage`).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use broker_config::{Event, events::AuthzRoleUpdated};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    AppState,
    audit::Target,
    authz::{
        Perm, PermSet,
        change::{ADMIN_ROLE, AuthzChange},
        pep::Principal,
    },
    error::{ApiError, ApiResult},
};

#[derive(Serialize, sqlx::FromRow)]
pub struct RoleOut {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub is_system: bool,
    pub permissions: Vec<String>,
    pub user_count: i64,
}

macro_rules! select_roles {
    () => {
        "SELECT r.id, r.name, r.description, r.is_system,
                COALESCE((SELECT array_agg(permission_key ORDER BY permission_key)
                          FROM role_permissions WHERE role_id = r.id), '{}') AS permissions,
                (SELECT count(*) FROM user_roles WHERE role_id = r.id) AS user_count
         FROM roles r"
    };
}

async fn load(conn: &mut PgConnection, id: Uuid) -> ApiResult<RoleOut> {
    sqlx::query_as(concat!(select_roles!(), " WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(ApiError::NotFound { what: "role" })
}

fn invalid(code: &'static str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        code,
        message: message.to_owned(),
    }
}

fn check_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim().to_lowercase();
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(name)
    } else {
        Err(invalid(
            "invalid_role_name",
            "a role name is 1 to 64 of a-z, 0-9, '_', '-', '.'",
        ))
    }
}

/// The caller must hold every permission they grant or take away; `actor`
/// is what the caller holds, read under the change's lock.
fn check_grantable(actor: PermSet, before: &[String], after: &[&str]) -> ApiResult<()> {
    let changed = after
        .iter()
        .filter(|k| !before.iter().any(|b| b == *k))
        .copied()
        .chain(
            before
                .iter()
                .map(String::as_str)
                .filter(|b| !after.contains(b)),
        );
    for key in changed {
        if Perm::parse(key).is_some_and(|p| !actor.contains(p)) {
            return Err(ApiError::Forbidden);
        }
    }
    Ok(())
}

fn check_permissions(keys: &[String]) -> ApiResult<Vec<&'static str>> {
    let mut out: Vec<&'static str> = keys
        .iter()
        .map(|k| {
            Perm::parse(k)
                .map(Perm::as_str)
                .ok_or_else(|| ApiError::Unprocessable {
                    code: "unknown_permission",
                    message: format!("{k} is not a permission; GET /api/permissions lists them"),
                })
        })
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn system_role() -> ApiError {
    ApiError::Conflict {
        code: "system_role",
        message:
            "built-in roles cannot be renamed or deleted, and admin always has every permission"
                .into(),
    }
}

async fn holders(conn: &mut PgConnection, role: Uuid) -> ApiResult<Vec<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM user_roles WHERE role_id = $1 ORDER BY user_id")
            .bind(role)
            .fetch_all(conn)
            .await?,
    )
}

/// `GET /roles`.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<RoleOut>>> {
    Ok(Json(
        sqlx::query_as(concat!(
            select_roles!(),
            " ORDER BY r.is_system DESC, r.name"
        ))
        .fetch_all(&state.pool)
        .await?,
    ))
}

#[derive(Deserialize)]
pub struct CreateIn {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// `POST /roles`.
pub async fn create(
    State(state): State<AppState>,
    caller: Principal,
    Json(input): Json<CreateIn>,
) -> ApiResult<(StatusCode, Json<RoleOut>)> {
    let name = check_name(&input.name)?;
    let permissions = check_permissions(&input.permissions)?;
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    check_grantable(change.perms_of(caller.id).await?, &[], &permissions)?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO roles (id, name, description) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(id)
    .bind(&name)
    .bind(input.description.trim())
    .execute(change.conn())
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::Conflict {
            code: "role_name_taken",
            message: "a role with this name already exists".into(),
        });
    }
    set_permissions(change.conn(), id, &permissions).await?;
    let role = load(change.conn(), id).await?;
    change
        .audit(
            "role.created",
            Target::new("role", id),
            None,
            Some(json!({"name": role.name, "permissions": role.permissions})),
            None,
        )
        .await?;
    change
        .emit(Event::AuthzRoleUpdated(AuthzRoleUpdated {
            role_id: id,
            users: vec![],
        }))
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

async fn set_permissions(conn: &mut PgConnection, role: Uuid, keys: &[&str]) -> ApiResult<()> {
    sqlx::query("DELETE FROM role_permissions WHERE role_id = $1")
        .bind(role)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO role_permissions (role_id, permission_key) SELECT $1, unnest($2::text[])",
    )
    .bind(role)
    .bind(keys)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Deserialize)]
pub struct UpdateIn {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// `PATCH /roles/{id}`: name and description (rights are unchanged).
pub async fn update(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateIn>,
) -> ApiResult<Json<RoleOut>> {
    let name = input.name.as_deref().map(check_name).transpose()?;
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let before = load(change.conn(), id).await?;
    if before.is_system && name.as_ref().is_some_and(|n| *n != before.name) {
        return Err(system_role());
    }
    let taken: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM roles WHERE name = $1 AND id <> $2")
            .bind(&name)
            .bind(id)
            .fetch_optional(change.conn())
            .await?;
    if taken.is_some() {
        return Err(ApiError::Conflict {
            code: "role_name_taken",
            message: "a role with this name already exists".into(),
        });
    }
    sqlx::query(
        "UPDATE roles SET name = COALESCE($2, name), description = COALESCE($3, description),
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&name)
    .bind(input.description.as_deref().map(str::trim))
    .execute(change.conn())
    .await?;
    let after = load(change.conn(), id).await?;
    change
        .audit(
            "role.updated",
            Target::new("role", id),
            Some(json!({"name": before.name, "description": before.description})),
            Some(json!({"name": after.name, "description": after.description})),
            None,
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok(Json(after))
}

/// `DELETE /roles/{id}`: its holders lose what it gave them at once.
pub async fn delete(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let before = load(change.conn(), id).await?;
    if before.is_system {
        return Err(system_role());
    }
    let users = holders(change.conn(), id).await?;
    if !users.is_empty() {
        // Taking rights away from its holders: only rights the caller has.
        check_grantable(change.perms_of(caller.id).await?, &before.permissions, &[])?;
    }
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(id)
        .execute(change.conn())
        .await?;
    change
        .role_changed(
            id,
            &users,
            "role.deleted",
            Some(json!({"name": before.name, "permissions": before.permissions, "holders": users})),
            |_| None,
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct PermissionsIn {
    pub permissions: Vec<String>,
}

/// `PUT /roles/{id}/permissions`: replaces the role's permissions; every
/// holder's rights change at once.
pub async fn put_permissions(
    State(state): State<AppState>,
    caller: Principal,
    Path(id): Path<Uuid>,
    Json(input): Json<PermissionsIn>,
) -> ApiResult<Json<RoleOut>> {
    let permissions = check_permissions(&input.permissions)?;
    if id == ADMIN_ROLE {
        return Err(system_role());
    }
    let mut change = AuthzChange::begin(&state.pool, Some(caller.id)).await?;
    let before = load(change.conn(), id).await?;
    check_grantable(
        change.perms_of(caller.id).await?,
        &before.permissions,
        &permissions,
    )?;
    set_permissions(change.conn(), id, &permissions).await?;
    let users = holders(change.conn(), id).await?;
    let after = load(change.conn(), id).await?;
    change
        .role_changed(
            id,
            &users,
            "role.permissions_changed",
            Some(json!({"permissions": before.permissions})),
            |bumped| Some(json!({"permissions": after.permissions, "holders": bumped})),
        )
        .await?;
    change.commit(&state.authz, &state.relay_wake).await?;
    Ok(Json(after))
}

#[derive(Serialize, sqlx::FromRow)]
pub struct PermissionOut {
    pub key: String,
    pub description: String,
}

/// `GET /permissions`: the catalogue.
pub async fn permissions(State(state): State<AppState>) -> ApiResult<Json<Vec<PermissionOut>>> {
    Ok(Json(
        sqlx::query_as("SELECT key, description FROM permissions ORDER BY key")
            .fetch_all(&state.pool)
            .await?,
    ))
}
