//! Telegram's send limits, enforced before a send: a token bucket per chat
//! and one for the whole account. Going over budget costs a 429, not a ban.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed, keyed::DefaultKeyedStateStore},
};

use crate::config::BudgetConfig;

/// Which budget refused a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Chat,
    Global,
}

/// A refused send and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub scope: Scope,
    pub retry_after_secs: u64,
}

/// Per-chat and global token buckets.
pub struct Budgets<C: Clock = DefaultClock> {
    per_chat: RateLimiter<i64, DefaultKeyedStateStore<i64>, C, NoOpMiddleware<C::Instant>>,
    global: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl Budgets<DefaultClock> {
    pub fn new(config: &BudgetConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Budgets<C> {
    pub fn with_clock(config: &BudgetConfig, clock: C) -> Self {
        Self {
            per_chat: RateLimiter::new(
                quota(config.chat_rate_per_sec, config.chat_burst),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            global: RateLimiter::new(
                quota(config.global_rate_per_sec, config.global_burst),
                InMemoryState::default(),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Takes one token from the chat's bucket, then one from the global
    /// bucket. A chat over its budget never touches the global bucket; when
    /// only the global bucket is empty the chat's token is spent (the
    /// limiters cannot refund), which errs on the side of sending less.
    pub fn check(&self, chat_id: i64) -> Result<(), Throttled> {
        if let Err(not_until) = self.per_chat.check_key(&chat_id) {
            return Err(Throttled {
                scope: Scope::Chat,
                retry_after_secs: retry_after_secs(not_until.wait_time_from(self.clock.now())),
            });
        }
        if let Err(not_until) = self.global.check() {
            return Err(Throttled {
                scope: Scope::Global,
                retry_after_secs: retry_after_secs(not_until.wait_time_from(self.clock.now())),
            });
        }
        Ok(())
    }

    /// Forgets chats whose buckets are full again (bounded memory).
    pub fn forget_idle_chats(&self) {
        self.per_chat.retain_recent();
        self.per_chat.shrink_to_fit();
    }

    /// Chats with a bucket in memory.
    pub fn tracked_chats(&self) -> usize {
        self.per_chat.len()
    }
}

/// A bucket refilling `rate_per_sec` tokens a second, holding at most `burst`.
pub fn quota(rate_per_sec: f64, burst: u32) -> Quota {
    let nanos = (1e9 / rate_per_sec.max(f64::MIN_POSITIVE)).round();
    // `as` saturates: an absurdly slow rate becomes the longest period.
    let period = Duration::from_nanos((nanos as u64).max(1));
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

/// Seconds a caller must wait: rounded up, at least 1 (a `Retry-After` of 0
/// invites a hot loop).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn budgets(
        chat_rate: f64,
        chat_burst: u32,
        global_rate: f64,
        global_burst: u32,
    ) -> (Budgets<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let config = BudgetConfig {
            chat_rate_per_sec: chat_rate,
            chat_burst,
            global_rate_per_sec: global_rate,
            global_burst,
        };
        (Budgets::with_clock(&config, clock.clone()), clock)
    }

    #[test]
    fn retry_after_rounds_up_with_a_floor_of_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn quota_follows_rate_and_burst() {
        let q = quota(0.5, 20);
        assert_eq!(q.replenish_interval(), Duration::from_secs(2));
        assert_eq!(q.burst_size().get(), 20);
        let refill = quota(30.0, 300).burst_size_replenished_in();
        assert!(
            refill.abs_diff(Duration::from_secs(10)) < Duration::from_micros(1),
            "{refill:?}"
        );
    }

    #[test]
    fn chat_burst_then_wait_for_refill() {
        let (b, clock) = budgets(1.0, 3, 1000.0, 1000);
        for _ in 0..3 {
            assert_eq!(b.check(7), Ok(()));
        }
        assert_eq!(
            b.check(7),
            Err(Throttled {
                scope: Scope::Chat,
                retry_after_secs: 1
            })
        );
        // Another chat has its own bucket.
        assert_eq!(b.check(8), Ok(()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.check(7), Ok(()));
    }

    #[test]
    fn slow_rate_reports_the_full_wait() {
        let (b, _clock) = budgets(0.1, 1, 1000.0, 1000);
        assert_eq!(b.check(1), Ok(()));
        assert_eq!(b.check(1).unwrap_err().retry_after_secs, 10);
    }

    #[test]
    fn global_budget_spans_chats() {
        let (b, clock) = budgets(100.0, 100, 1.0, 2);
        assert_eq!(b.check(1), Ok(()));
        assert_eq!(b.check(2), Ok(()));
        let err = b.check(3).unwrap_err();
        assert_eq!(err.scope, Scope::Global);
        assert_eq!(err.retry_after_secs, 1);
        clock.advance(Duration::from_millis(1000));
        assert_eq!(b.check(3), Ok(()));
    }

    #[test]
    fn idle_chats_are_forgotten() {
        let (b, clock) = budgets(1.0, 1, 1000.0, 1000);
        b.check(1).unwrap();
        assert_eq!(b.tracked_chats(), 1);
        clock.advance(Duration::from_secs(5));
        b.forget_idle_chats();
        assert_eq!(b.tracked_chats(), 0);
    }
}
