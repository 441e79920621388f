//! The data plane: bound group sockets, forwarding, per-stream measurement
//! (docs/forwarding.md).
//!
//! - [`rule`]: the forwarding table's rows (plain data);
//! - [`forwarder`]: one bound socket's forwarding decision and accounting
//!   (sans-IO);
//! - [`counters`]: what readers see, written by one worker each;
//! - `worker`: the I/O — batched `recvmmsg`/`sendmmsg` ([`crate::udp`]) on
//!   epoll threads;
//! - [`ebpf`]: the kernel fast path, a second backend mirroring the table;
//! - [`fence`]: the deadline past which neither backend forwards (a cluster
//!   node's lease, docs/cluster.md).
//!
//! The control side ([`DataPlane`]) binds a group's used ports when its window
//! opens, hands each socket to a worker, and frees them (synchronously) when it
//! closes. Binding is idempotent: it binds the ports not yet bound and reports
//! the ones that failed, so a degraded group is completed by binding it again.
//! With the fast path on, every bound port's rule is mirrored into the
//! kernel, and readers see the sum of both backends' counters through
//! [`BoundPorts`], a copy handed out after every change. A port the kernel
//! forwards keeps no socket of its own (on an IPv4 address): binding it
//! checks that it is free, then what the kernel leaves to userspace is
//! steered to the workers' sockets ([`crate::udp::steer`]), as thousands of
//! idle bound sockets lengthen every packet's tail on the machine
//! (BENCHMARKS.md, stop 26).

pub mod counters;
pub mod ebpf;
pub mod ephemeral;
pub mod fence;
pub mod forwarder;
pub mod learning;
pub mod rule;
mod worker;

pub use worker::Paused;

use crate::clock::Now;
use crate::group::GroupId;
use crate::reservation::schedule::PortFailure;
use crate::stats::watch::Sample;
use counters::{DropReason, PortCounters, PortSnapshot};
use ebpf::{FastPath, KernelPort};
use forwarder::{Forwarder, PortState};
use rule::{GroupPlan, PortRule};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, UdpSocket};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::{Command, PortSockets, WorkerHandle};

/// File descriptors kept free for what is neither a group socket, a worker's
/// nor the control plane's connections: stdio, the journal and its lock, the
/// runtime, the listener, the fast path's maps, and what comes and goes
/// (compaction, scrapes, route probes).
const SPARE_FILES: u64 = 64;
/// Each worker holds an epoll instance and its waker.
const FILES_PER_WORKER: u64 = 2;

