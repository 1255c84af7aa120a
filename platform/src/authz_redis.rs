//! The authorization cache's Redis protocol, shared by the API and the
//! `authz-fanout` consumer (DESIGN §3, §6):
//!
//! - `authz:ep:{userId}`: a user's effective permissions with their
//!   `perm_version` (JSON `{"v", "active", "permissions", "mac"}`, sealed by
//!   the API with a key Redis never sees: Redis cannot grant rights);
//! - `authz:pv:{userId}`: the version floor. It only ever rises, and a cached
//!   entry below it is ignored and cannot be written, so a slow reader can
//!   never put an older version back over a newer one;
//! - `authz.user.updated`: the invalidation channel. Messages are
//!   `{"userId", "permVersion", "seq"}`; `seq` comes from `authz:inv:seq`, so a
//!   listener can tell when it missed one. The runbook's manual
//!   `PUBLISH authz.user.updated '{"userId":"…"}'` (no version, no seq) is an
//!   invalidation too.
//!
//! A deployment on a RabbitMQ vhost other than `/` prefixes every one of
//! these keys and channels with `<vhost>:` ([`namespace`]), as the alerts'
//! keys are: deployments (and test runs) sharing one Redis stay apart.

use fred::{
    interfaces::KeysInterface,
    prelude::{Client, Error as RedisError},
    types::scripts::Script,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The invalidation channel of the runbook (within the namespace).
pub const CHANNEL: &str = "authz.user.updated";
/// Counter giving every sequenced invalidation its `seq`.
const SEQ_KEY: &str = "authz:inv:seq";
/// Lifetime of a cached entry.
pub const EP_TTL_SECS: u64 = 3600;
/// Lifetime of a version floor: longer than any entry it must outlive.
pub const FLOOR_TTL_SECS: u64 = 2 * EP_TTL_SECS;

/// The prefix of a deployment's Redis keys and channels: none on vhost
/// `/`, else `<vhost>:`.
pub fn namespace(vhost: &str) -> String {
    if vhost == "/" || vhost.is_empty() {
        String::new()
    } else {
        format!("{vhost}:")
    }
}

/// The cache's keys and channels within one namespace.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of the deployment on `vhost`.
    pub fn for_vhost(vhost: &str) -> Self {
        Self {
            prefix: namespace(vhost),
        }
    }

    pub fn ep(&self, user: Uuid) -> String {
        format!("{}authz:ep:{user}", self.prefix)
    }

    pub fn floor(&self, user: Uuid) -> String {
        format!("{}authz:pv:{user}", self.prefix)
    }

    /// The `SCAN` pattern of every version floor in this namespace (on
    /// vhost `/`, `authz:pv:*`, which no other namespace's keys match).
    pub fn floors_pattern(&self) -> String {
        format!("{}authz:pv:*", self.prefix)
    }

    pub fn seq(&self) -> String {
        format!("{}{SEQ_KEY}", self.prefix)
    }

    /// The invalidation channel.
    pub fn channel(&self) -> String {
        format!("{}{CHANNEL}", self.prefix)
    }

    /// A per-instance channel on which an API instance hears its own ticks.
    pub fn tick_channel(&self, instance: &str) -> String {
        format!("{}authz.tick.{instance}", self.prefix)
    }
}

/// A message on [`CHANNEL`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdated {
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// KEYS: SEQ_KEY, then floor and entry key per user; ARGV: channel, floor
/// TTL, then user id and version per user. Raises floors, deletes entries and
/// publishes one sequenced message per user, atomically.
const INVALIDATE: &str = r#"
local n = (#KEYS - 1) / 2
for i = 1, n do
  local floor_key = KEYS[2 * i]
  local ep_key = KEYS[2 * i + 1]
  local user = ARGV[2 * i + 1]
  local v = tonumber(ARGV[2 * i + 2])
  local cur = tonumber(redis.call('GET', floor_key) or '0')
  if v > cur then
    redis.call('SET', floor_key, v, 'EX', ARGV[2])
  end
  redis.call('DEL', ep_key)
  local seq = redis.call('INCR', KEYS[1])
  redis.call('PUBLISH', ARGV[1],
    '{"userId":"' .. user .. '","permVersion":' .. v .. ',"seq":' .. seq .. '}')
end
return n
"#;

/// KEYS: entry, floor; ARGV: version, JSON, TTL, refused entry. Writes the
/// entry unless the floor or the entry already there is newer; an entry
/// equal to the refused one (its seal did not verify) does not count.
/// Returns 1 when written.
const WRITE_EP: &str = r"
local v = tonumber(ARGV[1])
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if v < floor then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[4] then
  local ok, decoded = pcall(cjson.decode, cur)
  if ok and type(decoded) == 'table' and tonumber(decoded.v) and tonumber(decoded.v) > v then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// KEYS: SEQ_KEY; ARGV: channel, prefix. Publishes `<prefix>:<current seq>`,
/// so the tick is ordered after every invalidation it counts.
const TICK: &str = r"
local seq = redis.call('GET', KEYS[1]) or '0'
return redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':' .. seq)
";

