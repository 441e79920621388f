//! `rtp-relay loadtest`: creates reservations on a relay (one it spawns, or a
//! running one), drives `gen` through it into a `sink`, and reports
//! throughput, loss, latency percentiles, the relay's CPU per forwarded
//! packet and the CPU the machine had left (and the load tools' own share of
//! it). `--direct` runs gen → sink with no relay: the ceiling every relay
//! figure is compared with.
//!
//! - this module: the orchestration — which relay, its reservations, one run
//!   ([`run`]) or a bisection over the number of webcasts ([`ramp`]);
//! - `relay`: the relay's control plane as a client, and a relay spawned for
//!   the run;
//! - `measure`: one run's measurement (traffic, CPU time, scrapes, progress);
//! - `report`: the figures made from it ([`Report`], [`Ramp`], [`table`]);
//! - [`compare`]: the relay and a baseline run alternately, and the ratios
//!   of their medians.

pub mod compare;
mod measure;
mod relay;
mod report;

pub use relay::reservations;
pub use report::{Ramp, Report, table};

use super::profile::Profile;
use crate::group::{GroupId, Layout, Plane, Role};
use relay::{Client, Spawned};
use std::time::Duration;

/// Port offset of the sink from the relay's group ports (the shipped config's).
pub const SINK_OFFSET: i32 = -16384;

/// Which relay to measure.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Start `rtp-relay run` with a temporary configuration and stop it after.
    Spawn {
        /// Its `fast_path` setting.
        fast_path: crate::config::FastPath,
    },
    /// A running relay's control plane URL (its PID, if given, for CPU).
    Relay {
        /// e.g. `http://127.0.0.1:9870`.
        url: String,
        /// The relay's process ID; without it CPU comes from `/metrics`.
        pid: Option<u32>,
    },
    /// No relay: gen sends straight to the sink.
    Direct,
    /// A bare kernel rewrite the run attaches to `lo` (a benchmark baseline
    /// for the fast path: [`crate::traffic::bare`]).
    Bare,
    /// A forwarder with no control plane (a benchmark baseline) already
    /// listening on the group ports and sending 16384 ports lower.
    External {
        /// Its process ID, for its CPU time.
        pid: u32,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which relay.
    pub mode: Mode,
    /// Webcasts.
    pub groups: u16,
    /// First group number.
    pub first_group: u16,
    /// Their layout.
    pub layout: Layout,
    /// What they send.
    pub profile: Profile,
    /// How long.
    pub duration: Duration,
    /// Bearer token for the control plane.
    pub token: Option<String>,
    /// Generator source sockets.
    pub sockets: usize,
    /// Generator threads.
    pub generator_threads: usize,
    /// CPUs the generator's threads are pinned to (none: not pinned).
    pub generator_cpus: Vec<usize>,
    /// The generator's threads at a real-time priority (the sink's says so in
    /// `sink`).
    pub realtime: bool,
    /// How the sink reads, and the CPU its thread is pinned to.
    pub sink: crate::traffic::sink::Options,
    /// Show a progress bar.
    pub progress: bool,
    /// Scrape the relay's `/metrics` this often during the run (as Prometheus would).
    pub scrape_every: Option<Duration>,
}

impl Mode {
    /// How the report names it.
    fn name(&self) -> &'static str {
        match self {
            Mode::Spawn { .. } => "spawn",
            Mode::Relay { .. } => "relay",
            Mode::Direct => "direct",
            Mode::Bare => "bare",
            Mode::External { .. } => "external",
        }
    }
}

/// Finds the most webcasts (up to `o.groups`) carried loss-free, by bisection;
/// `step` is told about each step as it ends.
pub fn ramp(o: &Options, mut step: impl FnMut(&Report)) -> Result<Ramp, String> {
    let mut bisection = Bisection::new(o.groups);
    let mut n = o.groups;
    let mut ramp = Ramp {
        steps: Vec::new(),
        highest_loss_free: None,
    };
    loop {
        let r = run(&Options {
            groups: n,
            progress: false,
            ..o.clone()
        })?;
        step(&r);
        let loss_free = r.loss_free();
        if loss_free {
            ramp.highest_loss_free = Some(r.clone());
        }
        ramp.steps.push(r);
        match bisection.next(n, loss_free) {
            Some(next) => n = next,
            None => return Ok(ramp),
        }
    }
}

