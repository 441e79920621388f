//! RFC 3550 receiver statistics of one media stream: appendix A.1 sequence
//! validity (probation, MAX_DROPOUT, MAX_MISORDER, restart), A.3 expected and
//! lost, A.8 interarrival jitter; plus duplicates, reordering and SSRC changes.

use crate::packet::rtp::RtpHeader;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Sequential packets before a new source is valid (A.1).
pub const MIN_SEQUENTIAL: u8 = 2;
/// Largest forward jump still taken as in-order loss (A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// Largest backward step still taken as a late packet (A.1).
pub const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u32 = 1 << 16;

/// How a packet counted.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// In order (possibly after a gap).
    InOrder,
    /// Older than the highest sequence seen, first time.
    Reordered,
    /// Seen already.
    Duplicate,
    /// A new source on probation (A.1): not counted yet.
    Probation,
    /// A jump too large to trust; counted only if the next packet follows it.
    Jump,
    /// The sequence restarted after a confirmed jump (A.1 re-sync).
    Restart,
}

/// A media stream's statistics. Serialized only to hand a stream over to
/// the next process of an upgrade in place ([`RtpStream::resumed`]); the
/// arrival clock's origin stays behind (an `Instant` means nothing to
/// another process).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RtpStream {
    clock_rate: u32,
    #[serde(skip)]
    epoch: Option<Instant>,
    source: Option<Source>,
    // Totals across sources.
    packets: u64,
    bytes: u64,
    duplicates: u64,
    reordered: u64,
    ssrc_changes: u64,
    /// Expected and received of sources (or sequence epochs) already ended.
    prior_expected: u64,
    prior_received: u64,
}

/// A.1 per-source state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Source {
    ssrc: u32,
    payload_type: u8,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: Option<u16>,
    probation: u8,
    received: u64,
    /// Bit i: extended sequence `max - i` was received (duplicate detection).
    seen: u128,
    /// Relative to the stream's arrival clock, which does not cross a handover.
    #[serde(skip)]
    transit: Option<u32>,
    /// A.8 jitter in timestamp units × 16 (the RFC's integer form, which the
    /// kernel fast path computes too: the two agree to the bit).
    jitter_q4: u64,
}

/// The raw state behind a media stream's figures: what both backends keep —
/// [`RtpStream`] here, the kernel program's `struct stream` (see
/// `dataplane::ebpf::table::Stream::counts`) — and from which
/// [`RtpCounts::snapshot`] derives every published number, once for both.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RtpCounts {
    /// The current source, once a packet has been measured.
    pub ssrc: Option<u32>,
    /// The current source's payload type (valid with `ssrc`).
    pub payload_type: u8,
    /// The current source passed probation (A.1).
    pub valid: bool,
    /// Extended highest sequence of the current source (cycles + max_seq).
    pub extended_max: u32,
    /// The current sequence epoch's base (A.1 `base_seq`).
    pub base_seq: u32,
    /// Received in the current epoch (A.1).
    pub received: u64,
    /// Expected in sources or epochs already ended.
    pub prior_expected: u64,
    /// Received in sources or epochs already ended.
    pub prior_received: u64,
    /// Packets accepted from the appliance.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Late packets.
    pub reordered: u64,
    /// SSRC changes.
    pub ssrc_changes: u64,
    /// A.8 jitter in timestamp units × 16.
    pub jitter_q4: u64,
}

/// A stream's figures at one moment: the one shape the API, the exporter, the
/// stream watch and the sink all read, whichever backend measured it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RtpSnapshot {
    /// Current SSRC.
    pub ssrc: Option<u32>,
    /// Current payload type.
    pub payload_type: Option<u8>,
    /// Packets accepted from the appliance (the port's own counters show them).
    #[serde(skip)]
    pub packets: u64,
    /// Their bytes (whole datagrams).
    #[serde(skip)]
    pub bytes: u64,
    /// Extended highest sequence number of the current source.
    pub extended_highest_sequence: Option<u32>,
    /// Expected packets (A.3), all sources.
    pub expected: u64,
    /// Counted as received (A.1 validated, no duplicates), all sources.
    pub received: u64,
    /// Expected − received (A.3); negative only transiently.
    pub lost: i64,
    /// Duplicates.
    pub duplicates: u64,
    /// Late packets (older than the highest seen).
    pub reordered: u64,
    /// Interarrival jitter (A.8) in seconds (shown in milliseconds by the API).
    #[serde(rename = "jitter_ms", serialize_with = "seconds_as_ms")]
    pub jitter_seconds: f64,
    /// Times the SSRC changed.
    pub ssrc_changes: u64,
}

fn seconds_as_ms<S: serde::Serializer>(seconds: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(seconds * 1e3)
}

