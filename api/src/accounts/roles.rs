//! Roles and the permission catalogue: reading roles with their
//! permissions and holder counts, creating, renaming, deleting, and
//! replacing a role's permissions (which changes every holder's rights at
//! once). Each change is one [`AuthzChange`].

use std::collections::HashMap;

use broker_config::{Event, events::AuthzRoleUpdated};
use schema::entities::{permissions, role_permissions, roles, user_roles};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Ctx, invalid};
use crate::{
    audit::Target,
    authz::{
        Perm, PermSet,
        change::{ADMIN_ROLE, AuthzChange},
    },
    error::{ApiError, ApiResult},
};

/// A role as `/api/roles` shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub is_system: bool,
    #[schema(value_type = Vec<crate::authz::Perm>)]
    pub permissions: Vec<String>,
    pub user_count: i64,
}

/// A permission of the catalogue.
#[derive(Debug, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct Permission {
    pub key: String,
    pub description: String,
}

/// `roles` with their permissions (sorted) and holder counts.
async fn with_grants<C: ConnectionTrait>(
    conn: &C,
    roles: Vec<roles::Model>,
) -> ApiResult<Vec<Role>> {
    let ids: Vec<Uuid> = roles.iter().map(|r| r.id).collect();
    let grants: Vec<(Uuid, String)> = role_permissions::Entity::find()
        .select_only()
        .columns([
            role_permissions::Column::RoleId,
            role_permissions::Column::PermissionKey,
        ])
        .filter(role_permissions::Column::RoleId.is_in(ids.iter().copied()))
        .order_by_asc(role_permissions::Column::PermissionKey)
        .into_tuple()
        .all(conn)
        .await?;
    let mut keys: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (role, key) in grants {
        keys.entry(role).or_default().push(key);
    }
    let counts: HashMap<Uuid, i64> = user_roles::Entity::find()
        .select_only()
        .column(user_roles::Column::RoleId)
        .column_as(user_roles::Column::UserId.count(), "n")
        .filter(user_roles::Column::RoleId.is_in(ids))
        .group_by(user_roles::Column::RoleId)
        .into_tuple::<(Uuid, i64)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    Ok(roles
        .into_iter()
        .map(|r| Role {
            permissions: keys.remove(&r.id).unwrap_or_default(),
            user_count: counts.get(&r.id).copied().unwrap_or(0),
            id: r.id,
            name: r.name,
            description: r.description,
            is_system: r.is_system,
        })
        .collect())
}

/// Every role, the built-in ones first, then by name.
pub async fn list<C: ConnectionTrait>(conn: &C) -> ApiResult<Vec<Role>> {
    let roles = roles::Entity::find()
        .order_by_desc(roles::Column::IsSystem)
        .order_by_asc(roles::Column::Name)
        .all(conn)
        .await?;
    with_grants(conn, roles).await
}

/// One role; 404 `role` otherwise.
pub async fn get<C: ConnectionTrait>(conn: &C, id: Uuid) -> ApiResult<Role> {
    let role = roles::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound { what: "role" })?;
    with_grants(conn, vec![role])
        .await?
        .pop()
        .ok_or(ApiError::NotFound { what: "role" })
}

/// The catalogue, by key.
pub async fn permissions<C: ConnectionTrait>(conn: &C) -> ApiResult<Vec<Permission>> {
    Ok(permissions::Entity::find()
        .order_by_asc(permissions::Column::Key)
        .into_model::<Permission>()
        .all(conn)
        .await?)
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

fn name_taken() -> ApiError {
    ApiError::Conflict {
        code: "role_name_taken",
        message: "a role with this name already exists".into(),
    }
}

/// The users holding `role`.
async fn holders<C: ConnectionTrait>(conn: &C, role: Uuid) -> ApiResult<Vec<Uuid>> {
    Ok(user_roles::Entity::of_role(role)
        .select_only()
        .column(user_roles::Column::UserId)
        .order_by_asc(user_roles::Column::UserId)
        .into_tuple()
        .all(conn)
        .await?)
}

async fn set_permissions<C: ConnectionTrait>(conn: &C, role: Uuid, keys: &[&str]) -> ApiResult<()> {
    role_permissions::Entity::delete_many()
        .filter(role_permissions::Column::RoleId.eq(role))
        .exec(conn)
        .await?;
    if !keys.is_empty() {
        role_permissions::Entity::insert_many(keys.iter().map(|k| role_permissions::ActiveModel {
            role_id: Set(role),
            permission_key: Set((*k).to_owned()),
        }))
        .exec_without_returning(conn)
        .await?;
    }
    Ok(())
}

/// A new role.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewRole {
    /// 1 to 64 of a-z, 0-9, `_`, `-`, `.` (upper case is lowered).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(value_type = Vec<crate::authz::Perm>)]
    pub permissions: Vec<String>,
}

