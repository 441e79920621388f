//! The reservation schedule: windows, conflicts, allocation and the bind/free
//! lifecycle. Sans-IO: the caller passes `now` in and carries out the returned
//! [`Action`]s (binding and freeing sockets), then reports back with
//! [`Schedule::bound`].

use super::{Reservation, rfc3339};
use crate::group::GroupId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Longest `[schedule] lead` or `trail` the configuration accepts.
pub const MAX_LEAD_TRAIL: Duration = Duration::days(7);

/// How long before its start a group is bound and after its end it is freed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `[schedule] lead`.
    pub lead: Duration,
    /// `[schedule] trail`.
    pub trail: Duration,
}

/// Capacity rules of the schedule.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Highest group allocation may hand out (2047, or 8063 below the dynamic range).
    pub last_group: GroupId,
    /// `[data] max_groups`: reservations whose windows may be open at once.
    pub max_concurrent: usize,
    /// How long a degraded reservation waits before binding is retried.
    pub retry: Duration,
}

/// `[start - lead, end + trail)`: when the group's ports are bound.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Ports are bound from here…
    pub open: OffsetDateTime,
    /// …until here (exclusive).
    pub close: OffsetDateTime,
}

impl Window {
    /// Half-open intervals: a window closing when another opens does not overlap it.
    pub fn overlaps(&self, other: &Window) -> bool {
        self.open < other.close && other.open < self.close
    }

    /// Is the window open at `now`?
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        self.open <= now && now < self.close
    }
}

/// Saturating: a validated reservation's times leave room for the longest
/// lead and trail ([`super::LATEST`]), so this only matters to one that
/// bypassed validation, which must not panic the relay either.
fn window(timing: Timing, r: &Reservation) -> Window {
    Window {
        open: r.start.saturating_sub(timing.lead),
        close: r.end.saturating_add(timing.trail),
    }
}

/// A port that could not be bound, and the OS's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortFailure {
    /// The UDP port.
    pub port: u16,
    /// What went wrong, e.g. "Address already in use (os error 98)".
    pub error: String,
}

/// Where a reservation is in its bind/free lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Window not open yet (or open, and the bind not yet asked for).
    Waiting,
    /// A [`Action::Bind`] is out; [`Schedule::bound`] has not answered yet.
    Binding,
    /// Every used port is bound.
    Bound,
    /// Some ports could not be bound; retried at `retry_at`.
    Degraded {
        /// The ports that failed and why.
        failures: Vec<PortFailure>,
        /// When the next bind attempt is due.
        retry_at: OffsetDateTime,
    },
}

/// A reservation's state as the API reports it (docs/api.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Window not open.
    Scheduled,
    /// Ports bound.
    Active,
    /// Window open but some port could not be bound.
    Degraded,
    /// Freed and removed.
    Ended,
}

impl State {
    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Active => "active",
            State::Degraded => "degraded",
            State::Ended => "ended",
        }
    }
}

/// A reservation in the schedule, with the group it occupies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What was asked for.
    pub reservation: Reservation,
    /// The group in use (requested or allocated).
    pub group: GroupId,
    /// Its window under the current timing (kept in step by the schedule).
    pub window: Window,
    /// Lifecycle.
    pub binding: Binding,
}

impl Entry {
    /// The API state.
    pub fn state(&self) -> State {
        match self.binding {
            Binding::Waiting | Binding::Binding => State::Scheduled,
            Binding::Bound => State::Active,
            Binding::Degraded { .. } => State::Degraded,
        }
    }

    /// Does this entry hold its group's sockets (fully or partly)?
    fn holds_group(&self) -> bool {
        !matches!(self.binding, Binding::Waiting)
    }
}

/// The reservation occupying `group` at `now` among `entries`: the one holding
/// its sockets, else the earliest whose window contains `now`.
pub fn occupant<'a>(
    entries: impl Iterator<Item = &'a Entry> + Clone,
    group: GroupId,
    now: OffsetDateTime,
) -> Option<&'a Entry> {
    let on_group = entries.filter(move |e| e.group == group);
    on_group.clone().find(|e| e.holds_group()).or_else(|| {
        on_group
            .filter(|e| e.window.contains(now))
            .min_by_key(|e| e.window.open)
    })
}

/// When [`Schedule::poll`] next has something to do, for a schedule (or a
/// reader's copy of it) holding `entries`: a window opening or closing, or a
/// degraded group's retry.
pub fn next_wakeup<'a>(entries: impl Iterator<Item = &'a Entry>) -> Option<OffsetDateTime> {
    entries
        .flat_map(|e| {
            let w = e.window;
            let retry = match &e.binding {
                Binding::Degraded { retry_at, .. } => Some(*retry_at),
                _ => None,
            };
            let open = matches!(e.binding, Binding::Waiting).then_some(w.open);
            [Some(w.close), retry, open]
        })
        .flatten()
        .min()
}

