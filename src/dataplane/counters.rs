//! Per-port counters shared between the port's one writer (its worker thread)
//! and readers (API, exporter) at any time. Single writer: updates are a load
//! and a store, never a locked read-modify-write. Two exceptions take a lock,
//! never per ordinary packet: the latched appliance (when it changes) and a
//! video stream's H.264 learner (the rare packet carrying parameter sets, fed
//! by the worker or by the reader of the kernel's copies).

use crate::packet::rtp::RtpHeader;
use crate::sdp::{H264Learner, Missing, ParameterSets};
use crate::stats::rtcp::RtcpStream;
use crate::stats::rtp::{RtpCounts, RtpSnapshot};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Why a packet was dropped (the `reason` label).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Not from the accepted appliance nor from the destination.
    UnknownSource,
    /// Not valid RTP (media port) or RTCP (control port).
    Malformed,
    /// Larger than `max_packet_size`.
    Oversize,
    /// The kernel refused to send it.
    SendError,
    /// From the destination before any appliance was latched.
    NoReturnAddress,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 5] = [
        DropReason::UnknownSource,
        DropReason::Malformed,
        DropReason::Oversize,
        DropReason::SendError,
        DropReason::NoReturnAddress,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::Malformed => "malformed",
            DropReason::Oversize => "oversize",
            DropReason::SendError => "send_error",
            DropReason::NoReturnAddress => "no_return_address",
        }
    }
}

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (only the owning worker calls this).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets the value (only the owning worker calls this).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Reads it.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Everything measured on one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Appliance → destination.
    pub to_wowza_packets: Counter,
    /// Appliance → destination bytes.
    pub to_wowza_bytes: Counter,
    /// Destination → appliance.
    pub to_appliance_packets: Counter,
    /// Destination → appliance bytes.
    pub to_appliance_bytes: Counter,
    /// Drops by [`DropReason`] (index = position in `DropReason::ALL`).
    pub dropped: [Counter; 5],
    /// Media: the RFC 3550 state.
    pub media: MediaCounters,
    /// Control: sender and receiver reports, and the destination's report.
    pub control: ControlCounters,
    /// Nanoseconds after the data plane's epoch of the last accepted packet (0: none).
    pub last_packet_nanos: Counter,
    /// The latched appliance, written only when it changes (never per packet).
    pub latched: Mutex<Option<SocketAddr>>,
    /// A video stream's H.264 parameter sets, for the SDP: fed only the rare
    /// packets that may carry them ([`crate::sdp::wants`]), by the worker or,
    /// on the fast path, by the reader of the kernel's copies; read by the SDP.
    pub h264: Mutex<H264Learner>,
}

impl PortCounters {
    /// Feeds a packet that may carry parameter sets to the stream's learner.
    pub fn learn(&self, header: &RtpHeader, packet: &[u8], now: Instant) {
        self.h264
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .on_packet(
                header.sequence,
                header.timestamp,
                header.payload(packet),
                now,
            );
    }

    /// The stream's parameter sets, or what is missing of them; and the
    /// learner's version.
    pub fn parameter_sets(&self) -> (Result<ParameterSets, Missing>, u64) {
        let l = self
            .h264
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sets = l
            .parameter_sets()
            .ok_or_else(|| l.missing().unwrap_or(Missing::Both));
        (sets, l.version())
    }
}

/// A media stream's raw RFC 3550 state ([`RtpCounts`]), published after
/// every packet; readers derive the figures with [`RtpCounts::snapshot`].
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// present << 41 | valid << 40 | payload type << 32 | SSRC (0: no source).
    source: Counter,
    /// Extended highest sequence << 32 | base sequence.
    sequence: Counter,
    received: Counter,
    prior_expected: Counter,
    prior_received: Counter,
    packets: Counter,
    bytes: Counter,
    duplicates: Counter,
    reordered: Counter,
    ssrc_changes: Counter,
    jitter_q4: Counter,
    /// The highest loss exported so far. Written by readers only (the exporter),
    /// so that the lost-packets counter never goes down when a late packet
    /// lowers RFC 3550's cumulative loss.
    pub lost_exported: AtomicU64,
}