/// The ramp's search: the most webcasts carried loss-free lies in
/// `lo..hi` (`lo` carried, `hi` not), narrowed to a sixteenth of the
/// maximum (at least 1). The first step is the maximum itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bisection {
    lo: u16,
    hi: u16,
    resolution: u16,
}

impl Bisection {
    /// The search up to `max` webcasts.
    fn new(max: u16) -> Self {
        Bisection {
            lo: 0,
            hi: max.saturating_add(1),
            resolution: (max / 16).max(1),
        }
    }

    /// Takes in step `n`'s outcome; the next step, or `None` when the range
    /// is narrow enough.
    fn next(&mut self, n: u16, loss_free: bool) -> Option<u16> {
        if loss_free {
            self.lo = n;
        } else {
            self.hi = n;
        }
        if self.hi - self.lo <= self.resolution {
            return None;
        }
        let n = self.lo + (self.hi - self.lo) / 2;
        (n != self.lo).then_some(n)
    }
}

/// Runs the load test.
pub fn run(o: &Options) -> Result<Report, String> {
    let groups: Vec<GroupId> = (0..o.groups)
        .map(|i| {
            GroupId::try_from(u32::from(o.first_group) + u32::from(i)).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    // A spawned relay's sink is bound first: the relay's steering sockets
    // take its control port's number, which the kernel picks for a spawned
    // relay from the ephemeral range, where the sink's ports are.
    let sink = match &o.mode {
        Mode::Spawn { .. } => {
            let planned: Vec<_> = groups
                .iter()
                .flat_map(|&g| local_ports(g, o.layout, true))
                .collect();
            Some(measure::start_sink(o, &planned)?)
        }
        _ => None,
    };
    let mut relay = match &o.mode {
        Mode::Spawn { fast_path } => Some(Spawned::start(o.groups, *fast_path)?),
        _ => None,
    };
    let url = match (&o.mode, &relay) {
        (Mode::Relay { url, .. }, _) => Some(url.trim_end_matches('/').to_string()),
        (_, Some(r)) => Some(r.url.clone()),
        _ => None,
    };
    let pid = match (&o.mode, &relay) {
        (Mode::Relay { pid, .. }, _) => *pid,
        (Mode::External { pid }, _) => Some(*pid),
        (_, Some(r)) => Some(r.child.id()),
        _ => None,
    };
    let client = url.as_ref().map(|u| Client::new(u, o.token.clone()));
    let bare_hops = |g: GroupId| {
        local_ports(g, o.layout, true)
            .into_iter()
            .flat_map(|(_, port, sink)| [(port, sink), (port + 1, sink + 1)])
    };
    let bare = match o.mode {
        Mode::Bare => Some(crate::traffic::bare::BareRewrite::attach(
            &groups
                .iter()
                .flat_map(|&g| bare_hops(g))
                .collect::<Vec<_>>(),
        )?),
        _ => None,
    };

    // Streams: (role, relay-side media port or None, sink media port).
    let mut streams: Vec<(Role, u16, u16)> = Vec::new();
    let result = (|| {
        for &g in &groups {
            let ports: Vec<(Role, u16, u16)> = match (&client, &o.mode) {
                (Some(c), _) => c.reserve(g, o.layout, o.duration)?,
                (None, mode) => local_ports(
                    g,
                    o.layout,
                    matches!(mode, Mode::External { .. } | Mode::Bare),
                ),
            };
            streams.extend(ports);
        }
        let through_relay = !matches!(o.mode, Mode::Direct);
        let program = match (&bare, &relay, &o.mode) {
            (Some(b), _, _) => measure::Program::Bare(b),
            (_, Some(r), _) => measure::Program::Pinned(&r.pins),
            (_, _, Mode::Relay { .. }) => measure::Program::AnyRelay,
            _ => measure::Program::None,
        };
        let relay_at = measure::RelayAt {
            pid,
            url: url.as_deref(),
            client: client.as_ref(),
            program,
        };
        measure::measure(o, &streams, through_relay, &relay_at, sink)
    })();
    if let Some(c) = &client {
        for &g in &groups {
            c.release(g);
        }
    }
    if let Some(r) = relay.as_mut() {
        r.stop();
    }
    result
}

/// Each stream of group `g`: (role, port gen sends to, sink port). With a
/// forwarder in between gen sends to the group port, else straight to the sink.
fn local_ports(g: GroupId, layout: Layout, forwarder: bool) -> Vec<(Role, u16, u16)> {
    layout
        .pairs()
        .map(|(pair, role)| {
            let port = g.port(pair, Plane::Rtp);
            let sink = (i32::from(port) + SINK_OFFSET) as u16;
            (role, if forwarder { port } else { sink }, sink)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps a ramp up to `max` runs against a relay that carries at most
    /// `capacity` webcasts loss-free, and the highest loss-free step.
    fn steps(max: u16, capacity: u16) -> (Vec<u16>, Option<u16>) {
        let mut b = Bisection::new(max);
        let (mut n, mut run, mut best) = (max, Vec::new(), None);
        loop {
            run.push(n);
            let loss_free = n <= capacity;
            if loss_free {
                best = Some(n);
            }
            match b.next(n, loss_free) {
                Some(next) => n = next,
                None => return (run, best),
            }
        }
    }

    #[test]
    fn a_ramp_starts_at_the_maximum_and_stops_there_when_it_is_carried() {
        assert_eq!(steps(64, 64), (vec![64], Some(64)));
        assert_eq!(steps(64, 1000), (vec![64], Some(64)));
    }

    #[test]
    fn a_ramp_bisects_down_to_a_sixteenth_of_the_maximum() {
        // 64 webcasts: resolution 4. 64 ✗ (0..64) → 32 ✗ (0..32) → 16 ✓
        // (16..32) → 24 ✓ (24..32) → 28 ✗ (24..28): 4 wide, done.
        assert_eq!(steps(64, 26), (vec![64, 32, 16, 24, 28], Some(24)));
        // 100 webcasts: resolution 6. 100 ✗ → 50 ✓ (50..100) → 75 ✗
        // (50..75) → 62 ✓ (62..75) → 68 ✗ (62..68): 6 wide, done.
        assert_eq!(steps(100, 65), (vec![100, 50, 75, 62, 68], Some(62)));
    }

    #[test]
    fn a_ramp_of_few_webcasts_narrows_to_one() {
        assert_eq!(steps(1, 0), (vec![1], None));
        assert_eq!(steps(3, 0), (vec![3, 1], None));
        assert_eq!(steps(3, 2), (vec![3, 1, 2], Some(2)));
    }

    #[test]
    fn a_ramp_ends_within_its_resolution_below_the_capacity() {
        for max in [1u16, 2, 5, 16, 17, 64, 100, 1000] {
            let resolution = (max / 16).max(1);
            for capacity in 0..=max {
                let (run, best) = steps(max, capacity);
                let best = best.unwrap_or(0);
                assert!(best <= capacity, "max {max}, capacity {capacity}: {run:?}");
                assert!(
                    capacity - best < resolution,
                    "max {max}, capacity {capacity}: {run:?} found {best}"
                );
                assert!(run.len() <= 12, "max {max}: {run:?}");
            }
        }
    }

    #[test]
    fn a_ramp_to_the_largest_count_does_not_overflow() {
        let (run, best) = steps(u16::MAX, u16::MAX - 1);
        assert_eq!(run[0], u16::MAX);
        assert!(best.is_some_and(|b| u16::MAX - 1 - b < u16::MAX / 16));
    }
}
