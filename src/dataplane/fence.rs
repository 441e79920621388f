//! The userspace side of the fence (docs/cluster.md, "Fencing"): a deadline
//! past which the workers forward nothing, shared with them through atomics
//! so that a worker checks it once per received batch, against the time it
//! already took for that batch — no lock, no clock read of its own. Sans-IO:
//! times are passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No deadline (an offset no `Instant` of this process reaches).
const NONE: u64 = u64::MAX;

/// A deadline, as nanoseconds after an epoch, and the packets it dropped.
#[derive(Debug)]
pub struct Fence {
    epoch: Instant,
    /// Nanoseconds after `epoch`; [`NONE`]: no fence.
    deadline: AtomicU64,
    dropped: AtomicU64,
}

impl Fence {
    /// No fence; deadlines are kept relative to `epoch`.
    pub fn new(epoch: Instant) -> Fence {
        Fence {
            epoch,
            deadline: AtomicU64::new(NONE),
            dropped: AtomicU64::new(0),
        }
    }

    /// Sets the deadline (`None`: no fence). One before the epoch has passed.
    pub fn set(&self, deadline: Option<Instant>) {
        let ns = deadline.map_or(NONE, |d| self.offset(d).min(NONE - 1));
        // Relaxed: a worker sees it at its next batch or the one after; the
        // kernel's fence, not this, is what must hold to the nanosecond.
        self.deadline.store(ns, Ordering::Relaxed);
    }

    /// The deadline in force (to the nanosecond; one set before the epoch
    /// reads as the epoch).
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Relaxed) {
            NONE => None,
            ns => self.epoch.checked_add(Duration::from_nanos(ns)),
        }
    }

    /// Whether the deadline has passed at `now`.
    pub fn passed(&self, now: Instant) -> bool {
        self.offset(now) >= self.deadline.load(Ordering::Relaxed)
    }

    /// Counts `n` packets dropped by the fence.
    pub fn count(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Packets dropped by the fence so far (userspace's).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// `at` as nanoseconds after the epoch (0 before it; saturated).
    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(NONE - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_fence_never_passes_and_none_lifts_one() {
        let epoch = Instant::now();
        let f = Fence::new(epoch);
        let late = epoch + Duration::from_secs(100 * 365 * 86_400);
        assert!(!f.passed(epoch) && !f.passed(late));
        assert_eq!(f.deadline(), None);
        f.set(Some(epoch));
        assert!(f.passed(epoch) && f.passed(late));
        f.set(None);
        assert!(!f.passed(late), "lifted");
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn a_deadline_before_the_epoch_has_passed() {
        let epoch = Instant::now() + Duration::from_secs(10);
        let f = Fence::new(epoch);
        f.set(Some(epoch - Duration::from_secs(5)));
        assert!(
            f.passed(epoch - Duration::from_secs(9)),
            "before the epoch, too"
        );
        assert_eq!(f.deadline(), Some(epoch));
    }

    #[test]
    fn drops_add_up() {
        let f = Fence::new(Instant::now());
        f.count(3);
        f.count(0);
        f.count(64);
        assert_eq!(f.dropped(), 67);
    }

    proptest! {
        /// Passed exactly from the deadline on, to the nanosecond, whatever
        /// the deadline and the batch's time (both after the epoch).
        #[test]
        fn passed_from_the_deadline_on(deadline in 0u64..1 << 50, now in 0u64..1 << 50) {
            let epoch = Instant::now();
            let f = Fence::new(epoch);
            let at = |ns| epoch + Duration::from_nanos(ns);
            f.set(Some(at(deadline)));
            prop_assert_eq!(f.deadline(), Some(at(deadline)));
            prop_assert_eq!(f.passed(at(now)), now >= deadline);
        }
    }
}
