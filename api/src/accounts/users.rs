//! Staff accounts: reading them with their roles, creating, editing
//! (profile, password reset, activation), deactivating and replacing their
//! roles. Each change is one [`AuthzChange`].

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use schema::entities::{role_permissions, roles, user_roles, users};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Ctx, invalid};
use crate::{
    auth::{self, session},
    authz::{PermSet, change::AuthzChange},
    error::{ApiError, ApiResult},
};

/// A role an account holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RoleRef {
    pub id: Uuid,
    pub name: String,
}

/// An account as `/api/users` shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub is_active: bool,
    pub perm_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub roles: Vec<RoleRef>,
}

impl User {
    fn new(u: users::Model, roles: Vec<RoleRef>) -> Self {
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            is_active: u.is_active,
            perm_version: u.perm_version,
            created_at: u.created_at,
            updated_at: u.updated_at,
            roles,
        }
    }

    /// The audited view of an account.
    fn snapshot(&self) -> serde_json::Value {
        json!({
            "email": self.email,
            "display_name": self.display_name,
            "is_active": self.is_active,
            "roles": self.roles.iter().map(|r| &r.name).collect::<Vec<_>>(),
        })
    }
}

/// The roles of each of `ids`, by name.
async fn roles_of<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<RoleRef>>> {
    let rows: Vec<(Uuid, Uuid, String)> = user_roles::Entity::find()
        .select_only()
        .column(user_roles::Column::UserId)
        .column(roles::Column::Id)
        .column(roles::Column::Name)
        .inner_join(roles::Entity)
        .filter(schema::finders::any_of(user_roles::Column::UserId, ids))
        .order_by_asc(roles::Column::Name)
        .into_tuple()
        .all(conn)
        .await?;
    let mut out: HashMap<Uuid, Vec<RoleRef>> = HashMap::new();
    for (user, id, name) in rows {
        out.entry(user).or_default().push(RoleRef { id, name });
    }
    Ok(out)
}

/// Every account, by email.
pub async fn list<C: ConnectionTrait>(conn: &C) -> ApiResult<Vec<User>> {
    let users = users::Entity::find()
        .order_by_asc(users::Column::Email)
        .all(conn)
        .await?;
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let mut roles = roles_of(conn, &ids).await?;
    Ok(users
        .into_iter()
        .map(|u| {
            let r = roles.remove(&u.id).unwrap_or_default();
            User::new(u, r)
        })
        .collect())
}

/// One account; 404 `user` otherwise.
pub async fn get<C: ConnectionTrait>(conn: &C, id: Uuid) -> ApiResult<User> {
    let user = users::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound { what: "user" })?;
    let roles = roles_of(conn, &[id]).await?.remove(&id).unwrap_or_default();
    Ok(User::new(user, roles))
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

fn email_taken() -> ApiError {
    ApiError::Conflict {
        code: "email_taken",
        message: "a user with this email already exists".into(),
    }
}

fn own_account() -> ApiError {
    ApiError::ForbiddenBecause {
        code: "own_account",
        message: "your own email and activation are changed by another administrator",
    }
}

/// Replaces the user's roles; every id must name an existing role, and
/// `actor` (the caller's permissions, read under the change's lock) must
/// hold every permission of each role added or removed (no one hands out,
/// or takes away, rights they do not have themselves).
async fn set_roles<C: ConnectionTrait>(
    conn: &C,
    actor: PermSet,
    user: Uuid,
    roles: &[Uuid],
) -> ApiResult<()> {
    let wanted: BTreeSet<Uuid> = roles.iter().copied().collect();
    let known = roles::Entity::find()
        .filter(roles::Column::Id.is_in(wanted.iter().copied()))
        .count(conn)
        .await?;
    if usize::try_from(known).unwrap_or(0) != wanted.len() {
        return Err(invalid("unknown_role", "a role in role_ids does not exist"));
    }
    let held: BTreeSet<Uuid> = user_roles::Entity::of_user(user)
        .select_only()
        .column(user_roles::Column::RoleId)
        .into_tuple::<Uuid>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let changed: Vec<Uuid> = wanted.symmetric_difference(&held).copied().collect();
    if !changed.is_empty() {
        let granted: Vec<String> = role_permissions::Entity::find()
            .filter(role_permissions::Column::RoleId.is_in(changed))
            .select_only()
            .column(role_permissions::Column::PermissionKey)
            .distinct()
            .into_tuple()
            .all(conn)
            .await?;
        if !actor.covers(PermSet::from_keys(granted.iter().map(String::as_str))) {
            return Err(ApiError::Forbidden);
        }
    }
    user_roles::Entity::delete_many()
        .filter(user_roles::Column::UserId.eq(user))
        .exec(conn)
        .await?;
    if !wanted.is_empty() {
        user_roles::Entity::insert_many(wanted.into_iter().map(|role| user_roles::ActiveModel {
            user_id: Set(user),
            role_id: Set(role),
        }))
        .exec_without_returning(conn)
        .await?;
    }
    Ok(())
}

/// A new account.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    /// An address: trimmed and lower-cased, at most 254 bytes.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: String,
    /// 1 to 100 characters, none of them control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: String,
    /// 12 to 128 characters.
    #[schema(min_length = 12, max_length = 128)]
    pub password: String,
    #[serde(default)]
    pub role_ids: Vec<Uuid>,
}

