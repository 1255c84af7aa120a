//! `permissions`: the seeded permission catalogue, keyed by name (`inbox.reply`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "permissions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub key: String,
    #[sea_orm(column_type = "Text")]
    pub description: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::role_permissions::Entity")]
    RolePermissions,
}

super::related!(role_permissions => RolePermissions);

super::related_via!(roles via role_permissions: Roles, Permissions);

impl ActiveModelBehavior for ActiveModel {}
