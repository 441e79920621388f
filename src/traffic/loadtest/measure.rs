//! The measurement of one run: sink and generator around the relay, the
//! relay's, the machine's and the load tools' own CPU time before and after,
//! `/metrics` scrapes during it and the progress bar. The figures are made in
//! [`super::report`].

use super::Options;
use super::report::{CpuCounters, Measurement, Report};
use crate::group::Role;
use crate::traffic::generator::{self, Target};
use crate::traffic::sink::{self, Sink};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the relay of a run is, as far as known.
pub(super) struct RelayAt<'a> {
    /// Its process, for its CPU time.
    pub pid: Option<u32>,
    /// Its control plane.
    pub url: Option<&'a str>,
    /// … as a client.
    pub client: Option<&'a super::relay::Client>,
    /// The kernel program forwarding for it, whose time is charged to it.
    pub program: Program<'a>,
}

/// Which kernel program does a run's forwarding.
pub(super) enum Program<'a> {
    /// None (no relay, or one without a fast path: told by its data path).
    None,
    /// The fast path of the relay whose pin directory this is (a relay the
    /// run spawned: told apart from other relays' by the links pinned there).
    Pinned(&'a std::path::Path),
    /// A running relay's: every relay program on the machine.
    AnyRelay,
    /// The bare rewrite.
    Bare(&'a crate::traffic::bare::BareRewrite),
}

/// Starts the sink on the sink ports of `streams` (role, port gen sends to,
/// sink port), on 127.0.0.1.
pub(super) fn start_sink(o: &Options, streams: &[(Role, u16, u16)]) -> Result<Sink, String> {
    let sink_streams: Vec<sink::Stream> = streams
        .iter()
        .map(|&(role, _, sink)| sink::Stream {
            role,
            media_port: sink,
            control_port: sink + 1,
        })
        .collect();
    Sink::start(LOCALHOST, &sink_streams, &o.profile, o.sink).map_err(|e| e.to_string())
}

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Sends `o`'s load over `streams` (role, port gen sends to, sink port) and
/// measures it, with the relay at `relay` when there is one; `sink` is the
/// sink if already started on those ports.
pub(super) fn measure(
    o: &Options,
    streams: &[(Role, u16, u16)],
    through_relay: bool,
    relay: &RelayAt,
    sink: Option<Sink>,
) -> Result<Report, String> {
    let RelayAt {
        pid,
        url,
        client,
        ref program,
    } = *relay;
    let sink = match sink {
        Some(sink) => sink,
        None => start_sink(o, streams)?,
    };
    let targets: Vec<Target> = streams
        .iter()
        .map(|&(role, relay, _)| Target {
            role,
            media: SocketAddr::new(LOCALHOST, relay),
            control: SocketAddr::new(LOCALHOST, relay + 1),
        })
        .collect();
    let generator_options = generator::Options {
        targets,
        profile: o.profile,
        duration: o.duration,
        sockets: o.sockets,
        bind: LOCALHOST,
        threads: o.generator_threads,
        cpus: o.generator_cpus.clone(),
        realtime: o.realtime,
    };
    let data_path = match program {
        Program::Bare(_) => Some("bare rewrite".to_string()),
        _ => url
            .and_then(|u| crate::control::exporter::data_path_of(&metrics(u)?))
            .map(|(path, _)| path),
    };
    // A kernel forwarder's work is the kernel's, in the senders' time:
    // counted apart and charged to it.
    let kernel_side = matches!(program, Program::Bare(_)) || data_path.as_deref() == Some("ebpf");
    let counts_program = through_relay && kernel_side;
    let program_time = || match program {
        Program::None => None,
        Program::Pinned(pins) => crate::dataplane::ebpf::program_time(Some(pins)),
        Program::AnyRelay => crate::dataplane::ebpf::program_time(None),
        Program::Bare(b) => b.program_time(),
    };
    let cpu_before = relay_cpu(pid, url);
    let started = Instant::now();
    let reference = ProcessTimes::read();
    let sending_start = cpu_counters(&reference);
    let stop = AtomicBool::new(false);
    let progress = AtomicU64::new(0);
    let scrapes = Scrapes::default();
    let target = generator::target_rate(&o.profile, &generator_options.targets);
    let generating = AtomicBool::new(true);
    let sent_all = AtomicBool::new(false);
    let (offered, (sending_end, ended), split) = std::thread::scope(|scope| {
        // Read the counters as soon as the generator ends: the progress bar
        // and the scrapes notice it only later.
        let handle = scope.spawn(|| {
            let offered = generator::run(&generator_options, &stop, &progress);
            sent_all.store(true, Ordering::Relaxed);
            (offered, (cpu_counters(&reference), Instant::now()))
        });
        let split = scope.spawn(|| {
            split_at(started + o.duration.mul_f64(STATS_FROM), &sent_all)?;
            let counters = cpu_counters(&reference);
            let sent = progress.load(Ordering::Relaxed);
            let counting = counts_program
                .then(crate::dataplane::ebpf::count_program_time)
                .flatten();
            let program = counting.as_ref().and_then(|_| program_time());
            Some(Split {
                box_busy: counters.box_busy,
                sent,
                counting,
                program,
            })
        });
        if let (Some(every), Some(url)) = (o.scrape_every, url) {
            let (scrapes, generating) = (&scrapes, &generating);
            scope
                .spawn(move || scrape(url, every, || !generating.load(Ordering::Relaxed), scrapes));
        }
        if o.progress && o.duration > Duration::from_secs(3) {
            show_progress(o.duration, target, &progress, || handle.is_finished());
        }
        let result = handle.join();
        generating.store(false, Ordering::Relaxed);
        let split = split.join().ok().flatten();
        result.map(|(offered, end)| (offered, end, split))
    })
    .map_err(|_| "the generator thread failed".to_string())?;
    let offered = offered.map_err(|e| format!("generator: {e}"))?;
    // Let what is in flight arrive: until the sink's count stops moving.
    let mut last = sink.received();
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = sink.received();
        if now == last || settle.elapsed() > Duration::from_secs(3) {
            break;
        }
        last = now;
    }
    let cpu_after = relay_cpu(pid, url);
    // Read while still counted; then the statistics go off.
    let (box_busy, box_packets, kernel, kernel_packets) = match split {
        Some(Split {
            box_busy,
            sent,
            counting,
            program,
        }) => {
            let kernel_after = counting.as_ref().and_then(|_| program_time());
            drop(counting);
            (
                (sending_start.box_busy, box_busy),
                sent,
                (program, kernel_after),
                offered.packets.saturating_sub(sent),
            )
        }
        // The generator ended early: the whole run, and no program time.
        None => (
            (sending_start.box_busy, sending_end.box_busy),
            offered.packets,
            (None, None),
            0,
        ),
    };
    let delivered = sink.finish();
    let sdp = client
        .filter(|_| through_relay)
        .map(|c| c.check_sdp(streams, &delivered));
    Ok(Report::new(Measurement {
        mode: o.mode.name(),
        groups: o.groups,
        streams: streams.len(),
        layout: o.layout,
        target_packets_per_second: target,
        through_relay,
        offered,
        delivered,
        relay_cpu: (cpu_before, cpu_after),
        kernel,
        kernel_packets,
        data_path,
        box_busy,
        box_packets,
        sending: (sending_start, sending_end),
        sending_seconds: ended.duration_since(started).as_secs_f64(),
        scrapes: scrapes.count.load(Ordering::Relaxed),
        slowest_scrape_us: scrapes.slowest_us.load(Ordering::Relaxed),
        sdp,
    }))
}

