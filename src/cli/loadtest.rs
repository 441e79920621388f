//! `rtp-relay loadtest`: gen and sink through a relay, once, as a ramp, or
//! alternately with a baseline (`--compare`).

use super::report::{fail, print_report};
use super::traffic::RateArgs;
use crate::group::Layout;
use clap::Args;
use std::process::ExitCode;

/// `loadtest`.
#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// A running relay's control plane, e.g. http://127.0.0.1:9870 (default: spawn one).
    #[arg(long, conflicts_with = "direct")]
    pub relay: Option<String>,
    /// The running relay's process ID, for its CPU time (else read from /metrics).
    #[arg(long, requires = "relay")]
    pub relay_pid: Option<u32>,
    /// Start a relay for the run (the default).
    #[arg(long, conflicts_with_all = ["relay", "direct"])]
    pub spawn: bool,
    /// The spawned relay's `fast_path` (auto attaches eBPF to lo when it can).
    #[arg(long, value_enum, default_value = "auto", conflicts_with_all = ["relay", "direct", "external_pid"])]
    pub fast_path: crate::config::FastPath,
    /// No relay: gen sends straight to sink (the ceiling to compare with).
    #[arg(long)]
    pub direct: bool,
    /// A forwarder without a control plane (a benchmark baseline) that listens
    /// on the group ports and forwards 16384 ports lower: its process ID.
    #[arg(long, conflicts_with_all = ["relay", "direct", "spawn"])]
    pub external_pid: Option<u32>,
    /// Number of webcasts.
    #[arg(long, default_value_t = 64)]
    pub groups: u16,
    /// First group number.
    #[arg(long, default_value_t = 0)]
    pub first_group: u16,
    /// Layout of every webcast.
    #[arg(long, default_value = "audio-display-video")]
    pub layout: Layout,
    /// Traffic profile.
    #[arg(long, default_value = "echo360-live", value_parser = crate::traffic::profile::Profile::named)]
    pub profile: crate::traffic::profile::Profile,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Bearer token for a relay that requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// Generator source sockets.
    #[arg(long, default_value_t = 32)]
    pub sockets: usize,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    pub generator_threads: usize,
    /// Pin the generator's threads to these CPUs, e.g. 0 or 0,1.
    #[arg(long, value_delimiter = ',')]
    pub generator_cpus: Vec<usize>,
    /// Pin the sink's thread to this CPU.
    #[arg(long)]
    pub sink_cpu: Option<usize>,
    /// Run gen's and sink's threads at a real-time priority (SCHED_FIFO; root
    /// or CAP_SYS_NICE), so that the tools' own waits for a CPU stay out of
    /// the latency figures. The relay is not changed.
    #[arg(long)]
    pub realtime: bool,
    /// How the sink reads its media ports: through one steered socket when
    /// allowed (CAP_BPF and CAP_NET_ADMIN), or a socket per port.
    #[arg(long, value_enum, default_value = "auto")]
    pub receive: crate::traffic::sink::Receive,
    /// Bitrate and frame-rate overrides of the profile.
    #[command(flatten)]
    pub rates: RateArgs,
    /// Scrape the relay's /metrics this often during the run, e.g. 1s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub scrape_every: Option<std::time::Duration>,
    /// Find the most webcasts (up to --groups) carried loss-free (< 0.01 %), by
    /// bisection: one run of --duration per step.
    #[arg(long)]
    pub ramp: bool,
    /// Compare the relay with a baseline, run alternately (relay, baseline, …):
    /// `direct` is gen → sink with no relay. Prints every run's latency, machine
    /// CPU and loss, and the ratio relay / baseline of their medians.
    #[arg(long, value_enum, value_name = "BASELINE", conflicts_with_all = ["ramp", "direct"])]
    pub compare: Option<crate::traffic::loadtest::compare::Baseline>,
    /// How many (relay, baseline) pairs --compare runs.
    #[arg(long, default_value_t = 3, requires = "compare", value_parser = clap::value_parser!(u16).range(1..))]
    pub pairs: u16,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `rtp-relay loadtest …`.