/// A.3: expected = extended max − base + 1, none while on probation.
fn expected(valid: bool, extended_max: u32, base_seq: u32) -> u64 {
    if valid {
        u64::from(extended_max.wrapping_sub(base_seq)) + 1
    } else {
        0
    }
}

impl RtpCounts {
    /// The figures (A.3 expected and lost, A.8 jitter in seconds); `clock_rate`
    /// is the media clock in Hz.
    pub fn snapshot(&self, clock_rate: u32) -> RtpSnapshot {
        let source = self.ssrc.is_some();
        let current_expected = if source {
            expected(self.valid, self.extended_max, self.base_seq)
        } else {
            0
        };
        let current_received = if source { self.received } else { 0 };
        let expected = self.prior_expected + current_expected;
        let received = self.prior_received + current_received;
        RtpSnapshot {
            ssrc: self.ssrc,
            payload_type: source.then_some(self.payload_type),
            packets: self.packets,
            bytes: self.bytes,
            extended_highest_sequence: (source && self.valid).then_some(self.extended_max),
            expected,
            received,
            lost: expected as i64 - received as i64,
            duplicates: self.duplicates,
            reordered: self.reordered,
            jitter_seconds: if source {
                self.jitter_q4 as f64 / 16.0 / f64::from(clock_rate.max(1))
            } else {
                0.0
            },
            ssrc_changes: self.ssrc_changes,
        }
    }
}

impl RtpStream {
    /// A stream whose media clock runs at `clock_rate` Hz (for jitter in seconds).
    pub fn new(clock_rate: u32) -> Self {
        RtpStream {
            clock_rate: clock_rate.max(1),
            epoch: None,
            source: None,
            packets: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            ssrc_changes: 0,
            prior_expected: 0,
            prior_received: 0,
        }
    }

    /// Accounts one valid RTP packet of `len` bytes that arrived at `now`.
    pub fn on_packet(&mut self, h: &RtpHeader, len: usize, now: Instant) -> Arrival {
        self.packets += 1;
        self.bytes += len as u64;
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_ts = (now.duration_since(epoch).as_nanos() * u128::from(self.clock_rate)
            / 1_000_000_000) as u32;

        match &self.source {
            Some(s) if s.ssrc == h.ssrc => {}
            previous => {
                if previous.is_some() {
                    self.ssrc_changes += 1;
                }
                self.end_epoch();
                self.source = Some(Source::new(h.ssrc, h.sequence));
            }
        }
        let s = self.source.as_mut().expect("source set above");
        s.payload_type = h.payload_type;
        let arrival = s.update_seq(h.sequence);
        match arrival {
            Arrival::Duplicate => self.duplicates += 1,
            Arrival::Reordered => self.reordered += 1,
            Arrival::Restart => {
                // Keep what the old sequence epoch counted; restart at this packet.
                let (expected, received) = (s.expected(), s.received);
                self.prior_expected += expected;
                self.prior_received += received;
                s.init_seq(h.sequence);
                s.received = 1;
            }
            _ => {}
        }
        if arrival != Arrival::Duplicate {
            s.update_jitter(arrival_ts, h.timestamp);
        }
        arrival
    }

    /// Folds the current source's counts into the totals before a new source.
    fn end_epoch(&mut self) {
        if let Some(s) = &self.source {
            self.prior_expected += s.expected();
            self.prior_received += s.received;
        }
    }

    /// The raw state now (what [`crate::dataplane`] publishes per packet).
    pub fn counts(&self) -> RtpCounts {
        let s = self.source.as_ref();
        RtpCounts {
            ssrc: s.map(|s| s.ssrc),
            payload_type: s.map_or(0, |s| s.payload_type),
            valid: s.is_some_and(|s| s.probation == 0),
            extended_max: s.map_or(0, Source::extended_max),
            base_seq: s.map_or(0, |s| s.base_seq),
            received: s.map_or(0, |s| s.received),
            prior_expected: self.prior_expected,
            prior_received: self.prior_received,
            packets: self.packets,
            bytes: self.bytes,
            duplicates: self.duplicates,
            reordered: self.reordered,
            ssrc_changes: self.ssrc_changes,
            jitter_q4: s.map_or(0, |s| s.jitter_q4),
        }
    }

    /// The media clock (Hz).
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The figures now.
    pub fn snapshot(&self) -> RtpSnapshot {
        self.counts().snapshot(self.clock_rate)
    }

    /// The stream as the next process goes on with it after an upgrade in
    /// place: every count kept, the media clock `clock_rate` (the running
    /// configuration's), and the arrival clock started afresh. The jitter
    /// estimate skips the first packet's transit (it would compare two
    /// clocks' origins), as it does a new source's.
    pub fn resumed(mut self, clock_rate: u32) -> Self {
        self.clock_rate = clock_rate.max(1);
        self.epoch = None;
        if let Some(s) = self.source.as_mut() {
            s.transit = None;
        }
        self
    }
}

