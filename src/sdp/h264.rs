//! H.264 over RTP (RFC 6184), the parts the SDP needs: the NAL unit header,
//! the payload structures of packetization mode 1 (single NAL unit packets,
//! STAP-A, FU-A), and the SPS and PPS with what SDP says of them
//! (`profile-level-id`, `sprop-parameter-sets`). Pure: views over a payload,
//! no allocation except in [`ParameterSets`].

use std::fmt;

/// NAL unit type of a sequence parameter set.
pub const SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const PPS: u8 = 8;
/// Payload type of a single-time aggregation packet (RFC 6184 §5.7.1).
pub const STAP_A: u8 = 24;
/// Payload type of a fragmentation unit without DON (RFC 6184 §5.8).
pub const FU_A: u8 = 28;
/// Longest SPS or PPS accepted, in bytes with the NAL header. Real ones are
/// tens of bytes (a few hundred with scaling matrices); the bound keeps the
/// reassembly buffer and the SDP small whatever a sender claims.
pub const MAX_PARAMETER_SET_LEN: usize = 4096;
/// Shortest SPS: the NAL header, then profile_idc, the constraint flags and
/// level_idc, the three bytes of `profile-level-id`.
pub const MIN_SPS_LEN: usize = 4;
/// Shortest PPS: the NAL header and at least one byte of it.
pub const MIN_PPS_LEN: usize = 2;

/// The one-byte NAL unit header (H.264 §7.3.1): F, NRI, type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NalHeader(pub u8);

impl NalHeader {
    /// The forbidden_zero_bit: set means the unit may contain errors.
    pub fn forbidden(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// nal_ref_idc (0–3).
    pub fn nri(self) -> u8 {
        (self.0 >> 5) & 0x03
    }

    /// nal_unit_type (0–31); in an RTP payload's first byte, 24–31 name the
    /// payload structure instead (RFC 6184 §5.2).
    pub fn nal_type(self) -> u8 {
        self.0 & 0x1f
    }
}

/// Why a payload or NAL unit is refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum H264Error {
    /// No bytes at all.
    Empty,
    /// The forbidden (F) bit is set in a header: the sender marks the unit as
    /// possibly damaged.
    Forbidden,
    /// A STAP-A with no aggregation unit.
    StapEmpty,
    /// A STAP-A whose size field, or the unit it announces, runs past the end.
    StapTruncated,
    /// A STAP-A unit of size 0.
    StapZeroSize,
    /// A STAP-A unit whose type is not a NAL unit type 1–23 (aggregates are
    /// not nested).
    StapUnitType(u8),
    /// An FU-A without its FU header or without any fragment byte.
    FuTruncated,
    /// An FU-A with both the start and end bits: a unit sent whole must not
    /// be fragmented.
    FuStartAndEnd,
    /// An FU-A whose FU header names a type other than 1–23 (fragments are
    /// not nested).
    FuType(u8),
    /// An SPS shorter than [`MIN_SPS_LEN`] or a PPS shorter than [`MIN_PPS_LEN`].
    ParameterSetTooShort,
    /// An SPS or PPS longer than [`MAX_PARAMETER_SET_LEN`].
    ParameterSetTooLong,
    /// A NAL unit of another type where an SPS (7) or PPS (8) was expected.
    NotParameterSet(u8),
}

impl fmt::Display for H264Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H264Error::Empty => write!(f, "empty payload"),
            H264Error::Forbidden => write!(f, "forbidden (F) bit set"),
            H264Error::StapEmpty => write!(f, "STAP-A without aggregation units"),
            H264Error::StapTruncated => write!(f, "STAP-A unit runs past the end"),
            H264Error::StapZeroSize => write!(f, "STAP-A unit of size 0"),
            H264Error::StapUnitType(t) => write!(f, "STAP-A unit of type {t} (1–23 expected)"),
            H264Error::FuTruncated => write!(f, "FU-A without FU header or fragment"),
            H264Error::FuStartAndEnd => write!(f, "FU-A with both start and end bits"),
            H264Error::FuType(t) => write!(f, "FU-A of type {t} (1–23 expected)"),
            H264Error::ParameterSetTooShort => write!(
                f,
                "parameter set too short (SPS: {MIN_SPS_LEN} bytes at least, PPS: {MIN_PPS_LEN})"
            ),
            H264Error::ParameterSetTooLong => {
                write!(f, "parameter set longer than {MAX_PARAMETER_SET_LEN} bytes")
            }
            H264Error::NotParameterSet(t) => {
                write!(f, "NAL unit of type {t} where an SPS or PPS was expected")
            }
        }
    }
}

