//! The audit log: one [`Entry`] per change an operator or admin makes,
//! written in the change's own transaction, and the list ops read
//! (`GET /api/audit`).

use chrono::{DateTime, Utc};
use schema::entities::audit_log;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    page::{Page, PageRequest},
};

/// What an entry is about: `("user", id)`, `("conversation", id)`, …
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static str,
    pub id: String,
}

impl Target {
    pub fn new(kind: &'static str, id: impl ToString) -> Self {
        Self {
            kind,
            id: id.to_string(),
        }
    }
}

/// One audit row, built up and then written.
#[derive(Debug, Clone)]
pub struct Entry {
    pub actor: Option<Uuid>,
    pub action: &'static str,
    pub target: Target,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The target user's permission version after an authorization change.
    pub perm_version: Option<i64>,
}

impl Entry {
    pub fn new(actor: Option<Uuid>, action: &'static str, target: Target) -> Self {
        Self {
            actor,
            action,
            target,
            before: None,
            after: None,
            perm_version: None,
        }
    }

    pub fn before(mut self, before: Option<Value>) -> Self {
        self.before = before;
        self
    }

    pub fn after(mut self, after: Option<Value>) -> Self {
        self.after = after;
        self
    }

    pub fn perm_version(mut self, v: Option<i64>) -> Self {
        self.perm_version = v;
        self
    }

    /// Writes the row on `conn`, the transaction of the change it records.
    pub async fn write<C: ConnectionTrait>(self, conn: &C) -> ApiResult<()> {
        audit_log::Entity::insert(audit_log::ActiveModel {
            id: NotSet,
            actor_id: Set(self.actor),
            action: Set(self.action.to_owned()),
            target_type: Set(self.target.kind.to_owned()),
            target_id: Set(self.target.id),
            before: Set(self.before),
            after: Set(self.after),
            created_at: NotSet,
            perm_version: Set(self.perm_version),
        })
        .exec_without_returning(conn)
        .await?;
        Ok(())
    }
}

/// A row of the log as `GET /api/audit` shows it.
#[derive(Debug, Serialize, Deserialize, FromQueryResult, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub perm_version: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// Which entries to list.
#[derive(Debug, Default)]
pub struct Filter {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub actor_id: Option<Uuid>,
}

impl Filter {
    /// Refuses filter values no entry can have (over 200 bytes, or a NUL).
    pub fn check(&self) -> ApiResult<()> {
        for (name, code, value) in [
            ("target_type", "invalid_target_type", &self.target_type),
            ("target_id", "invalid_target_id", &self.target_id),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.len() > 200 || v.contains('\0'))
            {
                return Err(ApiError::Unprocessable {
                    code,
                    message: format!("{name} must be at most 200 bytes, with no NUL character"),
                });
            }
        }
        Ok(())
    }
}

/// Newest first, keyset-paged by id.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    filter: &Filter,
    page: PageRequest<i64>,
) -> ApiResult<Page<AuditRecord>> {
    use audit_log::Column;
    filter.check()?;
    let mut query = audit_log::Entity::find();
    if let Some(t) = &filter.target_type {
        query = query.filter(Column::TargetType.eq(t.as_str()));
    }
    if let Some(t) = &filter.target_id {
        query = query.filter(Column::TargetId.eq(t.as_str()));
    }
    if let Some(a) = filter.actor_id {
        query = query.filter(Column::ActorId.eq(a));
    }
    if let Some(before) = page.after {
        query = query.filter(Column::Id.lt(before));
    }
    let rows = query
        .order_by_desc(Column::Id)
        .limit(page.fetch())
        .into_model::<AuditRecord>()
        .all(conn)
        .await?;
    Ok(page.page(rows, |r| r.id.to_string()))
}
