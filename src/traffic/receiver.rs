//! One stream as the sink (the Wowza stand-in) sees it, sans-IO: RFC 3550
//! continuity (through [`RtpStream`]), payload integrity, one-way latency, and
//! the RTCP receiver reports it answers with (RFC 3550 §6.4.2: fraction and
//! cumulative lost, extended highest sequence, jitter, LSR/DLSR).
//!
//! Video payloads are read as H.264 (RFC 6184, [`h264`]): their structure is
//! checked, slice packets carry the probe after their header bytes, and the
//! parameter sets are kept for comparison with what a relay announces.

use super::h264::{self, FragmentOrder, Malformed};
use super::probe::{self, ProbeError};
use crate::packet::rtp::RtpHeader;
use crate::sdp::h264::{NalHeader, PPS, Payload, SPS};
use crate::stats::rtp::{RtpSnapshot, RtpStream};
use std::time::Instant;

/// A received stream.
#[derive(Clone, Debug)]
pub struct StreamReceiver {
    stats: RtpStream,
    clock_rate: u32,
    ssrc: u32,
    /// Payloads whose checksum failed.
    pub corrupt: u64,
    /// Packets that are not RTP, or carry neither a probe nor (video)
    /// parameter sets.
    pub foreign: u64,
    /// Video packets whose H.264 structure is wrong: a payload RFC 6184's
    /// mode 1 does not allow, or FU-A fragments out of order
    /// ([`Malformed`]).
    pub malformed: u64,
    /// Video packets of parameter sets: an SPS, a PPS, or a STAP-A with them.
    pub parameter_set_packets: u64,
    /// Receiver reports built.
    pub reports: u64,
    last_sr: Option<(u32, Instant)>,
    prior: (u64, u64),
    /// Video: what the H.264 checks keep; `None` for audio.
    h264: Option<H264>,
}

/// A video stream's H.264 state.
#[derive(Clone, Debug, Default)]
struct H264 {
    order: FragmentOrder,
    /// The last SPS and PPS seen (empty until then).
    sps: Vec<u8>,
    pps: Vec<u8>,
}

/// What a well-formed H.264 payload carries, for the counters.
enum Carries {
    /// A slice or a fragment of one: the probe follows its header bytes.
    Slice,
    /// Parameter sets, no probe.
    ParameterSets,
    /// Neither (another NAL unit type): not the generator's.
    Other,
}

impl H264 {
    /// Reads a payload's structure, keeping its parameter sets; whether its
    /// fragments are in order besides.
    fn read(&mut self, h: &RtpHeader, payload: &[u8]) -> Result<(Carries, bool), Malformed> {
        let payload = h264::check(payload)?;
        let in_order = self
            .order
            .on_packet(h.sequence, h.timestamp, h.marker, &payload)
            .is_ok();
        let carries = match payload {
            Payload::Single(nal) => match NalHeader(nal[0]).nal_type() {
                h264::SLICE | h264::IDR => Carries::Slice,
                _ if self.keep(nal) => Carries::ParameterSets,
                _ => Carries::Other,
            },
            Payload::StapA(stap) => {
                let mut any = false;
                for nal in stap.units() {
                    any |= self.keep(nal);
                }
                if any {
                    Carries::ParameterSets
                } else {
                    Carries::Other
                }
            }
            Payload::FuA(_) => Carries::Slice,
            // Refused by `check`; were one to pass, it carries no probe.
            Payload::Unsupported(_) => Carries::Other,
        };
        Ok((carries, in_order))
    }

    /// Keeps `nal` if it is an SPS or a PPS (copying only when it changed:
    /// the same ones come before every keyframe); whether it was one.
    fn keep(&mut self, nal: &[u8]) -> bool {
        let kept = match NalHeader(nal[0]).nal_type() {
            SPS => &mut self.sps,
            PPS => &mut self.pps,
            _ => return false,
        };
        if kept[..] != *nal {
            kept.clear();
            kept.extend_from_slice(nal);
        }
        true
    }
}

impl StreamReceiver {
    /// A receiver for a stream on `clock_rate`; `ssrc` is the sink's own (RR
    /// sender). A stream on H.264's 90 kHz clock ([`h264::CLOCK_RATE`]) is
    /// read as H.264: in the traffic profiles only video has that clock.
    pub fn new(clock_rate: u32, ssrc: u32) -> Self {
        StreamReceiver {
            stats: RtpStream::new(clock_rate),
            clock_rate,
            ssrc,
            corrupt: 0,
            foreign: 0,
            malformed: 0,
            parameter_set_packets: 0,
            reports: 0,
            last_sr: None,
            prior: (0, 0),
            h264: (clock_rate == h264::CLOCK_RATE).then(H264::default),
        }
    }