impl std::error::Error for H264Error {}

/// What an RTP payload carries, in packetization mode 1.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A single NAL unit packet (§5.6, types 1–23): the whole unit, header
    /// included.
    Single(&'a [u8]),
    /// A STAP-A (§5.7.1), every unit checked.
    StapA(StapA<'a>),
    /// An FU-A (§5.8): one fragment of a unit.
    FuA(FuA<'a>),
    /// A type this mode does not use: 0 and 30–31 (unspecified), STAP-B,
    /// MTAP16, MTAP24 and FU-B (25–27, 29), which only the interleaved mode
    /// sends.
    Unsupported(u8),
}

/// Reads an RTP payload's structure. Malformed payloads get the reason; a
/// payload accepted here is safe to walk without further checks.
pub fn parse_payload(payload: &[u8]) -> Result<Payload<'_>, H264Error> {
    let (&first, rest) = payload.split_first().ok_or(H264Error::Empty)?;
    let header = NalHeader(first);
    if header.forbidden() {
        return Err(H264Error::Forbidden);
    }
    match header.nal_type() {
        1..=23 => Ok(Payload::Single(payload)),
        STAP_A => StapA::parse(rest).map(Payload::StapA),
        FU_A => FuA::parse(header, rest).map(Payload::FuA),
        other => Ok(Payload::Unsupported(other)),
    }
}

/// A checked STAP-A: 16-bit big-endian sizes, each followed by a NAL unit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StapA<'a> {
    /// The bytes after the STAP-A header.
    units: &'a [u8],
}

impl<'a> StapA<'a> {
    /// Checks every unit of the bytes after the STAP-A header: all or nothing,
    /// since after one wrong size the rest is garbage.
    fn parse(units: &'a [u8]) -> Result<StapA<'a>, H264Error> {
        if units.is_empty() {
            return Err(H264Error::StapEmpty);
        }
        let mut rest = units;
        while !rest.is_empty() {
            let (unit, after) = split_unit(rest).ok_or(H264Error::StapTruncated)?;
            let (&first, _) = unit.split_first().ok_or(H264Error::StapZeroSize)?;
            let header = NalHeader(first);
            if header.forbidden() {
                return Err(H264Error::Forbidden);
            }
            if !(1..=23).contains(&header.nal_type()) {
                return Err(H264Error::StapUnitType(header.nal_type()));
            }
            rest = after;
        }
        Ok(StapA { units })
    }

    /// The aggregated NAL units, in order, each with its header.
    pub fn units(&self) -> StapUnits<'a> {
        StapUnits { rest: self.units }
    }
}

/// One size-prefixed unit and what follows it; `None` when it runs past the end.
fn split_unit(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (size, rest) = bytes.split_first_chunk::<2>()?;
    let size = usize::from(u16::from_be_bytes(*size));
    (size <= rest.len()).then(|| rest.split_at(size))
}

/// Iterator over a STAP-A's NAL units.
#[derive(Clone, Debug)]
pub struct StapUnits<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for StapUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // Checked in `StapA::parse`; `None` rather than a panic all the same.
        let (unit, rest) = split_unit(self.rest)?;
        self.rest = rest;
        Some(unit)
    }
}

/// One FU-A fragment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FuA<'a> {
    /// S: the first fragment of the unit.
    pub start: bool,
    /// E: the last fragment of the unit.
    pub end: bool,
    /// The header of the fragmented unit: F and NRI from the FU indicator,
    /// the type from the FU header.
    pub nal_header: u8,
    /// The fragment's bytes (at least one).
    pub fragment: &'a [u8],
}

impl<'a> FuA<'a> {
    /// Reads the bytes after the FU indicator.
    fn parse(indicator: NalHeader, rest: &'a [u8]) -> Result<FuA<'a>, H264Error> {
        let (&fu_header, fragment) = rest.split_first().ok_or(H264Error::FuTruncated)?;
        if fragment.is_empty() {
            return Err(H264Error::FuTruncated);
        }
        let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
        if start && end {
            return Err(H264Error::FuStartAndEnd);
        }
        // The R bit (0x20) must be ignored by receivers.
        let nal_type = fu_header & 0x1f;
        if !(1..=23).contains(&nal_type) {
            return Err(H264Error::FuType(nal_type));
        }
        Ok(FuA {
            start,
            end,
            nal_header: (indicator.0 & 0xe0) | nal_type,
            fragment,
        })
    }

    /// The type of the fragmented unit.
    pub fn nal_type(&self) -> u8 {
        NalHeader(self.nal_header).nal_type()
    }
}

/// The two parameter sets an SDP names.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ParameterSetKind {
    /// Sequence parameter set (type 7).
    Sps,
    /// Picture parameter set (type 8).
    Pps,
}

