//! Authorization: the permission catalogue, effective permissions (EP), their
//! cache ([`cache::Authorizer`]), the policy enforcement point every route
//! goes through ([`pep`]) and the one way to change who may do what
//! ([`change::AuthzChange`]).

pub mod cache;
pub mod change;
pub mod pep;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The permission catalogue (DESIGN §3), seeded by migration `m0002`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Perm {
    #[serde(rename = "inbox.read_all")]
    InboxReadAll,
    #[serde(rename = "inbox.read_assigned")]
    InboxReadAssigned,
    #[serde(rename = "inbox.reply")]
    InboxReply,
    #[serde(rename = "inbox.assign")]
    InboxAssign,
    #[serde(rename = "attachments.upload")]
    AttachmentsUpload,
    #[serde(rename = "attachments.read")]
    AttachmentsRead,
    #[serde(rename = "users.manage")]
    UsersManage,
    #[serde(rename = "roles.manage")]
    RolesManage,
    #[serde(rename = "ops.outbox")]
    OpsOutbox,
    #[serde(rename = "ops.dlq")]
    OpsDlq,
    #[serde(rename = "audit.read")]
    AuditRead,
}

impl Perm {
    pub const ALL: [Perm; 11] = [
        Perm::InboxReadAll,
        Perm::InboxReadAssigned,
        Perm::InboxReply,
        Perm::InboxAssign,
        Perm::AttachmentsUpload,
        Perm::AttachmentsRead,
        Perm::UsersManage,
        Perm::RolesManage,
        Perm::OpsOutbox,
        Perm::OpsDlq,
        Perm::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Perm::InboxReadAll => "inbox.read_all",
            Perm::InboxReadAssigned => "inbox.read_assigned",
            Perm::InboxReply => "inbox.reply",
            Perm::InboxAssign => "inbox.assign",
            Perm::AttachmentsUpload => "attachments.upload",
            Perm::AttachmentsRead => "attachments.read",
            Perm::UsersManage => "users.manage",
            Perm::RolesManage => "roles.manage",
            Perm::OpsOutbox => "ops.outbox",
            Perm::OpsDlq => "ops.dlq",
            Perm::AuditRead => "audit.read",
        }
    }

    pub fn parse(key: &str) -> Option<Perm> {
        Perm::ALL.into_iter().find(|p| p.as_str() == key)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of permissions as bits: checking one is a mask test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PermSet(u32);

impl PermSet {
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        PermSet(
            keys.into_iter()
                .filter_map(Perm::parse)
                .fold(0, |acc, p| acc | p.bit()),
        )
    }

    pub fn contains(self, p: Perm) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn any(self, perms: &[Perm]) -> bool {
        perms.iter().any(|p| self.contains(*p))
    }

    pub fn keys(self) -> Vec<&'static str> {
        Perm::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .map(Perm::as_str)
            .collect()
    }
}

/// A user's effective permissions at one `perm_version`: what the cache
/// holds in Redis (`authz:ep:{userId}`) and in each API instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Ep {
    pub user_id: Uuid,
    pub version: i64,
    pub active: bool,
    pub perms: PermSet,
}

/// The cached form, `{"v", "active", "permissions"}`.
#[derive(Serialize, Deserialize)]
struct EpJson {
    v: i64,
    active: bool,
    permissions: Vec<String>,
}

impl Ep {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&EpJson {
            v: self.version,
            active: self.active,
            permissions: self.perms.keys().into_iter().map(str::to_owned).collect(),
        })
        .unwrap_or_default()
    }

    pub fn from_json(user_id: Uuid, raw: &str) -> Option<Ep> {
        let j: EpJson = serde_json::from_str(raw).ok()?;
        Some(Ep {
            user_id,
            version: j.v,
            active: j.active,
            perms: PermSet::from_keys(j.permissions.iter().map(String::as_str)),
        })
    }

    /// Whether the user may read every conversation, only those assigned to
    /// them, or none.
    pub fn inbox_scope(&self) -> Option<InboxScope> {
        if self.perms.contains(Perm::InboxReadAll) {
            Some(InboxScope::All)
        } else if self.perms.contains(Perm::InboxReadAssigned) {
            Some(InboxScope::Assigned(self.user_id))
        } else {
            None
        }
    }
}

/// Which conversations a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxScope {
    All,
    Assigned(Uuid),
}

impl InboxScope {
    /// The assignee a query must be restricted to, if any.
    pub fn assignee(self) -> Option<Uuid> {
        match self {
            InboxScope::All => None,
            InboxScope::Assigned(u) => Some(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_round_trips_and_sets_test_bits() {
        for p in Perm::ALL {
            assert_eq!(Perm::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        let set = PermSet::from_keys(["inbox.reply", "audit.read", "no.such"]);
        assert!(set.contains(Perm::InboxReply) && set.contains(Perm::AuditRead));
        assert!(!set.contains(Perm::InboxReadAll));
        assert!(set.any(&[Perm::OpsDlq, Perm::AuditRead]));
        assert_eq!(set.keys(), vec!["inbox.reply", "audit.read"]);
    }

    #[test]
    fn cached_form_round_trips() {
        let ep = Ep {
            user_id: Uuid::now_v7(),
            version: 7,
            active: true,
            perms: PermSet::from_keys(["inbox.read_assigned"]),
        };
        let back = Ep::from_json(ep.user_id, &ep.to_json()).unwrap();
        assert_eq!(back, ep);
        assert_eq!(back.inbox_scope(), Some(InboxScope::Assigned(ep.user_id)));
    }
}
