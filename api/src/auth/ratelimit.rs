//! Login throttling, shared by every API instance through Redis: failed
//! attempts are counted per account and per client address in fixed windows;
//! at the limit, login answers 429 with `Retry-After` whatever the password.
//! Without Redis, login refuses (503) rather than run unthrottled.

use std::{net::IpAddr, time::Duration};

use fred::{interfaces::KeysInterface, prelude::Client as RedisClient, types::scripts::Script};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct LoginLimits {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
}

/// KEYS: counters; ARGV: window seconds. Counts one failure on each.
const RECORD: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return 1
";

#[derive(Clone)]
pub struct LoginLimiter {
    redis: RedisClient,
    limits: LoginLimits,
    record: Script,
}

fn account_key(email: &str) -> String {
    // Hashed: addresses do not belong in key names.
    let digest = Sha256::digest(email.as_bytes());
    format!("ratelimit:login:account:{}", hex::encode(&digest[..16]))
}

fn address_key(addr: IpAddr) -> String {
    format!("ratelimit:login:address:{addr}")
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable {
        what: "login throttling (redis)",
        cause: e.to_string(),
    }
}

impl LoginLimiter {
    pub fn new(redis: RedisClient, limits: LoginLimits) -> Self {
        Self {
            redis,
            limits,
            record: Script::from_lua(RECORD),
        }
    }

    /// Refuses with 429 when either counter is at its limit.
    pub async fn check(&self, email: &str, addr: IpAddr) -> ApiResult<()> {
        let keys = [account_key(email), address_key(addr)];
        let counts: (Option<u32>, Option<u32>) =
            self.redis.mget(keys.to_vec()).await.map_err(unavailable)?;
        let over = [
            (counts.0.unwrap_or(0) >= self.limits.per_account, &keys[0]),
            (counts.1.unwrap_or(0) >= self.limits.per_address, &keys[1]),
        ];
        let mut retry_after = 0;
        for (is_over, key) in over {
            if is_over {
                let ttl: i64 = self.redis.ttl(key.as_str()).await.map_err(unavailable)?;
                retry_after = retry_after.max(u64::try_from(ttl).unwrap_or(1).max(1));
            }
        }
        if retry_after > 0 {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: retry_after,
            });
        }
        Ok(())
    }

    /// Counts a failed attempt.
    pub async fn failed(&self, email: &str, addr: IpAddr) -> ApiResult<()> {
        self.record
            .evalsha_with_reload::<i64, _, _>(
                &self.redis,
                vec![account_key(email), address_key(addr)],
                vec![self.limits.window.as_secs().max(1).to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A successful sign-in clears the account's count.
    pub async fn succeeded(&self, email: &str) {
        let _: Result<i64, _> = self.redis.del(account_key(email)).await;
    }
}
