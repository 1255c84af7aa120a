//! `refresh_tokens`: a user's refresh tokens, stored hashed; a rotation
//! replaces one with the next of its family.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    #[sea_orm(column_type = "Text", unique)]
    pub token_hash: String,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub replaced_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::UserId", to = "super::users::Column::Id", on_delete = "Cascade")]
    Users,
    /// The token that replaced this one.
    #[sea_orm(belongs_to = "Entity", from = "Column::ReplacedBy", to = "Column::Id")]
    SelfRef,
}

super::related!(users => Users);

impl ActiveModelBehavior for ActiveModel {}
