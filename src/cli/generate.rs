//! `rtp-relay gen`: synthetic webcasts toward port groups.

use super::report::{fail, print_report};
use super::traffic::{RateArgs, TrafficArgs, streams};
use clap::Args;
use std::process::ExitCode;

/// `gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Groups, layout, profile, duration, output.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Send to the groups of this relay's reservations, e.g. http://127.0.0.1:9870.
    #[arg(long)]
    pub relay: Option<String>,
    /// Address to send to (the relay's).
    #[arg(long, default_value = "127.0.0.1")]
    pub target: std::net::IpAddr,
    /// Destination port = group port + this offset.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub port_offset: i32,
    /// Address the source sockets bind (the appliance's address).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Source sockets; each stream always sends from the same one.
    #[arg(long, default_value_t = 32)]
    pub sockets: usize,
    /// Sending threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pin the sending threads to these CPUs, e.g. 0 or 0,1 (thread i to the
    /// i-th, round robin).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Run the sending threads at a real-time priority (SCHED_FIFO; root or
    /// CAP_SYS_NICE), so that other tasks do not delay them.
    #[arg(long)]
    pub realtime: bool,
    /// Bitrate and frame-rate overrides of the profile.
    #[command(flatten)]
    pub rates: RateArgs,
}

/// `rtp-relay gen …`.
pub fn generate(a: GenArgs) -> ExitCode {
    if let Err(code) = super::traffic::check_cpus("--cpus", &a.cpus) {
        return code;
    }
    use crate::traffic::generator;
    let t = &a.traffic;
    let ports = match streams(t, a.relay.as_deref(), a.port_offset, false) {
        Ok(p) => p,
        Err((e, code)) => return fail(e, code),
    };
    let targets: Vec<generator::Target> = ports
        .into_iter()
        .map(|(role, port)| generator::Target {
            role,
            media: std::net::SocketAddr::new(a.target, port),
            control: std::net::SocketAddr::new(a.target, port + 1),
        })
        .collect();
    let profile = a.rates.apply(t.profile);
    let options = generator::Options {
        targets,
        profile,
        duration: t.duration,
        sockets: a.sockets,
        bind: a.bind,
        threads: a.threads,
        cpus: a.cpus,
        realtime: a.realtime,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    match generator::run(&options, &stop, &std::sync::atomic::AtomicU64::new(0)) {
        Ok(r) => {
            print_report(t.json, &r, || {
                let mut s = format!(
                    "sent {} RTP packets ({:.0}/s, profile {:.0}/s, {:.2} Mbit/s) and {} sender reports on {} streams in {:.1} s; {} receiver reports came back\n",
                    r.packets,
                    r.packets_per_second,
                    r.target_packets_per_second,
                    r.bytes as f64 * 8.0 / r.seconds.max(1e-9) / 1e6,
                    r.sender_reports,
                    r.streams,
                    r.seconds,
                    r.received_reports
                );
                if r.fell_behind() {
                    s.push_str(&format!(
                        "WARNING: THE GENERATOR FELL BEHIND its schedule: {:.0} of {:.0} packets/s, max lag {:.1} ms\n",
                        r.packets_per_second, r.target_packets_per_second, r.max_lag_ms
                    ));
                }
                s.push_str(&format!(
                    "pacing: {} frames, {:.2} % more than 20 ms late, max lag {:.1} ms\n",
                    r.frames,
                    r.late_share() * 100.0,
                    r.max_lag_ms
                ));
                s
            });
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("gen: {e}"), 1),
    }
}
