//! Retries are data: a schedule of delays per attempt, a maximum, and the
//! mapping of a wanted delay onto the fixed-TTL retry tiers.

use std::time::Duration;

use crate::topology::RETRY_TIERS;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after the n-th failed attempt (the last entry repeats).
    pub schedule: Vec<Duration>,
    /// Attempts in all, the first included; after that the message is dead-lettered.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: RETRY_TIERS.to_vec(),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// Whether a message that failed on `attempt` may be tried again.
    pub fn should_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay after failed `attempt` (1-based), at least `at_least`.
    pub fn delay(&self, attempt: u32, at_least: Option<Duration>) -> Duration {
        let idx = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let scheduled = self
            .schedule
            .get(idx)
            .or(self.schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(1));
        scheduled.max(at_least.unwrap_or_default())
    }
}

/// The retry tier that waits at least `delay` (the longest tier when none does),
/// so a message is never retried earlier than asked.
pub fn tier_for(delay: Duration) -> Duration {
    RETRY_TIERS
        .iter()
        .copied()
        .find(|tier| *tier >= delay)
        .unwrap_or(RETRY_TIERS[RETRY_TIERS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_is_never_shorter_than_the_wanted_delay() {
        assert_eq!(tier_for(Duration::from_millis(1)), Duration::from_secs(1));
        assert_eq!(tier_for(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(tier_for(Duration::from_secs(3)), Duration::from_secs(10));
        assert_eq!(tier_for(Duration::from_secs(61)), Duration::from_secs(300));
    }

    #[test]
    fn schedule_grows_and_respects_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, None), Duration::from_secs(1));
        assert_eq!(p.delay(2, None), Duration::from_secs(10));
        assert_eq!(p.delay(20, None), Duration::from_secs(300));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert!(p.should_retry(7));
        assert!(!p.should_retry(8));
    }
}
