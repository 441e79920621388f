//! `rtp-relay sink`: a Wowza stand-in that checks what it receives.

use super::report::{fail, print_report};
use super::traffic::{TrafficArgs, streams};
use clap::Args;
use std::process::ExitCode;

/// `sink`.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Groups, layout, profile, duration, output.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Bind the destination ports of this relay's reservations instead of --groups,
    /// e.g. http://127.0.0.1:9870.
    #[arg(long)]
    pub relay: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Bound port = group port + this offset (the relay's wowza.port_offset).
    #[arg(long, default_value_t = -16384, allow_hyphen_values = true)]
    pub port_offset: i32,
    /// How to read the media ports: through one steered socket when allowed
    /// (needs CAP_BPF and CAP_NET_ADMIN), or a socket per port.
    #[arg(long, value_enum, default_value = "auto")]
    pub receive: crate::traffic::sink::Receive,
    /// Pin the receiving thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Run the receiving thread at a real-time priority (SCHED_FIFO; root or
    /// CAP_SYS_NICE), so that other tasks do not delay it.
    #[arg(long)]
    pub realtime: bool,
}

/// `rtp-relay sink …`.
pub fn sink(a: SinkArgs) -> ExitCode {
    use crate::traffic::sink;
    let t = &a.traffic;
    let ports = match streams(t, a.relay.as_deref(), a.port_offset, true) {
        Ok(p) => p,
        Err((e, code)) => return fail(e, code),
    };
    let streams: Vec<sink::Stream> = ports
        .into_iter()
        .map(|(role, port)| sink::Stream {
            role,
            media_port: port,
            control_port: port + 1,
        })
        .collect();
    if let Err(code) = super::traffic::check_cpus("--cpu", a.cpu.as_slice()) {
        return code;
    }
    let s = match sink::Sink::start(
        a.bind,
        &streams,
        &t.profile,
        sink::Options {
            receive: a.receive,
            placement: crate::traffic::scheduling::Placement {
                cpu: a.cpu,
                realtime: a.realtime,
            },
        },
    ) {
        Ok(s) => s,
        Err(e) => return fail(e, 1),
    };
    std::thread::sleep(t.duration);
    let r = s.finish();
    print_report(t.json, &r, || {
        format!(
            "received {} RTP packets ({} bytes) and {} RTCP packets on {} streams; lost {}, duplicates {}, reordered {}, corrupt {}; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} receiver reports sent\n",
            r.packets,
            r.bytes,
            r.rtcp_packets,
            r.streams.len(),
            r.lost,
            r.duplicates,
            r.reordered,
            r.corrupt,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.receiver_reports
        )
    });
    ExitCode::SUCCESS
}