/// The scripts, loaded once per process, over one namespace's keys.
#[derive(Clone)]
pub struct Scripts {
    keys: Keys,
    invalidate: Script,
    write_ep: Script,
    tick: Script,
}

impl Scripts {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            invalidate: Script::from_lua(INVALIDATE),
            write_ep: Script::from_lua(WRITE_EP),
            tick: Script::from_lua(TICK),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Raises floors, deletes the entries and publishes a sequenced
    /// `authz.user.updated` for each of `users`.
    pub async fn invalidate(
        &self,
        redis: &Client,
        users: &[(Uuid, i64)],
    ) -> Result<(), RedisError> {
        for chunk in users.chunks(500) {
            let mut keys = vec![self.keys.seq()];
            let mut args = vec![self.keys.channel(), FLOOR_TTL_SECS.to_string()];
            for (user, version) in chunk {
                keys.push(self.keys.floor(*user));
                keys.push(self.keys.ep(*user));
                args.push(user.to_string());
                args.push(version.to_string());
            }
            self.invalidate
                .evalsha_with_reload::<i64, _, _>(redis, keys, args)
                .await?;
        }
        Ok(())
    }

    /// Caches `json` as `user`'s entry at `version`, unless something newer
    /// is known; `refused` is an entry found there whose seal failed, which
    /// is replaced whatever version it claims. Returns whether it was written.
    pub async fn write_ep(
        &self,
        redis: &Client,
        user: Uuid,
        version: i64,
        json: &str,
        refused: Option<&str>,
    ) -> Result<bool, RedisError> {
        let written: i64 = self
            .write_ep
            .evalsha_with_reload(
                redis,
                vec![self.keys.ep(user), self.keys.floor(user)],
                vec![
                    version.to_string(),
                    json.to_owned(),
                    EP_TTL_SECS.to_string(),
                    refused.unwrap_or_default().to_owned(),
                ],
            )
            .await?;
        Ok(written == 1)
    }

    /// Publishes a tick `<prefix>:<seq>` on `channel`.
    pub async fn tick(
        &self,
        redis: &Client,
        channel: &str,
        prefix: &str,
    ) -> Result<(), RedisError> {
        self.tick
            .evalsha_with_reload::<i64, _, _>(
                redis,
                vec![self.keys.seq()],
                vec![channel.to_owned(), prefix.to_owned()],
            )
            .await
            .map(drop)
    }

    /// Reads an entry and its floor in one round trip.
    pub async fn read(
        &self,
        redis: &Client,
        user: Uuid,
    ) -> Result<(Option<String>, Option<i64>), RedisError> {
        let (ep, floor): (Option<String>, Option<i64>) = redis
            .mget(vec![self.keys.ep(user), self.keys.floor(user)])
            .await?;
        Ok((ep, floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_vhost_except_the_default_one() {
        let user = Uuid::nil();
        let default = Keys::for_vhost("/");
        assert_eq!(default.channel(), "authz.user.updated");
        assert_eq!(default.ep(user), format!("authz:ep:{user}"));
        let other = Keys::for_vhost("fastprep_test_1");
        assert_eq!(other.channel(), "fastprep_test_1:authz.user.updated");
        assert_eq!(other.seq(), "fastprep_test_1:authz:inv:seq");
        assert_eq!(
            other.floor(user),
            format!("fastprep_test_1:authz:pv:{user}")
        );
        assert_eq!(other.tick_channel("i"), "fastprep_test_1:authz.tick.i");
    }

    #[test]
    fn runbook_message_without_version_parses() {
        let m: UserUpdated =
            serde_json::from_str(r#"{"userId":"0192f0c4-7b5e-7000-8000-000000000001"}"#).unwrap();
        assert_eq!(m.perm_version, None);
        assert_eq!(m.seq, None);
        let full: UserUpdated = serde_json::from_str(
            r#"{"userId":"0192f0c4-7b5e-7000-8000-000000000001","permVersion":4,"seq":9}"#,
        )
        .unwrap();
        assert_eq!((full.perm_version, full.seq), (Some(4), Some(9)));
    }
}