/// The first reservation, in the order given, whose event (`[start, end)`,
/// without lead or trail) overlaps an earlier one's on the same group:
/// `(earlier, later)` indexes. No timing makes such a pair fit, so the API
/// never admits both; windows that overlap only through lead and trail (the
/// timing changed since) are not reported. Every `end` must be after its `start`.
pub fn double_booked<'a>(
    held: impl IntoIterator<Item = (GroupId, &'a Reservation)>,
) -> Option<(usize, usize)> {
    // Per group, by start: (end, index). Disjoint as long as nothing was found.
    let mut events: BTreeMap<(GroupId, OffsetDateTime), (OffsetDateTime, usize)> = BTreeMap::new();
    let first = time::PrimitiveDateTime::MIN.assume_utc();
    for (i, (group, r)) in held.into_iter().enumerate() {
        // Of disjoint events starting before r ends, the last to start is the
        // last to end: only it can reach into r.
        let before = events.range((group, first)..(group, r.end)).next_back();
        if let Some((_, &(end, j))) = before
            && end > r.start
        {
            return Some((j, i));
        }
        events.insert((group, r.start), (r.end, i));
    }
    None
}

/// What the I/O shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bind the group's used ports (those not bound yet), then call [`Schedule::bound`].
    Bind {
        /// The reservation.
        event_id: String,
        /// Its group.
        group: GroupId,
    },
    /// Free the group's ports: the reservation ended and was removed.
    Free {
        /// The reservation that held the group.
        event_id: String,
        /// The group to free.
        group: GroupId,
    },
    /// A reservation's window closed before it was ever bound; removed.
    Expire {
        /// The reservation.
        event_id: String,
    },
}

/// Why a reservation cannot be admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its window overlaps another reservation's on the same group.
    Conflict(String),
    /// No free group, or `max_concurrent` windows already open in its window.
    Exhausted(String),
    /// Its window would already be over.
    AlreadyEnded(String),
}

/// All reservations, indexed by event and by group.
#[derive(Clone, Debug)]
pub struct Schedule {
    timing: Timing,
    limits: Limits,
    /// Shared with readers' copies ([`Schedule::shared_entries`]): a change
    /// clones only the entry it changes.
    entries: BTreeMap<String, Arc<Entry>>,
    /// Indexed by group number: (window open, event_id), sorted by opening.
    by_group: Vec<BTreeSet<(OffsetDateTime, String)>>,
    /// Bumped by every change, so a reader's copy is refreshed only when stale.
    version: u64,
    /// [`next_wakeup`] of the entries as of a version: a pass over every
    /// reservation, made once a change rather than every tick.
    wakeup: Option<(u64, Option<OffsetDateTime>)>,
}

impl Schedule {
    /// An empty schedule.
    pub fn new(timing: Timing, limits: Limits) -> Self {
        Schedule {
            timing,
            limits,
            entries: BTreeMap::new(),
            by_group: vec![BTreeSet::new(); usize::from(crate::group::LAST_GROUP) + 1],
            version: 0,
            wakeup: None,
        }
    }

    /// When [`Schedule::poll`] next has something to do ([`next_wakeup`]);
    /// `None`: nothing, until something changes.
    pub fn next_wakeup(&mut self) -> Option<OffsetDateTime> {
        match self.wakeup {
            Some((version, at)) if version == self.version => at,
            _ => {
                let at = next_wakeup(self.entries());
                self.wakeup = Some((self.version, at));
                at
            }
        }
    }

    /// Changes so far: a different number means something changed.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Current timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Replaces timing and limits (configuration reload). Returns pairs of
    /// reservations whose windows now overlap on one group: they stay, and the
    /// later one is held off its group until the earlier frees it.
    pub fn reconfigure(&mut self, timing: Timing, limits: Limits) -> Vec<(String, String)> {
        self.version += 1;
        self.timing = timing;
        self.limits = limits;
        for set in &mut self.by_group {
            set.clear();
        }
        for e in self.entries.values_mut() {
            let e = Arc::make_mut(e);
            e.window = window(timing, &e.reservation);
            self.by_group[usize::from(e.group.get())]
                .insert((e.window.open, e.reservation.event_id.clone()));
        }
        self.overlapping_pairs()
    }

    /// The window of a reservation under the current timing.
    pub fn window(&self, r: &Reservation) -> Window {
        window(self.timing, r)
    }

    /// One reservation.
    pub fn get(&self, event_id: &str) -> Option<&Entry> {
        self.entries.get(event_id).map(Arc::as_ref)
    }

