//! What a load test reports: the figures of a run ([`Report`]) and of a ramp
//! ([`Ramp`]), the arithmetic that makes them from what was measured, and
//! the table an operator reads.

use super::relay::SdpCheck;
use crate::group::Layout;
use crate::traffic::{generator, sink};
use serde::Serialize;

/// The result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `spawn`, `relay`, `direct` or `external`.
    pub mode: String,
    /// Webcasts.
    pub groups: u16,
    /// Streams (pairs).
    pub streams: usize,
    /// Layout.
    pub layout: Layout,
    /// Seconds of sending.
    pub seconds: f64,
    /// The profile's packet rate.
    pub target_packets_per_second: f64,
    /// RTP packets per second the generator sent.
    pub offered_packets_per_second: f64,
    /// … bits per second.
    pub offered_bits_per_second: f64,
    /// RTP packets per second the sink received.
    pub delivered_packets_per_second: f64,
    /// … bits per second.
    pub delivered_bits_per_second: f64,
    /// RTP packets sent.
    pub sent: u64,
    /// RTP packets received.
    pub received: u64,
    /// (sent − received) / sent.
    pub loss_ratio: f64,
    /// Duplicates at the sink.
    pub duplicates: u64,
    /// Late packets at the sink.
    pub reordered: u64,
    /// Corrupt payloads at the sink.
    pub corrupt: u64,
    /// One-way latency.
    pub latency_ms: sink::Latency,
    /// Receiver reports that made it back to the generator.
    pub receiver_reports_returned: u64,
    /// How the sink read its media ports: `steered` or `per-port`.
    pub sink_receive: String,
    /// Why the sink could not steer, when it tried.
    pub sink_steering_refused: Option<String>,
    /// Which data path the relay ran: `ebpf` or `userspace` (its
    /// `rtp_relay_data_path_info`); none without a relay or its `/metrics`.
    pub data_path: Option<String>,
    /// Relay process CPU seconds (user + system) during the run.
    pub relay_cpu_seconds: Option<f64>,
    /// The kernel's seconds in the fast path's program during the run: work
    /// done for the relay that the kernel charges to the senders' CPU time,
    /// not the relay's (none when not measured: no fast path, or no
    /// CAP_SYS_ADMIN to count it). Counted over the run's last third and
    /// scaled to the whole run by the packets sent.
    pub relay_kernel_cpu_seconds: Option<f64>,
    /// Relay CPU per forwarded packet, microseconds: the process's and the
    /// program's together.
    pub relay_cpu_us_per_packet: Option<f64>,
    /// The whole machine's busy CPU (generator, sink, relay, kernel) over the
    /// first two thirds of the sending, per RTP packet sent then, microseconds
    /// (the last third counts the program's time, which costs CPU itself).
    pub box_cpu_us_per_packet: Option<f64>,
    /// The machine's CPUs (those `/proc/stat` counts).
    pub cores: Option<u32>,
    /// Share of the machine's CPU left idle while the generator sent (0–1).
    pub box_idle_share: Option<f64>,
    /// The load tools' own CPU seconds (this process: generator, sink,
    /// scrapes; user + system) while the generator sent.
    pub tools_cpu_seconds: Option<f64>,
    /// … per RTP packet sent, microseconds.
    pub tools_cpu_us_per_packet: Option<f64>,
    /// Share of the machine's CPU the load tools alone would leave idle (0–1).
    pub tools_idle_share: Option<f64>,
    /// The generator missed its rate or its schedule drifted.
    pub generator_fell_behind: bool,
    /// `/metrics` scrapes made during the run.
    pub scrapes: u64,
    /// The slowest scrape, milliseconds.
    pub slowest_scrape_ms: f64,
    /// Through a relay: its SDP of every video stream held against the SPS
    /// and PPS the sink received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp: Option<SdpCheck>,
    /// H.264 structure the sink found out of order.
    pub malformed: u64,
    /// What makes the figures doubtful (empty when they are sound).
    pub warnings: Vec<String>,
}

impl Report {
    /// Under 0.01 % lost, and the offered load was the profile's.
    pub fn loss_free(&self) -> bool {
        self.loss_ratio < 1e-4 && !self.generator_fell_behind
    }
}

/// The steps of a ramp and the highest loss-free one.
#[derive(Clone, Debug, Serialize)]
pub struct Ramp {
    /// Every step, in the order run.
    pub steps: Vec<Report>,
    /// The most webcasts carried loss-free.
    pub highest_loss_free: Option<Report>,
}

