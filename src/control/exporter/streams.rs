//! The per-stream Prometheus series (docs/metrics.md), built at scrape time from the
//! data plane's counters: nothing is labelled or incremented per packet. Series
//! exist only for bound ports, so a freed group's disappear at the next scrape.
//!
//! They are written straight into the text exposition: at 2048 groups there
//! are ~140,000 of them, and building the `prometheus` crate's protobuf structs
//! (a string per label value) took most of a 200 ms scrape. Every label value
//! here is a number or a fixed name, so nothing needs escaping. `promtool check
//! metrics` checks the result in the test suite.

use crate::clock::Now;
use crate::dataplane::BoundPorts;
use crate::dataplane::counters::DropReason;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// One family under construction: its header, then its samples.
struct Family {
    text: String,
    samples: usize,
}

impl Family {
    fn new(name: &str, help: &str, kind: &str) -> Self {
        let mut text = String::with_capacity(1 << 16);
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        Family { text, samples: 0 }
    }

    /// One sample: `name{labels} value`; `labels` is already `k="v",…`.
    fn push(&mut self, name: &str, labels: std::fmt::Arguments<'_>, value: f64) {
        let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        self.samples += 1;
    }
}

/// Appends every bound port's per-stream series to `out` (text exposition).
pub fn write_stream_families(bound: &BoundPorts, now: &Now, out: &mut String) {
    const PACKETS: &str = "rtp_relay_packets_total";
    const BYTES: &str = "rtp_relay_bytes_total";
    const DROPPED: &str = "rtp_relay_dropped_packets_total";
    const LOST: &str = "rtp_relay_rtp_lost_packets_total";
    const DUPLICATES: &str = "rtp_relay_rtp_duplicate_packets_total";
    const REORDERED: &str = "rtp_relay_rtp_reordered_packets_total";
    const SSRC_CHANGES: &str = "rtp_relay_rtp_ssrc_changes_total";
    const JITTER: &str = "rtp_relay_rtp_jitter_seconds";
    const AGE: &str = "rtp_relay_stream_last_packet_age_seconds";
    const WOWZA_FRACTION: &str = "rtp_relay_wowza_reported_fraction_lost";
    const WOWZA_LOST: &str = "rtp_relay_wowza_reported_lost_packets";
    let mut packets = Family::new(
        PACKETS,
        "Packets forwarded, by group, stream, plane (rtp|rtcp) and direction (to_wowza|to_appliance).",
        "counter",
    );
    let mut bytes = Family::new(
        BYTES,
        "Bytes (UDP payload) forwarded, by group, stream, plane and direction.",
        "counter",
    );
    let mut dropped = Family::new(
        DROPPED,
        "Packets dropped, by group, stream, plane and reason.",
        "counter",
    );
    let mut lost = Family::new(
        LOST,
        "RTP packets lost between appliance and relay (RFC 3550 expected - received, never decreasing).",
        "counter",
    );
    let mut duplicates = Family::new(
        DUPLICATES,
        "Duplicate RTP packets from the appliance.",
        "counter",
    );
    let mut reordered = Family::new(
        REORDERED,
        "RTP packets from the appliance that arrived after a later sequence number.",
        "counter",
    );
    let mut ssrc_changes = Family::new(
        SSRC_CHANGES,
        "Times the SSRC of a media stream changed (an encoder restart).",
        "counter",
    );
    let mut jitter = Family::new(
        JITTER,
        "RFC 3550 interarrival jitter of the media stream from the appliance, in seconds.",
        "gauge",
    );
    let mut age = Family::new(
        AGE,
        "Seconds since the last RTP packet from the appliance.",
        "gauge",
    );
    let mut wowza_fraction = Family::new(
        WOWZA_FRACTION,
        "Fraction lost (0-1) in Wowza's latest RTCP receiver report for the stream.",
        "gauge",
    );
    let mut wowza_lost = Family::new(
        WOWZA_LOST,
        "Cumulative packets lost in Wowza's latest RTCP receiver report for the stream.",
        "gauge",
    );

    for (group, ports) in bound.groups() {
        for p in ports {
            let (stream, plane) = (p.rule.role.as_str(), p.rule.plane.as_str());
            // Both backends' figures (the kernel's are read here, at scrape time).
            let s = bound.snapshot(p, now);
            for (direction, n, b) in [
                ("to_wowza", s.packets_to_wowza, s.bytes_to_wowza),
                ("to_appliance", s.packets_to_appliance, s.bytes_to_appliance),
            ] {
                let labels = format_args!(
                    "group=\"{group}\",stream=\"{stream}\",plane=\"{plane}\",direction=\"{direction}\""
                );
                packets.push(PACKETS, labels, n as f64);
                bytes.push(BYTES, labels, b as f64);
            }
            for (reason, n) in DropReason::ALL.iter().zip(s.dropped.as_array()) {
                let reason_label = reason.as_str();
                dropped.push(
                    DROPPED,
                    format_args!(
                        "group=\"{group}\",stream=\"{stream}\",plane=\"{plane}\",reason=\"{reason_label}\""
                    ),
                    n as f64,
                );
            }
            let per_stream = format_args!("group=\"{group}\",stream=\"{stream}\"");
            if let Some(m) = &s.media {
                let now_lost = m.lost.max(0) as u64;
                let high = p
                    .counters
                    .media
                    .lost_exported
                    .fetch_max(now_lost, Ordering::Relaxed)
                    .max(now_lost);
                lost.push(LOST, per_stream, high as f64);
                duplicates.push(DUPLICATES, per_stream, m.duplicates as f64);
                reordered.push(REORDERED, per_stream, m.reordered as f64);
                ssrc_changes.push(SSRC_CHANGES, per_stream, m.ssrc_changes as f64);
                jitter.push(JITTER, per_stream, m.jitter_seconds);
                if let Some(a) = s.seconds_since_last_packet {
                    age.push(AGE, per_stream, a.max(0.0));
                }
            }
            if let Some((Some(fraction), Some(cumulative))) = s
                .control
                .as_ref()
                .map(|c| (c.wowza_fraction_lost, c.wowza_cumulative_lost))
            {
                wowza_fraction.push(WOWZA_FRACTION, per_stream, fraction);
                wowza_lost.push(WOWZA_LOST, per_stream, cumulative as f64);
            }
        }
    }
    for family in [
        packets,
        bytes,
        dropped,
        lost,
        duplicates,
        reordered,
        ssrc_changes,
        jitter,
        age,
        wowza_fraction,
        wowza_lost,
    ] {
        // A family without samples is left out, as the text format expects.
        if family.samples > 0 {
            out.push_str(&family.text);
        }
    }
}
