//! One generated stream, sans-IO: which frame is due when, its RTP packets
//! (at most [`MAX_PACKET`] bytes, marker on a frame's last packet, timestamps on
//! the role's clock), and RTCP sender reports with consistent NTP/RTP times and
//! counts.

use super::probe;
use super::profile::{MAX_PACKET, RoleProfile, SR_INTERVAL};
use crate::packet::rtp::FIXED_HEADER;
use std::time::{Duration, Instant};

/// A stream's encoder model.
#[derive(Clone, Debug)]
pub struct StreamSource {
    index: u32,
    profile: RoleProfile,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    start: Instant,
    frame: u64,
    frames_per_gop: u64,
    /// Frames before the first keyframe (its place in the keyframe interval).
    phase: u64,
    sizes: (usize, usize),
    packets: u32,
    octets: u32,
    next_sr: Instant,
    buf: Vec<u8>,
}

/// NTP seconds at the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

impl StreamSource {
    /// Stream `index` of `profile`, first frame at `start`; `ssrc`, `seq` and
    /// `ts_base` are the random initial values.
    pub fn new(
        index: u32,
        profile: RoleProfile,
        ssrc: u32,
        seq: u16,
        ts_base: u32,
        start: Instant,
    ) -> Self {
        StreamSource {
            index,
            profile,
            ssrc,
            seq,
            ts_base,
            start,
            frame: 0,
            phase: 0,
            // Audio has no keyframes: every frame is the ordinary size.
            frames_per_gop: if profile.keyframe_interval.is_some() {
                profile.frames_per_keyframe()
            } else {
                u64::MAX
            },
            sizes: profile.frame_sizes(),
            packets: 0,
            octets: 0,
            // Spread first reports over the interval so they do not all coincide.
            next_sr: start + SR_INTERVAL.mul_f64(f64::from(index % 97) / 97.0),
            buf: {
                let mut buf = vec![0; MAX_PACKET];
                probe::fill(&mut buf[FIXED_HEADER..]);
                buf
            },
        }
    }

    /// The same stream with its first keyframe `frames` frames in (modulo the
    /// keyframe interval). Independent encoders are not in step: without
    /// this, every video stream of a load test would send its keyframe within
    /// the same frame interval, a burst several times the average rate.
    pub fn keyframe_phase(mut self, frames: u64) -> Self {
        if self.frames_per_gop != u64::MAX {
            self.phase = self.frames_per_gop - frames % self.frames_per_gop;
        }
        self
    }

    /// Keyframes come every this many frames (`u64::MAX`: never, as audio).
    pub fn frames_per_keyframe(&self) -> u64 {
        self.frames_per_gop
    }