pub fn loadtest(a: LoadtestArgs) -> ExitCode {
    use crate::traffic::loadtest::{self, Mode, Options};
    let mode = match (a.relay, a.direct, a.external_pid) {
        (Some(url), _, _) => Mode::Relay {
            url,
            pid: a.relay_pid,
        },
        (None, true, _) => Mode::Direct,
        (None, false, Some(pid)) => Mode::External { pid },
        (None, false, None) => Mode::Spawn {
            fast_path: a.fast_path,
        },
    };
    let cpus = super::traffic::check_cpus("--generator-cpus", &a.generator_cpus)
        .and_then(|()| super::traffic::check_cpus("--sink-cpu", a.sink_cpu.as_slice()));
    if let Err(code) = cpus {
        return code;
    }
    if a.groups == 0 {
        return fail("--groups: give at least 1 webcast", 2);
    }
    let options = Options {
        mode,
        groups: a.groups,
        first_group: a.first_group,
        layout: a.layout,
        profile: a.rates.apply(a.profile),
        duration: a.duration,
        token: a.token,
        sockets: a.sockets,
        generator_threads: a.generator_threads,
        generator_cpus: a.generator_cpus,
        realtime: a.realtime,
        sink: crate::traffic::sink::Options {
            receive: a.receive,
            placement: crate::traffic::scheduling::Placement {
                cpu: a.sink_cpu,
                realtime: a.realtime,
            },
        },
        progress: !a.json,
        scrape_every: a.scrape_every,
    };
    if a.ramp {
        return ramp(&options, a.json);
    }
    if let Some(baseline) = a.compare {
        return compare(&options, baseline, a.pairs, a.json);
    }
    match loadtest::run(&options) {
        Ok(r) => {
            print_report(a.json, &r, || loadtest::table(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("loadtest: {e}"), 1),
    }
}

fn ramp(options: &crate::traffic::loadtest::Options, json: bool) -> ExitCode {
    use crate::traffic::loadtest;
    let result = loadtest::ramp(options, |r| {
        if !json {
            let verdict = if r.loss_free() {
                "loss-free".to_string()
            } else if r.generator_fell_behind {
                format!("{:.4} % lost, generator behind", r.loss_ratio * 100.0)
            } else {
                format!("{:.4} % lost", r.loss_ratio * 100.0)
            };
            eprintln!(
                "ramp: {} webcasts, {:.0} packets/s offered: {verdict} (latency p99 {:.1} ms)",
                r.groups, r.offered_packets_per_second, r.latency_ms.p99
            );
        }
    });
    match result {
        Ok(ramp) => {
            print_report(json, &ramp, || match &ramp.highest_loss_free {
                Some(r) => format!(
                    "highest loss-free load: {} webcasts\n{}",
                    r.groups,
                    loadtest::table(r)
                ),
                None => "no step was loss-free, not even the smallest\n".into(),
            });
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("loadtest: {e}"), 1),
    }
}

fn compare(
    options: &crate::traffic::loadtest::Options,
    baseline: crate::traffic::loadtest::compare::Baseline,
    pairs: u16,
    json: bool,
) -> ExitCode {
    use crate::traffic::loadtest::compare;
    let result = compare::run(options, baseline, pairs, |side, i, r| {
        if !json {
            let idle = r.box_idle_share.map_or_else(String::new, |s| {
                format!(", machine {:.0} % idle", s * 100.0)
            });
            eprintln!(
                "compare: {side} {i} of {pairs}: latency p50 {:.3} / p99 {:.3} / max {:.3} ms, {:.4} % lost{idle}",
                r.latency_ms.p50,
                r.latency_ms.p99,
                r.latency_ms.max,
                r.loss_ratio * 100.0
            );
        }
    });
    match result {
        Ok(c) => {
            print_report(json, &c, || compare::table(&c));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("loadtest: {e}"), 1),
    }
}
