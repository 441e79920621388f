//! H.264 over RTP (RFC 6184, packetization mode 1) as the traffic tools speak
//! it, sans-IO: the parameter sets a generated video stream announces, the
//! header bytes of its packets, and the checks the sink applies to what
//! arrives: the payload structure as the relay's parser reads it
//! ([`crate::sdp::h264`]), what mode 1 does not carry, and FU-A fragments in
//! order.
//!
//! A generated slice packet carries the probe ([`super::probe`]) at
//! [`PROBE_AT`]: after a single NAL unit's header and the first byte of its
//! slice header, or after an FU-A fragment's two header bytes. One offset for
//! both keeps restamping a datagram as cheap as for audio.

use super::profile::RoleProfile;
use crate::sdp::h264::{FU_A, FuA, H264Error, NalHeader, PPS, Payload, SPS, STAP_A, parse_payload};

/// NAL unit type of a non-IDR slice.
pub const SLICE: u8 = 1;
/// NAL unit type of an IDR slice (a keyframe).
pub const IDR: u8 = 5;

/// The RTP clock of H.264 (RFC 6184 §8.2.1).
pub const CLOCK_RATE: u32 = 90_000;

/// Where the probe starts in the payload of a generated slice packet.
pub const PROBE_AT: usize = 2;

/// Width and height of the generated pictures, in pixels (multiples of 16,
/// so the SPS needs no cropping).
const PICTURE: (u32, u32) = (1280, 720);

/// The NAL unit header of a generated frame: an IDR slice with the highest
/// nal_ref_idc (3) for a keyframe, a non-IDR reference slice (2) otherwise.
pub fn frame_header(key: bool) -> u8 {
    if key { 0x60 | IDR } else { 0x40 | SLICE }
}

/// The byte after a single NAL unit's header: the start of a slice header,
/// first_mb_in_slice 0 then slice_type 7 (I) or 5 (P), as an encoder's first
/// slice of a picture begins.
pub fn slice_start(key: bool) -> u8 {
    if key { 0x88 } else { 0x9a }
}

/// The two header bytes of an FU-A fragment of a NAL unit with header
/// `nal_header`: FU indicator (F, NRI, 28) and FU header (S, E, R = 0, type).
pub fn fu_a(nal_header: u8, start: bool, end: bool) -> [u8; 2] {
    [
        (nal_header & 0xe0) | FU_A,
        (u8::from(start) << 7) | (u8::from(end) << 6) | NalHeader(nal_header).nal_type(),
    ]
}

/// A STAP-A payload aggregating `units` (NAL units of at most 65,535 bytes):
/// its NRI is the highest of theirs, as RFC 6184 §5.7 requires.
pub fn stap_a(units: &[&[u8]]) -> Vec<u8> {
    let nri = units
        .iter()
        .filter_map(|u| u.first())
        .map(|h| h & 0x60)
        .max()
        .unwrap_or(0);
    let mut p = vec![nri | STAP_A];
    for u in units {
        p.extend_from_slice(&(u.len() as u16).to_be_bytes());
        p.extend_from_slice(u);
    }
    p
}

