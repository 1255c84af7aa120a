//! Authorization: the permission catalogue, effective permissions (EP), their
//! cache ([`cache::Authorizer`]), the policy enforcement point every route
//! goes through ([`pep`]) and the one way to change who may do what
//! ([`change::AuthzChange`]).

pub mod cache;
pub mod change;
pub mod pep;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

platform::named_enum! {
    /// The permission catalogue (DESIGN §3), seeded by migration `m0002`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Perm {
        InboxReadAll = "inbox.read_all",
        InboxReadAssigned = "inbox.read_assigned",
        InboxReply = "inbox.reply",
        InboxAssign = "inbox.assign",
        AttachmentsUpload = "attachments.upload",
        AttachmentsRead = "attachments.read",
        UsersManage = "users.manage",
        RolesManage = "roles.manage",
        OpsOutbox = "ops.outbox",
        OpsDlq = "ops.dlq",
        AuditRead = "audit.read",
        OpsTelegram = "ops.telegram",
    }
}

crate::openapi::named_enum_schema!(Perm, "A permission key");

impl Perm {
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

    /// Whether every permission of `other` is in this set.
    pub fn covers(self, other: PermSet) -> bool {
        other.0 & !self.0 == 0
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

/// The cached form, `{"v", "active", "permissions", "mac"}`.
#[derive(Serialize, Deserialize)]
struct EpJson {
    v: i64,
    active: bool,
    permissions: Vec<String>,
    #[serde(default)]
    mac: String,
}

/// Seals cached entries so that Redis cannot grant rights: each entry
/// carries an HMAC-SHA256 over the user, version, active flag and
/// permission bits, under a key derived from `JWT_SECRET` that Redis never
/// sees. An entry whose tag does not verify is refused and reloaded from
/// PostgreSQL. (Whoever holds `JWT_SECRET` can mint tokens anyway, so a key
/// of its own would protect nothing more.)
#[derive(Clone)]
pub struct EntryKey(Hmac<Sha256>);

/// Why a cached entry was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryError {
    /// Not an entry at all (a foreign or old format).
    Unreadable,
    /// Readable, but its tag does not verify: written by someone without
    /// the key.
    Forged,
}

impl EntryKey {
    const LABEL: &'static [u8] = b"fastprep-admin authz cache entry v1";

    pub fn derive(secret: &SecretString) -> Self {
        let mut kdf = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        kdf.update(Self::LABEL);
        let key = kdf.finalize().into_bytes();
        Self(
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        )
    }

    fn mac(&self, user: Uuid, version: i64, active: bool, perms: PermSet) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(user.as_bytes());
        mac.update(&version.to_be_bytes());
        mac.update(&[u8::from(active)]);
        mac.update(&perms.0.to_be_bytes());
        mac
    }
}

impl Ep {
    /// The sealed cached form.
    pub fn to_json(&self, key: &EntryKey) -> String {
        let tag = key
            .mac(self.user_id, self.version, self.active, self.perms)
            .finalize()
            .into_bytes();
        // A `Value` prints infallibly: no error path that could cache an
        // empty entry.
        serde_json::json!({
            "v": self.version,
            "active": self.active,
            "permissions": self.perms.keys(),
            "mac": hex::encode(tag),
        })
        .to_string()
    }

    /// Opens a cached entry of `user_id`, checking its seal (in constant time).
    pub fn from_json(user_id: Uuid, raw: &str, key: &EntryKey) -> Result<Ep, EntryError> {
        let j: EpJson = serde_json::from_str(raw).map_err(|_| EntryError::Unreadable)?;
        let perms = PermSet::from_keys(j.permissions.iter().map(String::as_str));
        let tag = hex::decode(&j.mac).map_err(|_| EntryError::Forged)?;
        key.mac(user_id, j.v, j.active, perms)
            .verify_slice(&tag)
            .map_err(|_| EntryError::Forged)?;
        Ok(Ep {
            user_id,
            version: j.v,
            active: j.active,
            perms,
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
        assert!(set.covers(PermSet::from_keys(["audit.read"])));
        assert!(set.covers(PermSet::default()));
        assert!(!set.covers(PermSet::from_keys(["audit.read", "ops.dlq"])));
    }

    fn key(secret: &str) -> EntryKey {
        EntryKey::derive(&SecretString::from(secret))
    }

    /// An operator's entry and the key that seals it.
    fn sample() -> (Ep, EntryKey) {
        let ep = Ep {
            user_id: Uuid::now_v7(),
            version: 7,
            active: true,
            perms: PermSet::from_keys(["inbox.read_assigned"]),
        };
        (ep, key("a-secret-of-some-length-0123456789"))
    }

    #[test]
    fn cached_form_round_trips() {
        let (ep, k) = sample();
        let back = Ep::from_json(ep.user_id, &ep.to_json(&k), &k).unwrap();
        assert_eq!(back, ep);
        assert_eq!(back.inbox_scope(), Some(InboxScope::Assigned(ep.user_id)));
    }

    #[test]
    fn a_cached_entry_changed_or_moved_without_the_key_is_refused() {
        let (ep, k) = sample();
        let sealed = ep.to_json(&k);
        let mut j: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        j["permissions"] = serde_json::json!(["inbox.read_assigned", "users.manage"]);
        let granted = j.to_string();
        let mut j: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        j["v"] = serde_json::json!(8);
        let bumped = j.to_string();
        let unsealed = r#"{"v":7,"active":true,"permissions":["users.manage"]}"#;
        for raw in [granted.as_str(), bumped.as_str(), unsealed] {
            assert_eq!(
                Ep::from_json(ep.user_id, raw, &k),
                Err(EntryError::Forged),
                "{raw}"
            );
        }
        // Another user's entry, or one sealed under another secret.
        assert_eq!(
            Ep::from_json(Uuid::now_v7(), &sealed, &k),
            Err(EntryError::Forged)
        );
        let other = key("another-secret-of-some-length-0123");
        assert_eq!(
            Ep::from_json(ep.user_id, &ep.to_json(&other), &k),
            Err(EntryError::Forged)
        );
        assert_eq!(
            Ep::from_json(ep.user_id, "not json", &k),
            Err(EntryError::Unreadable)
        );
    }
}