/// The machine's and the load tools' CPU counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct CpuCounters {
    /// The machine's busy CPU seconds so far.
    pub box_busy: Option<f64>,
    /// The machine's CPUs.
    pub cores: Option<u32>,
    /// The load tools' (this process's) CPU seconds so far, user + system.
    pub tools: Option<f64>,
}

/// Below this idle share left by the load tools alone, a run's latency and
/// loss say more about the tools than about the relay.
const TOOLS_IDLE_FLOOR: f64 = 0.20;

/// Everything a run measured, before any arithmetic.
#[derive(Clone, Debug)]
pub(super) struct Measurement {
    /// The mode's name.
    pub mode: &'static str,
    /// Webcasts.
    pub groups: u16,
    /// Streams.
    pub streams: usize,
    /// Their layout.
    pub layout: Layout,
    /// The profile's packet rate for the streams.
    pub target_packets_per_second: f64,
    /// Whether a relay (or another forwarder) was in between.
    pub through_relay: bool,
    /// What the generator sent.
    pub offered: generator::Report,
    /// What the sink received.
    pub delivered: sink::Report,
    /// Relay CPU seconds before and after, when known.
    pub relay_cpu: (Option<f64>, Option<f64>),
    /// The fast path's program time before and after, when counted: over
    /// the run's last third only (measure.rs, `STATS_FROM`).
    pub kernel: (
        Option<crate::dataplane::ebpf::ProgramTime>,
        Option<crate::dataplane::ebpf::ProgramTime>,
    ),
    /// RTP packets sent while `kernel` counted.
    pub kernel_packets: u64,
    /// The relay's data path, when it said.
    pub data_path: Option<String>,
    /// The machine's busy CPU seconds as the generator started and when
    /// `box_packets` had been sent, when known.
    pub box_busy: (Option<f64>, Option<f64>),
    /// RTP packets sent between the two `box_busy` readings.
    pub box_packets: u64,
    /// The CPU counters as the generator started and as it ended.
    pub sending: (CpuCounters, CpuCounters),
    /// Wall seconds between those two readings.
    pub sending_seconds: f64,
    /// `/metrics` scrapes made.
    pub scrapes: u64,
    /// The slowest of them, microseconds.
    pub slowest_scrape_us: u64,
    /// The relay's SDPs against what the sink received, when checked.
    pub sdp: Option<SdpCheck>,
}

impl Report {
    /// The figures of a run from what it measured.
    pub(super) fn new(m: Measurement) -> Report {
        let (offered, s) = (&m.offered, &m.delivered);
        let seconds = offered.seconds.max(1e-9);
        let cpu = difference(m.relay_cpu).filter(|_| m.through_relay);
        let kernel = match m.kernel {
            // Scaled from the packets it was counted over to the run's.
            (Some(a), Some(b)) if m.through_relay && m.kernel_packets > 0 => Some(
                b.run_time.saturating_sub(a.run_time).as_secs_f64() * offered.packets as f64
                    / m.kernel_packets as f64,
            ),
            _ => None,
        };
        let (start, end) = m.sending;
        // The CPUs that `/proc/stat`'s busy time sums over, read as it ended.
        let cores = end.cores.or(start.cores);
        let idle = |busy: Option<f64>| {
            busy.zip(cores)
                .and_then(|(busy, cores)| idle_share(busy, cores, m.sending_seconds))
        };
        let tools_cpu = difference((start.tools, end.tools));
        let tools_idle_share = idle(tools_cpu);
        // A forwarder with no process of its own (the bare rewrite) is all kernel.
        let total = match (cpu, kernel) {
            (Some(c), k) => Some(c + k.unwrap_or(0.0)),
            (None, k) => k,
        };
        let mut warnings = warnings(offered, m.through_relay, total.is_some(), tools_idle_share);
        if let Some(check) = &m.sdp {
            warnings.extend(sdp_warning(check));
        }
        Report {
            mode: m.mode.into(),
            groups: m.groups,
            streams: m.streams,
            layout: m.layout,
            seconds,
            target_packets_per_second: m.target_packets_per_second,
            offered_packets_per_second: offered.packets as f64 / seconds,
            offered_bits_per_second: bits_per_second(offered.bytes, seconds),
            delivered_packets_per_second: s.packets as f64 / seconds,
            delivered_bits_per_second: bits_per_second(s.bytes, seconds),
            sent: offered.packets,
            received: s.packets,
            loss_ratio: loss_ratio(offered.packets, s.packets),
            duplicates: s.duplicates,
            reordered: s.reordered,
            corrupt: s.corrupt,
            latency_ms: s.latency_ms.clone(),
            receiver_reports_returned: offered.received_reports,
            sink_receive: s.receive.clone(),
            sink_steering_refused: s.steering_refused.clone(),
            data_path: m.data_path.clone(),
            relay_cpu_seconds: cpu,
            relay_kernel_cpu_seconds: kernel,
            relay_cpu_us_per_packet: total.and_then(|c| us_per_packet(c, forwarded(offered, s))),
            box_cpu_us_per_packet: difference(m.box_busy)
                .and_then(|busy| us_per_packet(busy, m.box_packets)),
            cores,
            box_idle_share: idle(difference((start.box_busy, end.box_busy))),
            tools_cpu_seconds: tools_cpu,
            tools_cpu_us_per_packet: tools_cpu.and_then(|c| us_per_packet(c, offered.packets)),
            tools_idle_share,
            generator_fell_behind: offered.fell_behind(),
            scrapes: m.scrapes,
            slowest_scrape_ms: m.slowest_scrape_us as f64 / 1e3,
            sdp: m.sdp,
            malformed: s.malformed,
            warnings,
        }
    }
}