impl MediaCounters {
    /// Publishes the state (only the owning worker calls this, per packet:
    /// the identity and sequence fields go packed, two stores instead of five).
    #[inline]
    pub fn store(&self, c: &RtpCounts) {
        let source = c.ssrc.map_or(0, |ssrc| {
            1 << 41 | u64::from(c.valid) << 40 | u64::from(c.payload_type) << 32 | u64::from(ssrc)
        });
        self.source.set(source);
        self.sequence
            .set(u64::from(c.extended_max) << 32 | u64::from(c.base_seq));
        self.received.set(c.received);
        self.prior_expected.set(c.prior_expected);
        self.prior_received.set(c.prior_received);
        self.packets.set(c.packets);
        self.bytes.set(c.bytes);
        self.duplicates.set(c.duplicates);
        self.reordered.set(c.reordered);
        self.ssrc_changes.set(c.ssrc_changes);
        self.jitter_q4.set(c.jitter_q4);
    }

    /// The measured SSRC alone, if any.
    pub fn ssrc(&self) -> Option<u32> {
        let source = self.source.get();
        (source >> 41 != 0).then_some(source as u32)
    }

    /// Reads the state back.
    pub fn load(&self) -> RtpCounts {
        let source = self.source.get();
        let sequence = self.sequence.get();
        RtpCounts {
            ssrc: (source >> 41 != 0).then_some(source as u32),
            payload_type: (source >> 32) as u8,
            valid: source >> 40 & 1 != 0,
            extended_max: (sequence >> 32) as u32,
            base_seq: sequence as u32,
            received: self.received.get(),
            prior_expected: self.prior_expected.get(),
            prior_received: self.prior_received.get(),
            packets: self.packets.get(),
            bytes: self.bytes.get(),
            duplicates: self.duplicates.get(),
            reordered: self.reordered.get(),
            ssrc_changes: self.ssrc_changes.get(),
            jitter_q4: self.jitter_q4.get(),
        }
    }
}

/// Control-stream figures.
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Sender reports.
    pub sender_reports: Counter,
    /// Receiver reports.
    pub receiver_reports: Counter,
    /// Destination-reported fraction lost as f64 bits + presence (0: none).
    pub wowza_fraction_bits: Counter,
    /// Destination-reported cumulative lost (two's complement; valid with fraction).
    pub wowza_lost: Counter,
    /// Destination-reported jitter in timestamp units.
    pub wowza_jitter: Counter,
}

impl ControlCounters {
    /// The destination's latest report: (fraction lost 0–1, cumulative lost,
    /// jitter in timestamp units), once one has arrived.
    pub fn wowza_report(&self) -> Option<(f64, i64, u32)> {
        let fraction = self.wowza_fraction_bits.get();
        (fraction != 0).then(|| {
            (
                f64::from_bits(fraction & !(1 << 63)),
                self.wowza_lost.get() as i64,
                self.wowza_jitter.get() as u32,
            )
        })
    }
}

impl PortCounters {
    /// Counts a drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.dropped[reason as usize].add(1);
    }

    /// Drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    /// Publishes a control stream's figures.
    #[inline]
    pub fn publish_control(&self, s: &RtcpStream) {
        let c = &self.control;
        c.sender_reports.set(s.sender_reports);
        c.receiver_reports.set(s.receiver_reports);
        if let (Some(f), Some(l), Some(j)) = (
            s.wowza_fraction_lost,
            s.wowza_cumulative_lost,
            s.wowza_jitter,
        ) {
            c.wowza_lost.set(l as u64);
            c.wowza_jitter.set(u64::from(j));
            // Stored last: readers take a set fraction to mean the others are set.
            c.wowza_fraction_bits.set(f.to_bits() | 1 << 63);
        }
    }

    /// The latched appliance.
    pub fn latched(&self) -> Option<SocketAddr> {
        *self
            .latched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds since the last accepted packet, given the data plane's epoch.
    pub fn last_packet_age(&self, epoch: Instant, now: Instant) -> Option<f64> {
        match self.last_packet_nanos.get() {
            0 => None,
            n => Some(now.duration_since(epoch).as_secs_f64() - n as f64 / 1e9),
        }
    }
}

/// A port's figures at one moment, as the API shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortSnapshot {
    /// Appliance → destination packets.
    pub packets_to_wowza: u64,
    /// … bytes.
    pub bytes_to_wowza: u64,
    /// Destination → appliance packets.
    pub packets_to_appliance: u64,
    /// … bytes.
    pub bytes_to_appliance: u64,
    /// Drops by reason.
    pub dropped: Dropped,
    /// The latched appliance.
    pub appliance: Option<SocketAddr>,
    /// Seconds since the last packet from the appliance.
    pub seconds_since_last_packet: Option<f64>,
    /// Media-stream figures (media ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<RtpSnapshot>,
    /// Control-stream figures (control ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSnapshot>,
}

