//! Whether a socket's event frames flow or are held, and why
//! (docs/WEBSOCKET.md → Keeping the token current).
//!
//! Frames are held while the token in force is older than the user's
//! permissions (until a current token arrives; after the grace, `4004`), and
//! while the permissions could not be re-read after a change may have been
//! announced (fail closed: re-read every second; after the grace, `1011`).
//! A held frame is not lost: the release replays from the socket's cursor. A
//! `resync` that falls due meanwhile is sent on the release instead, since a
//! client told to reload under a stale token would be refused.
//!
//! The transitions are pure: each returns the next state and what the
//! session must send, so every one is tested here without a socket.

use std::time::{Duration, Instant};

use super::close::{self, Close};

/// The hold state of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Event frames flow.
    Live,
    /// The token in force is older than the user's permissions, since
    /// `since`.
    Stale { since: Instant, resync: Option<i64> },
    /// The permissions could not be re-read, since `since`.
    Unverified { since: Instant, resync: Option<i64> },
    /// Both: the token is stale and the permissions could not be re-read.
    StaleUnverified {
        stale: Instant,
        unverified: Instant,
        resync: Option<i64>,
    },
}

/// What a release sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// The `resync` that fell due while frames were held, at its position.
    Resync(i64),
    /// The frames held: a replay from the socket's cursor.
    Replay,
}

impl Release {
    fn of(resync: Option<i64>) -> Self {
        resync.map_or(Release::Replay, Release::Resync)
    }
}

impl Hold {
    /// Whether event frames are held.
    pub(super) fn is_held(self) -> bool {
        !matches!(self, Hold::Live)
    }

    /// Whether the permissions are waiting to be re-read.
    pub(super) fn is_unverified(self) -> bool {
        matches!(self, Hold::Unverified { .. } | Hold::StaleUnverified { .. })
    }

    /// The permissions could not be re-read: hold the frames rather than
    /// serve them under old rights. The grace runs from the first failure.
    pub(super) fn unreadable(self, now: Instant) -> Hold {
        match self {
            Hold::Live => Hold::Unverified {
                since: now,
                resync: None,
            },
            Hold::Stale { since, resync } => Hold::StaleUnverified {
                stale: since,
                unverified: now,
                resync,
            },
            Hold::Unverified { .. } | Hold::StaleUnverified { .. } => self,
        }
    }

    /// The permissions were re-read. `behind`: they changed, to a version
    /// above the token's. A stale token stays stale (its grace keeps
    /// running); an unverified hold with nothing else holding is released.
    pub(super) fn read(self, behind: bool, now: Instant) -> (Hold, Option<Release>) {
        match self {
            Hold::Live if behind => (
                Hold::Stale {
                    since: now,
                    resync: None,
                },
                None,
            ),
            Hold::Live | Hold::Stale { .. } => (self, None),
            Hold::Unverified { resync, .. } if behind => (Hold::Stale { since: now, resync }, None),
            Hold::Unverified { resync, .. } => (Hold::Live, Some(Release::of(resync))),
            Hold::StaleUnverified { stale, resync, .. } => (
                Hold::Stale {
                    since: stale,
                    resync,
                },
                None,
            ),
        }
    }

    /// A current token was accepted (its permissions read with it): every
    /// hold ends and is released, as when the permissions are read again:
    /// the frames held meanwhile are replayed (or a `resync` sent, when one
    /// fell due), under the permissions just read.
    pub(super) fn reauthenticated(self) -> (Hold, Option<Release>) {
        match self {
            Hold::Live => (Hold::Live, None),
            Hold::Unverified { resync, .. }
            | Hold::Stale { resync, .. }
            | Hold::StaleUnverified { resync, .. } => (Hold::Live, Some(Release::of(resync))),
        }
    }

