//! What readers see — the API's views, `/metrics`, `/readyz`, the stream
//! watch and the scheduler's next wake-up — without the coordinator's lock:
//! an immutable [`Published`] copy of the reservations and bound ports that
//! the [`Coordinator`](super::coordinator::Coordinator) swaps in after every
//! change. A create waiting on a slow `fsync` or a bind holds the lock, never
//! a reader.

use crate::cluster::role::Role;
use crate::dataplane::BoundPorts;
use crate::dataplane::rule::GroupPlan;
use crate::group::GroupId;
use crate::reservation::Rules;
use crate::reservation::schedule::{self, Binding, Entry};
use arc_swap::ArcSwap;
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;

/// The reservations and bound ports as of the last change.
#[derive(Debug)]
pub struct Published {
    /// By event_id (the schedule's order), shared with the schedule.
    pub(super) entries: Vec<Arc<Entry>>,
    pub(super) rules: Arc<Rules>,
    pub(super) bound: BoundPorts,
    pub(super) loaded: bool,
    /// A cluster node's role; `None` for a single relay.
    pub(super) role: Option<Role>,
    /// The schedule's next wake-up as of this copy, worked out by the first
    /// reader that asks (a pass over every reservation: not for each change).
    pub(super) next_wakeup: OnceLock<Option<OffsetDateTime>>,
}

impl Published {
    /// Every reservation, by event_id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + Clone {
        self.entries.iter().map(Arc::as_ref)
    }

    /// One reservation.
    pub fn get(&self, event_id: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.reservation.event_id.as_str().cmp(event_id))
            .ok()
            .map(|i| self.entries[i].as_ref())
    }

    /// The reservation occupying `group` at `now`: the one holding its
    /// sockets, else the earliest whose window contains `now`.
    pub fn occupant(&self, group: GroupId, now: OffsetDateTime) -> Option<&Entry> {
        schedule::occupant(self.entries(), group, now)
    }

    /// What the data plane forwards for an entry: its effective destination
    /// and policy under the rules in force.
    pub fn plan(&self, e: &Entry) -> GroupPlan {
        GroupPlan::of(e, &self.rules)
    }

    /// The request rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The bound ports, with their live counters.
    pub fn bound(&self) -> &BoundPorts {
        &self.bound
    }

    /// A cluster node's role; `None` for a single relay.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// `None` until the state is loaded; then the open windows not bound yet
    /// (empty: ready). A standby node binds nothing and waits for nothing.
    pub fn waiting(&self, now: OffsetDateTime) -> Option<Vec<String>> {
        let standby = self.role == Some(Role::Standby);
        self.loaded.then(|| {
            self.entries()
                .filter(|_| !standby)
                .filter(|e| e.window.contains(now))
                .filter(|e| matches!(e.binding, Binding::Waiting | Binding::Binding))
                .map(|e| e.reservation.event_id.clone())
                .collect()
        })
    }

    /// When the schedule next has something to do (worked out once a copy).
    pub fn next_wakeup(&self) -> Option<OffsetDateTime> {
        *self
            .next_wakeup
            .get_or_init(|| schedule::next_wakeup(self.entries()))
    }
}

/// A reader's handle on the latest [`Published`] copy.
#[derive(Clone, Debug)]
pub struct Reader(pub(super) Arc<ArcSwap<Published>>);

impl Reader {
    /// The latest copy; it stays valid (and unchanged) while held.
    pub fn load(&self) -> Arc<Published> {
        self.0.load_full()
    }
}
