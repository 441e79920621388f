//! The control side's coordinator: the pure [`Schedule`], the durable
//! [`Store`] and the [`DataPlane`], kept consistent under one lock by the API's
//! mutations and the scheduler task. Every change is on disk before it is
//! applied in memory, and before the caller answers; after every change a new
//! [`Published`] copy is swapped in for readers, who never take the lock.

use super::published::{Published, Reader};
use crate::clock::Now;
use crate::cluster::etcd::{self, Commit, Etcd, Op, Snapshot};
use crate::cluster::role::Role;
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
use std::sync::{Arc, OnceLock};
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
    /// 503 `unavailable`: the cluster's etcd did not confirm the change (it is
    /// unreachable, or lost its quorum). This node applied nothing; etcd may
    /// still commit a request it received, which every node then follows.
    Unavailable(String),
}

/// A change's failure: final, or to be checked again on fresh state.
#[derive(Debug)]
enum Retry {
    /// The answer.
    No(Error),
    /// Another node committed first.
    Stale,
}

impl From<Error> for Retry {
    fn from(e: Error) -> Self {
        Retry::No(e)
    }
}

/// How many times a change is checked again after another node committed
/// first, before the caller is told to retry.
const COMMIT_TRIES: usize = 8;

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

/// Where reservations are kept.
#[derive(Debug)]
enum Durable {
    /// One relay: the journal on its disk.
    Journal(Store),
    /// A cluster: etcd ([`crate::cluster`]).
    Cluster(ClusterView),
}

/// This node's view of the cluster's state.
#[derive(Debug)]
struct ClusterView {
    etcd: Etcd,
    /// The runtime the etcd client runs on; the coordinator is called from
    /// blocking threads, which wait on it.
    runtime: tokio::runtime::Handle,
    /// The guard revision the schedule reflects (`cluster::etcd`).
    guard: i64,
    role: Role,
}