    /// A `resync` fell due at `position`: live, it is sent now (the
    /// position is returned); held, it replaces any earlier one and waits
    /// for the release.
    pub(super) fn resync_due(self, position: i64) -> (Hold, Option<i64>) {
        let resync = Some(position);
        match self {
            Hold::Live => (Hold::Live, resync),
            Hold::Stale { since, .. } => (Hold::Stale { since, resync }, None),
            Hold::Unverified { since, .. } => (Hold::Unverified { since, resync }, None),
            Hold::StaleUnverified {
                stale, unverified, ..
            } => (
                Hold::StaleUnverified {
                    stale,
                    unverified,
                    resync,
                },
                None,
            ),
        }
    }

    /// The close a hold comes to once it has lasted `grace`: a stale token
    /// first, then permissions that could not be re-read.
    pub(super) fn lapsed(self, now: Instant, grace: Duration) -> Option<Close> {
        let over = |since: Instant| now.saturating_duration_since(since) >= grace;
        let (stale, unverified) = match self {
            Hold::Live => (None, None),
            Hold::Stale { since, .. } => (Some(since), None),
            Hold::Unverified { since, .. } => (None, Some(since)),
            Hold::StaleUnverified {
                stale, unverified, ..
            } => (Some(stale), Some(unverified)),
        };
        if stale.is_some_and(over) {
            Some(Close(close::TOKEN_STALE, "token_stale"))
        } else if unverified.is_some_and(over) {
            Some(Close(close::INTERNAL, "unavailable"))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(15);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    fn stale(since: Instant, resync: Option<i64>) -> Hold {
        Hold::Stale { since, resync }
    }

    fn unverified(since: Instant, resync: Option<i64>) -> Hold {
        Hold::Unverified { since, resync }
    }

    fn both(stale: Instant, unverified: Instant, resync: Option<i64>) -> Hold {
        Hold::StaleUnverified {
            stale,
            unverified,
            resync,
        }
    }

    #[test]
    fn only_live_lets_frames_through() {
        let t0 = Instant::now();
        assert!(!Hold::Live.is_held());
        for held in [stale(t0, None), unverified(t0, None), both(t0, t0, Some(3))] {
            assert!(held.is_held(), "{held:?}");
        }
        assert!(!Hold::Live.is_unverified());
        assert!(!stale(t0, None).is_unverified());
        assert!(unverified(t0, None).is_unverified());
        assert!(both(t0, t0, None).is_unverified());
    }

    #[test]
    fn unreadable_permissions_hold_from_the_first_failure() {
        let t0 = Instant::now();
        let t1 = at(t0, 1);
        assert_eq!(Hold::Live.unreadable(t1), unverified(t1, None));
        assert_eq!(stale(t0, Some(4)).unreadable(t1), both(t0, t1, Some(4)));
        // A second failure does not restart the grace.
        assert_eq!(
            unverified(t0, Some(4)).unreadable(t1),
            unverified(t0, Some(4))
        );
        assert_eq!(both(t0, t0, None).unreadable(t1), both(t0, t0, None));
    }

    #[test]
    fn a_read_while_live_holds_only_when_the_token_fell_behind() {
        let t0 = Instant::now();
        assert_eq!(Hold::Live.read(false, t0), (Hold::Live, None));
        assert_eq!(Hold::Live.read(true, t0), (stale(t0, None), None));
    }

    #[test]
    fn a_read_keeps_a_stale_hold_and_its_grace() {
        let t0 = Instant::now();
        let t1 = at(t0, 5);
        for behind in [false, true] {
            assert_eq!(
                stale(t0, Some(9)).read(behind, t1),
                (stale(t0, Some(9)), None)
            );
        }
    }

    #[test]
    fn a_read_releases_an_unverified_hold() {
        let t0 = Instant::now();
        let t1 = at(t0, 2);
        assert_eq!(
            unverified(t0, None).read(false, t1),
            (Hold::Live, Some(Release::Replay))
        );
        assert_eq!(
            unverified(t0, Some(12)).read(false, t1),
            (Hold::Live, Some(Release::Resync(12)))
        );
        // Read at last, and the token is behind: held on as stale, the
        // resync still due.
        assert_eq!(
            unverified(t0, Some(12)).read(true, t1),
            (stale(t1, Some(12)), None)
        );
    }

    #[test]
    fn a_read_leaves_a_stale_token_held() {
        let t0 = Instant::now();
        let t1 = at(t0, 3);
        for behind in [false, true] {
            assert_eq!(
                both(t0, at(t0, 1), Some(7)).read(behind, t1),
                (stale(t0, Some(7)), None)
            );
        }
    }

    #[test]
    fn a_current_token_ends_every_hold() {
        let t0 = Instant::now();
        assert_eq!(Hold::Live.reauthenticated(), (Hold::Live, None));
        assert_eq!(
            stale(t0, None).reauthenticated(),
            (Hold::Live, Some(Release::Replay))
        );
        assert_eq!(
            stale(t0, Some(5)).reauthenticated(),
            (Hold::Live, Some(Release::Resync(5)))
        );
        assert_eq!(
            unverified(t0, Some(5)).reauthenticated(),
            (Hold::Live, Some(Release::Resync(5)))
        );
        assert_eq!(
            both(t0, t0, None).reauthenticated(),
            (Hold::Live, Some(Release::Replay))
        );
        assert_eq!(
            both(t0, t0, Some(6)).reauthenticated(),
            (Hold::Live, Some(Release::Resync(6)))
        );
    }

    #[test]
    fn a_current_token_ends_an_unverified_hold_with_a_replay() {
        // Frames held while the permissions could not be read are sent once
        // a current token brings them back (they were once dropped here).
        let t0 = Instant::now();
        assert_eq!(
            unverified(t0, None).reauthenticated(),
            (Hold::Live, Some(Release::Replay))
        );
    }

    #[test]
    fn a_resync_is_sent_when_live_and_kept_for_the_release_when_held() {
        let t0 = Instant::now();
        let t1 = at(t0, 1);
        assert_eq!(Hold::Live.resync_due(20), (Hold::Live, Some(20)));
        assert_eq!(stale(t0, None).resync_due(20), (stale(t0, Some(20)), None));
        // The latest position wins.
        assert_eq!(
            stale(t0, Some(10)).resync_due(20),
            (stale(t0, Some(20)), None)
        );
        assert_eq!(
            unverified(t0, Some(10)).resync_due(20),
            (unverified(t0, Some(20)), None)
        );
        assert_eq!(
            both(t0, t1, None).resync_due(20),
            (both(t0, t1, Some(20)), None)
        );
    }

    #[test]
    fn a_hold_lapses_after_the_grace() {
        let t0 = Instant::now();
        let token_stale = Some(Close(close::TOKEN_STALE, "token_stale"));
        let unavailable = Some(Close(close::INTERNAL, "unavailable"));
        assert_eq!(Hold::Live.lapsed(at(t0, 100), GRACE), None);
        assert_eq!(stale(t0, None).lapsed(at(t0, 14), GRACE), None);
        assert_eq!(stale(t0, None).lapsed(at(t0, 15), GRACE), token_stale);
        assert_eq!(unverified(t0, None).lapsed(at(t0, 14), GRACE), None);
        assert_eq!(unverified(t0, None).lapsed(at(t0, 15), GRACE), unavailable);
        // Both: the stale token is named first, each by its own clock.
        let t5 = at(t0, 5);
        assert_eq!(both(t0, t5, None).lapsed(at(t0, 14), GRACE), None);
        assert_eq!(both(t0, t5, None).lapsed(at(t0, 15), GRACE), token_stale);
        assert_eq!(both(t5, t0, None).lapsed(at(t0, 15), GRACE), unavailable);
        assert_eq!(both(t0, t0, None).lapsed(at(t0, 15), GRACE), token_stale);
        // An instant before the hold began (a clock read earlier) is no lapse.
        assert_eq!(stale(t5, None).lapsed(t0, GRACE), None);
    }
}
