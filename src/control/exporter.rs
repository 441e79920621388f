//! The per-stream Prometheus series of SPEC §5, built at scrape time from the
//! data plane's counters: nothing is labelled or incremented per packet. Series
//! exist only for bound ports, so a freed group's disappear at the next scrape.

use crate::dataplane::DataPlane;
use crate::dataplane::counters::DropReason;
use crate::group::Plane;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One family under construction.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    metrics: Vec<Metric>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Family {
            name,
            help,
            kind,
            metrics: Vec::new(),
        }
    }

    fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name((*k).to_string());
                    l.set_value((*v).to_string());
                    l
                })
                .collect(),
        );
        if self.kind == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        self.metrics.push(m);
    }

    fn build(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_string());
        f.set_help(self.help.to_string());
        f.set_field_type(self.kind);
        f.set_metric(self.metrics);
        f
    }
}

/// Reads every bound port's counters into the per-stream families.
pub fn stream_families(dataplane: &DataPlane, now: Instant) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut packets = Family::new(
        "rtp_relay_packets_total",
        "Packets forwarded, by group, stream, plane (rtp|rtcp) and direction (to_wowza|to_appliance).",
        COUNTER,
    );
    let mut bytes = Family::new(
        "rtp_relay_bytes_total",
        "Bytes (UDP payload) forwarded, by group, stream, plane and direction.",
        COUNTER,
    );
    let mut dropped = Family::new(
        "rtp_relay_dropped_packets_total",
        "Packets dropped, by group, stream, plane and reason.",
        COUNTER,
    );
    let mut lost = Family::new(
        "rtp_relay_rtp_lost_packets_total",
        "RTP packets lost between appliance and relay (RFC 3550 expected - received, never decreasing).",
        COUNTER,
    );
    let mut duplicates = Family::new(
        "rtp_relay_rtp_duplicate_packets_total",
        "Duplicate RTP packets from the appliance.",
        COUNTER,
    );
    let mut reordered = Family::new(
        "rtp_relay_rtp_reordered_packets_total",
        "RTP packets from the appliance that arrived after a later sequence number.",
        COUNTER,
    );
    let mut ssrc_changes = Family::new(
        "rtp_relay_rtp_ssrc_changes_total",
        "Times the SSRC of a media stream changed (an encoder restart).",
        COUNTER,
    );
    let mut jitter = Family::new(
        "rtp_relay_rtp_jitter_seconds",
        "RFC 3550 interarrival jitter of the media stream from the appliance, in seconds.",
        GAUGE,
    );
    let mut age = Family::new(
        "rtp_relay_stream_last_packet_age_seconds",
        "Seconds since the last RTP packet from the appliance.",
        GAUGE,
    );
    let mut wowza_fraction = Family::new(
        "rtp_relay_wowza_reported_fraction_lost",
        "Fraction lost (0-1) in Wowza's latest RTCP receiver report for the stream.",
        GAUGE,
    );
    let mut wowza_lost = Family::new(
        "rtp_relay_wowza_reported_lost_packets",
        "Cumulative packets lost in Wowza's latest RTCP receiver report for the stream.",
        GAUGE,
    );

    let epoch = dataplane.epoch();
    for (group, ports) in dataplane.groups() {
        let group = group.to_string();
        for p in ports {
            let stream = p.rule.role.as_str();
            let plane = p.rule.plane.as_str();
            let c = &p.counters;
            let base = [
                ("group", group.as_str()),
                ("stream", stream),
                ("plane", plane),
            ];
            for (direction, n, b) in [
                ("to_wowza", c.to_wowza_packets.get(), c.to_wowza_bytes.get()),
                (
                    "to_appliance",
                    c.to_appliance_packets.get(),
                    c.to_appliance_bytes.get(),
                ),
            ] {
                let labels = [base[0], base[1], base[2], ("direction", direction)];
                packets.push(&labels, n as f64);
                bytes.push(&labels, b as f64);
            }
            for reason in DropReason::ALL {
                let labels = [base[0], base[1], base[2], ("reason", reason.as_str())];
                dropped.push(&labels, c.dropped(reason) as f64);
            }
            let per_stream = [("group", group.as_str()), ("stream", stream)];
            match p.rule.plane {
                Plane::Rtp => {
                    let m = &c.media;
                    let now_lost = m.expected.get().saturating_sub(m.received.get());
                    let high = m
                        .lost_exported
                        .fetch_max(now_lost, Ordering::Relaxed)
                        .max(now_lost);
                    lost.push(&per_stream, high as f64);
                    duplicates.push(&per_stream, m.duplicates.get() as f64);
                    reordered.push(&per_stream, m.reordered.get() as f64);
                    ssrc_changes.push(&per_stream, m.ssrc_changes.get() as f64);
                    jitter.push(&per_stream, f64::from_bits(m.jitter_bits.get()));
                    if let Some(a) = c.last_packet_age(epoch, now) {
                        age.push(&per_stream, a.max(0.0));
                    }
                }
                Plane::Rtcp => {
                    if let Some((fraction, cumulative, _)) = c.control.wowza_report() {
                        wowza_fraction.push(&per_stream, fraction);
                        wowza_lost.push(&per_stream, cumulative as f64);
                    }
                }
            }
        }
    }
    [
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
    ]
    .into_iter()
    .map(Family::build)
    .collect()
}