    /// When the next frame is due.
    pub fn next_frame_at(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.frame as f64 / self.profile.frame_rate)
    }

    /// When the next sender report is due.
    pub fn next_report_at(&self) -> Instant {
        self.next_sr
    }

    /// The SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn rtp_time(&self, since_start: Duration) -> u32 {
        let ticks = since_start.as_secs_f64() * f64::from(self.profile.clock_rate);
        self.ts_base.wrapping_add(ticks as u64 as u32)
    }

    /// Emits the next frame's packets (a keyframe every interval) stamped with
    /// `sent_ns` (wall clock; a sender may restamp them with
    /// [`probe::restamp`] as they leave), and advances to the following frame.
    pub fn frame(&mut self, sent_ns: u64, mut emit: impl FnMut(&[u8])) {
        let key = (self.frame + self.phase).is_multiple_of(self.frames_per_gop);
        let size = if key { self.sizes.1 } else { self.sizes.0 }.max(probe::LEN);
        let count = RoleProfile::packets_per_frame(size);
        let ts = self.ts_base.wrapping_add(
            (self.frame as f64 * f64::from(self.profile.clock_rate) / self.profile.frame_rate)
                .round() as u64 as u32,
        );
        for k in 0..count {
            // Even split; every packet has room for the probe.
            let payload = (size / count + usize::from(k < size % count)).max(probe::LEN);
            let last = k + 1 == count;
            let b = &mut self.buf;
            b[0] = 0x80;
            b[1] = self.profile.payload_type | if last { 0x80 } else { 0 };
            b[2..4].copy_from_slice(&self.seq.to_be_bytes());
            b[4..8].copy_from_slice(&ts.to_be_bytes());
            b[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            let len = FIXED_HEADER + payload;
            probe::stamp(&mut b[FIXED_HEADER..len], self.index, sent_ns);
            emit(&b[..len]);
            self.seq = self.seq.wrapping_add(1);
            self.packets = self.packets.wrapping_add(1);
            self.octets = self.octets.wrapping_add(payload as u32);
        }
        self.frame += 1;
    }

    /// The sender report due at `now` (wall clock `now_ns`), and the next one scheduled.
    pub fn sender_report(&mut self, now: Instant, now_ns: u64) -> [u8; 28] {
        let ntp_secs = now_ns / 1_000_000_000 + NTP_UNIX_OFFSET;
        let ntp_frac = ((now_ns % 1_000_000_000) << 32) / 1_000_000_000;
        let rtp = self.rtp_time(now.saturating_duration_since(self.start));
        let mut p = [0u8; 28];
        p[0] = 0x80;
        p[1] = 200;
        p[2..4].copy_from_slice(&6u16.to_be_bytes());
        p[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
        p[8..12].copy_from_slice(&(ntp_secs as u32).to_be_bytes());
        p[12..16].copy_from_slice(&(ntp_frac as u32).to_be_bytes());
        p[16..20].copy_from_slice(&rtp.to_be_bytes());
        p[20..24].copy_from_slice(&self.packets.to_be_bytes());
        p[24..28].copy_from_slice(&self.octets.to_be_bytes());
        self.next_sr += SR_INTERVAL;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::rtp::RtpHeader;
    use crate::traffic::profile::Profile;
    use webrtc_util::marshal::Unmarshal;

    fn run(profile: RoleProfile, seconds: u64) -> Vec<Vec<u8>> {
        let t0 = Instant::now();
        let mut s = StreamSource::new(3, profile, 0xabcd, 65000, 1000, t0);
        let mut out = Vec::new();
        while s.next_frame_at() < t0 + Duration::from_secs(seconds) {
            s.frame(0, |p| out.push(p.to_vec()));
        }
        out
    }

    #[test]
    fn audio_is_one_packet_per_1024_samples_at_128_kbits() {
        let packets = run(Profile::echo360_live().audio, 10);
        assert_eq!(packets.len(), 469, "46.875 frames per second");
        let headers: Vec<_> = packets
            .iter()
            .map(|p| RtpHeader::parse(p).unwrap())
            .collect();
        for w in headers.windows(2) {
            assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 1024);
            assert_eq!(
                w[1].sequence,
                w[0].sequence.wrapping_add(1),
                "wraps past 65535"
            );
        }
        let bits: usize = headers.iter().map(|h| h.payload_len * 8).sum();
        assert!((bits as f64 / 10.0 - 128_000.0).abs() < 1000.0, "{bits}");
    }

    #[test]
    fn video_frames_split_with_marker_and_keyframes_every_two_seconds() {
        let packets = run(Profile::echo360_live().video, 4);
        let headers: Vec<_> = packets
            .iter()
            .map(|p| RtpHeader::parse(p).unwrap())
            .collect();
        assert!(packets.iter().all(|p| p.len() <= MAX_PACKET));
        // Frames are runs of one timestamp; the marker is on each frame's last packet.
        let mut frames: Vec<Vec<&RtpHeader>> = Vec::new();
        for h in &headers {
            match frames.last_mut() {
                Some(f) if f[0].timestamp == h.timestamp => f.push(h),
                _ => frames.push(vec![h]),
            }
        }
        assert_eq!(frames.len(), 60, "15 fps");
        for f in &frames {
            assert!(f.last().unwrap().marker && f[..f.len() - 1].iter().all(|h| !h.marker));
        }
        for w in frames.windows(2) {
            assert_eq!(
                w[1][0].timestamp.wrapping_sub(w[0][0].timestamp),
                6000,
                "90 kHz / 15"
            );
        }
        let sizes: Vec<usize> = frames
            .iter()
            .map(|f| f.iter().map(|h| h.payload_len).sum())
            .collect();
        assert!(
            sizes[0] > 4 * sizes[1] && sizes[30] > 4 * sizes[29],
            "keyframes at 0 s and 2 s"
        );
        let bits: usize = sizes.iter().sum::<usize>() * 8;
        assert!((bits as f64 / 4.0 - 365_000.0).abs() < 3650.0, "{bits}");
        // The rtp crate reads them too.
        let mut b = bytes::Bytes::copy_from_slice(&packets[0]);
        assert_eq!(
            rtp::packet::Packet::unmarshal(&mut b).unwrap().header.ssrc,
            0xabcd
        );
    }

    #[test]
    fn sender_reports_are_consistent() {
        let t0 = Instant::now();
        let mut s = StreamSource::new(0, Profile::echo360_live().video, 9, 0, 5000, t0);
        let (mut octets, mut packets) = (0, 0);
        for _ in 0..15 {
            s.frame(0, |p| {
                octets += p.len() - 12;
                packets += 1;
            });
        }
        let sr = s.sender_report(t0 + Duration::from_secs(1), 1_700_000_000_500_000_000);
        let mut b = bytes::Bytes::copy_from_slice(&sr);
        let parsed = rtcp::sender_report::SenderReport::unmarshal(&mut b).unwrap();
        assert_eq!(parsed.ssrc, 9);
        assert_eq!(
            parsed.rtp_time,
            5000 + 90_000,
            "one second on the 90 kHz clock"
        );
        assert_eq!(parsed.packet_count as usize, packets);
        assert_eq!(packets, 12 + 14 * 3, "a keyframe, then 14 ordinary frames");
        assert_eq!(parsed.octet_count as usize, octets);
        assert_eq!(parsed.ntp_time >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(parsed.ntp_time & 0xffff_ffff, 1 << 31, "half a second");
        assert_eq!(s.next_report_at(), t0 + SR_INTERVAL);
    }
}