/// Reservations, where they are kept, and their sockets.
#[derive(Debug)]
pub struct Coordinator {
    schedule: Schedule,
    durable: Durable,
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
        Self::assemble(
            config,
            local_addresses,
            schedule,
            Durable::Journal(store),
            dataplane,
        )
    }

    /// A cluster node's coordinator: no reservation until [`Coordinator::reload`]
    /// reads etcd, and standby (nothing bound) until elected.
    pub fn clustered(
        config: &Config,
        local_addresses: Vec<IpAddr>,
        etcd: Etcd,
        runtime: tokio::runtime::Handle,
        dataplane: DataPlane,
    ) -> Self {
        let shared = ClusterView {
            etcd,
            runtime,
            guard: 0,
            role: Role::Standby,
        };
        let schedule = Schedule::new(config.timing(), config.limits());
        Self::assemble(
            config,
            local_addresses,
            schedule,
            Durable::Cluster(shared),
            dataplane,
        )
    }

    fn assemble(
        config: &Config,
        local_addresses: Vec<IpAddr>,
        schedule: Schedule,
        durable: Durable,
        dataplane: DataPlane,
    ) -> Self {
        let rules = Arc::new(config.rules(local_addresses));
        // Replaced at once by `publish` below; readers never see this one.
        let published = Arc::new(ArcSwap::from_pointee(Published {
            entries: Vec::new(),
            rules: rules.clone(),
            bound: dataplane.bound().clone(),
            loaded: false,
            role: None,
            next_wakeup: OnceLock::new(),
        }));
        let mut coordinator = Coordinator {
            schedule,
            durable,
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

    /// This node's role in a cluster; `None` for a single relay.
    pub fn role(&self) -> Option<Role> {
        match &self.durable {
            Durable::Journal(_) => None,
            Durable::Cluster(shared) => Some(shared.role),
        }
    }

    /// Binds and frees only as the active node (a single relay always is).
    fn forwards(&self) -> bool {
        self.role().is_none_or(|r| r == Role::Active)
    }

    /// Becomes the active node (binds every open window) or steps down (frees
    /// every port at once; the reservations stay).
    pub fn set_role(&mut self, role: Role, now: &Now) {
        let Durable::Cluster(shared) = &mut self.durable else {
            return;
        };
        if shared.role == role {
            return;
        }
        shared.role = role;
        match role {
            Role::Active => {
                info!(
                    reservations = self.schedule.len(),
                    "cluster: this node is active: binding the open windows"
                );
                self.advance(now);
            }
            Role::Standby => {
                let groups = self.schedule.release_all();
                for group in &groups {
                    self.dataplane.free(*group);
                }
                info!(
                    groups = groups.len(),
                    "cluster: this node is standby: every port freed"
                );
            }
        }
        self.publish();
    }

    /// Fences the data plane: forward nothing past `deadline` unless renewed
    /// (the active node's lease; `None`: no fence). The data plane enforces it
    /// itself, the kernel's even with this process gone, so a renewal held up
    /// behind this lock errs on the side of stopping early.
    pub fn fence(&mut self, deadline: Option<std::time::Instant>, now: &Now) {
        if let Err(e) = self.dataplane.fence(deadline, now) {
            warn!(error = %e, "cluster: the kernel's fence could not be moved; the fast path stops at the previous deadline");
        }
    }

    /// Re-reads the cluster's state from etcd and takes it as this node's
    /// (at start, after a lost watch, and when another node committed first).
    pub fn reload(&mut self, now: &Now) -> Result<(), Error> {
        let Durable::Cluster(shared) = &self.durable else {
            return Ok(());
        };
        let snapshot = shared
            .runtime
            .block_on(shared.etcd.load())
            .map_err(|e| Error::Unavailable(format!(
                "cannot read the cluster's state from etcd ({e}); nothing was changed — retry when etcd answers (docs/cluster.md)"
            )))?;
        self.take_snapshot(snapshot, now);
        Ok(())
    }

    /// Takes `snapshot` as the cluster's state: reservations no longer there
    /// are removed (their ports freed), new and changed ones applied.
    pub fn take_snapshot(&mut self, snapshot: Snapshot, now: &Now) {
        let Durable::Cluster(shared) = &mut self.durable else {
            return;
        };
        shared.guard = snapshot.guard;
        let wanted: std::collections::HashMap<&str, &Stored> = snapshot
            .reservations
            .iter()
            .map(|s| (s.reservation.event_id.as_str(), s))
            .collect();
        let gone: Vec<String> = self
            .schedule
            .entries()
            .map(|e| e.reservation.event_id.clone())
            .filter(|id| !wanted.contains_key(id.as_str()))
            .collect();
        for id in gone {
            self.forget(&id, now);
        }
        for stored in snapshot.reservations {
            self.learn(stored, now);
        }
        self.loaded = true;
        self.advance(now);
        self.publish_if_changed();
        if !self.published.load().loaded {
            self.publish();
        }
    }

    /// Applies changes committed in etcd, as the watch reports them; those
    /// this node already reflects (its own, or read in a reload) are skipped.
    pub fn apply(&mut self, events: Vec<etcd::Event>, now: &Now) {
        let Durable::Cluster(shared) = &self.durable else {
            return;
        };
        let mut guard = shared.guard;
        for event in events {
            match event {
                etcd::Event::Put { revision, stored } if revision > guard => {
                    guard = revision;
                    self.learn(stored, now);
                }
                etcd::Event::Delete { revision, event_id } if revision > guard => {
                    guard = revision;
                    self.forget(&event_id, now);
                }
                _ => {}
            }
        }
        if let Durable::Cluster(shared) = &mut self.durable {
            shared.guard = guard;
        }
        self.advance(now);
        self.publish_if_changed();
    }

    /// Takes a reservation another node committed (new, or changed).
    fn learn(&mut self, stored: Stored, now: &Now) {
        let id = stored.reservation.event_id.clone();
        match self.schedule.get(&id) {
            Some(e) if e.group == stored.group && e.reservation == stored.reservation => {}
            Some(e) if e.group == stored.group => {
                let relatch = e.reservation.source != stored.reservation.source;
                self.schedule.update(stored.reservation);
                self.push_plans(Some(&id), relatch, now);
            }
            Some(_) => {
                // Moved to another group: only a delete and create do that.
                self.forget(&id, now);
                self.schedule.insert(stored.reservation, stored.group);
            }
            None => {
                info!(event_id = %id, group = %stored.group, "reservation created on another node");
                self.schedule.insert(stored.reservation, stored.group);
            }
        }
    }

    /// Drops a reservation another node deleted (or that ended), freeing its ports.
    fn forget(&mut self, event_id: &str, now: &Now) {
        if let Some((_, Some(free))) = self.schedule.remove(event_id) {
            self.execute(free, now);
        }
    }

    /// Binds every open window and marks the state as loaded (ready).
    pub fn start(&mut self, now: &Now) {
        info!(
            reservations = self.schedule.len(),
            state = %self.durable_name(),
            "state loaded"
        );
        if self.role().is_none() {
            // A single relay forwards whatever a cluster node left pinned.
            self.fence(None, now);
        }
        self.advance(now);
        self.dataplane.prune_kernel();
        let closed = self.dataplane.release_inherited();
        if !closed.is_empty() {
            info!(ports = ?closed, "upgrade: handed-over sockets of windows closed meanwhile are closed");
        }
        // A cluster node is loaded once it has read etcd (`take_snapshot`).
        self.loaded = matches!(self.durable, Durable::Journal(_));
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
            role: self.role(),
            next_wakeup: OnceLock::new(),
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
        let result = self.retrying(now, |c| c.create_inner(request.clone(), now));
        self.publish_if_changed();
        result
    }

    /// Runs a change; when another node committed first, re-reads the
    /// cluster's state and runs it again, so its checks see everything
    /// committed (a journal never asks for this).
    fn retrying<T>(
        &mut self,
        now: &Now,
        mut change: impl FnMut(&mut Self) -> Result<T, Retry>,
    ) -> Result<T, Error> {
        for _ in 0..COMMIT_TRIES {
            match change(self) {
                Ok(v) => return Ok(v),
                Err(Retry::No(e)) => return Err(e),
                Err(Retry::Stale) => self.reload(now)?,
            }
        }
        Err(Error::Unavailable(
            "other relays changed reservations faster than this one could check its change; nothing was changed — retry".into(),
        ))
    }

    fn create_inner(&mut self, request: Reservation, now: &Now) -> Result<Created, Retry> {
        self.advance(now);
        if let Some(e) = self.schedule.get(&request.event_id) {
            if e.reservation.matches(e.group, &request) {
                return Ok(Created::Existing);
            }
            return Err(Retry::No(Error::Conflict(format!(
                "event_id {} already exists with different content (group {}, {}–{}); DELETE it first, or PATCH its end or source",
                request.event_id,
                e.group,
                crate::reservation::rfc3339(e.reservation.start),
                crate::reservation::rfc3339(e.reservation.end),
            ))));
        }
        request
            .validate(&self.rules)
            .map_err(|e| Retry::No(Error::Invalid(e)))?;
        let group = self
            .schedule
            .admit(&request, request.group, None, now.wall)
            .map_err(|r| Retry::No(r.into()))?;
        let stored = Stored {
            group,
            reservation: request,
        };
        self.persist(Op::Put(&stored))?;
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
        let result = self.retrying(now, |c| c.change_inner(event_id, change, now));
        self.publish_if_changed();
        result
    }

    fn change_inner(&mut self, event_id: &str, change: &Change, now: &Now) -> Result<(), Retry> {
        self.advance(now);
        let entry = self.get(event_id)?;
        let group = entry.group;
        let updated = entry.reservation.changed(change);
        updated
            .validate(&self.rules)
            .map_err(|e| Retry::No(Error::Invalid(e)))?;
        match self
            .schedule
            .admit(&updated, Some(group), Some(event_id), now.wall)
        {
            // Ending an event in the past frees its group now, like a delete.
            Ok(_) | Err(Refusal::AlreadyEnded(_)) => {}
            Err(refusal) => return Err(Retry::No(refusal.into())),
        }
        let stored = Stored {
            group,
            reservation: updated,
        };
        self.persist(Op::Put(&stored))?;
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
        let result = self.retrying(now, |c| c.delete_inner(event_id, now));
        self.publish_if_changed();
        result
    }

    fn delete_inner(&mut self, event_id: &str, now: &Now) -> Result<Entry, Retry> {
        self.get(event_id)?;
        self.persist(Op::Delete(event_id))?;
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
        if !self.forwards() {
            // A standby node keeps the schedule, not the ports.
            self.schedule.expire(now.wall);
            return;
        }
        let mut ended = Vec::new();
        for action in self.schedule.poll(now.wall) {
            if let Action::Free { event_id, .. } | Action::Expire { event_id } = &action {
                ended.push(event_id.clone());
            }
            self.execute(action, now);
        }
        self.tidy(&ended);
    }

    /// The active node deletes ended reservations from etcd, so the shared
    /// state does not grow; every node has already dropped them from its own
    /// schedule. Best effort: when another node wrote first, the reservation
    /// stays in etcd until a node that reads it again sees it ended.
    fn tidy(&mut self, ended: &[String]) {
        if !matches!(self.durable, Durable::Cluster(_)) {
            return;
        }
        for id in ended {
            if self.persist(Op::Delete(id)).is_err() {
                debug!(event_id = %id, "cluster: an ended reservation stays in etcd for now");
            }
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

    /// Makes a change durable before it is applied: on the journal's disk, or
    /// committed by etcd if nobody changed anything since this node last read.
    fn persist(&mut self, op: Op<'_>) -> Result<(), Retry> {
        match &mut self.durable {
            Durable::Journal(store) => {
                let written = match op {
                    Op::Put(stored) => store.put(stored),
                    Op::Delete(event_id) => store.delete(event_id),
                };
                written.map_err(|e| {
                    warn!(state = %store.path().display(), error = %e, "cannot write state");
                    Retry::No(Error::Storage(format!(
                        "cannot write the state file {}: {e}; nothing was changed — fix the disk or permissions and retry",
                        store.path().display()
                    )))
                })
            }
            Durable::Cluster(shared) => {
                let committed = shared
                    .runtime
                    .block_on(shared.etcd.commit(op, shared.guard))
                    .map_err(|e| {
                        warn!(error = %e, "cannot commit to etcd");
                        // A request etcd never answered may still commit
                        // once it does: the outcome is unknown, not refused.
                        Retry::No(Error::Unavailable(format!(
                            "the cluster's etcd did not confirm the change ({e}); it may not have been made — read the reservation back once etcd answers, and retry (the same create again is idempotent; docs/cluster.md)"
                        )))
                    })?;
                match committed {
                    Commit::Done(revision) => {
                        shared.guard = revision;
                        Ok(())
                    }
                    Commit::Stale => Err(Retry::Stale),
                }
            }
        }
    }

    /// What keeps the reservations, for the log.
    fn durable_name(&self) -> String {
        match &self.durable {
            Durable::Journal(store) => store.path().display().to_string(),
            Durable::Cluster(_) => "etcd".into(),
        }
    }

    fn maybe_compact(&mut self) {
        let Durable::Journal(store) = &mut self.durable else {
            return;
        };
        if !store.wants_compaction(self.schedule.len()) {
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
        if let Err(e) = store.compact(live.iter()) {
            warn!(state = %store.path().display(), error = %e, "cannot compact state; the journal keeps growing");
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
