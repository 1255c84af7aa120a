//! Scoped finders on the entities: the one place each visibility rule is
//! written, so a query cannot forget it.

use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, Select,
    sea_query::{Expr, ExprTrait, Query, SelectStatement, extension::postgres::PgFunc},
};
use uuid::Uuid;

use crate::entities::{
    conversations, messages, refresh_tokens, role_permissions, user_roles, users,
};

/// `column = ANY($1)`: the values travel as one array parameter, so the
/// statement has one shape (and one prepared plan) for any number of them,
/// where `IN` binds a parameter each.
pub fn any_of<C, V>(column: C, values: &[V]) -> Expr
where
    C: ColumnTrait,
    V: Clone,
    Vec<V>: Into<sea_orm::Value>,
{
    Expr::col(column.as_column_ref()).eq(PgFunc::any(Expr::val(values.to_vec())))
}

impl conversations::Entity {
    /// Conversations a reader may see: every one, or (for a reader limited
    /// to assigned conversations) only those assigned to `assignee`.
    pub fn in_scope(assignee: Option<Uuid>) -> Select<Self> {
        let all = Self::find();
        match assignee {
            Some(a) => all.filter(conversations::Column::AssigneeId.eq(a)),
            None => all,
        }
    }
}

impl messages::Entity {
    /// The messages of one conversation.
    pub fn of_conversation(conversation: Uuid) -> Select<Self> {
        Self::find().filter(messages::Column::ConversationId.eq(conversation))
    }
}

impl users::Entity {
    /// The account signing in as `email` (emails are stored lowercased).
    pub fn by_email(email: &str) -> Select<Self> {
        Self::find().filter(users::Column::Email.eq(email))
    }
}

impl user_roles::Entity {
    /// The role grants of one user.
    pub fn of_user(user: Uuid) -> Select<Self> {
        Self::find().filter(user_roles::Column::UserId.eq(user))
    }

    /// The grants of one role.
    pub fn of_role(role: Uuid) -> Select<Self> {
        Self::find().filter(user_roles::Column::RoleId.eq(role))
    }

    /// `SELECT role_id … WHERE user_id = user`, for use as a subquery.
    pub fn role_ids_of(user: Uuid) -> SelectStatement {
        Query::select()
            .column(user_roles::Column::RoleId)
            .from(Self)
            .and_where(user_roles::Column::UserId.eq(user))
            .to_owned()
    }
}

impl role_permissions::Entity {
    /// The permission grants of one role.
    pub fn of_role(role: Uuid) -> Select<Self> {
        Self::find().filter(role_permissions::Column::RoleId.eq(role))
    }

    /// The grants behind one user's rights, through every role they hold.
    pub fn of_user(user: Uuid) -> Select<Self> {
        Self::find().filter(
            role_permissions::Column::RoleId.in_subquery(user_roles::Entity::role_ids_of(user)),
        )
    }
}

impl refresh_tokens::Entity {
    /// The token whose secret hashes to `hash`.
    pub fn by_hash(hash: &str) -> Select<Self> {
        Self::find().filter(refresh_tokens::Column::TokenHash.eq(hash))
    }

    /// Tokens not yet revoked (a rotated token is revoked too), as a
    /// condition for reads and for `update_many` alike.
    pub fn live() -> Condition {
        Condition::all().add(refresh_tokens::Column::RevokedAt.is_null())
    }
}