    /// Accounts a media datagram at `now` (wall clock `now_ns`); returns its
    /// one-way latency in nanoseconds when it carried a valid probe.
    pub fn on_rtp(&mut self, data: &[u8], now: Instant, now_ns: u64) -> Option<u64> {
        let Ok(h) = RtpHeader::parse(data) else {
            self.foreign += 1;
            return None;
        };
        self.stats.on_packet(&h, data.len(), now);
        let payload = &data[data.len() - h.payload_len - padding(data)..data.len() - padding(data)];
        let Some(video) = &mut self.h264 else {
            return self.probe(payload, now_ns);
        };
        match video.read(&h, payload) {
            Err(_) => {
                self.malformed += 1;
                None
            }
            Ok((carries, in_order)) => {
                // A fragment out of order still has its bytes: its probe
                // is checked.
                self.malformed += u64::from(!in_order);
                match carries {
                    Carries::Slice => {
                        self.probe(payload.get(h264::PROBE_AT..).unwrap_or(&[]), now_ns)
                    }
                    Carries::ParameterSets => {
                        self.parameter_set_packets += 1;
                        None
                    }
                    Carries::Other => {
                        self.foreign += 1;
                        None
                    }
                }
            }
        }
    }

    /// Checks the probe at the start of `at`.
    fn probe(&mut self, at: &[u8], now_ns: u64) -> Option<u64> {
        match probe::read(at) {
            Ok(p) => Some(now_ns.saturating_sub(p.sent_ns)),
            Err(ProbeError::Corrupt) => {
                self.corrupt += 1;
                None
            }
            Err(ProbeError::Foreign) => {
                self.foreign += 1;
                None
            }
        }
    }

    /// The last SPS and PPS (NAL units) the stream carried, in single NAL
    /// unit packets or STAP-As, once both have come; `None` before, and for
    /// audio.
    pub fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        self.h264
            .as_ref()
            .filter(|v| !v.sps.is_empty() && !v.pps.is_empty())
            .map(|v| (&v.sps[..], &v.pps[..]))
    }

    /// Notes a sender report (for LSR/DLSR) received at `now`.
    pub fn on_rtcp(&mut self, data: &[u8], now: Instant) {
        if data.len() >= 28 && data[1] == crate::packet::rtcp::SR {
            // LSR: the middle 32 bits of the SR's NTP timestamp.
            let lsr = u32::from_be_bytes([data[10], data[11], data[12], data[13]]);
            self.last_sr = Some((lsr, now));
        }
    }

    /// The stream's figures.
    pub fn snapshot(&self) -> RtpSnapshot {
        self.stats.snapshot()
    }

    /// A receiver report on the stream at `now`, or `None` before any packet.
    pub fn receiver_report(&mut self, now: Instant) -> Option<[u8; 32]> {
        let s = self.stats.snapshot();
        let media_ssrc = s.ssrc?;
        let highest = s.extended_highest_sequence?;
        // A.3: fraction over the interval since the last report.
        let expected = s.expected - self.prior.0;
        let received = s.received - self.prior.1;
        self.prior = (s.expected, s.received);
        let lost_interval = expected as i64 - received as i64;
        let fraction = if expected == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected as i64).min(255) as u8
        };
        let cumulative = s.lost.clamp(-0x80_0000, 0x7f_ffff) as i32;
        let jitter = (s.jitter_seconds * f64::from(self.clock_rate)) as u32;
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, (now.duration_since(at).as_secs_f64() * 65536.0) as u32),
            None => (0, 0),
        };
        let mut p = [0u8; 32];
        p[0] = 0x81;
        p[1] = crate::packet::rtcp::RR;
        p[2..4].copy_from_slice(&7u16.to_be_bytes());
        p[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
        p[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
        p[12] = fraction;
        p[13..16].copy_from_slice(&cumulative.to_be_bytes()[1..]);
        p[16..20].copy_from_slice(&highest.to_be_bytes());
        p[20..24].copy_from_slice(&jitter.to_be_bytes());
        p[24..28].copy_from_slice(&lsr.to_be_bytes());
        p[28..32].copy_from_slice(&dlsr.to_be_bytes());
        self.reports += 1;
        Some(p)
    }
}