impl Source {
    /// A.1: a new source starts on probation.
    fn new(ssrc: u32, seq: u16) -> Self {
        let mut s = Source {
            ssrc,
            payload_type: 0,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            probation: MIN_SEQUENTIAL,
            received: 0,
            seen: 0,
            transit: None,
            jitter_q4: 0,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s.probation = MIN_SEQUENTIAL;
        s
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 0;
        self.seen = 1;
        self.probation = 0;
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        expected(self.probation == 0, self.extended_max(), self.base_seq)
    }

    /// A.1 `update_seq`, with duplicates told apart from late packets.
    fn update_seq(&mut self, seq: u16) -> Arrival {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return Arrival::InOrder;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return Arrival::Probation;
        }
        if udelta == 0 {
            return Arrival::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.max_seq = seq;
            self.seen = if udelta >= 128 {
                1
            } else {
                (self.seen << udelta) | 1
            };
            self.received += 1;
            self.bad_seq = None;
            return Arrival::InOrder;
        }
        if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: believe it only if the next packet follows it.
            if self.bad_seq == Some(seq) {
                return Arrival::Restart;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return Arrival::Jump;
        }
        // Late: 1..=MAX_MISORDER behind the highest.
        let behind = self.max_seq.wrapping_sub(seq);
        let bit = 1u128 << behind;
        if self.seen & bit != 0 {
            return Arrival::Duplicate;
        }
        self.seen |= bit;
        let extended = self.extended_max().wrapping_sub(u32::from(behind));
        // Older than the base (sent before this source's first counted packet):
        // late, but not one this epoch expects.
        if extended >= self.base_seq {
            self.received += 1;
        }
        Arrival::Reordered
    }

