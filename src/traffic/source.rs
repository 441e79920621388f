//! One generated stream, sans-IO: which frame is due when, its RTP packets
//! (at most [`MAX_PACKET`] bytes, marker on a frame's last packet, timestamps on
//! the role's clock), and RTCP sender reports with consistent NTP/RTP times and
//! counts.
//!
//! Video is H.264 in RFC 6184's packetization mode 1 ([`h264`]): each
//! keyframe is an IDR slice preceded by the stream's SPS and PPS, the other
//! frames are non-IDR slices, and a frame larger than a packet is split into
//! FU-A fragments. Every slice packet carries a probe at [`h264::PROBE_AT`],
//! every audio payload one at its start.

use super::profile::{MAX_PACKET, RoleProfile, SR_INTERVAL};
use super::{h264, probe};
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
    /// The packet being built: its filler written once, after the probe's place.
    buf: Vec<u8>,
    /// Video: the parameter sets and their packets; `None` for audio.
    h264: Option<ParameterSets>,
}

/// A video stream's parameter sets, and the packets that send them before
/// each keyframe (built once; only their RTP headers change).
#[derive(Clone, Debug)]
struct ParameterSets {
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// Whole RTP packets: one STAP-A (even stream numbers) or an SPS and a
    /// PPS packet (odd ones), so a load test sends both forms.
    packets: Vec<Vec<u8>>,
    /// Their payload bytes, taken from the keyframe's budget.
    payload_bytes: usize,
}

impl ParameterSets {
    fn new(profile: &RoleProfile, index: u32) -> Self {
        let (sps, pps) = h264::parameter_sets(profile, index);
        let payloads = if index.is_multiple_of(2) {
            vec![h264::stap_a(&[&sps, &pps])]
        } else {
            vec![sps.clone(), pps.clone()]
        };
        ParameterSets {
            payload_bytes: payloads.iter().map(Vec::len).sum(),
            packets: payloads
                .into_iter()
                .map(|p| [&[0; FIXED_HEADER][..], &p].concat())
                .collect(),
            sps,
            pps,
        }
    }
}

