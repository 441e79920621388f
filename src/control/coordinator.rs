//! The control side's coordinator: the pure [`Schedule`], the durable
//! [`Store`] and the [`DataPlane`], kept consistent under one lock by the API's
//! mutations and the scheduler task. Every change is on disk before it is
//! applied in memory, and before the caller answers; after every change a new
//! [`Published`] copy is swapped in for readers, who never take the lock.

use super::published::{Published, Reader};
use crate::clock::Now;
use crate::config::Config;
use crate::dataplane::DataPlane;
use crate::dataplane::rule::GroupPlan;
use crate::reservation::rfc3339;
use crate::reservation::schedule::double_booked;
use crate::reservation::schedule::{Action, Binding, Entry, Refusal, Schedule};
use crate::reservation::{Change, Reservation, Rules};
use crate::store::{Loaded, Refused, Store, Stored};
use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Why a request was refused; maps onto the API's error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 400 `invalid_request`.
    Invalid(String),
    /// 404 `not_found`.
    NotFound(String),
    /// 409 `conflict`.
    Conflict(String),
    /// 503 `exhausted`.
    Exhausted(String),
    /// 500: the change could not be made durable and was not applied.
    Storage(String),
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Conflict(m) => Error::Conflict(m),
            Refusal::Exhausted(m) => Error::Exhausted(m),
            Refusal::AlreadyEnded(m) => Error::Invalid(m),
        }
    }
}

/// Whether a create made something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new reservation (201).
    New,
    /// The same reservation already existed (200).
    Existing,
}

/// Vets the reservations loaded from the journal (in file order) as the API
/// would have admitted them: each under `rules`
/// ([`Reservation::validate_on`]), and no two on one group whose events
/// overlap. Windows that overlap only through lead and trail are left to the
/// schedule, which holds the later one off until the earlier frees the group
/// (as after a reload). Neither `max_groups` nor a past end refuses a record:
/// a configuration may have lowered one, and the other just expires.
pub fn vet_loaded(rules: &Rules, loaded: &[Loaded]) -> Result<(), Refused> {
    for l in loaded {
        let Stored { group, reservation } = &l.stored;
        reservation
            .validate_on(*group, rules)
            .map_err(|why| Refused {
                line: l.line,
                why: format!("reservation {:?}: {why}", reservation.event_id),
            })?;
    }
    let held = loaded
        .iter()
        .map(|l| (l.stored.group, &l.stored.reservation));
    match double_booked(held) {
        None => Ok(()),
        Some((earlier, later)) => {
            let (a, b) = (&loaded[earlier], &loaded[later]);
            let event = |l: &Loaded| {
                let r = &l.stored.reservation;
                format!(
                    "{:?} (line {}) for {}–{}",
                    r.event_id,
                    l.line,
                    rfc3339(r.start),
                    rfc3339(r.end)
                )
            };
            Err(Refused {
                line: b.line,
                why: format!(
                    "reservation {} overlaps {} on the same group {}, which the API never admits",
                    event(b),
                    event(a),
                    b.stored.group
                ),
            })
        }
    }
}

/// Reservations, their journal and their sockets.
#[derive(Debug)]
pub struct Coordinator {
    schedule: Schedule,
    store: Store,
    dataplane: DataPlane,
    rules: Arc<Rules>,
    loaded: bool,
    published: Arc<ArcSwap<Published>>,
    /// The schedule version of the copy published last.
    published_version: u64,
}

impl Coordinator {
    /// Builds the coordinator from the stored reservations. Call
    /// [`Coordinator::start`] to bind the open windows.
    pub fn new(
        config: &Config,
        local_addresses: Vec<IpAddr>,
        store: Store,
        stored: Vec<Stored>,
        dataplane: DataPlane,
    ) -> Self {
        let mut schedule = Schedule::new(config.timing(), config.limits());
        for s in stored {
            schedule.insert(s.reservation, s.group);
        }
        let rules = Arc::new(config.rules(local_addresses));
        // Replaced at once by `publish` below; readers never see this one.
        let published = Arc::new(ArcSwap::from_pointee(Published {
            entries: Vec::new(),
            rules: rules.clone(),
            bound: dataplane.bound().clone(),
            loaded: false,
        }));
        let mut coordinator = Coordinator {
            schedule,
            store,
            dataplane,
            rules,
            loaded: false,
            published,
            published_version: 0,
        };
        coordinator.apply_schedule_config(config);
        coordinator.publish();
        coordinator
    }

    /// Binds every open window and marks the state as loaded (ready).
    pub fn start(&mut self, now: &Now) {
        info!(
            reservations = self.schedule.len(),
            state = %self.store.path().display(),
            "state loaded"
        );
        self.advance(now);
        self.dataplane.prune_kernel();
        let closed = self.dataplane.release_inherited();
        if !closed.is_empty() {
            info!(ports = ?closed, "upgrade: handed-over sockets of windows closed meanwhile are closed");
        }
        self.loaded = true;
        self.publish();
    }

