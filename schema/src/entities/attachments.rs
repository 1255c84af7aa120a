//! `attachments`: uploaded files, stored under an object key, and the
//! message they were attached to.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub uploader_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    #[sea_orm(column_type = "Text", unique)]
    pub object_key: String,
    #[sea_orm(column_type = "Text")]
    pub filename: String,
    #[sea_orm(column_type = "Text")]
    pub content_type: String,
    pub size_bytes: i64,
    /// `pending`, `uploaded` or `attached`.
    #[sea_orm(column_type = "Text")]
    pub status: String,
    pub created_at: DateTimeUtc,
    /// Its place among its message's files (0 first); `None` until attached.
    pub position: Option<i16>,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The uploader.
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::UploaderId", to = "super::users::Column::Id", on_delete = "SetNull")]
    Users,
    #[sea_orm(belongs_to = "super::messages::Entity", from = "Column::MessageId", to = "super::messages::Column::Id", on_delete = "SetNull")]
    Messages,
}

super::related! {
    users => Users,
    messages => Messages,
}

impl ActiveModelBehavior for ActiveModel {}