/// Checks a whole NAL unit (header included): `Some` kind for a usable SPS
/// or PPS, `None` for any other type, an error for an SPS or PPS that is
/// damaged, too short or too long.
pub fn parameter_set(nal: &[u8]) -> Result<Option<ParameterSetKind>, H264Error> {
    let &first = nal.first().ok_or(H264Error::Empty)?;
    let header = NalHeader(first);
    let (kind, min) = match header.nal_type() {
        SPS => (ParameterSetKind::Sps, MIN_SPS_LEN),
        PPS => (ParameterSetKind::Pps, MIN_PPS_LEN),
        _ => return Ok(None),
    };
    if header.forbidden() {
        return Err(H264Error::Forbidden);
    }
    if nal.len() < min {
        return Err(H264Error::ParameterSetTooShort);
    }
    if nal.len() > MAX_PARAMETER_SET_LEN {
        return Err(H264Error::ParameterSetTooLong);
    }
    Ok(Some(kind))
}

/// An SPS and a PPS, checked, with the SDP parameters made of them
/// (RFC 6184 §8.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterSets {
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl ParameterSets {
    /// Copies a checked SPS and PPS (whole NAL units, headers included, as
    /// sent: emulation prevention bytes stay, as `sprop-parameter-sets` wants).
    pub fn new(sps: &[u8], pps: &[u8]) -> Result<ParameterSets, H264Error> {
        expect(sps, ParameterSetKind::Sps)?;
        expect(pps, ParameterSetKind::Pps)?;
        Ok(ParameterSets {
            sps: sps.to_vec(),
            pps: pps.to_vec(),
        })
    }

    /// The SPS NAL unit.
    pub fn sps(&self) -> &[u8] {
        &self.sps
    }

    /// The PPS NAL unit.
    pub fn pps(&self) -> &[u8] {
        &self.pps
    }

    /// `profile-level-id`: SPS bytes 1–3 (profile_idc, the constraint flags,
    /// level_idc) in base16, six digits. Uppercase: RFC 6184 defines the value
    /// as RFC 4648 base16, whose alphabet is uppercase, and ffmpeg writes it so
    /// (`42C01E`); readers compare it case-insensitively.
    pub fn profile_level_id(&self) -> String {
        // Bytes 1–3 cannot hold an emulation prevention byte: that needs two
        // zero bytes before it, and profile_idc is never 0.
        let [profile, constraints, level] = profile_level_id(&self.sps);
        format!("{profile:02X}{constraints:02X}{level:02X}")
    }

    /// `sprop-parameter-sets`: the SPS and the PPS in standard base64 with
    /// padding (RFC 4648 §4), comma-separated (RFC 6184 §8.1).
    pub fn sprop_parameter_sets(&self) -> String {
        let mut out = String::with_capacity(4 * (self.sps.len() + self.pps.len()).div_ceil(3) + 5);
        base64(&self.sps, &mut out);
        out.push(',');
        base64(&self.pps, &mut out);
        out
    }
}

/// Checks that `nal` is a usable parameter set of the `wanted` kind.
fn expect(nal: &[u8], wanted: ParameterSetKind) -> Result<(), H264Error> {
    match parameter_set(nal)? {
        Some(kind) if kind == wanted => Ok(()),
        _ => Err(H264Error::NotParameterSet(
            nal.first().map_or(0, |&b| NalHeader(b).nal_type()),
        )),
    }
}

/// SPS bytes 1–3; zeros where a (checked, so never) short SPS lacks them.
fn profile_level_id(sps: &[u8]) -> [u8; 3] {
    let byte = |i: usize| sps.get(i).copied().unwrap_or(0);
    [byte(1), byte(2), byte(3)]
}

