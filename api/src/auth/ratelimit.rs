//! Throttling of password guesses, shared by every API instance through
//! Redis. An attempt is *reserved* before its password is hashed, in one
//! script, so parallel guesses cannot all pass a check made before any of
//! them is counted. The reservation stays as a failure unless the password
//! was right.
//!
//! - One account from one address: `per_account_address` failures in the
//!   window lock that pair (429 with `Retry-After`).
//! - One address over all accounts: `per_address` failures lock the address
//!   (password spraying).
//! - One account over all addresses: past `account_slow_after` failures the
//!   account is slowed, not locked: one attempt per `account_interval` from
//!   addresses it has not signed in from. A stranger's failures therefore
//!   never lock the owner out, and the owner's usual addresses are not even
//!   slowed.
//!
//! Without Redis, sign-in refuses (503) rather than run unthrottled.

use std::{net::IpAddr, time::Duration};

use fred::{prelude::Client as RedisClient, types::scripts::Script};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// `LOGIN_ACCOUNT_LIMIT`: failures of one account from one address.
    pub per_account_address: u32,
    /// `LOGIN_ADDRESS_LIMIT`: failures from one address, all accounts.
    pub per_address: u32,
    /// `LOGIN_ACCOUNT_SLOW_AFTER`: failures of one account, all addresses,
    /// after which it is slowed.
    pub account_slow_after: u32,
    /// `LOGIN_ACCOUNT_INTERVAL`: a slowed account's pace from unknown addresses.
    pub account_interval: Duration,
    /// `LOGIN_LIMIT_WINDOW`: how long a failure counts.
    pub window: Duration,
}

/// How long an address stays known for an account after a sign-in from it.
const KNOWN_ADDRESS_SECS: u64 = 30 * 86_400;

/// KEYS: pair, address, account, account slot, known addresses.
/// ARGV: pair limit, address limit, slow-after, interval ms, window s, address.
/// Returns `{0, 0}` when reserved (each counter raised by one), else
/// `{1, ms}` (locked for ms) or `{2, ms}` (slowed: next slot in ms).
const RESERVE: &str = r"
local function locked(key, limit)
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(limit) then
    local ttl = redis.call('PTTL', key)
    if ttl < 1 then ttl = 1000 end
    return ttl
  end
  return nil
end
local wait = locked(KEYS[1], ARGV[1]) or locked(KEYS[2], ARGV[2])
if wait then return {1, wait} end
local failures = tonumber(redis.call('GET', KEYS[3]) or '0')
if failures >= tonumber(ARGV[3]) and redis.call('SISMEMBER', KEYS[5], ARGV[6]) == 0 then
  if not redis.call('SET', KEYS[4], '1', 'PX', ARGV[4], 'NX') then
    local ttl = redis.call('PTTL', KEYS[4])
    if ttl < 1 then ttl = 1 end
    return {2, ttl}
  end
end
for i = 1, 3 do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[5])
  end
end
return {0, 0}
";

/// KEYS: pair, address, account, known addresses. ARGV: outcome
/// (`ok` or `undecided`), address, known TTL s. Takes a reservation back:
/// the password was right (the pair is cleared and the address becomes
/// known) or it was never checked.
const RELEASE: &str = r"
for i = 1, 3 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
if ARGV[1] == 'ok' then
  redis.call('DEL', KEYS[1])
  redis.call('SADD', KEYS[4], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
return 1
";

/// Whose password is being guessed.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Sign-in, by the email typed.
    Login(&'a str),
    /// `POST /auth/password`: the signed-in user's current password.
    CurrentPassword(Uuid),
}

/// A reserved attempt; give it back with [`LoginLimiter::release`] unless
/// it failed.
pub struct Reservation {
    keys: [String; 4],
    address: String,
}

/// What became of a reserved attempt that is not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was right.
    Succeeded,
    /// The password was never checked (the server was busy).
    Undecided,
}

#[derive(Clone)]
pub struct LoginLimiter {
    redis: RedisClient,
    limits: LoginLimits,
    /// The deployment's key prefix (`""` on vhost `/`).
    prefix: String,
    reserve: Script,
    release: Script,
}

/// A short digest, so emails do not appear in key names.
fn digest(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..16])
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable {
        what: "login throttling (redis)",
        cause: e.to_string(),
    }
}

impl LoginLimiter {
    /// `vhost` names the deployment, whose keys it uses.
    pub fn new(redis: RedisClient, limits: LoginLimits, vhost: &str) -> Self {
        Self {
            redis,
            limits,
            prefix: platform::authz_redis::namespace(vhost),
            reserve: Script::from_lua(RESERVE),
            release: Script::from_lua(RELEASE),
        }
    }

    /// Reserves one guess at `target`'s password from `addr`, or refuses
    /// with 429 and `Retry-After`.
    pub async fn reserve(&self, target: Target<'_>, addr: IpAddr) -> ApiResult<Reservation> {
        let (subject, slow_after) = match target {
            Target::Login(email) => (
                format!("login:{}", digest(email)),
                self.limits.account_slow_after,
            ),
            // The signed-in user is the only one guessing here: no
            // account-wide pace is needed.
            Target::CurrentPassword(user) => (format!("password:{user}"), u32::MAX),
        };
        let address = addr.to_string();
        let p = &self.prefix;
        let keys = [
            format!("{p}ratelimit:login:pair:{subject}:{address}"),
            format!("{p}ratelimit:login:address:{address}"),
            format!("{p}ratelimit:login:account:{subject}"),
            format!("{p}ratelimit:login:known:{subject}"),
        ];
        let slot = format!("{p}ratelimit:login:slot:{subject}");
        let answer: Vec<i64> = self
            .reserve
            .evalsha_with_reload(
                &self.redis,
                vec![
                    keys[0].clone(),
                    keys[1].clone(),
                    keys[2].clone(),
                    slot,
                    keys[3].clone(),
                ],
                vec![
                    self.limits.per_account_address.to_string(),
                    self.limits.per_address.to_string(),
                    slow_after.to_string(),
                    self.limits.account_interval.as_millis().max(1).to_string(),
                    self.limits.window.as_secs().max(1).to_string(),
                    address.clone(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [0, _] => Ok(Reservation { keys, address }),
            [_, ms] => Err(ApiError::TooManyRequests {
                retry_after_secs: u64::try_from(*ms).unwrap_or(1).div_ceil(1000).max(1),
            }),
            _ => Err(unavailable("unexpected answer from the reservation script")),
        }
    }

    /// Gives a reservation back: the attempt did not fail.
    pub async fn release(&self, reservation: Reservation, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Succeeded => "ok",
            Outcome::Undecided => "undecided",
        };
        let result: Result<i64, _> = self
            .release
            .evalsha_with_reload(
                &self.redis,
                reservation.keys.to_vec(),
                vec![
                    outcome.to_owned(),
                    reservation.address,
                    KNOWN_ADDRESS_SECS.to_string(),
                ],
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "a sign-in reservation was not given back");
        }
    }
}