/// Where in the sending the run is split, as a share of its duration. The
/// kernel's run-time statistics of BPF programs cost two clock reads each
/// time any program on the machine runs: more CPU a packet on the side that
/// runs more programs (a relay's fast path and steering, against the
/// direct path's none). So they are on only after the split, where the
/// program's time is counted, and the machine's CPU is measured before it,
/// without them.
const STATS_FROM: f64 = 2.0 / 3.0;

/// The counters read at the split (and the statistics turned on there).
struct Split {
    /// The machine's busy CPU seconds since the sending started.
    box_busy: Option<f64>,
    /// RTP packets sent by then.
    sent: u64,
    /// Holds the program statistics on, when they are counted.
    counting: Option<std::os::fd::OwnedFd>,
    /// The program's time as they went on.
    program: Option<crate::dataplane::ebpf::ProgramTime>,
}

/// Waits until `at`; `None` if everything was sent before.
fn split_at(at: Instant, sent_all: &AtomicBool) -> Option<()> {
    loop {
        if sent_all.load(Ordering::Relaxed) {
            return None;
        }
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(());
        }
        std::thread::sleep(left.min(Duration::from_millis(5)));
    }
}

/// What scraping during the run cost.
#[derive(Debug, Default)]
struct Scrapes {
    count: AtomicU64,
    slowest_us: AtomicU64,
}

/// Fetches `/metrics` every `every` until `done`.
fn scrape(url: &str, every: Duration, done: impl Fn() -> bool, scrapes: &Scrapes) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(every * 10))
            .build(),
    );
    while !done() {
        let t = Instant::now();
        if let Ok(mut r) = agent.get(format!("{url}/metrics")).call() {
            let _ = r.body_mut().read_to_vec();
            scrapes.count.fetch_add(1, Ordering::Relaxed);
            scrapes
                .slowest_us
                .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        std::thread::sleep(every.saturating_sub(t.elapsed()));
    }
}

fn show_progress(duration: Duration, target: f64, sent: &AtomicU64, done: impl Fn() -> bool) {
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    while !done() {
        std::thread::sleep(Duration::from_millis(250));
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(start.elapsed().as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "{:.0} packets/s offered (profile: {target:.0})",
            sent.load(Ordering::Relaxed) as f64 / secs
        ));
    }
    bar.finish_and_clear();
}

/// The machine's (since `reference`) and this process's CPU counters now.
fn cpu_counters(reference: &ProcessTimes) -> CpuCounters {
    let machine = box_cpu(reference);
    CpuCounters {
        box_busy: machine.map(|(busy, _)| busy),
        cores: machine.and_then(|(_, cores)| cores),
        tools: own_cpu_seconds(),
    }
}

