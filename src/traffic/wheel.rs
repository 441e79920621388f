//! A timer wheel, sans-IO: items scheduled at tick numbers and handed back
//! when the wheel is advanced past them. The generator paces every stream's
//! frames and reports with one of these and one timer, instead of a heap
//! ordered by `Instant` (a comparison per push and pop, and a clock read per
//! event): scheduling is a push onto the slot of the tick, expiry a scan of
//! the slots passed.
//!
//! Ticks are plain numbers; what a tick lasts is the caller's business. Items
//! further away than the wheel's span wait in their slot through the rounds.

/// Items of type `T` waiting for their tick.
#[derive(Clone, Debug)]
pub struct Wheel<T> {
    slots: Box<[Vec<(u64, T)>]>,
    /// The first tick not yet expired.
    next: u64,
    len: usize,
}

impl<T: Copy> Wheel<T> {
    /// A wheel of `span` slots (rounded up to a power of two), starting at tick 0.
    pub fn new(span: usize) -> Self {
        Wheel {
            slots: (0..span.max(1).next_power_of_two())
                .map(|_| Vec::new())
                .collect(),
            next: 0,
            len: 0,
        }
    }

    /// Schedules `item` for tick `at`; a tick already expired means the next one.
    pub fn schedule(&mut self, at: u64, item: T) {
        let at = at.max(self.next);
        let mask = self.slots.len() as u64 - 1;
        self.slots[(at & mask) as usize].push((at, item));
        self.len += 1;
    }

    /// Expires every tick up to and including `now`: appends their items to
    /// `due` as `(tick, item)`, earliest tick first (insertion order within a
    /// tick). Slots keep their capacity, so a steady schedule stops allocating.
    pub fn expire(&mut self, now: u64, due: &mut Vec<(u64, T)>) {
        if now < self.next {
            return;
        }
        let mask = self.slots.len() as u64 - 1;
        // Past one whole turn every slot is visited once; the items of later
        // turns stay, and are taken in tick order only within a turn.
        let last = now.min(self.next + mask);
        for tick in self.next..=last {
            let slot = &mut self.slots[(tick & mask) as usize];
            let before = due.len();
            slot.retain(|&(at, item)| {
                let expired = at <= now;
                if expired {
                    due.push((at, item));
                }
                !expired
            });
            self.len -= due.len() - before;
        }
        if last < now {
            // A jump of more than one turn: the items taken are not in tick order.
            due.sort_by_key(|&(at, _)| at);
        }
        self.next = now + 1;
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first tick not yet expired.
    pub fn next_tick(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expire(w: &mut Wheel<u32>, now: u64) -> Vec<(u64, u32)> {
        let mut due = Vec::new();
        w.expire(now, &mut due);
        due
    }

    #[test]
    fn items_come_back_at_their_tick_in_order() {
        let mut w = Wheel::new(8);
        w.schedule(3, 30);
        w.schedule(1, 10);
        w.schedule(3, 31);
        w.schedule(20, 200); // two turns and a half ahead
        assert_eq!(w.len(), 4);
        assert_eq!(expire(&mut w, 0), []);
        assert_eq!(expire(&mut w, 2), [(1, 10)]);
        assert_eq!(expire(&mut w, 3), [(3, 30), (3, 31)]);
        // Slot 20 & 7 = 4 is passed at ticks 4 and 12 without giving it up.
        assert_eq!(expire(&mut w, 12), []);
        assert_eq!(w.len(), 1);
        assert_eq!(expire(&mut w, 19), []);
        assert_eq!(expire(&mut w, 20), [(20, 200)]);
        assert!(w.is_empty());
        assert_eq!(w.next_tick(), 21);
    }

    #[test]
    fn a_tick_already_expired_is_the_next_one() {
        let mut w = Wheel::new(4);
        assert_eq!(expire(&mut w, 5), []);
        w.schedule(2, 1);
        assert_eq!(expire(&mut w, 5), [], "tick 5 is done");
        assert_eq!(expire(&mut w, 6), [(6, 1)]);
    }

    #[test]
    fn a_jump_over_many_turns_returns_everything_in_tick_order() {
        let mut w = Wheel::new(4);
        for (at, item) in [(9, 9), (2, 2), (7, 7), (3, 3), (100, 100)] {
            w.schedule(at, item);
        }
        assert_eq!(expire(&mut w, 50), [(2, 2), (3, 3), (7, 7), (9, 9)]);
        assert_eq!(expire(&mut w, 100), [(100, 100)]);
    }

    proptest! {
        /// Against a sorted list: whatever the schedule and the steps, every
        /// item comes back exactly once, at the first step at or past its tick,
        /// and in tick order.
        #[test]
        fn behaves_like_a_sorted_list(
            span in 1usize..40,
            items in proptest::collection::vec(0u64..300, 0..60),
            steps in proptest::collection::vec(0u64..80, 1..20),
        ) {
            let mut w = Wheel::new(span);
            for (i, &at) in items.iter().enumerate() {
                w.schedule(at, i as u32);
            }
            let mut now = 0;
            let mut seen = vec![false; items.len()];
            let mut previous_now = None::<u64>;
            for step in steps.iter().chain([&300]) {
                now += step;
                let due = expire(&mut w, now);
                prop_assert!(due.windows(2).all(|p| p[0].0 <= p[1].0), "{due:?}");
                for (at, i) in due {
                    let i = i as usize;
                    prop_assert_eq!(at, items[i]);
                    prop_assert!(at <= now && !seen[i]);
                    prop_assert!(previous_now.is_none_or(|p| at > p), "came late");
                    seen[i] = true;
                }
                previous_now = Some(now);
            }
            prop_assert!(seen.iter().all(|&s| s));
            prop_assert!(w.is_empty());
        }
    }
}