/// The SPS and PPS (NAL units, header byte included) of stream `index` of
/// `profile`: a 1280×720 picture of the profile's [`RoleProfile::profile_level_id`],
/// no B-frames, and VUI timing at the profile's frame rate. Deterministic,
/// and the SPS differs between streams (between any 65,536 consecutive
/// indices): its `num_units_in_tick` is the index modulo 65,536 plus one, and
/// `time_scale` is scaled with it, so every stream announces the same frame
/// rate.
pub fn parameter_sets(profile: &RoleProfile, index: u32) -> (Vec<u8>, Vec<u8>) {
    let [profile_idc, constraints, level_idc] = profile.profile_level_id;
    let tick = index % 65_536 + 1;
    // Annex E: frame rate = time_scale / (2 × num_units_in_tick).
    let time_scale = (2.0 * profile.frame_rate * f64::from(tick))
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32;

    let mut sps = Bits::default();
    sps.u(8, profile_idc.into());
    sps.u(8, constraints.into());
    sps.u(8, level_idc.into());
    sps.ue(0); // seq_parameter_set_id
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        sps.ue(1); // chroma_format_idc: 4:2:0
        sps.ue(0); // bit_depth_luma_minus8
        sps.ue(0); // bit_depth_chroma_minus8
        sps.u(1, 0); // qpprime_y_zero_transform_bypass_flag
        sps.u(1, 0); // seq_scaling_matrix_present_flag
    }
    sps.ue(4); // log2_max_frame_num_minus4: frame_num up to 255
    sps.ue(2); // pic_order_cnt_type 2: output order is decoding order
    sps.ue(1); // max_num_ref_frames
    sps.u(1, 0); // gaps_in_frame_num_value_allowed_flag
    sps.ue(PICTURE.0 / 16 - 1); // pic_width_in_mbs_minus1
    sps.ue(PICTURE.1 / 16 - 1); // pic_height_in_map_units_minus1
    sps.u(1, 1); // frame_mbs_only_flag
    sps.u(1, 1); // direct_8x8_inference_flag
    sps.u(1, 0); // frame_cropping_flag
    sps.u(1, 1); // vui_parameters_present_flag
    sps.u(1, 0); // aspect_ratio_info_present_flag
    sps.u(1, 0); // overscan_info_present_flag
    sps.u(1, 0); // video_signal_type_present_flag
    sps.u(1, 0); // chroma_loc_info_present_flag
    sps.u(1, 1); // timing_info_present_flag
    sps.u(32, tick); // num_units_in_tick
    sps.u(32, time_scale);
    sps.u(1, 1); // fixed_frame_rate_flag
    sps.u(1, 0); // nal_hrd_parameters_present_flag
    sps.u(1, 0); // vcl_hrd_parameters_present_flag
    sps.u(1, 0); // pic_struct_present_flag
    sps.u(1, 0); // bitstream_restriction_flag

    let mut pps = Bits::default();
    pps.ue(0); // pic_parameter_set_id
    pps.ue(0); // seq_parameter_set_id
    // CABAC except in the Baseline profiles, which do not have it.
    pps.u(1, u32::from(profile_idc != 66)); // entropy_coding_mode_flag
    pps.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
    pps.ue(0); // num_slice_groups_minus1
    pps.ue(0); // num_ref_idx_l0_default_active_minus1
    pps.ue(0); // num_ref_idx_l1_default_active_minus1
    pps.u(1, 0); // weighted_pred_flag
    pps.u(2, 0); // weighted_bipred_idc
    pps.se(0); // pic_init_qp_minus26
    pps.se(0); // pic_init_qs_minus26
    pps.se(0); // chroma_qp_index_offset
    pps.u(1, 1); // deblocking_filter_control_present_flag
    pps.u(1, 0); // constrained_intra_pred_flag
    pps.u(1, 0); // redundant_pic_cnt_present_flag

    (
        nal_unit(0x60 | SPS, &sps.rbsp()),
        nal_unit(0x60 | PPS, &pps.rbsp()),
    )
}

/// An RBSP written bit by bit (parameter sets are built once per stream).
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits written so far.
    len: usize,
}

impl Bits {
    /// `n` bits (at most 32) of `v`, most significant first.
    fn u(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            *self.bytes.last_mut().expect("pushed above") |= bit << (7 - self.len % 8);
            self.len += 1;
        }
    }

    /// ue(v): unsigned Exp-Golomb.
    fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let bits = 64 - x.leading_zeros();
        self.u(bits - 1, 0);
        // `x` has `bits` ≤ 33 bits: its leading 1, then the rest.
        self.u(1, 1);
        self.u(bits - 1, (x & !(1 << (bits - 1))) as u32);
    }

    /// se(v): signed Exp-Golomb.
    fn se(&mut self, v: i32) {
        let k = if v > 0 {
            2 * v.unsigned_abs() - 1
        } else {
            2 * v.unsigned_abs()
        };
        self.ue(k);
    }

    /// The bytes with rbsp_trailing_bits: a stop bit, then zeros to the byte.
    fn rbsp(mut self) -> Vec<u8> {
        self.u(1, 1);
        while !self.len.is_multiple_of(8) {
            self.u(1, 0);
        }
        self.bytes
    }
}