    /// A.8: J += (|D| − J) / 16, D from the transit times of consecutive
    /// arrivals, in the RFC's integer form (J scaled by 16).
    fn update_jitter(&mut self, arrival_ts: u32, rtp_ts: u32) {
        let transit = arrival_ts.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Feed {
        stream: RtpStream,
        t0: Instant,
    }

    impl Feed {
        fn new() -> Self {
            Feed {
                stream: RtpStream::new(90_000),
                t0: Instant::now(),
            }
        }

        /// One packet of SSRC 1 at `ms` milliseconds with RTP time `ts`.
        fn at(&mut self, seq: u16, ms: u64, ts: u32) -> Arrival {
            self.ssrc_at(1, seq, ms, ts)
        }

        fn ssrc_at(&mut self, ssrc: u32, seq: u16, ms: u64, ts: u32) -> Arrival {
            let h = RtpHeader {
                payload_type: 96,
                marker: false,
                sequence: seq,
                timestamp: ts,
                ssrc,
                payload_offset: 12,
                payload_len: 100,
            };
            self.stream
                .on_packet(&h, 112, self.t0 + Duration::from_millis(ms))
        }

        fn seqs(&mut self, seqs: impl IntoIterator<Item = u16>) {
            for (i, s) in seqs.into_iter().enumerate() {
                self.at(s, i as u64 * 20, i as u32 * 1800);
            }
        }

        fn snap(&self) -> RtpSnapshot {
            self.stream.snapshot()
        }
    }

    #[test]
    fn a_stream_handed_over_counts_on_and_keeps_its_jitter() {
        let mut f = Feed::new();
        // Steady 20 ms packets with a 2 ms wobble on every other one.
        for seq in 0..50u16 {
            let wobble = u64::from(seq % 2) * 2;
            f.at(seq, u64::from(seq) * 20 + wobble, u32::from(seq) * 1800);
        }
        let before = f.snap();
        let json = serde_json::to_string(&f.stream).unwrap();
        let handed: RtpStream = serde_json::from_str(&json).unwrap();
        let mut g = Feed {
            stream: handed.resumed(90_000),
            // The next process's arrival clock starts anywhere.
            t0: f.t0 + Duration::from_secs(1000),
        };
        assert_eq!(g.snap(), before, "nothing is lost in the handover");
        assert_eq!(g.at(50, 1000, 50 * 1800), Arrival::InOrder);
        let after = g.snap();
        assert_eq!((after.received, after.lost), (before.received + 1, 0));
        assert_eq!(after.extended_highest_sequence, Some(50));
        assert_eq!(
            after.jitter_seconds, before.jitter_seconds,
            "the first packet after is no jitter sample (two clocks' origins)"
        );
        // The next one is measured again, against the new clock.
        g.at(51, 1022, 51 * 1800);
        assert_ne!(g.snap().jitter_seconds, before.jitter_seconds);
    }

    #[test]
    fn probation_then_counting() {
        let mut f = Feed::new();
        assert_eq!(f.at(100, 0, 0), Arrival::Probation);
        assert_eq!(f.snap().expected, 0);
        assert_eq!(f.at(101, 20, 1800), Arrival::InOrder);
        assert_eq!(f.at(102, 40, 3600), Arrival::InOrder);
        let s = f.snap();
        // A.1: the source becomes valid at the second packet, which is the base.
        assert_eq!((s.expected, s.received, s.lost, s.packets), (2, 2, 0, 3));
        assert_eq!(s.extended_highest_sequence, Some(102));
        assert_eq!(s.bytes, 3 * 112);
        // A broken probation restarts it.
        let mut f = Feed::new();
        f.seqs([10, 50, 51, 52]);
        assert_eq!((f.snap().expected, f.snap().received), (2, 2));
    }

    #[test]
    fn wraparound_at_65535() {
        let mut f = Feed::new();
        f.seqs([65533, 65534, 65535, 0, 1, 2]);
        let s = f.snap();
        assert_eq!(s.extended_highest_sequence, Some(65536 + 2));
        assert_eq!((s.expected, s.received, s.lost), (5, 5, 0));
    }

    #[test]
    fn loss_bursts_are_counted_by_sequence() {
        let mut f = Feed::new();
        // 1..=10, then 20..=30 (9 lost), then 100 (69 lost): all within MAX_DROPOUT.
        f.seqs((1..=10).chain(20..=30).chain([100]));
        let s = f.snap();
        assert_eq!(s.expected, 100 - 2 + 1);
        assert_eq!(s.lost, 9 + 69);
        assert_eq!(s.reordered + s.duplicates, 0);
    }

    #[test]
    fn reordering_inside_and_beyond_max_misorder() {
        let mut f = Feed::new();
        f.seqs([1, 2, 3, 5, 4, 6]);
        let s = f.snap();
        assert_eq!((s.lost, s.reordered, s.duplicates), (0, 1, 0));

        // 150 behind the highest: beyond MAX_MISORDER (100), it is a "very large
        // jump" backwards, not counted; a second one that does not follow it isn't either.
        let mut f = Feed::new();
        f.seqs(1..=300);
        assert_eq!(f.at(150, 7000, 0), Arrival::Jump);
        assert_eq!(f.at(151, 7020, 0), Arrival::Restart);
        let s = f.snap();
        // The old epoch (2..=300, 299 packets) is kept; the new one starts at 151.
        assert_eq!((s.expected, s.received, s.lost), (299 + 1, 299 + 1, 0));
        assert_eq!(s.extended_highest_sequence, Some(151));
    }

    #[test]
    fn duplicates_are_not_received_twice() {
        let mut f = Feed::new();
        f.seqs([1, 2, 3, 3, 4, 2, 5]);
        let s = f.snap();
        assert_eq!(
            (s.expected, s.received, s.lost, s.duplicates, s.reordered),
            (4, 4, 0, 2, 0)
        );
        // A late packet that fills a gap once, then again.
        let mut f = Feed::new();
        f.seqs([1, 2, 4, 5, 3, 3]);
        let s = f.snap();
        assert_eq!((s.lost, s.reordered, s.duplicates), (0, 1, 1));
    }

    #[test]
    fn a_restarted_encoder_is_a_new_source() {
        let mut f = Feed::new();
        f.seqs(1..=10);
        f.at(12, 220, 0); // one lost
        assert_eq!(f.ssrc_at(2, 5000, 240, 0), Arrival::Probation);
        f.ssrc_at(2, 5001, 260, 1800);
        f.ssrc_at(2, 5002, 280, 3600);
        let s = f.snap();
        assert_eq!(s.ssrc, Some(2));
        assert_eq!(s.ssrc_changes, 1);
        // Old source: expected 11 (2..=12), received 10; new: 2 and 2.
        assert_eq!((s.expected, s.received, s.lost), (13, 12, 1));
        assert_eq!(s.extended_highest_sequence, Some(5002));
    }

    #[test]
    fn jitter_matches_a_hand_computation() {
        // 90 kHz clock, one packet per 20 ms (1800 ticks). Arrivals are 0, 20, 45,
        // 60, 80 ms: transit differences |D| (in ticks) are 0, 450, 450, 0.
        // RFC 3550 A.8 integer form, J16 = 16·J, J16 += |D| − ((J16 + 8) >> 4):
        // 0 → 0 → 450 → 450 + 450 − 28 = 872 → 872 − 55 = 817, so J = 817/16
        // = 51.0625 ticks (the float form gives 51.086).
        let mut f = Feed::new();
        for (i, ms) in [0u64, 20, 45, 60, 80].into_iter().enumerate() {
            f.at(i as u16, ms, i as u32 * 1800);
        }
        let expected_ticks = 817.0 / 16.0;
        let got = f.snap().jitter_seconds;
        assert!((got - expected_ticks / 90_000.0).abs() < 1e-9, "{got}");
    }
}