/// How long after its first frame a stream sends its first sender report:
/// spread over the interval so that the streams' reports do not coincide.
fn first_report(index: u32) -> Duration {
    SR_INTERVAL.mul_f64(f64::from(index % 97) / 97.0)
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
            next_sr: start + first_report(index),
            buf: {
                let mut buf = vec![0; MAX_PACKET];
                let at = if profile.is_video() {
                    h264::PROBE_AT
                } else {
                    0
                };
                probe::fill(&mut buf[FIXED_HEADER + at..]);
                buf
            },
            h264: profile
                .is_video()
                .then(|| ParameterSets::new(&profile, index)),
        }
    }

    /// Video: the SPS and PPS (NAL units) the stream sends before each
    /// keyframe, as [`h264::parameter_sets`] makes them; `None` for audio.
    pub fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        self.h264.as_ref().map(|h| (&h.sps[..], &h.pps[..]))
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

    /// The same stream, its first frame at `start` instead (and its first
    /// report as far after it). A sender makes thousands of streams before it
    /// starts the clock: building them is no part of the schedule.
    pub fn starting_at(mut self, start: Instant) -> Self {
        self.start = start;
        self.next_sr = start + first_report(self.index);
        self
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
    ///
    /// Payload bytes (H.264 headers and, before a keyframe, its parameter
    /// sets included) add up to the profile's frame size, split evenly over
    /// as many packets as that size needs.
    pub fn frame(&mut self, sent_ns: u64, mut emit: impl FnMut(&[u8])) {
        let key = (self.frame + self.phase).is_multiple_of(self.frames_per_gop);
        let video = self.h264.is_some();
        let at = if video { h264::PROBE_AT } else { 0 };
        // Every packet has room for its headers and the probe.
        let min = at + probe::LEN;
        let size = if key { self.sizes.1 } else { self.sizes.0 }.max(min);
        // As many packets as the whole frame's bytes need, parameter sets
        // included: the packet rate the profile announces.
        let count = RoleProfile::packets_per_frame(size);
        let ts = self.ts_base.wrapping_add(
            (self.frame as f64 * f64::from(self.profile.clock_rate) / self.profile.frame_rate)
                .round() as u64 as u32,
        );
        let mut slices = size;
        if key && let Some(sets) = &mut self.h264 {
            slices = size.saturating_sub(sets.payload_bytes);
            for p in &mut sets.packets {
                rtp_header(p, self.profile.payload_type, self.seq, ts, self.ssrc);
                emit(p);
                self.seq = self.seq.wrapping_add(1);
                self.packets = self.packets.wrapping_add(1);
                self.octets = self.octets.wrapping_add((p.len() - FIXED_HEADER) as u32);
            }
        }
        let nal_header = h264::frame_header(key);
        for k in 0..count {
            let payload = (slices / count + usize::from(k < slices % count)).max(min);
            let last = k + 1 == count;
            let b = &mut self.buf;
            let pt = self.profile.payload_type | if last { 0x80 } else { 0 };
            rtp_header(b, pt, self.seq, ts, self.ssrc);
            let len = FIXED_HEADER + payload;
            let p = &mut b[FIXED_HEADER..len];
            if video {
                // One packet: a single NAL unit; more: FU-A fragments.
                let head = if count == 1 {
                    [nal_header, h264::slice_start(key)]
                } else {
                    h264::fu_a(nal_header, k == 0, last)
                };
                p[..h264::PROBE_AT].copy_from_slice(&head);
            }
            probe::stamp(&mut p[at..], self.index, sent_ns);
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

/// Writes an RTP fixed header (version 2, no padding, extension or CSRC;
/// `pt_marker` is the second byte) into `b`.
fn rtp_header(b: &mut [u8], pt_marker: u8, seq: u16, ts: u32, ssrc: u32) {
    b[0] = 0x80;
    b[1] = pt_marker;
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&ts.to_be_bytes());
    b[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::rtp::RtpHeader;
    use crate::traffic::profile::Profile;
    use webrtc_util::marshal::Unmarshal;

    fn run(profile: RoleProfile, seconds: u64) -> Vec<Vec<u8>> {
        run_stream(3, profile, seconds, 0).1
    }

    /// Stream `index`, its first keyframe `phase` frames in, for `seconds`.
    fn run_stream(
        index: u32,
        profile: RoleProfile,
        seconds: u64,
        phase: u64,
    ) -> (StreamSource, Vec<Vec<u8>>) {
        let t0 = Instant::now();
        let mut s =
            StreamSource::new(index, profile, 0xabcd, 65000, 1000, t0).keyframe_phase(phase);
        let mut out = Vec::new();
        while s.next_frame_at() < t0 + Duration::from_secs(seconds) {
            s.frame(0, |p| out.push(p.to_vec()));
        }
        (s, out)
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
        // The probe opens every payload, as before video became H.264.
        for p in &packets {
            assert_eq!(probe::read(&p[12..]).map(|p| p.stream), Ok(3));
        }
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
        assert_eq!(
            packets,
            1 + 12 + 14 * 3,
            "a STAP-A of parameter sets and a keyframe, then 14 ordinary frames"
        );
        assert_eq!(parsed.octet_count as usize, octets);
        assert_eq!(parsed.ntp_time >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(parsed.ntp_time & 0xffff_ffff, 1 << 31, "half a second");
        assert_eq!(s.next_report_at(), t0 + SR_INTERVAL);
    }

    /// A video packet as the test reads it, by hand from the bytes.
    #[derive(Debug, PartialEq)]
    enum Read {
        Sps(Vec<u8>),
        Pps(Vec<u8>),
        Stap(Vec<Vec<u8>>),
        /// A single NAL unit slice of this type.
        Slice(u8),
        /// An FU-A fragment of a slice of this type: S, E.
        Fragment(u8, bool, bool),
    }

    fn read_video(payload: &[u8]) -> Read {
        let nri = payload[0] & 0x60;
        match payload[0] & 0x1f {
            7 => Read::Sps(payload.to_vec()),
            8 => Read::Pps(payload.to_vec()),
            24 => {
                let mut units = Vec::new();
                let mut rest = &payload[1..];
                while !rest.is_empty() {
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    units.push(rest[2..2 + n].to_vec());
                    rest = &rest[2 + n..];
                }
                Read::Stap(units)
            }
            t @ (1 | 5) => {
                assert_eq!(nri, if t == 5 { 0x60 } else { 0x40 }, "NRI");
                assert_eq!(payload[1], if t == 5 { 0x88 } else { 0x9a });
                Read::Slice(t)
            }
            28 => {
                let t = payload[1] & 0x1f;
                assert_eq!(nri, if t == 5 { 0x60 } else { 0x40 }, "NRI");
                assert_eq!(payload[1] & 0x20, 0, "R");
                Read::Fragment(t, payload[1] & 0x80 != 0, payload[1] & 0x40 != 0)
            }
            other => panic!("NAL unit type {other}"),
        }
    }

    /// The parameter-set packets and slice types of one frame (a run of one
    /// timestamp), checking its fragments and marker on the way.
    fn read_frame(packets: &[&Vec<u8>]) -> (Vec<Read>, u8) {
        let headers: Vec<_> = packets
            .iter()
            .map(|p| RtpHeader::parse(p).unwrap())
            .collect();
        let reads: Vec<_> = packets.iter().map(|p| read_video(&p[12..])).collect();
        let sets = reads
            .iter()
            .take_while(|r| matches!(r, Read::Sps(_) | Read::Pps(_) | Read::Stap(_)))
            .count();
        let (sets_read, slices) = reads.split_at(sets);
        assert!(headers[..headers.len() - 1].iter().all(|h| !h.marker));
        assert!(
            headers.last().unwrap().marker,
            "marker on the frame's last packet"
        );
        let nal_type = match slices {
            [Read::Slice(t)] => *t,
            [
                Read::Fragment(t, true, false),
                middle @ ..,
                Read::Fragment(u, false, true),
            ] => {
                assert_eq!(t, u);
                for m in middle {
                    assert_eq!(*m, Read::Fragment(*t, false, false));
                }
                *t
            }
            other => panic!("not one slice: {other:?}"),
        };
        (
            sets_read
                .iter()
                .map(|r| match r {
                    Read::Sps(b) => Read::Sps(b.clone()),
                    Read::Pps(b) => Read::Pps(b.clone()),
                    Read::Stap(u) => Read::Stap(u.clone()),
                    _ => unreachable!(),
                })
                .collect(),
            nal_type,
        )
    }

    fn frames(packets: &[Vec<u8>]) -> Vec<Vec<&Vec<u8>>> {
        let mut frames: Vec<Vec<&Vec<u8>>> = Vec::new();
        for p in packets {
            let ts = RtpHeader::parse(p).unwrap().timestamp;
            match frames.last_mut() {
                Some(f) if RtpHeader::parse(f[0]).unwrap().timestamp == ts => f.push(p),
                _ => frames.push(vec![p]),
            }
        }
        frames
    }

    #[test]
    fn video_is_rfc_6184_with_parameter_sets_before_every_idr() {
        let p = Profile::echo360_live();
        // Both roles, both forms of parameter sets, keyframes out of step.
        for (index, role, bitrate) in [(4, p.video, 365_000.0), (7, p.display, 475_000.0)] {
            let (source, packets) = run_stream(index, role, 4, 11);
            let (sps, pps) = source.parameter_sets().unwrap();
            assert_eq!(
                (sps.to_vec(), pps.to_vec()),
                h264::parameter_sets(&role, index)
            );
            let expected_sets = if index % 2 == 0 {
                vec![Read::Stap(vec![sps.to_vec(), pps.to_vec()])]
            } else {
                vec![Read::Sps(sps.to_vec()), Read::Pps(pps.to_vec())]
            };
            let frames = frames(&packets);
            assert_eq!(frames.len(), 60, "4 s at 15 fps");
            let mut idrs = Vec::new();
            for (n, f) in frames.iter().enumerate() {
                let (sets, nal_type) = read_frame(f);
                if nal_type == h264::IDR {
                    assert_eq!(sets, expected_sets, "frame {n}");
                    idrs.push(n);
                } else {
                    assert_eq!((sets.len(), nal_type), (0, h264::SLICE), "frame {n}");
                }
            }
            assert_eq!(idrs, [11, 41], "the first 11 frames in, then every 30");
            assert!(
                frames[11].len() > 4 && frames[12].len() > 1,
                "keyframes and frames fragmented"
            );
            let bits: usize = packets.iter().map(|p| (p.len() - 12) * 8).sum();
            assert!(
                (bits as f64 / 4.0 - bitrate).abs() < bitrate / 100.0,
                "{bits}"
            );
            for p in &packets {
                assert!(p.len() <= MAX_PACKET);
                let mut b = bytes::Bytes::copy_from_slice(p);
                let parsed = rtp::packet::Packet::unmarshal(&mut b).unwrap();
                assert_eq!(parsed.payload[..], p[12..]);
                // Every slice packet's probe checks, restamped too.
                if matches!(read_video(&p[12..]), Read::Slice(_) | Read::Fragment(..)) {
                    let probe = |d: &[u8]| probe::read(&d[12 + h264::PROBE_AT..]);
                    assert_eq!(
                        probe(p),
                        Ok(probe::Probe {
                            stream: index,
                            sent_ns: 0
                        })
                    );
                    let mut d = p.clone();
                    probe::restamp(&mut d, FIXED_HEADER, 42);
                    assert_eq!(
                        probe(&d),
                        Ok(probe::Probe {
                            stream: index,
                            sent_ns: 42
                        })
                    );
                    assert_eq!(d[..12 + h264::PROBE_AT], p[..12 + h264::PROBE_AT]);
                } else {
                    // Restamping leaves parameter sets alone.
                    let mut d = p.clone();
                    probe::restamp(&mut d, FIXED_HEADER, 42);
                    assert_eq!(&d, p);
                }
            }
        }
    }

    #[test]
    fn small_frames_are_single_nal_units() {
        let mut role = Profile::echo360_live().video;
        role.bitrate = 50_000;
        let (_, packets) = run_stream(2, role, 2, 0);
        let frames = frames(&packets);
        let types: Vec<_> = frames.iter().map(|f| read_frame(f).1).collect();
        assert_eq!(types[0], h264::IDR);
        assert!(types[1..].iter().all(|&t| t == h264::SLICE));
        assert!(frames[1..].iter().all(|f| f.len() == 1), "one packet each");
        assert!(frames[0].len() > 2, "the keyframe still fragmented");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever the stream, rate and phase, the sink's own reading finds
        /// nothing malformed, foreign or corrupt, and the parameter sets sent.
        #[test]
        fn any_video_stream_reads_back_clean(
            index in 0u32..100_000,
            kbps in 20u32..3_000,
            fps in 1.0f64..40.0,
            phase in 0u64..1_000,
        ) {
            let mut role = Profile::echo360_live().display;
            role.bitrate = kbps * 1000;
            role.frame_rate = fps;
            let (source, packets) = run_stream(index, role, 2, phase);
            let mut rx = crate::traffic::receiver::StreamReceiver::new(90_000, 1);
            let t0 = Instant::now();
            for p in &packets {
                proptest::prop_assert!(p.len() <= MAX_PACKET);
                rx.on_rtp(p, t0, 0);
            }
            proptest::prop_assert_eq!((rx.malformed, rx.foreign, rx.corrupt), (0, 0, 0));
            proptest::prop_assert_eq!(rx.parameter_sets(), source.parameter_sets());
        }
    }
}