/// A NAL unit of `header` and `rbsp`, with emulation prevention (H.264
/// §7.4.1): a 0x03 after two zero bytes that a byte of 0–3 follows, so no
/// start code (0x000001) appears inside.
fn nal_unit(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 2 + 1);
    out.push(header);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Why the sink counts a video payload as malformed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The payload's RFC 6184 structure is wrong, as [`parse_payload`]
    /// refuses it (empty, F bit set, a broken STAP-A or FU-A).
    Structure(H264Error),
    /// A type mode 1 does not carry ([`Payload::Unsupported`]): 0 and 30–31
    /// are unspecified, STAP-B, MTAP and FU-B belong to the interleaved mode.
    Unsupported(u8),
    /// An IDR slice with nal_ref_idc 0 (H.264 §7.4.1 forbids it), whether
    /// sent whole, in a STAP-A or in FU-A fragments.
    UnreferencedIdr,
    /// An FU-A fragment out of order: a middle or end fragment with no start
    /// before it, a start before the previous NAL unit ended, another packet
    /// inside a fragmented NAL unit, or a fragment of another NAL unit or
    /// timestamp than the one it continues.
    FragmentOrder,
    /// The marker (a frame's last packet) on a fragment that is not the end.
    MarkerInsideFragment,
}

impl From<H264Error> for Malformed {
    fn from(e: H264Error) -> Self {
        Malformed::Structure(e)
    }
}

/// Reads a video payload as the sink does: [`parse_payload`], then what the
/// relay lets pass (it only looks for parameter sets) but a mode 1 sender
/// must not send: a type of another mode, an unreferenced IDR. What it
/// accepts is never [`Payload::Unsupported`]. Never panics.
pub fn check(payload: &[u8]) -> Result<Payload<'_>, Malformed> {
    let parsed = parse_payload(payload)?;
    let unreferenced = match parsed {
        Payload::Single(nal) => nal.first().is_some_and(|&h| unreferenced_idr(h)),
        Payload::StapA(stap) => stap
            .units()
            .filter_map(<[u8]>::first)
            .any(|&h| unreferenced_idr(h)),
        Payload::FuA(fu) => unreferenced_idr(fu.nal_header),
        Payload::Unsupported(t) => return Err(Malformed::Unsupported(t)),
    };
    if unreferenced {
        return Err(Malformed::UnreferencedIdr);
    }
    Ok(parsed)
}

/// Whether a NAL unit header is an IDR slice's with nal_ref_idc 0.
fn unreferenced_idr(header: u8) -> bool {
    let h = NalHeader(header);
    h.nal_type() == IDR && h.nri() == 0
}

/// Checks that FU-A fragments follow each other as RFC 6184 §5.8 requires,
/// over packets in sequence-number order. Only consecutive sequence numbers
/// are judged: the packet after a loss, a duplicate or a reordering is taken
/// as it comes, so network faults (which the RTP statistics count) are not
/// taken for a sender's.
#[derive(Copy, Clone, Debug, Default)]
pub struct FragmentOrder {
    last_seq: Option<u16>,
    state: Fragmenting,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
enum Fragmenting {
    /// Not known (first packet, or after a gap).
    #[default]
    Unknown,
    /// Between NAL units.
    Idle,
    /// Inside the fragmented NAL unit of this header and timestamp.
    Open { nal_header: u8, timestamp: u32 },
}

impl FragmentOrder {
    /// Accounts a packet (`payload` as [`check`] read it); `Err` when it
    /// breaks the order.
    pub fn on_packet(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &Payload<'_>,
    ) -> Result<(), Malformed> {
        let consecutive = self.last_seq == Some(sequence.wrapping_sub(1));
        self.last_seq = Some(sequence);
        let before = if consecutive {
            self.state
        } else {
            Fragmenting::Unknown
        };
        let Payload::FuA(FuA {
            start,
            end,
            nal_header,
            ..
        }) = *payload
        else {
            self.state = Fragmenting::Idle;
            return match before {
                Fragmenting::Open { .. } => Err(Malformed::FragmentOrder),
                _ => Ok(()),
            };
        };
        let verdict = match before {
            Fragmenting::Open { .. } if start => Err(Malformed::FragmentOrder),
            Fragmenting::Open {
                nal_header: h,
                timestamp: t,
            } if h != nal_header || t != timestamp => Err(Malformed::FragmentOrder),
            Fragmenting::Idle if !start => Err(Malformed::FragmentOrder),
            _ if marker && !end => Err(Malformed::MarkerInsideFragment),
            _ => Ok(()),
        };
        // The marker ends the frame, and with it any NAL unit.
        self.state = if end || marker {
            Fragmenting::Idle
        } else {
            Fragmenting::Open {
                nal_header,
                timestamp,
            }
        };
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::h264::{ParameterSetKind, parameter_set};
    use crate::traffic::profile::Profile;
    use proptest::prelude::*;

    /// Reads an RBSP back (the tests' decoder of what [`Bits`] wrote).
    struct Reader<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl Reader<'_> {
        fn u(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |v, _| {
                let bit = (self.bytes[self.pos / 8] >> (7 - self.pos % 8)) & 1;
                self.pos += 1;
                (v << 1) | u32::from(bit)
            })
        }
        fn ue(&mut self) -> u32 {
            let mut zeros = 0;
            while self.u(1) == 0 {
                zeros += 1;
            }
            ((1u64 << zeros) - 1 + u64::from(self.u(zeros))) as u32
        }
        fn se(&mut self) -> i32 {
            let k = self.ue();
            if k % 2 == 1 {
                k.div_ceil(2) as i32
            } else {
                -((k / 2) as i32)
            }
        }
        fn trailing(&mut self) -> bool {
            self.u(1) == 1
                && (self.pos..self.bytes.len() * 8).all(|_| self.u(1) == 0)
                && self.pos == self.bytes.len() * 8
        }
    }