/// Drops by reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// `unknown_source`.
    pub unknown_source: u64,
    /// `malformed`.
    pub malformed: u64,
    /// `oversize`.
    pub oversize: u64,
    /// `send_error`.
    pub send_error: u64,
    /// `no_return_address`.
    pub no_return_address: u64,
}

impl Dropped {
    /// The counts in [`DropReason::ALL`] order.
    pub fn as_array(&self) -> [u64; 5] {
        [
            self.unknown_source,
            self.malformed,
            self.oversize,
            self.send_error,
            self.no_return_address,
        ]
    }
}

/// Figures of a control stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlSnapshot {
    /// Sender reports.
    pub sender_reports: u64,
    /// Receiver reports.
    pub receiver_reports: u64,
    /// The destination's latest report: fraction lost (0–1).
    pub wowza_fraction_lost: Option<f64>,
    /// … cumulative lost.
    pub wowza_cumulative_lost: Option<i64>,
    /// … jitter in milliseconds (media clock).
    pub wowza_jitter_ms: Option<f64>,
}

impl ControlSnapshot {
    /// Sets the destination's report: (fraction lost 0–1, cumulative lost,
    /// jitter in timestamp units of `clock_rate`).
    pub fn set_wowza_report(&mut self, (fraction, lost, jitter): (f64, i64, u32), clock_rate: u32) {
        self.wowza_fraction_lost = Some(fraction);
        self.wowza_cumulative_lost = Some(lost);
        self.wowza_jitter_ms = Some(f64::from(jitter) * 1e3 / f64::from(clock_rate.max(1)));
    }
}

impl PortCounters {
    /// Reads everything; `clock_rate` converts Wowza's jitter to time.
    pub fn snapshot(
        &self,
        media: bool,
        clock_rate: u32,
        epoch: Instant,
        now: Instant,
    ) -> PortSnapshot {
        let c = &self.control;
        let report = c.wowza_report();
        PortSnapshot {
            packets_to_wowza: self.to_wowza_packets.get(),
            bytes_to_wowza: self.to_wowza_bytes.get(),
            packets_to_appliance: self.to_appliance_packets.get(),
            bytes_to_appliance: self.to_appliance_bytes.get(),
            dropped: Dropped {
                unknown_source: self.dropped(DropReason::UnknownSource),
                malformed: self.dropped(DropReason::Malformed),
                oversize: self.dropped(DropReason::Oversize),
                send_error: self.dropped(DropReason::SendError),
                no_return_address: self.dropped(DropReason::NoReturnAddress),
            },
            appliance: self.latched(),
            seconds_since_last_packet: self.last_packet_age(epoch, now),
            media: media.then(|| self.media.load().snapshot(clock_rate)),
            control: (!media).then(|| {
                let mut s = ControlSnapshot {
                    sender_reports: c.sender_reports.get(),
                    receiver_reports: c.receiver_reports.get(),
                    wowza_fraction_lost: None,
                    wowza_cumulative_lost: None,
                    wowza_jitter_ms: None,
                };
                if let Some(r) = report {
                    s.set_wowza_report(r, clock_rate);
                }
                s
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn media_counters_give_back_what_was_stored(
            ssrc in proptest::option::of(any::<u32>()),
            payload_type in 0u8..128,
            valid: bool,
            extended_max: u32,
            base_seq: u32,
            totals in proptest::array::uniform9(any::<u64>()),
        ) {
            let [received, prior_expected, prior_received, packets, bytes, duplicates, reordered, ssrc_changes, jitter_q4] = totals;
            let c = RtpCounts {
                ssrc,
                // Without a source, nothing says which payload type or validity.
                payload_type: if ssrc.is_some() { payload_type } else { 0 },
                valid: ssrc.is_some() && valid,
                extended_max,
                base_seq,
                received,
                prior_expected,
                prior_received,
                packets,
                bytes,
                duplicates,
                reordered,
                ssrc_changes,
                jitter_q4,
            };
            let m = MediaCounters::default();
            m.store(&c);
            prop_assert_eq!(m.load(), c);
        }
    }
}
