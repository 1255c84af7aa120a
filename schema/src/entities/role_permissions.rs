//! `role_permissions`: which permissions each role grants.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "role_permissions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub role_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub permission_key: String,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::roles::Entity", from = "Column::RoleId", to = "super::roles::Column::Id", on_delete = "Cascade")]
    Roles,
    #[sea_orm(belongs_to = "super::permissions::Entity", from = "Column::PermissionKey", to = "super::permissions::Column::Key", on_delete = "Cascade")]
    Permissions,
}

super::related! {
    roles => Roles,
    permissions => Permissions,
}

impl ActiveModelBehavior for ActiveModel {}
