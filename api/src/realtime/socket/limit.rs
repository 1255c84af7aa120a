//! The limits of one socket, and the rate limit on the frames its client
//! sends (docs/WEBSOCKET.md → Limits).

use std::{num::NonZeroU32, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, MonotonicClock},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};

/// Limits of one socket.
#[derive(Debug, Clone)]
pub struct Limits {
    pub auth_timeout: Duration,
    /// Time to send a current token after a permission change or revocation.
    pub stale_grace: Duration,
    pub heartbeat: Duration,
    /// Silence (not even a pong) after which the peer is gone.
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    /// Client text frames: the sustained rate and the burst allowed.
    pub frame_quota: Quota,
    pub max_bad_frames: u32,
    pub send_timeout: Duration,
    /// How often a socket re-reads its user's permissions without being told.
    pub recheck: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(5),
            stale_grace: Duration::from_secs(15),
            heartbeat: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: 16 * 1024,
            frame_quota: FRAME_QUOTA,
            max_bad_frames: 10,
            send_timeout: Duration::from_secs(10),
            recheck: Duration::from_secs(30),
        }
    }
}

/// 10 client frames a second, sustained, in bursts of up to 30.
const FRAME_QUOTA: Quota = Quota::per_second(nonzero(10)).allow_burst(nonzero(30));

/// A constant quota's numbers; zero fails the build.
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("a quota needs a rate and a burst above zero"),
    }
}

/// The client frames one socket may still send: a bucket of `burst` that
/// starts full and refills at the quota's rate. Over it, the socket closes
/// (`1008 rate_limited`).
pub(super) struct FrameLimit<C: Clock = MonotonicClock>(
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
);

impl FrameLimit {
    pub(super) fn new(quota: Quota) -> Self {
        Self::with_clock(quota, MonotonicClock)
    }
}

impl<C: Clock> FrameLimit<C> {
    fn with_clock(quota: Quota, clock: C) -> Self {
        Self(RateLimiter::direct_with_clock(quota, clock))
    }

    /// Spends one frame: `false` when the client is over its rate.
    pub(super) fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn the_quota_is_ten_a_second_in_bursts_of_thirty() {
        let q = Limits::default().frame_quota;
        assert_eq!(q.replenish_interval(), Duration::from_millis(100));
        assert_eq!(q.burst_size().get(), 30);
    }

    #[test]
    fn a_full_burst_passes_and_the_next_frame_is_refused() {
        let clock = FakeRelativeClock::default();
        let limit = FrameLimit::with_clock(FRAME_QUOTA, clock.clone());
        for n in 0..30 {
            assert!(limit.allow(), "frame {n} of the burst");
        }
        assert!(!limit.allow());
        // One frame's worth comes back every 100 ms, and no more.
        clock.advance(Duration::from_millis(99));
        assert!(!limit.allow());
        clock.advance(Duration::from_millis(1));
        assert!(limit.allow());
        assert!(!limit.allow());
    }

    #[test]
    fn a_quiet_client_gets_its_burst_back_and_no_more() {
        let clock = FakeRelativeClock::default();
        let limit = FrameLimit::with_clock(FRAME_QUOTA, clock.clone());
        for _ in 0..30 {
            assert!(limit.allow());
        }
        clock.advance(Duration::from_secs(60));
        for n in 0..30 {
            assert!(limit.allow(), "frame {n} of the refilled burst");
        }
        assert!(!limit.allow());
    }

    #[test]
    fn the_real_clock_refills_too() {
        let limit = FrameLimit::new(Quota::per_second(nonzero(10)).allow_burst(nonzero(3)));
        assert!(limit.allow() && limit.allow() && limit.allow());
        assert!(!limit.allow());
        std::thread::sleep(Duration::from_millis(120));
        assert!(limit.allow());
        assert!(!limit.allow());
    }
}