/// Bits per second of `bytes` over `seconds`.
fn bits_per_second(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 * 8.0 / seconds
}

/// (sent − received) / sent; none lost when none were sent, nor when more
/// arrived than were sent (duplicates).
fn loss_ratio(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        sent.saturating_sub(received) as f64 / sent as f64
    }
}

/// What a relay forwarded: RTP and RTCP to the sink, and the receiver reports
/// back to the generator.
fn forwarded(offered: &generator::Report, delivered: &sink::Report) -> u64 {
    delivered.packets + delivered.rtcp_packets + offered.received_reports
}

/// A counter's growth between two readings, when both were made.
fn difference((before, after): (Option<f64>, Option<f64>)) -> Option<f64> {
    before.zip(after).map(|(a, b)| b - a)
}

/// CPU `seconds` per packet in microseconds; none without packets.
fn us_per_packet(seconds: f64, packets: u64) -> Option<f64> {
    (packets > 0).then(|| seconds * 1e6 / packets as f64)
}

/// The share of `cores` CPUs over `seconds` of wall time that `busy` CPU
/// seconds leave idle, within 0–1 (tick rounding can stray past either end);
/// none without CPUs or time.
fn idle_share(busy: f64, cores: u32, seconds: f64) -> Option<f64> {
    let capacity = f64::from(cores) * seconds;
    (capacity > 0.0 && busy.is_finite()).then(|| (1.0 - busy / capacity).clamp(0.0, 1.0))
}

/// A relay whose SDPs do not carry what the streams did.
fn sdp_warning(c: &SdpCheck) -> Option<String> {
    (c.matched < c.checked).then(|| {
        format!(
            "the relay's SDP matched the sink's parameter sets for {} of {} video streams ({} not ready){}{}",
            c.matched,
            c.checked,
            c.not_ready,
            if c.mismatched.is_empty() { "" } else { ": " },
            c.mismatched.join("; ")
        )
    })
}

/// What makes a run's figures doubtful.
fn warnings(
    offered: &generator::Report,
    through_relay: bool,
    relay_cpu_known: bool,
    tools_idle_share: Option<f64>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if offered.fell_behind() {
        warnings.push(format!(
            "THE GENERATOR DID NOT REACH ITS OFFERED RATE: {:.0} of {:.0} packets/s, {} frames late (max {:.1} ms). Loss and latency figures understate the load; use fewer groups or a quieter machine",
            offered.packets_per_second, offered.target_packets_per_second, offered.late_frames, offered.max_lag_ms
        ));
    }
    if !offered.fell_behind() && offered.late_share() > 0.01 {
        warnings.push(format!(
            "pacing jitter: {:.1} % of frames went out more than 20 ms late (max {:.1} ms); the machine is near saturation",
            offered.late_share() * 100.0,
            offered.max_lag_ms
        ));
    }
    if let Some(idle) = tools_idle_share.filter(|&idle| idle < TOOLS_IDLE_FLOOR) {
        warnings.push(format!(
            "the load tools themselves used {:.1} % of the machine's CPU, leaving {:.1} % idle (< {:.0} %): latency and loss figures are the tools', not the relay's; use fewer --groups or a machine with more cores",
            (1.0 - idle) * 100.0,
            idle * 100.0,
            TOOLS_IDLE_FLOOR * 100.0
        ));
    }
    if offered.send_errors > 0 {
        warnings.push(format!(
            "the generator could not send {} datagrams",
            offered.send_errors
        ));
    }
    if through_relay && !relay_cpu_known {
        warnings
            .push("relay CPU unknown: give --relay-pid, or let the relay serve /metrics".into());
    }
    warnings
}

