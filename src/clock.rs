//! The clocks, read once by the I/O shell (a request, a scheduler tick, a
//! scrape) and passed in: the schedule, the coordinator and the data plane
//! never read one themselves, so they are tested with any time they are given.

use std::time::Instant;
use time::OffsetDateTime;

/// One reading of the three clocks the relay relates: the wall clock
/// (reservation windows), the monotonic clock (arrival times in userspace)
/// and CLOCK_BOOTTIME (the kernel fast path's packet times and window ends).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Now {
    /// The wall clock.
    pub wall: OffsetDateTime,
    /// The monotonic clock.
    pub mono: Instant,
    /// CLOCK_BOOTTIME in nanoseconds.
    pub boot_ns: u64,
}

impl Now {
    /// Reads the clocks.
    pub fn read() -> Now {
        Now {
            wall: OffsetDateTime::now_utc(),
            mono: Instant::now(),
            boot_ns: boot_nanos(),
        }
    }

    /// `at` on CLOCK_BOOTTIME, in nanoseconds (now if `at` has passed).
    pub fn boot_deadline(&self, at: OffsetDateTime) -> u64 {
        let left = (at - self.wall).whole_nanoseconds().max(0);
        self.boot_ns
            .saturating_add(u64::try_from(left).unwrap_or(u64::MAX))
    }

    /// `at` (a monotonic time) on CLOCK_BOOTTIME, in nanoseconds (saturated).
    /// Should the machine suspend before `at`, the boot time comes first:
    /// the monotonic clock stops while suspended, CLOCK_BOOTTIME (like the
    /// wall clock) does not.
    pub fn boot_at(&self, at: Instant) -> u64 {
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if at >= self.mono {
            self.boot_ns.saturating_add(nanos(at - self.mono))
        } else {
            self.boot_ns.saturating_sub(nanos(self.mono - at))
        }
    }

    /// Seconds since `boot_ns` (a CLOCK_BOOTTIME time), never negative.
    pub fn boot_age(&self, boot_ns: u64) -> f64 {
        self.boot_ns.saturating_sub(boot_ns) as f64 / 1e9
    }
}

/// CLOCK_BOOTTIME in nanoseconds: the clock the kernel program reads, which
/// keeps counting through a suspend (and one clock for every process).
pub fn boot_nanos() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_and_ages_on_the_boot_clock() {
        let now = Now {
            wall: time::macros::datetime!(2026-11-24 10:00 UTC),
            mono: Instant::now(),
            boot_ns: 5_000_000_000,
        };
        let in_a_minute = now.wall + time::Duration::minutes(1);
        assert_eq!(now.boot_deadline(in_a_minute), 65_000_000_000);
        assert_eq!(
            now.boot_deadline(now.wall - time::Duration::hours(1)),
            5_000_000_000
        );
        // The ends of time saturate; they never panic.
        let end_of_time = time::PrimitiveDateTime::MAX.assume_utc();
        assert_eq!(now.boot_deadline(end_of_time), u64::MAX);
        let start_of_time =
            time::PrimitiveDateTime::MIN.assume_offset(time::macros::offset!(+23:59:59));
        assert_eq!(now.boot_deadline(start_of_time), 5_000_000_000);
        let ms = std::time::Duration::from_millis(1);
        assert_eq!(now.boot_at(now.mono), 5_000_000_000);
        assert_eq!(now.boot_at(now.mono + 1500 * ms), 6_500_000_000);
        if let Some(earlier) = now.mono.checked_sub(250 * ms) {
            assert_eq!(now.boot_at(earlier), 4_750_000_000);
        }
        assert_eq!(now.boot_age(4_500_000_000), 0.5);
        assert_eq!(now.boot_age(6_000_000_000), 0.0, "a later time is no age");
    }
}