    /// Removes emulation prevention bytes.
    fn rbsp(nal: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut zeros = 0;
        for &b in &nal[1..] {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }

    /// H.264 §7.4.1: no 0x000000, 0x000001 or 0x000002 inside a NAL unit
    /// (0x000003 is the escape itself), and no zero at its end.
    fn no_start_code_emulation(nal: &[u8]) -> bool {
        nal.windows(3)
            .all(|w| !(w[0] == 0 && w[1] == 0 && w[2] <= 2))
            && nal.last() != Some(&0)
    }

    #[test]
    fn parameter_sets_decode_to_a_720p_stream_at_the_profile_frame_rate() {
        let p = Profile::echo360_live();
        for (role, idc, cabac) in [
            (p.video, [0x42, 0xe0, 0x1f], 0),
            (p.display, [0x4d, 0x40, 0x1f], 1),
        ] {
            let (sps, pps) = parameter_sets(&role, 41);
            assert_eq!(sps[..4], [0x67, idc[0], idc[1], idc[2]]);
            let bytes = rbsp(&sps);
            let mut r = Reader {
                bytes: &bytes,
                pos: 24,
            };
            assert_eq!(r.ue(), 0, "seq_parameter_set_id");
            assert_eq!(r.ue(), 4, "log2_max_frame_num_minus4");
            assert_eq!(r.ue(), 2, "pic_order_cnt_type");
            assert_eq!(r.ue(), 1, "max_num_ref_frames");
            assert_eq!(r.u(1), 0);
            assert_eq!((r.ue() + 1) * 16, 1280);
            assert_eq!((r.ue() + 1) * 16, 720);
            assert_eq!(
                r.u(4),
                0b1101,
                "frame_mbs_only, direct_8x8, no cropping, VUI"
            );
            assert_eq!(r.u(5), 0b00001, "timing info only");
            let (tick, scale) = (r.u(32), r.u(32));
            assert_eq!((tick, scale), (42, 42 * 30), "15 fps");
            assert_eq!(r.u(5), 0b10000, "fixed rate, no HRD, no restrictions");
            assert!(r.trailing());

            assert_eq!(pps[0], 0x68);
            let bytes = rbsp(&pps);
            let mut r = Reader {
                bytes: &bytes,
                pos: 0,
            };
            assert_eq!((r.ue(), r.ue()), (0, 0), "PPS 0 of SPS 0");
            assert_eq!(r.u(1), cabac, "CABAC outside Baseline");
            assert_eq!(r.u(1), 0);
            assert_eq!((r.ue(), r.ue(), r.ue()), (0, 0, 0));
            assert_eq!(r.u(3), 0);
            assert_eq!((r.se(), r.se(), r.se()), (0, 0, 0));
            assert_eq!(r.u(3), 0b100);
            assert!(r.trailing());
        }
        // x264's Baseline PPS, byte for byte.
        assert_eq!(parameter_sets(&p.video, 0).1, [0x68, 0xce, 0x3c, 0x80]);
    }

    #[test]
    fn parameter_sets_are_deterministic_and_differ_between_streams() {
        let video = Profile::echo360_live().video;
        assert_eq!(parameter_sets(&video, 7), parameter_sets(&video, 7));
        assert_ne!(parameter_sets(&video, 7).0, parameter_sets(&video, 8).0);
        assert_eq!(parameter_sets(&video, 7).1, parameter_sets(&video, 8).1);
    }

    #[test]
    fn emulation_prevention_escapes_every_start_code_pattern() {
        assert_eq!(
            nal_unit(0x67, &[0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 4]),
            [0x67, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 3, 0, 0, 4]
        );
        // Stream 0's tick is 00 00 00 01 in the RBSP: escaped.
        let (sps, _) = parameter_sets(&Profile::echo360_live().video, 0);
        assert!(sps.windows(3).any(|w| w == [0, 0, 3]), "{sps:02x?}");
    }

    #[test]
    fn built_headers_read_back_as_sent() {
        let stap = stap_a(&[&[0x67, 1, 2], &[0x68, 3]]);
        assert_eq!(stap[0], 0x78, "NRI 3, the highest of its units'");
        let Ok(Payload::StapA(a)) = check(&stap) else {
            panic!("{stap:?}")
        };
        assert_eq!(
            a.units().collect::<Vec<_>>(),
            [&[0x67, 1, 2][..], &[0x68, 3]]
        );
        assert_eq!(stap_a(&[&[0x41, 1], &[0x06, 2]])[0], 0x58, "NRI 2");
        for (nal_header, start, end, bytes) in [
            (frame_header(true), true, false, [0x7c, 0x85]),
            (frame_header(false), false, true, [0x5c, 0x41]),
            (frame_header(false), false, false, [0x5c, 0x01]),
        ] {
            let head = fu_a(nal_header, start, end);
            assert_eq!(head, bytes);
            let payload = [&head[..], &[slice_start(true)]].concat();
            assert_eq!(
                check(&payload),
                Ok(Payload::FuA(FuA {
                    start,
                    end,
                    nal_header,
                    fragment: &[0x88]
                }))
            );
        }
        let single = [frame_header(true), slice_start(true)];
        assert_eq!(check(&single), Ok(Payload::Single(&single[..])));
    }

    #[test]
    fn the_sink_refuses_more_than_the_relays_parser() {
        // The structure, refused as `parse_payload` refuses it.
        for (payload, why) in [
            (&[][..], H264Error::Empty),
            (&[0xe5, 0x88], H264Error::Forbidden),
            (&[0x78, 0, 3, 0x67, 1], H264Error::StapTruncated),
            (&[0x7c, 0xc5, 9], H264Error::FuStartAndEnd),
            // The generator always sends bytes after the FU header.
            (&[0x7c, 0x85], H264Error::FuTruncated),
        ] {
            assert_eq!(
                check(payload),
                Err(Malformed::Structure(why)),
                "{payload:02x?}"
            );
        }
        // Types the relay skips and mode 1 does not carry.
        for t in [0u8, 25, 26, 27, 29, 30, 31] {
            assert_eq!(
                check(&[0x60 | t, 0]),
                Err(Malformed::Unsupported(t)),
                "type {t}"
            );
        }
        // An IDR with nal_ref_idc 0, sent whole, aggregated or fragmented;
        // other units with nal_ref_idc 0 are fine.
        for payload in [
            &[0x05, 0x88][..],
            &[0x78, 0, 2, 0x67, 1, 0, 2, 0x05, 0x88],
            &[0x1c, 0x85, 9],
        ] {
            assert_eq!(
                check(payload),
                Err(Malformed::UnreferencedIdr),
                "{payload:02x?}"
            );
            assert!(parse_payload(payload).is_ok(), "the relay takes it");
        }
        for payload in [
            &[0x01, 0x9a][..],
            &[0x06, 5],
            &[0x38, 0, 2, 0x25, 0x88, 0, 2, 0x06, 5],
            &[0x3c, 0x85, 9],
            &[0x1c, 0x81, 9],
        ] {
            assert!(check(payload).is_ok(), "{payload:02x?}");
        }
    }

    fn fragment(start: bool, end: bool) -> Payload<'static> {
        Payload::FuA(FuA {
            start,
            end,
            nal_header: 0x41,
            fragment: &[0x9a],
        })
    }