/// Busy CPU seconds of the whole machine since `reference`, and its CPUs.
///
/// The busy time is the sum of every process's CPU time (`/proc/<pid>/stat`,
/// user + system, kernel threads included), not `/proc/stat`'s busy ticks:
/// with tick-based accounting `/proc/stat` charges each 4 ms tick to whatever
/// runs at that instant, and threads that wake on a 1 ms timer, as the
/// generator's, come out anywhere from half to twice their time. A process's
/// own total is kept exact (scaled to the scheduler's runtime). Time spent in
/// softirq is charged to the task it interrupted, so it is counted too; a
/// process that ends during the run takes its time with it.
fn box_cpu(reference: &ProcessTimes) -> Option<(f64, Option<u32>)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some((ProcessTimes::read().since(reference), cpus(&stat)))
}

/// Every process's CPU seconds (user + system), by process ID.
#[derive(Clone, Debug, Default, PartialEq)]
struct ProcessTimes(HashMap<u32, f64>);

impl ProcessTimes {
    /// Now, from `/proc`.
    fn read() -> ProcessTimes {
        let mut times = HashMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return ProcessTimes(times);
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(ticks) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| process_ticks(&s))
            {
                times.insert(pid, ticks / clock_ticks());
            }
        }
        ProcessTimes(times)
    }

    /// CPU seconds used since `earlier`: the growth of every process still
    /// there, all of one that started since. A process that ended is left
    /// out rather than subtracted, so that the machine's busy time never
    /// comes out negative on a machine where others start and end processes.
    fn since(&self, earlier: &ProcessTimes) -> f64 {
        self.0
            .iter()
            .map(|(pid, &t)| (t - earlier.0.get(pid).copied().unwrap_or(0.0)).max(0.0))
            .sum()
    }
}

/// The CPUs of `/proc/stat`: its `cpuN` lines, one per online CPU. Its `cpu`
/// line sums over exactly these, so an idle share from it needs this count,
/// not the CPUs this process may use (`available_parallelism` follows the
/// affinity mask and cgroup quota, which the machine's busy time ignores).
fn cpus(stat: &str) -> Option<u32> {
    let n = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// This process's CPU seconds so far, user + system: the generator, the sink
/// and the scrapes are its threads. `getrusage` counts in microseconds, where
/// `/proc/self/stat` rounds to clock ticks.
fn own_cpu_seconds() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as f64
}

/// Relay CPU seconds: from `/proc/<pid>/stat` when the PID is known, else
/// from the relay's `process_cpu_seconds_total`.
fn relay_cpu(pid: Option<u32>, url: Option<&str>) -> Option<f64> {
    if let Some(pid) = pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        return Some(process_ticks(&stat)? / clock_ticks());
    }
    metrics(url?)?
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The relay's `/metrics` text (at 2048 webcasts, megabytes of it).
fn metrics(url: &str) -> Option<String> {
    ureq::get(format!("{url}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .ok()
}

/// A process's user + system clock ticks from its `/proc/<pid>/stat`.
fn process_ticks(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name: utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_the_numbered_cpu_lines() {
        let stat = "cpu  1 2 3\ncpu0 1 2 3\ncpu1 1 2 3\ncpu12 1 2 3\nintr 5\ncpufreq 9\nctxt 7\n";
        assert_eq!(cpus(stat), Some(3));
        assert_eq!(cpus("cpu  1 2 3\nintr 5\n"), None, "no CPUs listed");
        assert_eq!(cpus(""), None);
    }

    #[test]
    fn this_process_has_used_some_cpu_and_the_machine_has_cpus() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(own_cpu_seconds().is_some_and(|s| s > 0.0));
        let counters = cpu_counters(&ProcessTimes::default());
        assert!(counters.cores.is_some_and(|n| n >= 1), "{counters:?}");
        assert!(counters.box_busy.is_some_and(|b| b > 0.0), "{counters:?}");
    }

    #[test]
    fn busy_time_counts_growth_and_newcomers_never_the_ones_gone() {
        let earlier = ProcessTimes(HashMap::from([(1, 10.0), (2, 5.0), (3, 7.0)]));
        // 1 grew by 2, 2 ended, 3 is a new process on a reused ID (less than
        // before: left out), 4 started since.
        let now = ProcessTimes(HashMap::from([(1, 12.0), (3, 1.0), (4, 0.5)]));
        assert_eq!(now.since(&earlier), 2.5);
        assert_eq!(earlier.since(&earlier), 0.0);
        assert_eq!(now.since(&ProcessTimes::default()), 13.5);
    }

    #[test]
    fn process_ticks_are_utime_plus_stime_whatever_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat =
            "4242 (rtp relay (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 4 0";
        assert_eq!(process_ticks(stat), Some(1234.0 + 567.0));
        assert_eq!(process_ticks("4242 (short) S 1 2"), None);
        assert_eq!(process_ticks("no parenthesis"), None);
    }
}