    /// All reservations, by event_id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + Clone {
        self.entries.values().map(Arc::as_ref)
    }

    /// Every reservation, by event_id, for a reader's copy: a reference count
    /// each, nothing cloned.
    pub fn shared_entries(&self) -> Vec<Arc<Entry>> {
        self.entries.values().cloned().collect()
    }

    /// Number of reservations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no reservation.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that `r` fits and returns its group: the requested one, or the
    /// lowest-numbered group whose window is free. `replacing` is the event being
    /// changed (a PATCH), which does not conflict with itself.
    pub fn admit(
        &self,
        r: &Reservation,
        group: Option<GroupId>,
        replacing: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<GroupId, Refusal> {
        let w = self.window(r);
        if w.close <= now {
            return Err(Refusal::AlreadyEnded(format!(
                "the reservation's window would already be over: end + trail = {} is not after now ({})",
                rfc3339(w.close),
                rfc3339(now)
            )));
        }
        let peak = self.peak_concurrency(&w, replacing, now, self.limits.max_concurrent);
        if peak >= self.limits.max_concurrent {
            return Err(Refusal::Exhausted(format!(
                "{peak} reservations already have windows open during {}–{}, the limit set by [data] max_groups = {}; raise max_groups or choose another time",
                rfc3339(w.open),
                rfc3339(w.close),
                self.limits.max_concurrent
            )));
        }
        if let Some(g) = group {
            return match self.conflict(g, &w, replacing, now) {
                Some(other) => Err(Refusal::Conflict(format!(
                    "group {g} is reserved by {} for {}–{} (window {}–{}), which overlaps this window {}–{}; choose another group or omit group to allocate one",
                    other.reservation.event_id,
                    rfc3339(other.reservation.start),
                    rfc3339(other.reservation.end),
                    rfc3339(other.window.open),
                    rfc3339(other.window.close),
                    rfc3339(w.open),
                    rfc3339(w.close),
                ))),
                None => Ok(g),
            };
        }
        let last = self.limits.last_group.get();
        (0..=u32::from(last))
            .map(|n| GroupId::try_from(n).expect("last_group is a valid group"))
            .find(|&g| self.conflict(g, &w, replacing, now).is_none())
            .ok_or_else(|| {
                Refusal::Exhausted(format!(
                    "no free group: all groups 0–{last} are reserved during {}–{}; free one, choose another time, or allow groups below 49152 with [data] allow_below_dynamic_range",
                    rfc3339(w.open),
                    rfc3339(w.close)
                ))
            })
    }

    /// The first live reservation on `group` whose window overlaps `w`.
    fn conflict(
        &self,
        group: GroupId,
        w: &Window,
        replacing: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<&Entry> {
        let ids = &self.by_group[usize::from(group.get())];
        // Only windows opening before w closes can overlap it. Walking back from
        // there, windows on one group are disjoint and sorted, so the first one
        // that closes before w opens ends the search.
        for (_, id) in ids.range(..(w.close, String::new())).rev() {
            let e = &self.entries[id];
            let ew = e.window;
            if Some(id.as_str()) == replacing || ew.close <= now {
                continue;
            }
            if ew.overlaps(w) {
                return Some(e);
            }
            if ew.close <= w.open {
                break;
            }
        }
        None
    }

    /// Most reservations (other than `replacing`) open at any one instant inside
    /// `w`, exact up to `limit`: below it, the count of overlapping windows is
    /// enough and the sweep is skipped.
    fn peak_concurrency(
        &self,
        w: &Window,
        replacing: Option<&str>,
        now: OffsetDateTime,
        limit: usize,
    ) -> usize {
        let overlapping = || {
            self.entries.values().filter_map(move |e| {
                let ew = e.window;
                let other = Some(e.reservation.event_id.as_str()) != replacing;
                (other && ew.close > now && ew.overlaps(w)).then_some(ew)
            })
        };
        let count = overlapping().count();
        if count < limit {
            return count;
        }
        let mut edges: Vec<(OffsetDateTime, i32)> = overlapping()
            .flat_map(|ew| [(ew.open.max(w.open), 1), (ew.close.min(w.close), -1)])
            .collect();
        // Closings sort before openings at the same instant: half-open windows.
        edges.sort();
        let (mut open, mut peak) = (0i32, 0i32);
        for (_, d) in edges {
            open += d;
            peak = peak.max(open);
        }
        peak as usize
    }

    /// Adds an admitted reservation on `group`.
    pub fn insert(&mut self, reservation: Reservation, group: GroupId) {
        self.version += 1;
        let window = window(self.timing, &reservation);
        self.by_group[usize::from(group.get())].insert((window.open, reservation.event_id.clone()));
        self.entries.insert(
            reservation.event_id.clone(),
            Arc::new(Entry {
                window,
                reservation,
                group,
                binding: Binding::Waiting,
            }),
        );
    }

    /// Replaces an admitted reservation's content (a PATCH), keeping its group and binding.
    pub fn update(&mut self, reservation: Reservation) {
        self.version += 1;
        let Some(e) = self
            .entries
            .get_mut(&reservation.event_id)
            .map(Arc::make_mut)
        else {
            return;
        };
        let set = &mut self.by_group[usize::from(e.group.get())];
        set.remove(&(e.window.open, e.reservation.event_id.clone()));
        e.window = window(self.timing, &reservation);
        set.insert((e.window.open, reservation.event_id.clone()));
        e.reservation = reservation;
    }

    /// Removes a reservation now (a DELETE). Returns it, and the `Free` to carry out
    /// if it held its group.
    pub fn remove(&mut self, event_id: &str) -> Option<(Entry, Option<Action>)> {
        let e = self.entries.remove(event_id)?;
        self.version += 1;
        self.by_group[usize::from(e.group.get())]
            .remove(&(e.window.open, e.reservation.event_id.clone()));
        let free = e.holds_group().then(|| Action::Free {
            event_id: event_id.to_string(),
            group: e.group,
        });
        Some((Arc::unwrap_or_clone(e), free))
    }

    /// Advances the lifecycle to `now`: frees and removes reservations whose
    /// window closed, asks to bind those whose window is open (or whose retry is due).
    /// Frees come first, so a group handed from one event to the next is free
    /// before it is bound again.
    pub fn poll(&mut self, now: OffsetDateTime) -> Vec<Action> {
        // Nothing closes, opens or is retried before the next wake-up: the
        // scheduler ticks at least once a second, and two passes over 2048
        // reservations held a CPU for up to 2 ms each time.
        if self.next_wakeup().is_none_or(|at| now < at) {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for id in self.closed(now) {
            if let Some((_, free)) = self.remove(&id) {
                actions.push(free.unwrap_or(Action::Expire { event_id: id }));
            }
        }
        let due: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.window.contains(now))
            .filter(|e| match &e.binding {
                Binding::Waiting => true,
                Binding::Degraded { retry_at, .. } => *retry_at <= now,
                Binding::Binding | Binding::Bound => false,
            })
            .map(|e| e.reservation.event_id.clone())
            .collect();
        for id in due {
            let group = self.entries[&id].group;
            if let Some(holder) = self.holder(group).filter(|h| *h != id) {
                // Only after a timing change can two windows on one group overlap.
                let failures = vec![PortFailure {
                    port: group.base(),
                    error: format!("group {group} is still held by reservation {holder}"),
                }];
                self.set_degraded(&id, failures, now);
                continue;
            }
            if let Some(e) = self.entries.get_mut(&id).map(Arc::make_mut) {
                e.binding = Binding::Binding;
                self.version += 1;
            }
            actions.push(Action::Bind {
                event_id: id,
                group,
            });
        }
        actions
    }

    /// Lets every group go (a cluster node stepping down): every reservation
    /// waits again, to be bound by [`Schedule::poll`] when the node is active
    /// again. The groups that were held, for the caller to free.
    pub fn release_all(&mut self) -> Vec<GroupId> {
        let mut held = Vec::new();
        for e in self.entries.values_mut() {
            if e.holds_group() {
                held.push(e.group);
                Arc::make_mut(e).binding = Binding::Waiting;
            }
        }
        self.version += 1;
        held
    }

    /// Removes the reservations whose window closed, binding nothing (a
    /// standby node, which keeps the schedule but not the ports). Their ids.
    pub fn expire(&mut self, now: OffsetDateTime) -> Vec<String> {
        let closed = self.closed(now);
        for id in &closed {
            self.remove(id);
        }
        closed
    }

    /// The reservations whose window closed by `now`.
    fn closed(&self, now: OffsetDateTime) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.window.close <= now)
            .map(|e| e.reservation.event_id.clone())
            .collect()
    }

    /// The result of an [`Action::Bind`]: no failures means bound.
    pub fn bound(&mut self, event_id: &str, failures: Vec<PortFailure>, now: OffsetDateTime) {
        if failures.is_empty() {
            if let Some(e) = self.entries.get_mut(event_id).map(Arc::make_mut) {
                e.binding = Binding::Bound;
                self.version += 1;
            }
        } else {
            self.set_degraded(event_id, failures, now);
        }
    }

    fn set_degraded(&mut self, event_id: &str, failures: Vec<PortFailure>, now: OffsetDateTime) {
        let retry_at = now.saturating_add(self.limits.retry);
        if let Some(e) = self.entries.get_mut(event_id).map(Arc::make_mut) {
            e.binding = Binding::Degraded { failures, retry_at };
            self.version += 1;
        }
    }

    fn holder(&self, group: GroupId) -> Option<String> {
        self.by_group[usize::from(group.get())]
            .iter()
            .map(|(_, id)| &self.entries[id])
            .find(|e| e.holds_group())
            .map(|e| e.reservation.event_id.clone())
    }

    /// Pairs of reservations on one group whose windows overlap.
    fn overlapping_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for ids in &self.by_group {
            let list: Vec<&Entry> = ids
                .iter()
                .map(|(_, id)| self.entries[id].as_ref())
                .collect();
            for (a, b) in list.iter().zip(list.iter().skip(1)) {
                if a.window.overlaps(&b.window) {
                    pairs.push((
                        a.reservation.event_id.clone(),
                        b.reservation.event_id.clone(),
                    ));
                }
            }
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::tests::request;
    use proptest::prelude::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-24 10:00 UTC);

    fn schedule(max_concurrent: usize) -> Schedule {
        Schedule::new(
            Timing {
                lead: Duration::minutes(30),
                trail: Duration::minutes(15),
            },
            Limits {
                last_group: GroupId::try_from(2047).unwrap(),
                max_concurrent,
                retry: Duration::seconds(5),
            },
        )
    }

    fn at(id: &str, start: OffsetDateTime, minutes: i64) -> Reservation {
        let mut r = request(id, None);
        r.start = start;
        r.end = start + Duration::minutes(minutes);
        r
    }

    fn g(n: u32) -> GroupId {
        GroupId::try_from(n).unwrap()
    }

    fn admit(
        s: &mut Schedule,
        r: Reservation,
        group: Option<u32>,
        now: OffsetDateTime,
    ) -> Result<GroupId, Refusal> {
        let got = s.admit(&r, group.map(g), None, now)?;
        s.insert(r, got);
        Ok(got)
    }

    #[test]
    fn the_occupant_holds_the_group_or_has_its_window_open_now() {
        let mut s = schedule(100);
        let t = T0;
        for (id, start) in [("late", t + Duration::hours(2)), ("now", t)] {
            admit(&mut s, at(id, start, 60), Some(3), t).unwrap();
        }
        assert_eq!(occupant(s.entries(), g(4), t), None, "another group");
        let by_window = occupant(s.entries(), g(3), t).unwrap();
        assert_eq!(by_window.reservation.event_id, "now");
        assert_eq!(
            occupant(s.entries(), g(3), t + Duration::hours(2))
                .unwrap()
                .reservation
                .event_id,
            "late"
        );
        assert_eq!(
            occupant(s.entries(), g(3), t + Duration::hours(5)),
            None,
            "both over"
        );
        // Once bound, a group's holder occupies it whatever the time.
        s.poll(t);
        s.bound("now", Vec::new(), t);
        let held = occupant(s.entries(), g(3), t + Duration::hours(5)).unwrap();
        assert_eq!(held.reservation.event_id, "now");
    }

    #[test]
    fn polls_before_the_next_wakeup_do_nothing_until_a_change_moves_it() {
        let mut s = schedule(2048);
        let now = T0 - Duration::hours(2);
        admit(&mut s, at("later", T0, 60), Some(1), now).unwrap();
        assert_eq!(s.next_wakeup(), Some(T0 - Duration::minutes(30)));
        assert_eq!(s.poll(now), vec![]);
        // A reservation whose window is open already: due at once, although
        // the wake-up worked out before it came was later.
        admit(&mut s, at("now", now, 60), Some(2), now).unwrap();
        assert_eq!(s.next_wakeup(), Some(now - Duration::minutes(30)));
        assert_eq!(
            s.poll(now),
            vec![Action::Bind {
                event_id: "now".into(),
                group: g(2),
            }]
        );
        // Bound: its close (end and 15 minutes' trail) comes before the
        // other's open; nothing happens until then.
        s.bound("now", Vec::new(), now);
        let close = now + Duration::minutes(75);
        assert_eq!(s.next_wakeup(), Some(close));
        assert_eq!(s.poll(close - Duration::seconds(1)), vec![]);
        assert!(matches!(s.poll(close)[..], [Action::Free { .. }]));
    }

    #[test]
    fn lifecycle_follows_lead_and_trail_with_injected_time() {
        let mut s = schedule(2048);
        let now = T0 - Duration::hours(2);
        admit(&mut s, at("bio101", T0, 60), Some(14), now).unwrap();
        assert_eq!(s.poll(now), vec![]);
        assert_eq!(s.get("bio101").unwrap().state(), State::Scheduled);
        assert_eq!(next_wakeup(s.entries()), Some(T0 - Duration::minutes(30)));

        // One second before the 30-minute lead: nothing.
        assert_eq!(
            s.poll(T0 - Duration::minutes(30) - Duration::seconds(1)),
            vec![]
        );
        let open = T0 - Duration::minutes(30);
        let bind = Action::Bind {
            event_id: "bio101".into(),
            group: g(14),
        };
        assert_eq!(s.poll(open), vec![bind]);
        assert_eq!(s.poll(open), vec![], "a bind is asked for once");
        s.bound("bio101", vec![], open);
        assert_eq!(s.get("bio101").unwrap().state(), State::Active);
        assert_eq!(next_wakeup(s.entries()), Some(T0 + Duration::minutes(75)));

        // Freed exactly at end + trail.
        assert_eq!(
            s.poll(T0 + Duration::minutes(75) - Duration::seconds(1)),
            vec![]
        );
        let free = Action::Free {
            event_id: "bio101".into(),
            group: g(14),
        };
        assert_eq!(s.poll(T0 + Duration::minutes(75)), vec![free]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_node_stepping_down_lets_every_group_go_and_binds_them_again_later() {
        let mut s = schedule(2048);
        admit(&mut s, at("held", T0, 60), Some(3), T0).unwrap();
        admit(&mut s, at("later", T0 + Duration::days(1), 60), Some(4), T0).unwrap();
        assert_eq!(s.poll(T0).len(), 1);
        s.bound("held", vec![], T0);
        assert_eq!(s.release_all(), vec![g(3)]);
        assert_eq!(s.get("held").unwrap().state(), State::Scheduled);
        assert_eq!(s.release_all(), vec![], "nothing is held twice");
        // Active again: the open window is bound again, the later one waits.
        assert_eq!(
            s.poll(T0 + Duration::minutes(1)),
            vec![Action::Bind {
                event_id: "held".into(),
                group: g(3)
            }]
        );
    }

    #[test]
    fn a_standby_schedule_expires_closed_windows_without_actions() {
        let mut s = schedule(2048);
        admit(&mut s, at("ends", T0, 60), Some(3), T0).unwrap();
        admit(&mut s, at("stays", T0 + Duration::days(1), 60), Some(4), T0).unwrap();
        assert_eq!(s.expire(T0 + Duration::minutes(74)), Vec::<String>::new());
        assert_eq!(
            s.expire(T0 + Duration::minutes(75)),
            vec!["ends".to_string()]
        );
        assert!(s.get("ends").is_none() && s.get("stays").is_some());
    }

    #[test]
    fn created_inside_its_window_binds_at_once() {
        let mut s = schedule(2048);
        let now = T0 - Duration::minutes(5);
        admit(&mut s, at("late", T0, 60), None, now).unwrap();
        assert_eq!(
            s.poll(now),
            vec![Action::Bind {
                event_id: "late".into(),
                group: g(0)
            }]
        );
    }

    #[test]
    fn degraded_binding_is_retried() {
        let mut s = schedule(2048);
        admit(&mut s, at("e", T0, 60), Some(3), T0).unwrap();
        assert_eq!(s.poll(T0).len(), 1);
        let fail = vec![PortFailure {
            port: 65504,
            error: "Address already in use".into(),
        }];
        s.bound("e", fail.clone(), T0);
        assert_eq!(s.get("e").unwrap().state(), State::Degraded);
        assert_eq!(next_wakeup(s.entries()), Some(T0 + Duration::seconds(5)));
        assert_eq!(s.poll(T0 + Duration::seconds(4)), vec![]);
        assert_eq!(s.poll(T0 + Duration::seconds(5)).len(), 1);
        s.bound("e", vec![], T0 + Duration::seconds(5));
        assert_eq!(s.get("e").unwrap().state(), State::Active);
        // A degraded reservation holds part of its group: removing it frees it.
        s.bound("e", fail, T0);
        let (_, free) = s.remove("e").unwrap();
        assert_eq!(
            free,
            Some(Action::Free {
                event_id: "e".into(),
                group: g(3)
            })
        );
    }

    #[test]
    fn never_bound_reservations_expire_without_a_free() {
        let mut s = schedule(2048);
        admit(&mut s, at("e", T0, 60), None, T0 - Duration::days(1)).unwrap();
        // The relay was down for the whole window.
        assert_eq!(
            s.poll(T0 + Duration::days(1)),
            vec![Action::Expire {
                event_id: "e".into()
            }]
        );
        assert!(s.is_empty());
    }

    #[test]
    fn windows_conflict_with_lead_and_trail() {
        let mut s = schedule(2048);
        let now = T0 - Duration::days(1);
        admit(&mut s, at("a", T0, 60), Some(14), now).unwrap();
        // b starts 3h after a ends: windows [.. 11:15) and [13:30 ..) are apart.
        assert!(
            admit(
                &mut s,
                at("b", T0 + Duration::minutes(240), 60),
                Some(14),
                now
            )
            .is_ok()
        );
        // c starts 40 min after a ends: a's trail (15) + c's lead (30) overlap.
        let r = admit(
            &mut s,
            at("c", T0 + Duration::minutes(100), 30),
            Some(14),
            now,
        );
        assert!(matches!(r, Err(Refusal::Conflict(m)) if m.contains("group 14 is reserved by a")));
        // Exactly touching windows do not conflict: a closes 11:15, d opens 11:15.
        assert!(
            admit(
                &mut s,
                at("d", T0 + Duration::minutes(105), 10),
                Some(14),
                now
            )
            .is_ok()
        );
        // Another group is fine.
        assert!(
            admit(
                &mut s,
                at("c", T0 + Duration::minutes(100), 30),
                Some(15),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn allocation_picks_the_lowest_free_group() {
        let mut s = schedule(2048);
        let now = T0 - Duration::days(1);
        assert_eq!(admit(&mut s, at("a", T0, 60), None, now), Ok(g(0)));
        assert_eq!(admit(&mut s, at("b", T0, 60), None, now), Ok(g(1)));
        assert_eq!(admit(&mut s, at("c", T0, 60), Some(3), now), Ok(g(3)));
        assert_eq!(admit(&mut s, at("d", T0, 60), None, now), Ok(g(2)));
        assert_eq!(admit(&mut s, at("e", T0, 60), None, now), Ok(g(4)));
        // A later event reuses group 0.
        assert_eq!(
            admit(&mut s, at("f", T0 + Duration::hours(3), 60), None, now),
            Ok(g(0))
        );
    }

    #[test]
    fn exhaustion_by_range_and_by_max_groups() {
        let mut s = schedule(2);
        let now = T0 - Duration::days(1);
        admit(&mut s, at("a", T0, 60), None, now).unwrap();
        admit(&mut s, at("b", T0 + Duration::minutes(30), 60), None, now).unwrap();
        let r = admit(
            &mut s,
            at("c", T0 + Duration::minutes(45), 10),
            Some(9),
            now,
        );
        assert!(matches!(r, Err(Refusal::Exhausted(m)) if m.contains("max_groups = 2")));
        // After a closes (11:15), only b is open: there is room.
        assert!(admit(&mut s, at("c", T0 + Duration::minutes(105), 10), None, now).is_ok());

        let mut small = Schedule::new(
            s.timing(),
            Limits {
                last_group: g(1),
                max_concurrent: 10,
                retry: Duration::seconds(5),
            },
        );
        admit(&mut small, at("a", T0, 60), None, now).unwrap();
        admit(&mut small, at("b", T0, 60), None, now).unwrap();
        let r = admit(&mut small, at("c", T0, 60), None, now);
        assert!(matches!(r, Err(Refusal::Exhausted(m)) if m.contains("no free group")));
    }

    #[test]
    fn patch_rechecks_without_conflicting_with_itself() {
        let mut s = schedule(2048);
        let now = T0 - Duration::days(1);
        admit(&mut s, at("a", T0, 60), Some(14), now).unwrap();
        admit(
            &mut s,
            at("b", T0 + Duration::minutes(180), 60),
            Some(14),
            now,
        )
        .unwrap();
        let mut longer = s.get("a").unwrap().reservation.clone();
        longer.end = T0 + Duration::minutes(90);
        assert_eq!(s.admit(&longer, Some(g(14)), Some("a"), now), Ok(g(14)));
        s.update(longer.clone());
        longer.end = T0 + Duration::minutes(150);
        assert!(matches!(
            s.admit(&longer, Some(g(14)), Some("a"), now),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn refuses_a_window_already_over() {
        let s = schedule(2048);
        let r = at("a", T0, 60);
        assert!(matches!(
            s.admit(&r, None, None, T0 + Duration::minutes(75)),
            Err(Refusal::AlreadyEnded(_))
        ));
    }

    /// "a" (T0, 60 min, bound) and "b" (T0 + 105 min) on group 5: with the
    /// default lead and trail, b's window opens as a's closes.
    fn back_to_back_on_group_5() -> Schedule {
        let mut s = schedule(2048);
        let now = T0 - Duration::days(1);
        admit(&mut s, at("a", T0, 60), Some(5), now).unwrap();
        let b = at("b", T0 + Duration::minutes(105), 60);
        admit(&mut s, b, Some(5), now).unwrap();
        s.poll(T0);
        s.bound("a", vec![], T0);
        s
    }

    #[test]
    fn handover_on_one_group_frees_before_binding() {
        let mut s = back_to_back_on_group_5();
        let handover = T0 + Duration::minutes(75);
        assert_eq!(
            s.poll(handover),
            vec![
                Action::Free {
                    event_id: "a".into(),
                    group: g(5)
                },
                Action::Bind {
                    event_id: "b".into(),
                    group: g(5)
                }
            ]
        );
    }

    #[test]
    fn a_longer_lead_after_reload_never_binds_one_group_twice() {
        let mut s = back_to_back_on_group_5();
        let timing = Timing {
            lead: Duration::hours(1),
            trail: Duration::minutes(15),
        };
        let limits = s.limits;
        assert_eq!(
            s.reconfigure(timing, limits),
            vec![("a".into(), "b".into())]
        );
        // b's window is open, but a still holds group 5.
        assert_eq!(s.poll(T0 + Duration::minutes(50)), vec![]);
        assert_eq!(s.get("b").unwrap().state(), State::Degraded);
        // Once a is freed, b's retry binds it.
        let later = T0 + Duration::minutes(75);
        let actions = s.poll(later);
        assert_eq!(
            actions[0],
            Action::Free {
                event_id: "a".into(),
                group: g(5)
            }
        );
        assert_eq!(
            actions[1],
            Action::Bind {
                event_id: "b".into(),
                group: g(5)
            }
        );
    }

    #[test]
    fn windows_of_the_extreme_times_are_exact_under_the_longest_lead_and_trail() {
        let timing = Timing {
            lead: MAX_LEAD_TRAIL,
            trail: MAX_LEAD_TRAIL,
        };
        let mut r = at("edge", T0, 60);
        (r.start, r.end) = (super::super::EARLIEST, super::super::LATEST);
        // The latest accepted instant, at the largest offset RFC 3339 allows.
        r.end = (r.end - Duration::seconds(1)).to_offset(time::macros::offset!(+23:59));
        let w = window(timing, &r);
        assert_eq!(w.open, r.start.checked_sub(MAX_LEAD_TRAIL).unwrap());
        assert_eq!(w.close, r.end.checked_add(MAX_LEAD_TRAIL).unwrap());
        // Beyond the range, the window saturates instead of panicking.
        r.end = datetime!(9999-12-31 23:50 UTC);
        assert_eq!(
            window(timing, &r).close,
            r.end.replace_time(time::Time::MAX)
        );
        // So does a retry due at the end of time.
        let mut s = Schedule::new(timing, schedule(1).limits);
        s.insert(r, g(1));
        let end_of_time = time::PrimitiveDateTime::MAX.assume_utc();
        let failures = vec![PortFailure {
            port: 1,
            error: "x".into(),
        }];
        s.bound("edge", failures, end_of_time);
        assert!(matches!(
            s.get("edge").unwrap().binding,
            Binding::Degraded { retry_at, .. } if retry_at == end_of_time
        ));
    }

    #[test]
    fn double_booking_is_an_overlap_of_events_on_one_group() {
        let (a, b, c) = (
            at("a", T0, 60),
            at("b", T0 + Duration::minutes(30), 20),
            at("c", T0 + Duration::minutes(60), 60),
        );
        // Back to back (windows overlap through lead and trail): not double booked.
        assert_eq!(double_booked([(g(1), &a), (g(1), &c)]), None);
        assert_eq!(double_booked([(g(1), &a), (g(2), &b)]), None);
        assert_eq!(
            double_booked([(g(1), &a), (g(1), &c), (g(1), &b)]),
            Some((0, 2))
        );
        // The first record, in the order given, that overlaps an earlier one
        // (here both earlier ones: either may be named).
        let long = at("long", T0 - Duration::hours(1), 300);
        let found = double_booked([(g(1), &a), (g(1), &c), (g(1), &long)]);
        assert!(matches!(found, Some((0 | 1, 2))), "{found:?}");
        assert_eq!(double_booked([(g(1), &long), (g(1), &c)]), Some((0, 1)));
    }

    proptest! {
        /// The first double-booked record is the one a pairwise search finds.
        #[test]
        fn double_booked_finds_the_first_overlap(
            events in proptest::collection::vec((0u32..3, 0i64..600, 1i64..120), 0..40),
        ) {
            let held: Vec<(GroupId, Reservation)> = events
                .iter()
                .enumerate()
                .map(|(i, &(group, offset, len))| (g(group), at(&format!("e{i}"), T0 + Duration::minutes(offset), len)))
                .collect();
            let overlaps = |(ga, a): &(GroupId, Reservation), (gb, b): &(GroupId, Reservation)| {
                ga == gb && a.start < b.end && b.start < a.end
            };
            let first = (0..held.len()).find(|&i| (0..i).any(|j| overlaps(&held[j], &held[i])));
            let found = double_booked(held.iter().map(|(group, r)| (*group, r)));
            prop_assert_eq!(found.map(|(_, i)| i), first);
            if let Some((j, i)) = found {
                prop_assert!(j < i && overlaps(&held[j], &held[i]));
            }
        }

        /// Whatever is created, allocation never hands out a group whose window
        /// overlaps a live reservation's, and never more than max_concurrent at once.
        #[test]
        fn allocation_never_overlaps(
            events in proptest::collection::vec((0i64..600, 1i64..240, proptest::option::of(0u32..6)), 1..60),
            max_concurrent in 1usize..12,
        ) {
            let mut s = Schedule::new(
                Timing { lead: Duration::minutes(30), trail: Duration::minutes(15) },
                Limits { last_group: g(7), max_concurrent, retry: Duration::seconds(5) },
            );
            let now = T0 - Duration::days(1);
            let mut accepted: Vec<(GroupId, Window)> = Vec::new();
            for (i, (offset, len, group)) in events.into_iter().enumerate() {
                let r = at(&format!("e{i}"), T0 + Duration::minutes(offset), len);
                let w = s.window(&r);
                match s.admit(&r, group.map(g), None, now) {
                    Ok(got) => {
                        if let Some(asked) = group { prop_assert_eq!(got, g(asked)); }
                        for (og, ow) in &accepted {
                            prop_assert!(!(*og == got && ow.overlaps(&w)), "group {} double-booked", got);
                        }
                        // Allocation is the lowest free group.
                        if group.is_none() {
                            for lower in 0..got.get() {
                                let lower = g(u32::from(lower));
                                prop_assert!(accepted.iter().any(|(og, ow)| *og == lower && ow.overlaps(&w)));
                            }
                        }
                        s.insert(r, got);
                        accepted.push((got, w));
                    }
                    Err(Refusal::Conflict(_)) => {
                        let asked = g(group.unwrap());
                        prop_assert!(accepted.iter().any(|(og, ow)| *og == asked && ow.overlaps(&w)));
                    }
                    Err(Refusal::Exhausted(_)) => {}
                    Err(Refusal::AlreadyEnded(_)) => prop_assert!(false),
                }
            }
            // Concurrency never exceeds the limit: check every window opening.
            for (_, w) in &accepted {
                let open = accepted.iter().filter(|(_, o)| o.contains(w.open)).count();
                prop_assert!(open <= max_concurrent);
            }
        }
    }
}