/// Settings from `[data]` and `[stream]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Address the group ports are bound on.
    pub bind_address: IpAddr,
    /// `SO_RCVBUF`.
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF`.
    pub send_buffer_bytes: usize,
    /// Larger datagrams are dropped.
    pub max_packet_size: usize,
    /// Worker threads.
    pub workers: usize,
    /// Audio RTP clock (Hz).
    pub audio_clock_rate: u32,
    /// Video and display RTP clock (Hz).
    pub video_clock_rate: u32,
    /// The UDP port of the fast path's steering sockets (docs/forwarding.md,
    /// "Ports without sockets"): the control plane's port, so that they take
    /// no port another service may expect; 0, or taken: one the kernel picks.
    pub steering_port: u16,
}

/// A bound port as readers see it.
#[derive(Clone, Debug)]
pub struct BoundPort {
    /// Its rule.
    pub rule: PortRule,
    /// Its userspace counters (live).
    pub counters: Arc<PortCounters>,
    /// Its kernel rule and stream, when the fast path forwards it.
    pub kernel: Option<KernelPort>,
    /// The window's close the kernel enforces.
    closes_at: time::OffsetDateTime,
    worker: usize,
}

impl BoundPort {
    /// What the stream watch needs of the port, by both backends: as
    /// [`Self::snapshot`] would give it, from a few fields instead of every
    /// figure (the watch reads every bound port each second).
    pub fn sample(&self, epoch: Instant, now: &Now) -> Sample {
        let media = self.rule.plane == crate::group::Plane::Rtp;
        let c = &self.counters;
        let mut dropped = DropReason::ALL.map(|r| c.dropped(r));
        let mut silent_for = c.last_packet_age(epoch, now.mono);
        let mut ssrc = if media { c.media.ssrc() } else { None };
        if let Some(k) = self.kernel.as_ref().and_then(KernelPort::glance) {
            dropped[DropReason::SendError as usize] += k.send_errors;
            dropped[DropReason::UnknownSource as usize] += k.unknown_source;
            silent_for = youngest(silent_for, k.last_ns, now);
            if media && k.ssrc.is_some() {
                ssrc = k.ssrc;
            }
        }
        Sample {
            port: self.rule.port,
            media,
            silent_for: silent_for.map(|s| Duration::from_secs_f64(s.max(0.0))),
            ssrc,
            dropped,
        }
    }

    /// Everything measured on the port, by both backends: packets, bytes and
    /// drops add up; the media figures are the kernel's once it has the
    /// stream (it then sees every accepted packet).
    pub fn snapshot(&self, clock_rate: u32, epoch: Instant, now: &Now) -> PortSnapshot {
        let media = self.rule.plane == crate::group::Plane::Rtp;
        let mut s = self.counters.snapshot(media, clock_rate, epoch, now.mono);
        let Some((kernel, k)) = self.kernel.as_ref().and_then(|p| Some((p, p.stream()?))) else {
            return s;
        };
        s.packets_to_wowza += k.to_wowza_packets();
        s.bytes_to_wowza += k.to_wowza_bytes();
        s.packets_to_appliance += k.to_appliance_packets;
        s.bytes_to_appliance += k.to_appliance_bytes;
        s.dropped.send_error += k.send_errors;
        s.dropped.unknown_source += k.unknown_source;
        if let Some(a) = k.latched(&kernel.rule) {
            s.appliance = Some(a);
        }
        s.seconds_since_last_packet = youngest(s.seconds_since_last_packet, k.last_ns, now);
        if let (Some(m), true) = (s.media.as_mut(), k.has_source()) {
            *m = k.counts().snapshot(clock_rate);
        }
        if let Some(c) = s.control.as_mut() {
            // Reports add up; the destination's latest is the kernel's once
            // it has one (it then sees every valid compound).
            c.sender_reports += k.sender_reports;
            c.receiver_reports += k.receiver_reports;
            if let Some((fraction, lost, jitter)) = k.wowza_report() {
                let report = (f64::from(fraction) / 256.0, i64::from(lost), jitter);
                c.set_wowza_report(report, clock_rate);
            }
        }
        s
    }
}

/// Seconds since a port's last packet by either backend: userspace's age,
/// or the kernel's (`last_ns`, CLOCK_BOOTTIME; 0: none), the younger.
fn youngest(user: Option<f64>, kernel_last_ns: u64, now: &Now) -> Option<f64> {
    if kernel_last_ns == 0 {
        return user;
    }
    let age = now.boot_age(kernel_last_ns);
    Some(user.map_or(age, |user| user.min(age)))
}

/// The bound ports as readers see them: a copy the data plane hands out after
/// every change (a reference count per group), read without any lock while
/// the next change is made. The counters inside are live.
#[derive(Clone, Debug)]
pub struct BoundPorts {
    groups: BTreeMap<GroupId, Arc<[BoundPort]>>,
    epoch: Instant,
    audio_clock_rate: u32,
    video_clock_rate: u32,
    max_packet_size: usize,
}

impl BoundPorts {
    /// Every bound group and its ports.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &[BoundPort])> {
        self.groups.iter().map(|(g, p)| (*g, &**p))
    }

    /// The bound ports of `group`.
    pub fn ports(&self, group: GroupId) -> &[BoundPort] {
        self.groups.get(&group).map_or(&[], |p| p)
    }

    /// A port's figures now, by both backends.
    pub fn snapshot(&self, port: &BoundPort, now: &Now) -> PortSnapshot {
        port.snapshot(self.clock_rate(port.rule.role), self.epoch, now)
    }

    /// The bound port `port`, if it is one.
    pub fn port(&self, port: u16) -> Option<&BoundPort> {
        let group = GroupId::locate(port)?.group;
        self.ports(group).iter().find(|p| p.rule.port == port)
    }

    /// Appends to `out` one [`Sample`] per bound port of the groups in
    /// `groups`, for the stream watcher: it reads a share at a time, into one
    /// buffer it keeps.
    pub fn samples(
        &self,
        now: &Now,
        groups: (Bound<GroupId>, Bound<GroupId>),
        out: &mut Vec<Sample>,
    ) {
        for ports in self.groups.range(groups).map(|(_, ports)| ports) {
            out.extend(ports.iter().map(|p| p.sample(self.epoch, now)));
        }
    }

    /// Larger datagrams are dropped.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// The media clock of a stream role (Hz).
    pub fn clock_rate(&self, role: crate::group::Role) -> u32 {
        if role.is_audio() {
            self.audio_clock_rate
        } else {
            self.video_clock_rate
        }
    }

    /// Number of bound sockets.
    pub fn bound_sockets(&self) -> usize {
        self.groups.values().map(|p| p.len()).sum()
    }
}

/// The bound groups and the workers forwarding them.
pub struct DataPlane {
    options: Options,
    workers: Vec<WorkerHandle>,
    next_worker: usize,
    bound: BoundPorts,
    open_files_limit: u64,
    /// Of those, the ones group sockets never take.
    reserved_files: u64,
    fast: Option<FastPath>,
    /// On the fast path: the reader of the kernel's parameter-set copies.
    learning: Option<learning::Learning>,
    /// Sockets a previous process handed over, by port, with what they had
    /// measured: a bind takes its port's instead of binding.
    inherited: HashMap<u16, (UdpSocket, PortState)>,
    /// The workers' side of the fence (the kernel's is in its map).
    fence: Arc<fence::Fence>,
    /// How ports are bound.
    sockets: PortSockets,
    /// On the fast path (IPv4): the kernel's ports' datagrams for userspace
    /// go to the workers' steering sockets, one per worker.
    steering: Option<crate::udp::steer::Steering>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("workers", &self.workers.len())
            .field("groups", &self.bound.groups.len())
            .finish()
    }
}

impl DataPlane {
    /// Starts the workers; `open_files_limit` is the process's limit in force,
    /// `fast` the kernel fast path when it runs, `now` the time origin of
    /// published arrival times. A fence the fast path's pins hold (set by an
    /// earlier process of this relay) holds for the workers too.
    pub fn start(
        options: Options,
        open_files_limit: u64,
        fast: Option<FastPath>,
        now: &Now,
    ) -> std::io::Result<Self> {
        let slot = options.max_packet_size + 1;
        let fence = Arc::new(fence::Fence::new(now.mono));
        if let Some(boot_ns) = fast.as_ref().and_then(FastPath::fence_deadline) {
            // Passed, it is now; ahead, as far ahead on the monotonic clock.
            let ahead = Duration::from_nanos(boot_ns.saturating_sub(now.boot_ns));
            fence.set(Some(now.mono.checked_add(ahead).unwrap_or(now.mono)));
        }
        let sockets = PortSockets {
            address: options.bind_address,
            recv_buffer: options.recv_buffer_bytes,
            send_buffer: options.send_buffer_bytes,
        };
        let workers: Vec<_> = (0..options.workers.max(1))
            .map(|i| WorkerHandle::spawn(i, slot, fence.clone(), sockets))
            .collect::<std::io::Result<_>>()?;
        let steering = match (&fast, options.bind_address) {
            (Some(_), IpAddr::V4(address)) => steer(address, &options, &workers),
            _ => None,
        };
        let reserved_files = SPARE_FILES + FILES_PER_WORKER * workers.len() as u64;
        let mut fast = fast;
        let learning = match fast.as_mut().and_then(FastPath::take_learn_ring) {
            Some(ring) => Some(learning::Learning::start(ring)?),
            None => None,
        };
        let bound = BoundPorts {
            groups: BTreeMap::new(),
            epoch: now.mono,
            audio_clock_rate: options.audio_clock_rate,
            video_clock_rate: options.video_clock_rate,
            max_packet_size: options.max_packet_size,
        };
        Ok(DataPlane {
            options,
            workers,
            next_worker: 0,
            bound,
            open_files_limit,
            reserved_files,
            fast,
            learning,
            inherited: HashMap::new(),
            fence,
            sockets,
            steering,
        })
    }

    /// Fences the data plane (docs/cluster.md, "Fencing"): from `deadline`
    /// on, neither backend forwards anything — the kernel drops every packet
    /// of a relay port, even with this process gone (kill -9), and the workers
    /// drop what they read. `None` lifts the fence. `now` relates `deadline`
    /// to the kernel's clock. An `Err` says the kernel's fence could not be
    /// written (the workers' is set regardless): the kernel keeps its previous
    /// one, and cannot be counted on to stop by `deadline`.
    pub fn fence(&mut self, deadline: Option<Instant>, now: &Now) -> Result<(), String> {
        self.fence.set(deadline);
        match self.fast.as_mut() {
            Some(fast) => fast.fence(deadline.map(|d| now.boot_at(d))),
            None => Ok(()),
        }
    }

    /// The fence's deadline in force; `None`: no fence.
    pub fn fence_deadline(&self) -> Option<Instant> {
        self.fence.deadline()
    }

    /// Packets the fence dropped: the workers' since this process started,
    /// and the kernel's on the bound ports since each was bound.
    pub fn fenced_packets(&self) -> u64 {
        let kernel: u64 = self
            .bound
            .groups()
            .flat_map(|(_, ports)| ports)
            .filter_map(|p| p.kernel.as_ref()?.stream())
            .map(|s| s.fenced)
            .sum();
        self.fence.dropped() + kernel
    }

    /// Takes sockets a previous process bound (an upgrade in place), each
    /// with its port's state: binding a group takes them instead of binding
    /// afresh, and its ports' counters go on. The sockets must be bound on
    /// `bind_address` at their port (the caller checked).
    pub fn inherit(&mut self, sockets: impl IntoIterator<Item = (u16, UdpSocket, PortState)>) {
        for (port, socket, state) in sockets {
            self.inherited.insert(port, (socket, state));
        }
    }

    /// Closes the inherited sockets no open window took (their window closed
    /// meanwhile); returns their ports.
    pub fn release_inherited(&mut self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.inherited.drain().map(|(port, _)| port).collect();
        ports.sort_unstable();
        ports
    }

    /// Stops every worker reading, for an upgrade in place: packets wait in
    /// the sockets' buffers, nothing changes the ports' state any more. Every
    /// bound port's socket and state, from each worker; the sockets stay open.
    pub fn pause(&mut self) -> Vec<Paused> {
        // The steered ports get their sockets back and the steering goes, so
        // that what the kernel leaves to userspace from now on waits in
        // sockets the next process inherits. A failed upgrade goes on so,
        // each port with its socket, until the next start.
        if let Some(steering) = self.steering.take() {
            for rx in self.ask_workers(Command::Unsteer) {
                let _ = rx.recv_timeout(Duration::from_secs(5));
            }
            drop(steering);
        }
        self.ask_workers(Command::Pause)
            .into_iter()
            .flat_map(|rx| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default())
            .collect()
    }

    /// Sends every worker the command `ask` makes with a reply channel; the
    /// replies' receivers, by worker.
    fn ask_workers<T>(
        &self,
        ask: impl Fn(std::sync::mpsc::Sender<T>) -> Command,
    ) -> Vec<std::sync::mpsc::Receiver<T>> {
        self.workers
            .iter()
            .map(|w| {
                let (tx, rx) = std::sync::mpsc::channel();
                w.send(ask(tx));
                rx
            })
            .collect()
    }

    /// Every worker reads again (the upgrade did not happen).
    pub fn resume(&mut self) {
        for w in &self.workers {
            w.send(Command::Resume);
        }
    }

    /// Sets `n` more file descriptors aside (the control plane's connections):
    /// group sockets never take them, so the API, however busy, never makes a
    /// bind fail with EMFILE, nor the other way round.
    pub fn reserve_files(&mut self, n: u64) {
        self.reserved_files += n;
    }

    /// How many group sockets the open-files limit leaves room for.
    pub fn socket_budget(&self) -> u64 {
        self.open_files_limit.saturating_sub(self.reserved_files)
    }

    /// The bound ports; clone it for a reader's copy.
    pub fn bound(&self) -> &BoundPorts {
        &self.bound
    }

    /// Binds every port of `plan` not bound yet and starts forwarding on it.
    /// Returns the ports that could not be bound, with the reason.
    pub fn bind(&mut self, plan: &GroupPlan, now: &Now) -> Vec<PortFailure> {
        let mut failures = Vec::new();
        let mut ports: Vec<BoundPort> = self.bound.ports(plan.group).to_vec();
        // The ports the kernel may hand out by itself, read at each bind: a
        // port among them keeps its socket (`None`: unknown, every port does).
        let ephemeral = self.steering.as_ref().and_then(|_| {
            ephemeral::EphemeralPorts::read()
                .inspect_err(|why| tracing::warn!(%why, "the group's ports keep a socket each"))
                .ok()
        });
        // Sockets of the other groups: counted once, not per rule.
        let others = self.bound.bound_sockets() - ports.len();
        for rule in plan.rules(self.options.max_packet_size) {
            if ports.iter().any(|p| p.rule.port == rule.port) {
                continue;
            }
            let in_use = (others + ports.len()) as u64;
            if in_use >= self.socket_budget() {
                failures.push(PortFailure {
                    port: rule.port,
                    error: format!(
                        "the open-files limit (RLIMIT_NOFILE = {}, {} of them kept for the workers, the API's connections and other files) is reached with {in_use} bound sockets; raise it (ulimit -n, or LimitNOFILE= in the service unit): each group needs up to 6 sockets",
                        self.open_files_limit, self.reserved_files
                    ),
                });
                continue;
            }
            let opened = match self.inherited.remove(&rule.port) {
                Some((socket, state)) => Ok((Some(socket), Some(state))),
                None => match self.sockets.open(rule.port) {
                    Ok(s) => Ok((Some(s), None)),
                    // The port a steering socket happened to be bound on: the
                    // relay holds it already, and steers it.
                    Err(_) if self.steering.as_ref().is_some_and(|s| s.holds(rule.port)) => {
                        Ok((None, None))
                    }
                    Err(e) => Err(e),
                },
            };
            match opened {
                Ok((socket, state)) => {
                    let port = self.start_port(plan, rule, socket, state, ephemeral.as_ref(), now);
                    ports.push(port);
                }
                Err(e) => failures.push(PortFailure {
                    port: rule.port,
                    error: e.to_string(),
                }),
            }
        }
        self.set_group(plan.group, ports);
        failures
    }

    /// Replaces a group's ports in the readers' view (none: the group is gone).
    fn set_group(&mut self, group: GroupId, ports: Vec<BoundPort>) {
        if ports.is_empty() {
            self.bound.groups.remove(&group);
        } else {
            self.bound.groups.insert(group, ports.into());
        }
    }

    fn start_port(
        &mut self,
        plan: &GroupPlan,
        rule: PortRule,
        socket: Option<UdpSocket>,
        inherited: Option<PortState>,
        ephemeral: Option<&ephemeral::EphemeralPorts>,
        now: &Now,
    ) -> BoundPort {
        let clock_rate = self.bound.clock_rate(rule.role);
        let counters = Arc::new(PortCounters::default());
        let mut port = Forwarder::new(rule, clock_rate, counters.clone(), self.bound.epoch);
        if let Some(state) = inherited {
            port.restore(state, now.mono);
        }
        // The learner first: the install makes the kernel copy the port's
        // parameter sets again, and a copy with no learner to take it would
        // be lost until they change.
        if let Some(l) = &self.learning
            && rule.plane == crate::group::Plane::Rtp
            && !rule.role.is_audio()
        {
            l.add(rule.port, counters.clone());
        }
        let kernel = self.install(plan, &rule, false, now);
        let worker = self.next_worker;
        self.next_worker = (self.next_worker + 1) % self.workers.len();
        // Steered before the worker closes the port's own socket; a port
        // without one is steered even if the kernel does not forward it. A
        // port the kernel may give another socket keeps its own.
        let unassignable = ephemeral.is_some_and(|e| !e.may_assign(rule.port));
        let steered = match self.steering.as_mut() {
            Some(steering) if kernel.is_some() && unassignable || socket.is_none() => {
                match steering.steer(rule.port, worker) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(port = rule.port, error = %e, "the port keeps its own socket");
                        false
                    }
                }
            }
            _ => false,
        };
        self.workers[worker].send(Command::Add(
            socket,
            Box::new(port),
            kernel.clone(),
            steered,
        ));
        BoundPort {
            rule,
            counters,
            kernel,
            closes_at: plan.closes_at,
            worker,
        }
    }

    /// Mirrors a port's rule into the kernel; `None` keeps it in userspace.
    fn install(
        &mut self,
        plan: &GroupPlan,
        rule: &PortRule,
        relatch: bool,
        now: &Now,
    ) -> Option<KernelPort> {
        let clock_rate = self.bound.clock_rate(rule.role);
        let fast = self.fast.as_mut()?;
        let window_end_ns = now.boot_deadline(plan.closes_at);
        match fast.install(rule, plan.owner, window_end_ns, clock_rate, relatch) {
            Ok(k) => Some(KernelPort {
                port: rule.port,
                rule: k,
                streams: fast.streams().clone(),
            }),
            Err(e) => {
                tracing::warn!(port = rule.port, error = %e, "port forwarded in userspace only");
                None
            }
        }
    }

    /// Applies a changed plan (source, policy or destination) to a bound group;
    /// `relatch` forgets the latched appliances.
    pub fn update(&mut self, plan: &GroupPlan, relatch: bool, now: &Now) {
        let mut ports = self.bound.ports(plan.group).to_vec();
        if ports.is_empty() {
            return;
        }
        for rule in plan.rules(self.options.max_packet_size) {
            let Some(i) = ports.iter().position(|p| p.rule.port == rule.port) else {
                continue;
            };
            let p = &ports[i];
            if p.rule == rule && !relatch && p.closes_at == plan.closes_at {
                continue;
            }
            let kernel = self.install(plan, &rule, relatch, now);
            let p = &mut ports[i];
            p.rule = rule;
            p.kernel = kernel.clone();
            p.closes_at = plan.closes_at;
            self.workers[p.worker].send(Command::Update(rule, relatch, kernel));
        }
        self.set_group(plan.group, ports);
    }

    /// Takes off the fast path every kernel rule no bound port has (groups
    /// that closed while the relay was gone); called once the state is bound.
    pub fn prune_kernel(&mut self) {
        let bound: std::collections::HashSet<u16> = self
            .bound
            .groups()
            .flat_map(|(_, ports)| ports)
            .filter(|p| p.kernel.is_some())
            .map(|p| p.rule.port)
            .collect();
        if let Some(fast) = self.fast.as_mut() {
            fast.prune(|port| bound.contains(&port));
        }
    }

    /// Stops forwarding and closes every socket of `group`; returns once closed.
    pub fn free(&mut self, group: GroupId) {
        let Some(bound) = self.bound.groups.remove(&group) else {
            return;
        };
        // The kernel lets go first: no packet of the group is forwarded after this.
        if let Some(fast) = self.fast.as_mut() {
            for p in bound.iter().filter(|p| p.kernel.is_some()) {
                fast.remove(p.rule.port);
            }
        }
        if let Some(steering) = self.steering.as_mut() {
            for p in bound.iter() {
                if let Err(e) = steering.unsteer(p.rule.port) {
                    tracing::warn!(port = p.rule.port, error = %e, "a freed port stays steered");
                }
            }
        }
        if let Some(l) = &self.learning {
            for p in bound.iter() {
                l.remove(p.rule.port);
            }
        }
        let mut waits = Vec::new();
        for (w, handle) in self.workers.iter().enumerate() {
            let ports: Vec<u16> = bound
                .iter()
                .filter(|p| p.worker == w)
                .map(|p| p.rule.port)
                .collect();
            if !ports.is_empty() {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.send(Command::Remove(ports, tx));
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }

    /// Closes everything (shutdown).
    pub fn free_all(&mut self) {
        let groups: Vec<GroupId> = self.bound.groups.keys().copied().collect();
        for g in groups {
            self.free(g);
        }
    }

    /// Closes everything and detaches the fast path, removing its pins (a
    /// clean stop; a crash leaves them for the next start to adopt).
    pub fn shutdown(&mut self) {
        self.free_all();
        if let Some(fast) = self.fast.take() {
            fast.shutdown();
        }
    }
}

/// Starts the steering of the fast path's ports, one socket per worker
/// (the first [`crate::udp::steer::MAX_SOCKETS`] workers): `None`, and
/// every port keeps its own socket, when it cannot (logged).
fn steer(
    address: std::net::Ipv4Addr,
    options: &Options,
    workers: &[WorkerHandle],
) -> Option<crate::udp::steer::Steering> {
    use crate::udp::steer::{MAX_SOCKETS, Steering};
    let n = workers.len().min(MAX_SOCKETS);
    let start = |port| Steering::start(address, port, n, options.recv_buffer_bytes, false);
    let steering = start(options.steering_port).or_else(|why| {
        if options.steering_port == 0 {
            return Err(why);
        }
        tracing::info!(%why, "the steering sockets take a port the kernel picks");
        start(0)
    });
    let steering = match steering {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(%why, "the fast path's ports keep a socket each");
            return None;
        }
    };
    for (i, worker) in workers.iter().take(n).enumerate() {
        match steering.socket(i).try_clone() {
            Ok(s) => worker.send(Command::Steer(s)),
            Err(e) => {
                tracing::warn!(error = %e, "the fast path's ports keep a socket each");
                return None;
            }
        }
    }
    Some(steering)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{Layout, Plane};
    use crate::reservation::{Destination, SourcePolicy};

    fn options() -> Options {
        Options {
            bind_address: "127.0.0.1".parse().unwrap(),
            recv_buffer_bytes: 1 << 16,
            send_buffer_bytes: 1 << 16,
            max_packet_size: 1500,
            workers: 2,
            audio_clock_rate: 48_000,
            video_clock_rate: 90_000,
            steering_port: 0,
        }
    }

    fn plan(g: u32, layout: Layout) -> GroupPlan {
        GroupPlan {
            group: GroupId::try_from(g).unwrap(),
            layout,
            destination: Destination {
                address: "127.0.0.1".parse().unwrap(),
                base_port: 40000,
            },
            policy: SourcePolicy::Latch,
            source: None,
            owner: 0,
            closes_at: time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
        }
    }

    fn taken(port: u16) -> bool {
        UdpSocket::bind(("127.0.0.1", port)).is_err()
    }

    #[test]
    fn binds_only_the_pairs_of_the_layout_and_frees_them() {
        // Group 530 (61288–61295): above the usual ephemeral range, unused by other tests.
        let p = plan(530, Layout::AudioVideo);
        let g = p.group;
        let mut dp = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        assert_eq!(dp.bind(&p, &Now::read()), vec![]);
        assert_eq!(dp.bound().bound_sockets(), 4);
        assert!(taken(g.port(0, Plane::Rtp)) && taken(g.port(0, Plane::Rtcp)));
        assert!(taken(g.port(2, Plane::Rtp)) && taken(g.port(2, Plane::Rtcp)));
        assert!(!taken(g.port(1, Plane::Rtp)) && !taken(g.port(3, Plane::Rtp)));
        dp.free(g);
        assert_eq!(dp.bound().bound_sockets(), 0);
        assert!(!taken(g.port(0, Plane::Rtp)), "closed when free returns");
    }

    #[test]
    fn a_held_port_is_reported_and_bound_on_retry() {
        let p = plan(531, Layout::AudioOnly);
        let g = p.group;
        let squatter = UdpSocket::bind(("127.0.0.1", g.port(0, Plane::Rtcp))).unwrap();
        let mut dp = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        let failures = dp.bind(&p, &Now::read());
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].port, g.port(0, Plane::Rtcp));
        assert!(
            failures[0].error.contains("in use"),
            "{}",
            failures[0].error
        );
        assert_eq!(dp.bound().bound_sockets(), 1);
        drop(squatter);
        assert_eq!(dp.bind(&p, &Now::read()), vec![]);
        assert_eq!(dp.bound().bound_sockets(), 2);
    }

    #[test]
    fn refuses_to_bind_past_the_open_files_limit() {
        let p = plan(532, Layout::AudioDisplayVideo);
        // Two workers' files, the spare, the control plane's 1, and 2 sockets.
        let limit = SPARE_FILES + 2 * FILES_PER_WORKER + 1 + 2;
        let mut dp = DataPlane::start(options(), limit, None, &Now::read()).unwrap();
        dp.reserve_files(1);
        assert_eq!(dp.socket_budget(), 2);
        let failures = dp.bind(&p, &Now::read());
        assert_eq!(dp.bound().bound_sockets(), 2);
        assert_eq!(failures.len(), 4);
        assert!(
            failures[0]
                .error
                .contains("RLIMIT_NOFILE = 71, 69 of them kept"),
            "{}",
            failures[0].error
        );
    }

    /// An appliance and a destination socket, and group `g`'s audio-only plan
    /// toward the destination.
    fn lane(g: u32) -> (UdpSocket, UdpSocket, GroupPlan) {
        let appliance = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wowza = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&appliance, &wowza] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let mut p = plan(g, Layout::AudioOnly);
        p.destination.base_port = wowza.local_addr().unwrap().port();
        (appliance, wowza, p)
    }

    fn rtp(seq: u16) -> [u8; 15] {
        let s = seq.to_be_bytes();
        [0x80, 96, s[0], s[1], 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3]
    }

    #[test]
    fn a_paused_plane_reads_nothing_until_resumed_and_loses_nothing() {
        let (appliance, wowza, p) = lane(534);
        let relay_port = p.group.port(0, Plane::Rtp);
        let mut dp = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        assert_eq!(dp.bind(&p, &Now::read()), vec![]);
        let paused = dp.pause();
        let mut ports: Vec<u16> = paused.iter().map(|p| p.port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [relay_port, relay_port + 1]);
        for seq in 0..3 {
            appliance
                .send_to(&rtp(seq), ("127.0.0.1", relay_port))
                .unwrap();
        }
        let mut buf = [0u8; 64];
        assert!(
            wowza.recv_from(&mut buf).is_err(),
            "nothing read while paused"
        );
        dp.resume();
        for seq in 0..3 {
            let (n, _) = wowza.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &rtp(seq), "each waited in the socket's buffer");
        }
        dp.free(p.group);
    }

    #[test]
    fn a_plane_takes_over_handed_sockets_and_counts_on() {
        use std::os::fd::BorrowedFd;
        let (appliance, wowza, p) = lane(535);
        let relay_port = p.group.port(0, Plane::Rtp);
        let mut old = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        assert_eq!(old.bind(&p, &Now::read()), vec![]);
        let mut buf = [0u8; 64];
        appliance
            .send_to(&rtp(0), ("127.0.0.1", relay_port))
            .unwrap();
        wowza.recv_from(&mut buf).unwrap();
        let wait_counted = |dp: &DataPlane, n: u64| {
            let c = dp.bound().ports(p.group)[0].counters.clone();
            let deadline = Instant::now() + Duration::from_secs(1);
            while c.to_wowza_packets.get() != n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            c.to_wowza_packets.get()
        };
        assert_eq!(wait_counted(&old, 1), 1);
        // What an exec keeps: the descriptors (copies here: the old plane closes its own).
        let handed: Vec<_> = old
            .pause()
            .into_iter()
            .map(|h| {
                // SAFETY: the paused worker keeps the socket open until `old` is dropped.
                let fd = unsafe { BorrowedFd::borrow_raw(h.fd) };
                (
                    h.port,
                    UdpSocket::from(fd.try_clone_to_owned().unwrap()),
                    h.state,
                )
            })
            .collect();
        // Sent while no process reads: it waits in the buffer.
        appliance
            .send_to(&rtp(1), ("127.0.0.1", relay_port))
            .unwrap();
        drop(old);
        let mut new = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        new.inherit(handed);
        assert_eq!(new.bind(&p, &Now::read()), vec![]);
        assert_eq!(
            new.release_inherited(),
            Vec::<u16>::new(),
            "both ports taken"
        );
        let (n, from) = wowza.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&rtp(1)[..], relay_port));
        assert_eq!(wait_counted(&new, 2), 2, "the counters go on");
        let s = new
            .bound()
            .snapshot(&new.bound().ports(p.group)[0], &Now::read());
        let m = s.media.unwrap();
        assert_eq!((m.extended_highest_sequence, m.lost), (Some(1), 0));
        assert_eq!(
            s.appliance,
            Some(appliance.local_addr().unwrap()),
            "the latch goes on"
        );
        new.free(p.group);
        assert!(!taken(relay_port), "closed when freed");
    }

    /// Userspace's fence: a deadline ahead forwards; past it, what arrives is
    /// read and dropped, counted; lifted, forwarding goes on (and what was
    /// dropped stays dropped).
    #[test]
    fn a_fenced_plane_forwards_nothing_until_the_fence_is_lifted() {
        let (appliance, wowza, p) = lane(537);
        let relay_port = p.group.port(0, Plane::Rtp);
        let mut dp = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        assert_eq!(dp.bind(&p, &Now::read()), vec![]);
        let mut buf = [0u8; 64];
        let send = |seq| {
            appliance
                .send_to(&rtp(seq), ("127.0.0.1", relay_port))
                .unwrap()
        };
        assert_eq!(dp.fence_deadline(), None);
        let ahead = Instant::now() + Duration::from_secs(60);
        dp.fence(Some(ahead), &Now::read()).unwrap();
        assert_eq!(dp.fence_deadline(), Some(ahead));
        send(0);
        let (n, _) = wowza.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtp(0), "forwarded before the deadline");

        dp.fence(Some(Instant::now()), &Now::read()).unwrap();
        send(1);
        send(2);
        assert!(wowza.recv_from(&mut buf).is_err(), "nothing past it");
        let deadline = Instant::now() + Duration::from_secs(1);
        while dp.fenced_packets() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(dp.fenced_packets(), 2, "counted");
        let c = &dp.bound().ports(p.group)[0].counters;
        assert_eq!(c.to_wowza_packets.get(), 1, "not counted as sent");

        dp.fence(None, &Now::read()).unwrap();
        assert_eq!(dp.fence_deadline(), None);
        send(3);
        let (n, _) = wowza.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtp(3), "lifted: the next one, not the dropped");
        dp.free(p.group);
    }

    #[test]
    fn inherited_sockets_no_window_takes_are_closed() {
        let (_, _, p) = lane(536);
        let port = p.group.port(0, Plane::Rtp);
        let socket =
            crate::udp::udp_socket(([127, 0, 0, 1], port).into(), 1 << 16, 1 << 16).unwrap();
        let state = Forwarder::new(
            p.rules(1500).next().unwrap(),
            48_000,
            Arc::default(),
            Instant::now(),
        )
        .state(Instant::now());
        let mut dp = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        dp.inherit([(port, socket, state)]);
        assert!(taken(port));
        assert_eq!(dp.release_inherited(), [port]);
        assert!(!taken(port));
    }

    #[test]
    fn forwards_between_appliance_and_destination() {
        let appliance = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wowza = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = plan(533, Layout::AudioOnly);
        // The media port's destination is base_port + 0.
        p.destination.base_port = wowza.local_addr().unwrap().port();
        let relay_port = p.group.port(0, Plane::Rtp);
        let mut dp = DataPlane::start(options(), 1 << 16, None, &Now::read()).unwrap();
        assert_eq!(dp.bind(&p, &Now::read()), vec![]);
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3];
        wowza
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        appliance
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        appliance.send_to(&rtp, ("127.0.0.1", relay_port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = wowza.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&rtp[..], relay_port));
        // Wowza answers to the relay port; the latched appliance gets it.
        wowza.send_to(&rtp, from).unwrap();
        let (n, from) = appliance.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.port()), (&rtp[..], relay_port));
        let c = &dp.bound().ports(p.group)[0].counters;
        // The worker counts a send after sendmmsg returns: the receiver may be first.
        let counted = || (c.to_wowza_packets.get(), c.to_appliance_packets.get()) == (1, 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !counted() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(counted());
        dp.free(p.group);
    }
}
