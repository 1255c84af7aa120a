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
    /// Spread of a scheduled delay, as a fraction (0.1: ±10%), so retries
    /// after a shared outage do not all come back at once. Only retries
    /// scheduled at a time of their own use it; the fixed-TTL tiers cannot.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: RETRY_TIERS.to_vec(),
            max_attempts: 8,
            jitter: 0.1,
        }
    }
}

/// The longest wait a retry is scheduled for; a longer `retry_after` is
/// capped to it (and tried again then, when it meets the same wait).
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// A `RETRY_SCHEDULE` such as `1s,10s,1m,5m`: delays after the first,
/// second, … failed attempt, each at least 1 ms; the last one repeats.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let schedule = text
        .split(',')
        .map(|part| {
            let part = part.trim();
            humantime::parse_duration(part)
                .map_err(|e| format!("{part:?}: {e}"))
                .and_then(|d| {
                    if d < Duration::from_millis(1) {
                        Err(format!("{part:?}: a delay must be at least 1ms"))
                    } else if d > MAX_DELAY {
                        Err(format!("{part:?}: a delay must be at most 30days"))
                    } else {
                        Ok(d)
                    }
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if schedule.is_empty() {
        return Err("needs at least one delay".into());
    }
    Ok(schedule)
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

impl RetryPolicy {
    /// The delay after failed `attempt` spread by the jitter, never below
    /// `at_least` (a `retry_after` is not undercut: its spread only adds).
    /// `unit` is a number in [0, 1), drawn by the caller.
    pub fn jittered_delay(&self, attempt: u32, at_least: Option<Duration>, unit: f64) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        let at_least = at_least.map(|d| d.min(MAX_DELAY));
        match at_least {
            Some(wait) if wait >= self.delay(attempt, None) => wait.mul_f64(1.0 + jitter * unit),
            _ => self
                .delay(attempt, None)
                .mul_f64(1.0 + jitter * (2.0 * unit - 1.0))
                .max(at_least.unwrap_or_default()),
        }
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

    #[test]
    fn jitter_spreads_both_ways_but_never_undercuts_retry_after() {
        let p = RetryPolicy::default();
        let ten = Duration::from_secs(10);
        assert_eq!(p.jittered_delay(2, None, 0.0), ten.mul_f64(0.9));
        assert_eq!(p.jittered_delay(2, None, 0.5), ten);
        assert!(p.jittered_delay(2, None, 0.999) <= ten.mul_f64(1.1));
        let wait = Duration::from_secs(1200);
        for unit in [0.0, 0.3, 0.999] {
            let d = p.jittered_delay(1, Some(wait), unit);
            assert!(d >= wait && d <= wait.mul_f64(1.1), "{d:?}");
        }
        // A retry_after just above a jittered schedule still holds.
        let d = p.jittered_delay(2, Some(Duration::from_secs(9)), 0.0);
        assert!(d >= Duration::from_secs(9), "{d:?}");
        let none = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(none.jittered_delay(2, None, 0.9), ten);
    }

    #[test]
    fn schedules_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_schedule("1s, 10s,1m,5m").unwrap(),
            RETRY_TIERS.to_vec()
        );
        assert_eq!(
            parse_schedule("2h").unwrap(),
            vec![Duration::from_secs(7200)]
        );
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("1s,,5s").is_err());
        assert!(parse_schedule("0s").unwrap_err().contains("at least"));
        assert!(parse_schedule("ten seconds").is_err());
        assert!(parse_schedule("31days").unwrap_err().contains("at most"));
        // An absurd retry_after is capped, not an overflow.
        let p = RetryPolicy::default();
        let d = p.jittered_delay(1, Some(Duration::from_secs(u64::MAX / 2)), 0.999);
        assert!(d <= MAX_DELAY.mul_f64(1.1), "{d:?}");
    }
}