/// Creates a role granting only permissions the caller holds.
pub async fn create(ctx: Ctx<'_>, caller: Uuid, input: NewRole) -> ApiResult<Role> {
    let name = check_name(&input.name)?;
    let permissions = check_permissions(&input.permissions)?;
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    check_grantable(change.perms_of(caller).await?, &[], &permissions)?;
    let id = Uuid::now_v7();
    let inserted = roles::Entity::insert(roles::ActiveModel {
        id: Set(id),
        name: Set(name),
        description: Set(input.description.trim().to_owned()),
        is_system: NotSet,
        created_at: NotSet,
        updated_at: NotSet,
    })
    .on_conflict_do_nothing_on([roles::Column::Name])
    .exec_without_returning(change.conn())
    .await?;
    if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        return Err(name_taken());
    }
    set_permissions(change.conn(), id, &permissions).await?;
    let role = get(change.conn(), id).await?;
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
    change.commit(ctx.authz, ctx.wake).await?;
    Ok(role)
}

/// An edit of a role's name and description.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoleEdit {
    /// 1 to 64 of a-z, 0-9, `_`, `-`, `.` (upper case is lowered).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Renames or redescribes a role (its rights are unchanged); built-in roles
/// keep their names.
pub async fn update(ctx: Ctx<'_>, caller: Uuid, id: Uuid, input: RoleEdit) -> ApiResult<Role> {
    use roles::Column;
    let name = input.name.as_deref().map(check_name).transpose()?;
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let before = get(change.conn(), id).await?;
    if before.is_system && name.as_ref().is_some_and(|n| *n != before.name) {
        return Err(system_role());
    }
    if let Some(name) = &name {
        let taken = roles::Entity::find()
            .filter(Column::Name.eq(name.as_str()))
            .filter(Column::Id.ne(id))
            .select_only()
            .column(Column::Id)
            .into_tuple::<Uuid>()
            .one(change.conn())
            .await?;
        if taken.is_some() {
            return Err(name_taken());
        }
    }
    let mut edit = roles::Entity::update_many()
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.eq(id));
    if let Some(name) = &name {
        edit = edit.col_expr(Column::Name, Expr::value(name.as_str()));
    }
    if let Some(description) = input.description.as_deref().map(str::trim) {
        edit = edit.col_expr(Column::Description, Expr::value(description));
    }
    edit.exec(change.conn()).await?;
    let after = get(change.conn(), id).await?;
    change
        .audit(
            "role.updated",
            Target::new("role", id),
            Some(json!({"name": before.name, "description": before.description})),
            Some(json!({"name": after.name, "description": after.description})),
            None,
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await?;
    Ok(after)
}

/// Deletes a role: its holders lose what it gave them at once.
pub async fn delete(ctx: Ctx<'_>, caller: Uuid, id: Uuid) -> ApiResult<()> {
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let before = get(change.conn(), id).await?;
    if before.is_system {
        return Err(system_role());
    }
    let users = holders(change.conn(), id).await?;
    if !users.is_empty() {
        // Taking rights away from its holders: only rights the caller has.
        check_grantable(change.perms_of(caller).await?, &before.permissions, &[])?;
    }
    roles::Entity::delete_by_id(id).exec(change.conn()).await?;
    change
        .role_changed(
            id,
            &users,
            "role.deleted",
            Some(json!({"name": before.name, "permissions": before.permissions, "holders": users})),
            |_| None,
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await
}

/// Replaces the role's permissions; every holder's rights change at once.
pub async fn put_permissions(
    ctx: Ctx<'_>,
    caller: Uuid,
    id: Uuid,
    keys: &[String],
) -> ApiResult<Role> {
    let permissions = check_permissions(keys)?;
    if id == ADMIN_ROLE {
        return Err(system_role());
    }
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let before = get(change.conn(), id).await?;
    check_grantable(
        change.perms_of(caller).await?,
        &before.permissions,
        &permissions,
    )?;
    set_permissions(change.conn(), id, &permissions).await?;
    let users = holders(change.conn(), id).await?;
    let after = get(change.conn(), id).await?;
    change
        .role_changed(
            id,
            &users,
            "role.permissions_changed",
            Some(json!({"permissions": before.permissions})),
            |bumped| Some(json!({"permissions": after.permissions, "holders": bumped})),
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await?;
    Ok(after)
}