    /// A handle for readers: the latest [`Published`] copy, without the lock.
    pub fn reader(&self) -> Reader {
        Reader(self.published.clone())
    }

    /// The copy published after the last change.
    pub fn published(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Swaps in a new copy for readers: a reference count per reservation and
    /// per bound group, nothing cloned deeper.
    fn publish(&mut self) {
        self.published_version = self.schedule.version();
        self.published.store(Arc::new(Published {
            entries: self.schedule.shared_entries(),
            rules: self.rules.clone(),
            bound: self.dataplane.bound().clone(),
            loaded: self.loaded,
        }));
    }

    /// Publishes when the schedule changed since the last copy (every change
    /// to the bound ports comes with one); a refused request publishes nothing.
    fn publish_if_changed(&mut self) {
        if self.published_version != self.schedule.version() {
            self.publish();
        }
    }

    /// Pushes the plans of the groups held (all, or only `event_id`'s) to the
    /// data plane; `relatch` forgets their latched appliances.
    fn push_plans(&mut self, only: Option<&str>, relatch: bool, now: &Now) {
        let plans: Vec<GroupPlan> = self
            .schedule
            .entries()
            .filter(|e| !matches!(e.binding, Binding::Waiting))
            .filter(|e| only.is_none_or(|id| id == e.reservation.event_id))
            .map(|e| GroupPlan::of(e, &self.rules))
            .collect();
        for plan in plans {
            self.dataplane.update(&plan, relatch, now);
        }
    }

    /// Creates a reservation, or confirms an identical one (idempotent retry).
    pub fn create(&mut self, request: Reservation, now: &Now) -> Result<Created, Error> {
        let result = self.create_inner(request, now);
        self.publish_if_changed();
        result
    }

    fn create_inner(&mut self, request: Reservation, now: &Now) -> Result<Created, Error> {
        self.advance(now);
        if let Some(e) = self.schedule.get(&request.event_id) {
            if e.reservation.matches(e.group, &request) {
                return Ok(Created::Existing);
            }
            return Err(Error::Conflict(format!(
                "event_id {} already exists with different content (group {}, {}–{}); DELETE it first, or PATCH its end or source",
                request.event_id,
                e.group,
                crate::reservation::rfc3339(e.reservation.start),
                crate::reservation::rfc3339(e.reservation.end),
            )));
        }
        request.validate(&self.rules).map_err(Error::Invalid)?;
        let group = self
            .schedule
            .admit(&request, request.group, None, now.wall)?;
        let stored = Stored {
            group,
            reservation: request,
        };
        self.store.put(&stored).map_err(|e| self.storage_error(e))?;
        let r = &stored.reservation;
        info!(event_id = %r.event_id, group = %group, layout = %r.layout,
            start = %crate::reservation::rfc3339(r.start), end = %crate::reservation::rfc3339(r.end),
            "reservation created");
        self.schedule.insert(stored.reservation, group);
        self.advance(now);
        self.maybe_compact();
        Ok(Created::New)
    }

    /// Changes `end` and/or `source`, re-checking conflicts.
    pub fn change(&mut self, event_id: &str, change: &Change, now: &Now) -> Result<(), Error> {
        let result = self.change_inner(event_id, change, now);
        self.publish_if_changed();
        result
    }

    fn change_inner(&mut self, event_id: &str, change: &Change, now: &Now) -> Result<(), Error> {
        self.advance(now);
        let entry = self.get(event_id)?;
        let group = entry.group;
        let updated = entry.reservation.changed(change);
        updated.validate(&self.rules).map_err(Error::Invalid)?;
        match self
            .schedule
            .admit(&updated, Some(group), Some(event_id), now.wall)
        {
            // Ending an event in the past frees its group now, like a delete.
            Ok(_) | Err(Refusal::AlreadyEnded(_)) => {}
            Err(refusal) => return Err(refusal.into()),
        }
        let stored = Stored {
            group,
            reservation: updated,
        };
        self.store.put(&stored).map_err(|e| self.storage_error(e))?;
        info!(event_id, end = %crate::reservation::rfc3339(stored.reservation.end),
            source = stored.reservation.source.map(tracing::field::display), "reservation changed");
        self.schedule.update(stored.reservation);
        // A new source (re-)latches the appliance; a new end moves the kernel's
        // window end.
        self.push_plans(Some(event_id), change.source.is_some(), now);
        self.advance(now);
        self.maybe_compact();
        Ok(())
    }

    /// Cancels a reservation now: its ports are freed before this returns.
    pub fn delete(&mut self, event_id: &str, now: &Now) -> Result<Entry, Error> {
        let result = self.delete_inner(event_id, now);
        self.publish_if_changed();
        result
    }

    fn delete_inner(&mut self, event_id: &str, now: &Now) -> Result<Entry, Error> {
        self.get(event_id)?;
        self.store
            .delete(event_id)
            .map_err(|e| self.storage_error(e))?;
        let (entry, free) = self
            .schedule
            .remove(event_id)
            .ok_or_else(|| Error::NotFound(event_id.to_string()))?;
        if let Some(action) = free {
            self.execute(action, now);
        }
        info!(event_id, group = %entry.group, "reservation deleted");
        self.maybe_compact();
        Ok(entry)
    }

    /// Advances the schedule to `now` and carries out its binds and frees;
    /// readers get a new copy only if something changed.
    pub fn tick(&mut self, now: &Now) {
        self.advance(now);
        self.publish_if_changed();
    }

    fn advance(&mut self, now: &Now) {
        for action in self.schedule.poll(now.wall) {
            self.execute(action, now);
        }
    }

    /// Applies a reloaded configuration's rules, timing and limits, and
    /// advances the schedule under them. Refused, changing nothing, when a
    /// reservation held now would not pass the new rules: the relay would not
    /// start with it either ([`vet_loaded`]).
    pub fn reconfigure(
        &mut self,
        config: &Config,
        local_addresses: Vec<IpAddr>,
        now: &Now,
    ) -> Result<(), String> {
        let rules = config.rules(local_addresses);
        for e in self.schedule.entries() {
            e.reservation.validate_on(e.group, &rules).map_err(|why| {
                format!(
                    "reservation {:?} on group {} would be refused under it: {why}",
                    e.reservation.event_id, e.group
                )
            })?;
        }
        self.rules = Arc::new(rules);
        self.apply_schedule_config(config);
        self.push_plans(None, false, now);
        self.advance(now);
        self.publish();
        Ok(())
    }

    /// The data plane, for an upgrade in place (pause, resume): the caller
    /// holds the lock, so no change runs meanwhile.
    pub fn data_plane(&mut self) -> &mut DataPlane {
        &mut self.dataplane
    }

    /// Frees every socket (shutdown); the reservations stay on disk.
    pub fn shutdown(&mut self) {
        self.dataplane.shutdown();
    }

    fn get(&self, event_id: &str) -> Result<&Entry, Error> {
        self.schedule
            .get(event_id)
            .ok_or_else(|| Error::NotFound(format!("no reservation with event_id {event_id:?}")))
    }

    fn execute(&mut self, action: Action, now: &Now) {
        match action {
            Action::Bind { event_id, group } => {
                let Some(entry) = self.schedule.get(&event_id) else {
                    return;
                };
                let retry = matches!(entry.binding, Binding::Degraded { .. });
                let plan = GroupPlan::of(entry, &self.rules);
                let failures = self.dataplane.bind(&plan, now);
                if failures.is_empty() {
                    info!(event_id, group = %group, sockets = self.dataplane.bound().bound_sockets(), "group bound");
                } else {
                    let ports: Vec<String> = failures
                        .iter()
                        .map(|f| format!("{}: {}", f.port, f.error))
                        .collect();
                    if retry {
                        debug!(event_id, group = %group, failures = ?ports, "group still degraded");
                    } else {
                        warn!(event_id, group = %group, failures = ?ports, "group degraded: some ports could not be bound; retrying");
                    }
                }
                self.schedule.bound(&event_id, failures, now.wall);
            }
            Action::Free { event_id, group } => {
                self.dataplane.free(group);
                info!(event_id, group = %group, "group freed");
            }
            Action::Expire { event_id } => {
                info!(
                    event_id,
                    "reservation ended without being bound (its window passed while the relay was down)"
                );
            }
        }
    }

    fn storage_error(&self, e: std::io::Error) -> Error {
        warn!(state = %self.store.path().display(), error = %e, "cannot write state");
        Error::Storage(format!(
            "cannot write the state file {}: {e}; nothing was changed — fix the disk or permissions and retry",
            self.store.path().display()
        ))
    }

    fn maybe_compact(&mut self) {
        if !self.store.wants_compaction(self.schedule.len()) {
            return;
        }
        let live: Vec<Stored> = self
            .schedule
            .entries()
            .map(|e| Stored {
                group: e.group,
                reservation: e.reservation.clone(),
            })
            .collect();
        if let Err(e) = self.store.compact(live.iter()) {
            warn!(state = %self.store.path().display(), error = %e, "cannot compact state; the journal keeps growing");
        }
    }

    /// Applies timing and limits, warning about windows that now overlap.
    fn apply_schedule_config(&mut self, config: &Config) {
        let pairs = self.schedule.reconfigure(config.timing(), config.limits());
        for (a, b) in pairs {
            warn!(first = %a, second = %b,
                "windows overlap on one group under the current lead/trail; the second waits until the first frees the group");
        }
    }
}