/// The report as a table an operator reads.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<32} {v}\n"));
    line(
        &mut out,
        "mode",
        format!(
            "{} ({} groups of {}, {} streams, {:.1} s)",
            r.mode, r.groups, r.layout, r.streams, r.seconds
        ),
    );
    line(
        &mut out,
        "offered",
        format!(
            "{:.0} packets/s, {:.2} Mbit/s (profile {:.0} packets/s)",
            r.offered_packets_per_second,
            r.offered_bits_per_second / 1e6,
            r.target_packets_per_second
        ),
    );
    line(
        &mut out,
        "delivered",
        format!(
            "{:.0} packets/s, {:.2} Mbit/s",
            r.delivered_packets_per_second,
            r.delivered_bits_per_second / 1e6
        ),
    );
    line(
        &mut out,
        "loss",
        format!(
            "{:.4} % ({} of {} packets)",
            r.loss_ratio * 100.0,
            r.sent.saturating_sub(r.received),
            r.sent
        ),
    );
    line(
        &mut out,
        "duplicates / reordered / corrupt",
        format!("{} / {} / {}", r.duplicates, r.reordered, r.corrupt),
    );
    line(
        &mut out,
        "latency p50 / p99 / p99.9 / max",
        format!(
            "{:.3} / {:.3} / {:.3} / {:.3} ms",
            r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999, r.latency_ms.max
        ),
    );
    match (r.box_idle_share, r.cores) {
        (Some(idle), Some(cores)) => line(
            &mut out,
            "machine idle while sending",
            format!("{:.1} % of {cores} CPUs", idle * 100.0),
        ),
        _ => line(&mut out, "machine idle while sending", "n/a".into()),
    }
    match (
        r.tools_cpu_seconds,
        r.tools_cpu_us_per_packet,
        r.tools_idle_share,
    ) {
        (Some(s), Some(us), Some(idle)) => line(
            &mut out,
            "load tools CPU",
            format!(
                "{s:.2} s, {us:.2} µs per RTP packet sent; alone they leave {:.1} % idle",
                idle * 100.0
            ),
        ),
        _ => line(&mut out, "load tools CPU", "n/a".into()),
    }
    line(
        &mut out,
        "receiver reports returned",
        r.receiver_reports_returned.to_string(),
    );
    if let Some(c) = &r.sdp {
        line(
            &mut out,
            "relay's SDP vs what arrived",
            format!(
                "{} of {} video streams match ({} not ready)",
                c.matched, c.checked, c.not_ready
            ),
        );
    }
    line(
        &mut out,
        "sink reads",
        match &r.sink_steering_refused {
            Some(why) => format!("{} (not steered: {why})", r.sink_receive),
            None => r.sink_receive.clone(),
        },
    );
    if r.scrapes > 0 {
        line(
            &mut out,
            "/metrics scrapes",
            format!("{} (slowest {:.1} ms)", r.scrapes, r.slowest_scrape_ms),
        );
    }
    if let Some(path) = &r.data_path {
        line(&mut out, "data path", path.clone());
    }
    match (r.relay_cpu_seconds, r.relay_cpu_us_per_packet) {
        (None, Some(us)) => line(
            &mut out,
            "relay CPU",
            format!("{us:.2} µs per forwarded packet, all in the kernel's program"),
        ),
        (Some(s), Some(us)) => {
            let kernel = r.relay_kernel_cpu_seconds.map_or(String::new(), |k| {
                format!(" + {k:.2} s in the kernel's program")
            });
            line(
                &mut out,
                "relay CPU",
                format!("{s:.2} s{kernel}, {us:.2} µs per forwarded packet"),
            )
        }
        _ => line(&mut out, "relay CPU", "n/a".into()),
    }
    if let Some(us) = r.box_cpu_us_per_packet {
        line(
            &mut out,
            "machine CPU",
            format!("{us:.2} µs per RTP packet sent (all processes and the kernel)"),
        );
    }
    for w in &r.warnings {
        out.push_str(&format!("\nWARNING: {w}\n"));
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// 1000 packets of 1250 bytes in 2 s at the profile's 500/s, 990 of them
    /// delivered with 8 RTCP packets, 2 receiver reports back: the relay
    /// forwarded 990 + 8 + 2 = 1000 packets.
    pub(in crate::traffic::loadtest) fn measurement() -> Measurement {
        Measurement {
            mode: "spawn",
            groups: 1,
            streams: 3,
            layout: Layout::AudioDisplayVideo,
            target_packets_per_second: 500.0,
            through_relay: true,
            offered: generator::Report {
                streams: 3,
                packets: 1000,
                bytes: 1_250_000,
                sender_reports: 6,
                received_reports: 2,
                seconds: 2.0,
                target_packets_per_second: 500.0,
                packets_per_second: 500.0,
                frames: 200,
                late_frames: 1,
                max_lag_ms: 25.0,
                ..Default::default()
            },
            delivered: sink::Report {
                receive: "per-port".into(),
                steering_refused: Some("no CAP_BPF".into()),
                packets: 990,
                bytes: 1_237_500,
                rtcp_packets: 8,
                duplicates: 1,
                reordered: 2,
                corrupt: 3,
                latency_ms: sink::Latency {
                    p50: 0.125,
                    p99: 0.5,
                    p999: 1.0,
                    max: 2.0,
                },
                ..Default::default()
            },
            relay_cpu: (Some(10.0), Some(10.25)),
            kernel: (None, None),
            kernel_packets: 0,
            data_path: Some("userspace".into()),
            box_busy: (Some(100.0), Some(101.5)),
            box_packets: 1000,
            // 2 CPUs over 2 s of sending: 4 CPU seconds, 1 of them busy, half
            // a second of it the tools'.
            sending: (
                CpuCounters {
                    box_busy: Some(100.0),
                    cores: Some(2),
                    tools: Some(5.0),
                },
                CpuCounters {
                    box_busy: Some(101.0),
                    cores: Some(2),
                    tools: Some(5.5),
                },
            ),
            sending_seconds: 2.0,
            scrapes: 4,
            slowest_scrape_us: 2500,
            sdp: Some(SdpCheck {
                checked: 2,
                matched: 2,
                not_ready: 0,
                mismatched: Vec::new(),
            }),
        }
    }

    #[test]
    fn rates_loss_and_cpu_per_packet_from_the_counts() {
        let r = Report::new(measurement());
        assert_eq!(r.mode, "spawn");
        assert_eq!((r.groups, r.streams), (1, 3));
        assert_eq!(r.seconds, 2.0);
        assert_eq!(r.target_packets_per_second, 500.0);
        assert_eq!(r.offered_packets_per_second, 500.0);
        // 1,250,000 bytes × 8 bits / 2 s.
        assert_eq!(r.offered_bits_per_second, 5_000_000.0);
        assert_eq!(r.delivered_packets_per_second, 495.0);
        assert_eq!(r.delivered_bits_per_second, 4_950_000.0);
        assert_eq!((r.sent, r.received), (1000, 990));
        // 10 of 1000 lost.
        assert_eq!(r.loss_ratio, 0.01);
        assert_eq!((r.duplicates, r.reordered, r.corrupt), (1, 2, 3));
        assert_eq!(r.latency_ms.p99, 0.5);
        assert_eq!(r.receiver_reports_returned, 2);
        // 0.25 CPU seconds over 1000 forwarded packets: 250 µs each.
        assert_eq!(r.relay_cpu_seconds, Some(0.25));
        assert_eq!(r.relay_cpu_us_per_packet, Some(250.0));
        assert_eq!(r.relay_kernel_cpu_seconds, None);
        assert_eq!(r.data_path.as_deref(), Some("userspace"));
        // 1.5 busy seconds over the 1000 packets sent meanwhile.
        assert_eq!(r.box_cpu_us_per_packet, Some(1500.0));
        // Sending: 1 of 4 CPU seconds busy, 0.5 of them the tools'.
        assert_eq!(r.cores, Some(2));
        assert_eq!(r.box_idle_share, Some(0.75));
        assert_eq!(r.tools_cpu_seconds, Some(0.5));
        assert_eq!(r.tools_cpu_us_per_packet, Some(500.0));
        assert_eq!(r.tools_idle_share, Some(0.875));
        assert!(!r.generator_fell_behind);
        assert_eq!((r.scrapes, r.slowest_scrape_ms), (4, 2.5));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(!r.loss_free(), "1 % lost");
    }

    #[test]
    fn idle_share_is_the_unused_part_of_every_cpu_over_the_time() {
        assert_eq!(idle_share(1.0, 2, 2.0), Some(0.75));
        assert_eq!(idle_share(0.0, 4, 1.0), Some(1.0));
        assert_eq!(idle_share(3.0, 1, 4.0), Some(0.25));
        // Tick rounding can make busy time stray past the wall time, or below 0.
        assert_eq!(idle_share(4.5, 2, 2.0), Some(0.0));
        assert_eq!(idle_share(-0.5, 2, 2.0), Some(1.0));
        assert_eq!(idle_share(1.0, 0, 2.0), None, "no CPUs");
        assert_eq!(idle_share(1.0, 2, 0.0), None, "no time");
        assert_eq!(idle_share(1.0, 2, -1.0), None);
        assert_eq!(idle_share(f64::NAN, 2, 2.0), None);
    }

    #[test]
    fn headroom_needs_both_readings_and_counts_cpus_as_the_run_ended() {
        let mut m = measurement();
        m.sending.1.tools = None;
        m.sending.0.box_busy = None;
        let r = Report::new(m);
        assert_eq!(
            (r.box_idle_share, r.tools_cpu_seconds),
            (None, None),
            "one reading missing"
        );
        assert_eq!(
            (r.tools_cpu_us_per_packet, r.tools_idle_share),
            (None, None)
        );

        let mut m = measurement();
        m.sending.0.cores = None;
        m.sending.1.cores = Some(4);
        let r = Report::new(m);
        // 1 busy second of 4 CPUs × 2 s.
        assert_eq!((r.cores, r.box_idle_share), (Some(4), Some(0.875)));

        let mut m = measurement();
        m.sending.1.cores = None;
        let r = Report::new(m);
        assert_eq!((r.cores, r.box_idle_share), (Some(2), Some(0.75)));

        let mut m = measurement();
        m.sending = (CpuCounters::default(), CpuCounters::default());
        let r = Report::new(m);
        assert_eq!(
            (r.cores, r.box_idle_share, r.tools_idle_share),
            (None, None, None)
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        // Without packets there is no per-packet figure, but the share stands.
        let mut m = measurement();
        m.offered.packets = 0;
        let r = Report::new(m);
        assert_eq!(r.tools_cpu_us_per_packet, None);
        assert_eq!(r.tools_idle_share, Some(0.875));
    }

    #[test]
    fn tools_leaving_under_a_fifth_of_the_machine_idle_is_a_warning() {
        let offered = measurement().offered;
        let warned = |idle: f64| warnings(&offered, true, true, Some(idle));
        assert!(
            warned(TOOLS_IDLE_FLOOR).is_empty(),
            "exactly 20 % is enough"
        );
        assert!(warned(0.9).is_empty());
        assert!(warnings(&offered, true, true, None).is_empty(), "unknown");
        assert_eq!(warned(TOOLS_IDLE_FLOOR.next_down()).len(), 1);
        assert_eq!(warned(0.0).len(), 1);

        // The tools used 3.4 of the 4 CPU seconds: 85 %, leaving 15 %.
        let mut m = measurement();
        m.sending.1.tools = Some(8.4);
        let r = Report::new(m);
        assert_eq!(
            r.warnings,
            vec![
                "the load tools themselves used 85.0 % of the machine's CPU, leaving 15.0 % idle (< 20 %): latency and loss figures are the tools', not the relay's; use fewer --groups or a machine with more cores"
            ]
        );
        let t = table(&r);
        assert!(
            t.ends_with(&format!("\nWARNING: {}\n", r.warnings[0])),
            "{t}"
        );
        // 3.1 of 4: 22.5 % idle, no warning.
        let mut m = measurement();
        m.sending.1.tools = Some(8.1);
        assert!(Report::new(m).warnings.is_empty());
    }

    #[test]
    fn loss_is_zero_without_packets_and_never_negative() {
        assert_eq!(loss_ratio(0, 0), 0.0);
        assert_eq!(loss_ratio(0, 5), 0.0);
        assert_eq!(loss_ratio(100, 103), 0.0, "duplicates are not a gain");
        assert_eq!(loss_ratio(4, 1), 0.75);
        assert_eq!(loss_ratio(8, 8), 0.0);
    }

    #[test]
    fn cpu_per_packet_needs_both_readings_and_some_packets() {
        assert_eq!(us_per_packet(0.5, 2000), Some(250.0));
        assert_eq!(us_per_packet(0.5, 0), None);
        assert_eq!(difference((Some(1.5), Some(4.0))), Some(2.5));
        assert_eq!(difference((None, Some(4.0))), None);
        assert_eq!(difference((Some(1.5), None)), None);

        let mut m = measurement();
        m.delivered = sink::Report::default();
        m.offered.packets = 0;
        m.offered.received_reports = 0;
        m.box_packets = 0;
        let r = Report::new(m);
        assert_eq!(r.relay_cpu_seconds, Some(0.25), "CPU was spent");
        assert_eq!(r.relay_cpu_us_per_packet, None, "but nothing forwarded");
        assert_eq!(r.box_cpu_us_per_packet, None, "nor sent");
        assert_eq!(r.loss_ratio, 0.0);
    }

    #[test]
    fn the_fast_paths_program_time_is_charged_to_the_relay() {
        use crate::dataplane::ebpf::ProgramTime;
        let mut m = measurement();
        m.data_path = Some("ebpf".into());
        let at = |ms: u64, runs: u64| ProgramTime {
            run_time: std::time::Duration::from_millis(ms),
            runs,
        };
        // 0.25 s in the process; 0.025 s in the program over the half of the
        // packets sent while it was counted, so 0.05 s over all: 300 µs a packet.
        m.kernel = (Some(at(1000, 5)), Some(at(1025, 505)));
        m.kernel_packets = 500;
        let r = Report::new(m.clone());
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9 * b);
        assert!(near(r.relay_kernel_cpu_seconds, 0.05), "{r:?}");
        assert!(near(r.relay_cpu_us_per_packet, 300.0), "{r:?}");
        let text = table(&r);
        assert!(text.contains("ebpf"), "{text}");
        assert!(text.contains("+ 0.05 s in the kernel's program"), "{text}");
        // No process of its own (the bare rewrite): all of it the program's.
        let mut bare = m.clone();
        bare.relay_cpu = (None, None);
        let r = Report::new(bare);
        assert!(near(r.relay_cpu_us_per_packet, 50.0), "{r:?}");
        assert!(table(&r).contains("50.00 µs per forwarded packet, all in the kernel's program"));
        // Counted over no packet: not scaled up from nothing.
        let mut none = m.clone();
        none.kernel_packets = 0;
        assert_eq!(Report::new(none).relay_kernel_cpu_seconds, None);
        // Not counted at the start (or the end): nothing charged, nothing made up.
        m.kernel.0 = None;
        let r = Report::new(m);
        assert_eq!(r.relay_kernel_cpu_seconds, None);
        assert_eq!(r.relay_cpu_us_per_packet, Some(250.0));
    }

    #[test]
    fn relay_cpu_counts_only_through_a_relay_and_is_missed_there() {
        let mut direct = measurement();
        direct.through_relay = false;
        let r = Report::new(direct);
        assert_eq!(
            (r.relay_cpu_seconds, r.relay_cpu_us_per_packet),
            (None, None)
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        let mut unknown = measurement();
        unknown.relay_cpu = (Some(10.0), None);
        let r = Report::new(unknown);
        assert_eq!(r.relay_cpu_seconds, None);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].starts_with("relay CPU unknown"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_zero_length_run_does_not_divide_by_zero() {
        let mut m = measurement();
        m.offered.seconds = 0.0;
        let r = Report::new(m);
        assert_eq!(r.seconds, 1e-9);
        assert_eq!(r.offered_packets_per_second, 1000.0 / 1e-9);
        assert!(r.delivered_bits_per_second.is_finite());
    }

    #[test]
    fn the_generator_falling_behind_or_jittering_is_a_warning() {
        let mut behind = measurement();
        // Under 98 % of the profile's rate.
        behind.offered.packets_per_second = 489.0;
        let r = Report::new(behind);
        assert!(r.generator_fell_behind);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("THE GENERATOR DID NOT REACH ITS OFFERED RATE: 489 of 500"),
            "{}",
            r.warnings[0]
        );

        let mut jitter = measurement();
        // 3 of 200 frames late: 1.5 % > 1 %.
        jitter.offered.late_frames = 3;
        jitter.offered.send_errors = 7;
        let r = Report::new(jitter);
        assert!(!r.generator_fell_behind);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings[0].starts_with("pacing jitter: 1.5 % of frames"),
            "{}",
            r.warnings[0]
        );
        assert_eq!(r.warnings[1], "the generator could not send 7 datagrams");
    }

    #[test]
    fn loss_free_is_under_a_hundredth_of_a_percent_at_the_full_rate() {
        let mut r = Report::new(measurement());
        r.loss_ratio = 0.99e-4;
        assert!(r.loss_free());
        r.loss_ratio = 1e-4;
        assert!(!r.loss_free());
        r.loss_ratio = 0.0;
        r.generator_fell_behind = true;
        assert!(!r.loss_free());
    }

    #[test]
    fn an_sdp_that_does_not_carry_what_arrived_is_a_warning() {
        let mut m = measurement();
        m.sdp = Some(SdpCheck {
            checked: 4,
            matched: 2,
            not_ready: 1,
            mismatched: vec!["group 3 primary_video: relay None, sink Some(\"Z0I=,aM4=\")".into()],
        });
        let r = Report::new(m);
        assert_eq!(
            r.warnings.last().unwrap(),
            "the relay's SDP matched the sink's parameter sets for 2 of 4 video streams (1 not ready): group 3 primary_video: relay None, sink Some(\"Z0I=,aM4=\")"
        );
        let mut m = measurement();
        m.sdp.as_mut().unwrap().matched = 1;
        let r = Report::new(m);
        assert!(
            r.warnings.last().unwrap().ends_with("(0 not ready)"),
            "{:?}",
            r.warnings
        );
        assert!(
            Report::new(measurement()).warnings.is_empty(),
            "all matched"
        );
    }

    #[test]
    fn the_table_shows_the_figures_an_operator_reads() {
        let t = table(&Report::new(measurement()));
        for (key, value) in [
            (
                "mode",
                "spawn (1 groups of audio-display-video, 3 streams, 2.0 s)",
            ),
            (
                "offered",
                "500 packets/s, 5.00 Mbit/s (profile 500 packets/s)",
            ),
            ("delivered", "495 packets/s, 4.95 Mbit/s"),
            ("loss", "1.0000 % (10 of 1000 packets)"),
            ("duplicates / reordered / corrupt", "1 / 2 / 3"),
            (
                "latency p50 / p99 / p99.9 / max",
                "0.125 / 0.500 / 1.000 / 2.000 ms",
            ),
            ("machine idle while sending", "75.0 % of 2 CPUs"),
            (
                "load tools CPU",
                "0.50 s, 500.00 µs per RTP packet sent; alone they leave 87.5 % idle",
            ),
            ("receiver reports returned", "2"),
            (
                "relay's SDP vs what arrived",
                "2 of 2 video streams match (0 not ready)",
            ),
            ("sink reads", "per-port (not steered: no CAP_BPF)"),
            ("/metrics scrapes", "4 (slowest 2.5 ms)"),
            ("relay CPU", "0.25 s, 250.00 µs per forwarded packet"),
            (
                "machine CPU",
                "1500.00 µs per RTP packet sent (all processes and the kernel)",
            ),
        ] {
            let row = format!("{key:<32} {value}");
            assert!(t.lines().any(|l| l == row), "no row {row:?} in\n{t}");
        }
        assert!(!t.contains("WARNING"), "{t}");

        let mut m = measurement();
        m.relay_cpu = (None, None);
        m.scrapes = 0;
        m.sending = (CpuCounters::default(), CpuCounters::default());
        let t = table(&Report::new(m));
        assert!(t.contains("relay CPU                        n/a\n"), "{t}");
        assert!(t.contains("machine idle while sending       n/a\n"), "{t}");
        assert!(t.contains("load tools CPU                   n/a\n"), "{t}");
        assert!(!t.contains("/metrics scrapes"), "{t}");
        assert!(
            t.ends_with(
                "\nWARNING: relay CPU unknown: give --relay-pid, or let the relay serve /metrics\n"
            ),
            "{t}"
        );
    }
}