    #[test]
    fn fragments_out_of_order_are_caught_and_network_gaps_are_not() {
        let single = Payload::Single(&[0x41, 0x9a]);
        let run = |packets: &[(u16, u32, bool, Payload<'static>)]| {
            let mut order = FragmentOrder::default();
            packets
                .iter()
                .map(|(seq, ts, m, u)| order.on_packet(*seq, *ts, *m, u).is_ok())
                .collect::<Vec<_>>()
        };
        let (s, mid, e) = (
            fragment(true, false),
            fragment(false, false),
            fragment(false, true),
        );
        // In order.
        assert_eq!(
            run(&[
                (1, 0, false, s),
                (2, 0, false, mid),
                (3, 0, true, e),
                (4, 9, true, single)
            ]),
            [true; 4]
        );
        // Start and middle swapped.
        assert_eq!(
            run(&[(1, 0, false, mid), (2, 0, false, s), (3, 0, true, e)]),
            [true, false, true],
            "the first packet seen cannot be judged"
        );
        // The end fragment lost on the sender's side: the next start comes inside.
        assert_eq!(
            run(&[(1, 0, false, s), (2, 0, false, mid), (3, 9, false, s)]),
            [true, true, false]
        );
        // A single NAL unit inside a fragmented one.
        assert_eq!(
            run(&[(1, 0, false, s), (2, 0, true, single)]),
            [true, false]
        );
        // A fragment of another timestamp or NAL unit type continuing.
        assert_eq!(run(&[(1, 0, false, s), (2, 6000, true, e)]), [true, false]);
        let idr_end = Payload::FuA(FuA {
            start: false,
            end: true,
            nal_header: 0x65,
            fragment: &[0x88],
        });
        assert_eq!(
            run(&[(1, 0, false, s), (2, 0, true, idr_end)]),
            [true, false]
        );
        // The marker before the end; the next frame's start is then fine.
        assert_eq!(
            run(&[(1, 0, false, s), (2, 0, true, mid), (3, 9, false, s)]),
            [true, false, true]
        );
        // A network loss, duplicate or reordering is not the sender's fault.
        assert_eq!(
            run(&[(1, 0, false, s), (3, 0, false, mid), (4, 0, true, e)]),
            [true; 3]
        );
        assert_eq!(
            run(&[(1, 0, false, s), (3, 0, true, e), (4, 9, false, s)]),
            [true; 3]
        );
        assert_eq!(
            run(&[(1, 0, false, s), (1, 0, false, s), (2, 0, false, mid)]),
            [true; 3]
        );
        assert_eq!(
            run(&[(1, 0, false, s), (3, 0, true, e), (2, 0, false, mid)]),
            [true; 3]
        );
        // Sequence numbers wrap.
        assert_eq!(run(&[(65535, 0, false, s), (0, 0, true, e)]), [true; 2]);
        assert_eq!(
            run(&[(65535, 0, false, s), (0, 0, true, single)]),
            [true, false]
        );
    }

    proptest! {
        /// Whatever the bytes, the sink's check never panics, keeps
        /// `parse_payload`'s verdict and reading, and adds only its own
        /// reasons.
        #[test]
        fn the_check_only_adds_to_the_relays_parser(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let checked = check(&payload);
            match parse_payload(&payload) {
                Err(e) => prop_assert_eq!(checked, Err(Malformed::Structure(e))),
                Ok(Payload::Unsupported(t)) => {
                    prop_assert_eq!(checked, Err(Malformed::Unsupported(t)))
                }
                Ok(parsed) => prop_assert!(
                    checked == Ok(parsed) || checked == Err(Malformed::UnreferencedIdr),
                    "{:?}",
                    checked
                ),
            }
        }

        #[test]
        fn parameter_sets_never_emulate_a_start_code(
            index in any::<u32>(),
            fps in 1.0f64..120.0,
            idc in proptest::sample::select(vec![66u8, 77, 100]),
        ) {
            let mut role = Profile::echo360_live().video;
            role.frame_rate = fps;
            role.profile_level_id = [idc, 0x40, 0x1f];
            let (sps, pps) = parameter_sets(&role, index);
            prop_assert!(no_start_code_emulation(&sps), "{:02x?}", sps);
            prop_assert!(no_start_code_emulation(&pps), "{:02x?}", pps);
            prop_assert_eq!(check(&sps), Ok(Payload::Single(&sps[..])));
            prop_assert_eq!(parameter_set(&sps), Ok(Some(ParameterSetKind::Sps)));
            prop_assert_eq!(parameter_set(&pps), Ok(Some(ParameterSetKind::Pps)));
            // The tick decodes back (past the fields before it).
            let bytes = rbsp(&sps);
            let mut r = Reader { bytes: &bytes, pos: 24 };
            r.ue();
            if idc == 100 {
                prop_assert_eq!((r.ue(), r.ue(), r.ue(), r.u(2)), (1, 0, 0, 0));
            }
            for _ in 0..3 { r.ue(); }
            r.u(1);
            r.ue();
            r.ue();
            r.u(9);
            prop_assert_eq!(r.u(32), index % 65_536 + 1);
        }
    }
}