/// Standard base64 with padding (RFC 4648 §4), appended to `out`. Written here
/// rather than taken from a crate: encoding only, a dozen lines, checked
/// against the RFC's test vectors and ffmpeg's own SDP.
fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes give n + 1 digits; '=' pads the group to four.
        for digit in 0..4 {
            if digit <= chunk.len() {
                let index = (group >> (18 - 6 * digit)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b64(bytes: &[u8]) -> String {
        let mut s = String::new();
        base64(bytes, &mut s);
        s
    }

    /// The inverse, for the round-trip property only.
    fn unbase64(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not a base64 digit: {c}"),
        };
        let mut out = Vec::new();
        for group in text.as_bytes().chunks(4) {
            let digits: Vec<u8> = group.iter().copied().filter(|&c| c != b'=').collect();
            let mut bits = 0u32;
            for (i, &d) in digits.iter().enumerate() {
                bits |= u32::from(value(d)) << (18 - 6 * i);
            }
            out.extend_from_slice(&bits.to_be_bytes()[1..digits.len()]);
        }
        out
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(input.as_bytes()), expected, "{input:?}");
        }
        // The last two digits of the alphabet.
        assert_eq!(b64(&[0xfb, 0xff]), "+/8=");
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = b64(&bytes);
            prop_assert_eq!(text.len(), 4 * bytes.len().div_ceil(3));
            prop_assert_eq!(unbase64(&text), bytes);
        }

        /// Whatever the bytes, parsing never panics, and what it accepts
        /// walks to the end.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Payload::StapA(stap)) = parse_payload(&bytes) {
                let total: usize = stap.units().map(|u| u.len() + 2).sum();
                prop_assert_eq!(total + 1, bytes.len());
                prop_assert!(stap.units().all(|u| !u.is_empty()));
            }
            let _ = parameter_set(&bytes);
        }
    }

    /// ffmpeg 5.1's SDP for libx264 baseline 640×360 and the units it sent.
    const FFMPEG_SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x16, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x1e, 0x0f, 0x16, 0x2e, 0x48,
    ];
    const FFMPEG_PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    #[test]
    fn sdp_parameters_match_what_ffmpeg_writes() {
        let sets = ParameterSets::new(FFMPEG_SPS, FFMPEG_PPS).unwrap();
        assert_eq!(sets.profile_level_id(), "42C016");
        assert_eq!(
            sets.sprop_parameter_sets(),
            "Z0LAFtkAoC/5cBEAAAMAAQAAAwAeDxYuSA==,aMuDyyA="
        );
        assert_eq!(sets.sps(), FFMPEG_SPS);
        assert_eq!(sets.pps(), FFMPEG_PPS);
    }

    #[test]
    fn parameter_sets_are_checked() {
        assert_eq!(
            ParameterSets::new(FFMPEG_PPS, FFMPEG_PPS),
            Err(H264Error::NotParameterSet(PPS))
        );
        assert_eq!(
            ParameterSets::new(FFMPEG_SPS, FFMPEG_SPS),
            Err(H264Error::NotParameterSet(SPS))
        );
        assert_eq!(
            ParameterSets::new(&FFMPEG_SPS[..3], FFMPEG_PPS),
            Err(H264Error::ParameterSetTooShort)
        );
        assert_eq!(
            ParameterSets::new(FFMPEG_SPS, &FFMPEG_PPS[..1]),
            Err(H264Error::ParameterSetTooShort)
        );
        assert_eq!(ParameterSets::new(&[], FFMPEG_PPS), Err(H264Error::Empty));
        let mut damaged = FFMPEG_SPS.to_vec();
        damaged[0] |= 0x80;
        assert_eq!(
            ParameterSets::new(&damaged, FFMPEG_PPS),
            Err(H264Error::Forbidden)
        );
        let mut long = vec![0x67; MAX_PARAMETER_SET_LEN];
        assert!(ParameterSets::new(&long, FFMPEG_PPS).is_ok());
        long.push(1);
        assert_eq!(
            ParameterSets::new(&long, FFMPEG_PPS),
            Err(H264Error::ParameterSetTooLong)
        );
        // An IDR slice is not a parameter set, and not an error either.
        assert_eq!(parameter_set(&[0x65, 0x88, 0x84]), Ok(None));
        assert_eq!(
            parameter_set(&[0x68, 0xce]),
            Ok(Some(ParameterSetKind::Pps))
        );
    }

    #[test]
    fn nal_header_fields() {
        // F = 1, NRI = 0b10, type 7.
        let h = NalHeader(0b1100_0111);
        assert!(h.forbidden());
        assert_eq!((h.nri(), h.nal_type()), (2, 7));
        let h = NalHeader(0x41);
        assert!(!h.forbidden());
        assert_eq!((h.nri(), h.nal_type()), (2, 1));
    }

    #[test]
    fn single_nal_units() {
        assert_eq!(parse_payload(FFMPEG_SPS), Ok(Payload::Single(FFMPEG_SPS)));
        assert_eq!(parse_payload(&[0x41]), Ok(Payload::Single(&[0x41][..])));
        assert_eq!(parse_payload(&[]), Err(H264Error::Empty));
        assert_eq!(parse_payload(&[0xe7, 0x42]), Err(H264Error::Forbidden));
        for t in [0u8, 25, 26, 27, 29, 30, 31] {
            assert_eq!(
                parse_payload(&[0x60 | t, 1, 2]),
                Ok(Payload::Unsupported(t))
            );
        }
    }

    #[test]
    fn stap_a_units_are_read_in_order() {
        let mut p = vec![0x78, 0x00, 0x03, 0x67, 0x42, 0xc0, 0x00, 0x02, 0x68, 0xce];
        let Ok(Payload::StapA(stap)) = parse_payload(&p) else {
            panic!("not a STAP-A: {:?}", parse_payload(&p));
        };
        let units: Vec<&[u8]> = stap.units().collect();
        assert_eq!(units, [&[0x67, 0x42, 0xc0][..], &[0x68, 0xce][..]]);
        // A size that runs one byte past the end, and a lone size byte.
        p[8] = 0x03;
        assert_eq!(parse_payload(&p[..9]), Err(H264Error::StapTruncated));
        assert_eq!(parse_payload(&p[..7]), Err(H264Error::StapTruncated));
        assert_eq!(
            parse_payload(&[0x78, 0x00, 0x03, 0x67, 0x42, 0xc0, 0x00, 0x03, 0x68, 0xce]),
            Err(H264Error::StapTruncated)
        );
    }

    #[test]
    fn malformed_stap_a_is_refused() {
        let refused = [
            (&[0x78][..], H264Error::StapEmpty),
            (&[0x78, 0x00][..], H264Error::StapTruncated),
            (&[0x78, 0x00, 0x00][..], H264Error::StapZeroSize),
            (
                &[0x78, 0x00, 0x01, 0x67, 0x00, 0x00][..],
                H264Error::StapZeroSize,
            ),
            (&[0x78, 0x00, 0x02, 0xe7, 0x42][..], H264Error::Forbidden),
            (&[0xf8, 0x00, 0x02, 0x67, 0x42][..], H264Error::Forbidden),
            (
                &[0x78, 0x00, 0x02, 0x78, 0x42][..],
                H264Error::StapUnitType(24),
            ),
            (
                &[0x78, 0x00, 0x02, 0x60, 0x42][..],
                H264Error::StapUnitType(0),
            ),
            (
                &[0x78, 0x00, 0x02, 0x7c, 0x87][..],
                H264Error::StapUnitType(28),
            ),
        ];
        for (payload, why) in refused {
            assert_eq!(parse_payload(payload), Err(why), "{payload:02x?}");
        }
    }

    #[test]
    fn fu_a_headers() {
        // FU indicator: F=0, NRI=3, type 28; FU header: S, type 7.
        let p = [0x7c, 0x87, 0x42, 0xc0];
        assert_eq!(
            parse_payload(&p),
            Ok(Payload::FuA(FuA {
                start: true,
                end: false,
                nal_header: 0x67,
                fragment: &[0x42, 0xc0],
            }))
        );
        // NRI 0 from the indicator, E set, R set (ignored), type 8.
        let Ok(Payload::FuA(fu)) = parse_payload(&[0x1c, 0x68, 0xce]) else {
            panic!("not an FU-A");
        };
        assert_eq!(
            (fu.start, fu.end, fu.nal_header, fu.nal_type()),
            (false, true, 0x08, 8)
        );
        // A middle fragment.
        let Ok(Payload::FuA(fu)) = parse_payload(&[0x5c, 0x05, 0x01]) else {
            panic!("not an FU-A");
        };
        assert_eq!((fu.start, fu.end, fu.nal_header), (false, false, 0x45));
    }

    #[test]
    fn malformed_fu_a_is_refused() {
        let refused = [
            (&[0x7c][..], H264Error::FuTruncated),
            (&[0x7c, 0x87][..], H264Error::FuTruncated),
            (&[0x7c, 0xc7, 0x42][..], H264Error::FuStartAndEnd),
            (&[0xfc, 0x87, 0x42][..], H264Error::Forbidden),
            (&[0x7c, 0x9c, 0x42][..], H264Error::FuType(28)),
            (&[0x7c, 0x98, 0x42][..], H264Error::FuType(24)),
            (&[0x7c, 0x80, 0x42][..], H264Error::FuType(0)),
        ];
        for (payload, why) in refused {
            assert_eq!(parse_payload(payload), Err(why), "{payload:02x?}");
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            H264Error::StapUnitType(28).to_string(),
            "STAP-A unit of type 28 (1–23 expected)"
        );
        assert_eq!(
            H264Error::ParameterSetTooShort.to_string(),
            "parameter set too short (SPS: 4 bytes at least, PPS: 2)"
        );
    }
}
