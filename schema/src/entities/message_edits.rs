//! `message_edits`: the texts a message had before each edit, oldest first.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "message_edits")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub message_id: Uuid,
    /// The text as it was before this edit.
    #[sea_orm(column_type = "Text")]
    pub text: String,
    /// When the edit replaced it (Telegram's edit time).
    pub replaced_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    /// The operator who replaced it; `None` for the customer's own edits.
    pub editor_id: Option<Uuid>,
}

// One line per relation: read as a table.
#[rustfmt::skip]
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::messages::Entity", from = "Column::MessageId", to = "super::messages::Column::Id", on_delete = "Cascade")]
    Messages,
    /// The operator who replaced the text.
    #[sea_orm(belongs_to = "super::users::Entity", from = "Column::EditorId", to = "super::users::Column::Id", on_delete = "SetNull")]
    Users,
}

super::related!(messages => Messages, users => Users);

impl ActiveModelBehavior for ActiveModel {}
