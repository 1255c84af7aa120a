//! When the in-memory tier may be trusted: for `lease` from the send time of
//! the last tick this instance heard back through Redis. The ticks are
//! published here; the listener hears them and renews the lease.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::Authorizer;

/// The lease on the in-memory tier. Times are µs since `origin`, plus one,
/// so that 0 can mean "never".
pub(super) struct Lease {
    origin: Instant,
    /// Send time of the last tick heard (0 = never).
    from: AtomicU64,
    length: Duration,
}

impl Lease {
    pub(super) fn new(length: Duration) -> Self {
        Self {
            origin: Instant::now(),
            from: AtomicU64::new(0),
            length,
        }
    }

    /// Now, as a tick's send time.
    pub(super) fn now_micros(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    pub(super) fn valid(&self) -> bool {
        let from = self.from.load(Ordering::Acquire);
        from != 0 && u128::from(self.now_micros().saturating_sub(from)) < self.length.as_micros()
    }

    /// A tick sent at `sent` was heard back: the lease runs from then
    /// (never backwards).
    pub(super) fn renew(&self, sent: u64) {
        self.from.fetch_max(sent, Ordering::AcqRel);
    }
}

impl Authorizer {
    /// Publishes a tick on this instance's channel every `tick`, until
    /// `shutdown`.
    pub(super) async fn tick(self: Arc<Self>, shutdown: CancellationToken) {
        let channel = self.scripts.keys().tick_channel(&self.instance);
        let mut every = tokio::time::interval(self.settings.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {
                    let sent = self.lease.now_micros().to_string();
                    if let Err(e) = self.scripts.tick(&self.redis, &channel, &sent).await {
                        tracing::debug!(error = %e, "authz tick not published");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease whose clock started `ago`, so that send times in the past
    /// can be written without sleeping.
    fn lease_started_ago(ago: Duration, length: Duration) -> Lease {
        let mut lease = Lease::new(length);
        lease.origin = Instant::now().checked_sub(ago).unwrap();
        lease
    }

    fn micros(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap()
    }

    #[test]
    fn no_lease_until_a_tick_is_heard() {
        let lease = Lease::new(Duration::from_secs(60));
        assert!(!lease.valid());
        lease.renew(lease.now_micros());
        assert!(lease.valid());
    }

    #[test]
    fn the_lease_lasts_its_length_from_the_send_time() {
        let lease = lease_started_ago(Duration::from_secs(10), Duration::from_secs(1));
        let now = lease.now_micros();
        lease.renew(now - micros(Duration::from_secs(2)));
        assert!(!lease.valid(), "a tick sent 2 s ago no longer holds");
        lease.renew(now - micros(Duration::from_millis(500)));
        assert!(lease.valid());
    }

    #[test]
    fn an_older_tick_heard_late_does_not_shorten_the_lease() {
        let lease = lease_started_ago(Duration::from_secs(10), Duration::from_secs(1));
        let now = lease.now_micros();
        lease.renew(now);
        lease.renew(now - micros(Duration::from_secs(5)));
        assert!(lease.valid());
    }
}
