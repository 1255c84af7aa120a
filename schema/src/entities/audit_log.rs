//! `audit_log`: who changed what (users, roles, permissions), with the row
//! before and after.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub actor_id: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub action: String,
    #[sea_orm(column_type = "Text")]
    pub target_type: String,
    #[sea_orm(column_type = "Text")]
    pub target_id: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub before: Option<Json>,
    #[sea_orm(column_type = "JsonBinary")]
    pub after: Option<Json>,
    pub created_at: DateTimeUtc,
    /// The permission version the change produced, if it changed one.
    pub perm_version: Option<i64>,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::ActorId", to = "super::users::Column::Id", on_delete = "SetNull")]
    Users,
}

super::related!(users => Users);

impl ActiveModelBehavior for ActiveModel {}
