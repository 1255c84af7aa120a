//! `users`: staff accounts.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text", unique)]
    pub email: String,
    #[sea_orm(column_type = "Text")]
    pub display_name: String,
    #[sea_orm(column_type = "Text")]
    pub password_hash: String,
    pub is_active: bool,
    pub perm_version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::user_roles::Entity")]
    UserRoles,
    #[sea_orm(has_many = "super::refresh_tokens::Entity")]
    RefreshTokens,
    #[sea_orm(has_many = "super::audit_log::Entity")]
    AuditLog,
    /// The conversations assigned to the user.
    #[sea_orm(has_many = "super::conversations::Entity")]
    Conversations,
    /// The messages and notes the user wrote.
    #[sea_orm(has_many = "super::messages::Entity")]
    Messages,
    /// The files the user uploaded.
    #[sea_orm(has_many = "super::attachments::Entity")]
    Attachments,
    #[sea_orm(has_many = "super::conversation_reads::Entity")]
    ConversationReads,
}

super::related! {
    user_roles => UserRoles,
    refresh_tokens => RefreshTokens,
    audit_log => AuditLog,
    conversations => Conversations,
    messages => Messages,
    attachments => Attachments,
    conversation_reads => ConversationReads,
}

super::related_via!(roles via user_roles: Roles, Users);

impl ActiveModelBehavior for ActiveModel {}