/// Creates an account holding `role_ids`, every one of which the caller
/// could grant.
pub async fn create(ctx: Ctx<'_>, caller: Uuid, input: NewUser) -> ApiResult<User> {
    let email = auth::check_email(&input.email)?;
    let display_name = check_name(&input.display_name)?;
    let hash = ctx.hash_password(input.password).await?;
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let id = Uuid::now_v7();
    let inserted = users::Entity::insert(users::ActiveModel {
        id: Set(id),
        email: Set(email),
        display_name: Set(display_name),
        password_hash: Set(hash),
        is_active: NotSet,
        perm_version: NotSet,
        created_at: NotSet,
        updated_at: NotSet,
    })
    .on_conflict_do_nothing_on([users::Column::Email])
    .exec_without_returning(change.conn())
    .await?;
    if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        return Err(email_taken());
    }
    let actor = change.perms_of(caller).await?;
    set_roles(change.conn(), actor, id, &input.role_ids).await?;
    let mut user = get(change.conn(), id).await?;
    user.perm_version = change
        .user_changed(id, "user.created", None, Some(user.snapshot()))
        .await?;
    change.commit(ctx.authz, ctx.wake).await?;
    Ok(user)
}

/// An edit of an account: each field given is changed.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserEdit {
    /// An address: trimmed and lower-cased, at most 254 bytes.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    pub email: Option<String>,
    /// 1 to 100 characters, none of them control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: Option<String>,
    /// A reset by someone else (one's own: `POST /api/auth/password`);
    /// 12 to 128 characters.
    #[schema(min_length = 12, max_length = 128)]
    pub password: Option<String>,
    pub is_active: Option<bool>,
}

/// Profile, password reset, (de)activation. A new password or a
/// deactivation ends every session of the user at once.
pub async fn update(ctx: Ctx<'_>, caller: Uuid, id: Uuid, input: UserEdit) -> ApiResult<User> {
    use users::Column;
    // What locks an account out (its sign-in email, its activation) is
    // changed by someone else; one's own password through
    // POST /auth/password, which asks for the current one. A stolen access
    // token therefore cannot take the account from its owner.
    if caller == id && input.password.is_some() {
        return Err(ApiError::ForbiddenBecause {
            code: "own_password",
            message: "change your own password with POST /api/auth/password, which asks for the current one",
        });
    }
    if caller == id && (input.email.is_some() || input.is_active.is_some()) {
        return Err(own_account());
    }
    let email = input.email.as_deref().map(auth::check_email).transpose()?;
    let display_name = input.display_name.as_deref().map(check_name).transpose()?;
    let hash = match input.password {
        Some(p) => Some(ctx.hash_password(p).await?),
        None => None,
    };
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let before = get(change.conn(), id).await?;
    change.ensure_actor_outranks(id).await?;
    if let Some(email) = &email {
        let taken = users::Entity::by_email(email)
            .filter(Column::Id.ne(id))
            .select_only()
            .column(Column::Id)
            .into_tuple::<Uuid>()
            .one(change.conn())
            .await?;
        if taken.is_some() {
            return Err(email_taken());
        }
    }
    let mut edit = users::Entity::update_many()
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.eq(id));
    if let Some(email) = &email {
        edit = edit.col_expr(Column::Email, Expr::value(email.as_str()));
    }
    if let Some(name) = &display_name {
        edit = edit.col_expr(Column::DisplayName, Expr::value(name.as_str()));
    }
    if let Some(hash) = &hash {
        edit = edit.col_expr(Column::PasswordHash, Expr::value(hash.as_str()));
    }
    if let Some(active) = input.is_active {
        edit = edit.col_expr(Column::IsActive, Expr::value(active));
    }
    edit.exec(change.conn()).await?;
    if hash.is_some() || input.is_active == Some(false) {
        session::revoke_user(change.conn(), id).await?;
    }
    if input.is_active == Some(false) {
        change.ensure_an_admin_remains().await?;
    }
    let mut after = get(change.conn(), id).await?;
    let mut after_json = after.snapshot();
    if hash.is_some() {
        after_json["password_changed"] = json!(true);
    }
    after.perm_version = change
        .user_changed(
            id,
            "user.updated",
            Some(before.snapshot()),
            Some(after_json),
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await?;
    Ok(after)
}

/// Deactivates the account (history keeps its name); nothing to do for
/// one already inactive.
pub async fn deactivate(ctx: Ctx<'_>, caller: Uuid, id: Uuid) -> ApiResult<()> {
    use users::Column;
    if caller == id {
        return Err(own_account());
    }
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let before = get(change.conn(), id).await?;
    change.ensure_actor_outranks(id).await?;
    if !before.is_active {
        return Ok(());
    }
    users::Entity::update_many()
        .col_expr(Column::IsActive, Expr::value(false))
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.eq(id))
        .exec(change.conn())
        .await?;
    session::revoke_user(change.conn(), id).await?;
    change.ensure_an_admin_remains().await?;
    let after = get(change.conn(), id).await?;
    change
        .user_changed(
            id,
            "user.deactivated",
            Some(before.snapshot()),
            Some(after.snapshot()),
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await
}

/// Replaces the user's roles. No one changes their own, and the caller must
/// hold every permission the user holds.
pub async fn put_roles(ctx: Ctx<'_>, caller: Uuid, id: Uuid, roles: &[Uuid]) -> ApiResult<User> {
    if caller == id {
        return Err(ApiError::ForbiddenBecause {
            code: "own_roles",
            message: "no one changes their own roles; ask another administrator",
        });
    }
    let mut change = AuthzChange::begin(ctx.db, Some(caller)).await?;
    let before = get(change.conn(), id).await?;
    let actor = change.ensure_actor_outranks(id).await?;
    set_roles(change.conn(), actor, id, roles).await?;
    change.ensure_an_admin_remains().await?;
    let mut after = get(change.conn(), id).await?;
    after.perm_version = change
        .user_changed(
            id,
            "user.roles_changed",
            Some(json!({"roles": before.roles})),
            Some(json!({"roles": after.roles})),
        )
        .await?;
    change.commit(ctx.authz, ctx.wake).await?;
    Ok(after)
}
