//! One stream as the sink (the Wowza stand-in) sees it, sans-IO: RFC 3550
//! continuity (through [`RtpStream`]), payload integrity, one-way latency, and
//! the RTCP receiver reports it answers with (RFC 3550 §6.4.2: fraction and
//! cumulative lost, extended highest sequence, jitter, LSR/DLSR).

use super::probe::{self, ProbeError};
use crate::packet::rtp::RtpHeader;
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
    /// Packets that are not RTP or carry no probe.
    pub foreign: u64,
    /// Receiver reports built.
    pub reports: u64,
    last_sr: Option<(u32, Instant)>,
    prior: (u64, u64),
}

impl StreamReceiver {
    /// A receiver for a stream on `clock_rate`; `ssrc` is the sink's own (RR sender).
    pub fn new(clock_rate: u32, ssrc: u32) -> Self {
        StreamReceiver {
            stats: RtpStream::new(clock_rate),
            clock_rate,
            ssrc,
            corrupt: 0,
            foreign: 0,
            reports: 0,
            last_sr: None,
            prior: (0, 0),
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
        match probe::read(payload) {
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
}