fn padding(data: &[u8]) -> usize {
    if data[0] & 0x20 != 0 {
        usize::from(data[data.len() - 1])
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::profile::Profile;
    use crate::traffic::source::StreamSource;
    use std::time::Duration;
    use webrtc_util::marshal::Unmarshal;

    /// The hand-made loss scenario: 100 audio packets, of which 10 are never
    /// delivered (5 in the first half, 5 in the second).
    #[test]
    fn receiver_reports_match_a_known_loss() {
        let t0 = Instant::now();
        let mut src = StreamSource::new(1, Profile::echo360_live().audio, 0x5555, 100, 0, t0);
        let mut packets = Vec::new();
        for _ in 0..100 {
            src.frame(1_000, |p| packets.push(p.to_vec()));
        }
        let sr = src.sender_report(t0, 1_700_000_000_000_000_000);
        let dropped = [10, 11, 12, 30, 40, 60, 61, 62, 63, 80];
        let mut rx = StreamReceiver::new(48_000, 0x77);
        rx.on_rtcp(&sr, t0);
        for (i, p) in packets.iter().enumerate().take(50) {
            if !dropped.contains(&i) {
                assert_eq!(rx.on_rtp(p, t0, 2_000), Some(1_000));
            }
        }
        let first = rx.receiver_report(t0 + Duration::from_millis(500)).unwrap();
        for (i, p) in packets.iter().enumerate().skip(50) {
            if !dropped.contains(&i) {
                rx.on_rtp(p, t0, 2_000);
            }
        }
        let second = rx.receiver_report(t0 + Duration::from_secs(1)).unwrap();

        let parse = |p: &[u8]| {
            let mut b = bytes::Bytes::copy_from_slice(p);
            rtcp::receiver_report::ReceiverReport::unmarshal(&mut b).unwrap()
        };
        let (a, b) = (parse(&first), parse(&second));
        assert_eq!(a.ssrc, 0x77);
        let (a, b) = (&a.reports[0], &b.reports[0]);
        assert_eq!(a.ssrc, 0x5555);
        // First half: base is packet 1 (probation), highest 49: expected 49, 5 lost.
        assert_eq!(a.total_lost, 5);
        assert_eq!(a.fraction_lost, (5 * 256 / 49) as u8);
        assert_eq!(a.last_sequence_number, 100 + 49);
        // Second half: 50 expected, 5 lost; 10 in all.
        assert_eq!(b.total_lost, 10);
        assert_eq!(b.fraction_lost, (5 * 256 / 50) as u8);
        assert_eq!(b.last_sequence_number, 100 + 99);
        // LSR is the middle of the SR's NTP time; DLSR one second in 1/65536 s.
        let ntp = u64::from_be_bytes(sr[8..16].try_into().unwrap());
        assert_eq!(b.last_sender_report, (ntp >> 16) as u32);
        assert_eq!(b.delay, 65536);
        assert_eq!(rx.corrupt + rx.foreign, 0);
    }

    #[test]
    fn corrupted_payloads_are_counted() {
        let t0 = Instant::now();
        let mut src = StreamSource::new(1, Profile::echo360_live().audio, 1, 0, 0, t0);
        let mut p = Vec::new();
        src.frame(0, |x| p = x.to_vec());
        let n = p.len();
        p[n - 3] ^= 0xff;
        let mut rx = StreamReceiver::new(48_000, 2);
        assert_eq!(rx.on_rtp(&p, t0, 0), None);
        assert_eq!(rx.corrupt, 1);
        assert_eq!(rx.on_rtp(b"junk", t0, 0), None);
        assert_eq!(rx.foreign, 1);
    }

    /// Four seconds of a video stream: two keyframes.
    fn video(index: u32) -> (StreamSource, Vec<Vec<u8>>) {
        let t0 = Instant::now();
        let mut src = StreamSource::new(index, Profile::echo360_live().video, 9, 0, 0, t0);
        let mut packets = Vec::new();
        for _ in 0..60 {
            src.frame(1_000, |p| packets.push(p.to_vec()));
        }
        (src, packets)
    }

    #[test]
    fn parameter_sets_are_counted_and_kept_not_taken_for_foreign() {
        let t0 = Instant::now();
        // Stream 0 sends a STAP-A per keyframe, stream 1 an SPS and a PPS packet.
        for (index, per_keyframe) in [(0, 1), (1, 2)] {
            let (src, packets) = video(index);
            let mut rx = StreamReceiver::new(90_000, 2);
            assert_eq!(rx.parameter_sets(), None);
            let mut probed = 0;
            for p in &packets {
                if let Some(ns) = rx.on_rtp(p, t0, 3_000) {
                    assert_eq!(ns, 2_000);
                    probed += 1;
                }
            }
            assert_eq!(rx.parameter_set_packets, 2 * per_keyframe);
            assert_eq!(
                probed,
                packets.len() as u64 - 2 * per_keyframe,
                "every slice packet"
            );
            assert_eq!((rx.foreign, rx.corrupt, rx.malformed), (0, 0, 0));
            assert_eq!(rx.parameter_sets(), src.parameter_sets());
            assert_eq!(
                rx.snapshot().packets,
                packets.len() as u64,
                "RTP counts them all"
            );
        }
    }

    #[test]
    fn new_parameter_sets_replace_the_old() {
        let t0 = Instant::now();
        let (_, packets) = video(1);
        let mut rx = StreamReceiver::new(90_000, 2);
        for p in &packets[..2] {
            rx.on_rtp(p, t0, 0);
        }
        let (sps, pps) = rx
            .parameter_sets()
            .map(|(s, p)| (s.to_vec(), p.to_vec()))
            .unwrap();
        // An encoder restart: another SPS in a STAP-A, the PPS alone.
        let other = crate::traffic::h264::parameter_sets(&Profile::echo360_live().display, 5).0;
        let mut stap = packets[0][..12].to_vec();
        stap[3] = 100;
        stap.extend(crate::traffic::h264::stap_a(&[&other]));
        rx.on_rtp(&stap, t0, 0);
        assert_eq!(rx.parameter_sets(), Some((&other[..], &pps[..])));
        assert_ne!(other, sps);
        assert_eq!(rx.parameter_set_packets, 3);
    }

    #[test]
    fn fragments_out_of_order_or_misflagged_are_malformed() {
        let t0 = Instant::now();
        let (_, packets) = video(0);
        // The first keyframe: a STAP-A, then FU-A fragments 1..=12.
        assert_eq!(packets[1][12] & 0x1f, 28);
        assert_eq!(packets[1][13] & 0xc0, 0x80, "S");
        let run = |packets: &[Vec<u8>]| {
            let mut rx = StreamReceiver::new(90_000, 2);
            for p in packets {
                rx.on_rtp(p, t0, 0);
            }
            rx
        };
        assert_eq!(run(&packets).malformed, 0);
        // Two fragments' contents swapped, sequence numbers kept: the start
        // comes second.
        let mut swapped = packets.clone();
        let (a, b) = (swapped[1][12..].to_vec(), swapped[2][12..].to_vec());
        swapped[1].truncate(12);
        swapped[1].extend(b);
        swapped[2].truncate(12);
        swapped[2].extend(a);
        let rx = run(&swapped);
        assert_eq!(
            rx.malformed, 2,
            "a middle without start, then a start inside"
        );
        assert_eq!(
            (rx.corrupt, rx.foreign),
            (0, 0),
            "the bytes themselves are intact"
        );
        // No S on the first fragment.
        let mut no_start = packets.clone();
        no_start[1][13] &= !0x80;
        assert_eq!(run(&no_start).malformed, 1);
        // E on a middle fragment: the next one continues an ended unit.
        let mut early_end = packets.clone();
        early_end[5][13] |= 0x40;
        assert_eq!(run(&early_end).malformed, 1);
        // S and E together: not a fragment at all.
        let mut both = packets.clone();
        both[1][13] |= 0x40;
        let rx = run(&both);
        assert_eq!(rx.malformed, 1);
        assert_eq!(rx.foreign, 0);
        // Nothing after the FU header: malformed too, and the fragments
        // after it are not blamed for the one refused.
        let mut cut = packets.clone();
        cut[1].truncate(14);
        let rx = run(&cut);
        assert_eq!((rx.malformed, rx.foreign, rx.corrupt), (1, 0, 0));
        // A fragment lost on the network is a loss, not malformed.
        let mut lost = packets.clone();
        lost.remove(4);
        let rx = run(&lost);
        assert_eq!((rx.malformed, rx.snapshot().lost), (0, 1));
    }

    proptest::proptest! {
        /// Whatever follows a valid RTP header, reading it never panics and
        /// every packet is counted by RTP.
        #[test]
        fn any_video_payload_is_read_without_panic(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..20),
        ) {
            let t0 = Instant::now();
            let mut rx = StreamReceiver::new(90_000, 2);
            for (i, payload) in payloads.iter().enumerate() {
                let mut p = vec![0x80, 96, 0, i as u8, 0, 0, 0, 0, 0, 0, 0, 1];
                p.extend(payload);
                rx.on_rtp(&p, t0, 0);
            }
            proptest::prop_assert_eq!(rx.snapshot().packets, payloads.len() as u64);
        }
    }
}
