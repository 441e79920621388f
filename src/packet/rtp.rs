//! RTP (RFC 3550 §5.1) header view: version 2, header consistent with the
//! datagram (CSRC list, extension and padding inside the packet).

/// Fixed header length.
pub const FIXED_HEADER: usize = 12;

/// The fields of a valid RTP packet that forwarding and statistics need.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Where the payload starts (after the CSRC list and extension).
    pub payload_offset: usize,
    /// Bytes of payload (after header and extension, before padding).
    pub payload_len: usize,
}

/// Why a datagram is not a valid RTP packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the fixed header.
    TooShort,
    /// Version is not 2.
    Version,
    /// The CSRC list or extension runs past the end.
    HeaderOverrun,
    /// The padding count is 0 or runs into the header.
    Padding,
    /// An RTCP packet on a media port: a second byte of 192–223 (RFC 5761
    /// §4), or a reserved payload type 72–76.
    RtcpOnMediaPort,
}

impl RtpHeader {
    /// Parses and checks a datagram.
    pub fn parse(p: &[u8]) -> Result<RtpHeader, RtpError> {
        if p.len() < FIXED_HEADER {
            return Err(RtpError::TooShort);
        }
        if p[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let payload_type = p[1] & 0x7f;
        // RFC 5761 §4: 192–223 is RTCP's range of the second byte (the marker
        // bit with payload types 64–95); 72–76 are reserved either way.
        if (192..=223).contains(&p[1]) || (72..=76).contains(&payload_type) {
            return Err(RtpError::RtcpOnMediaPort);
        }
        let csrc_count = usize::from(p[0] & 0x0f);
        let mut header = FIXED_HEADER + 4 * csrc_count;
        if p[0] & 0x10 != 0 {
            // Extension: 16-bit profile, 16-bit length in 32-bit words.
            if p.len() < header + 4 {
                return Err(RtpError::HeaderOverrun);
            }
            let words = usize::from(u16::from_be_bytes([p[header + 2], p[header + 3]]));
            header += 4 + 4 * words;
        }
        if p.len() < header {
            return Err(RtpError::HeaderOverrun);
        }
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            let padding = usize::from(p[p.len() - 1]);
            if padding == 0 || header + padding > p.len() {
                return Err(RtpError::Padding);
            }
            end -= padding;
        }
        Ok(RtpHeader {
            payload_type,
            marker: p[1] & 0x80 != 0,
            sequence: u16::from_be_bytes([p[2], p[3]]),
            timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload_offset: header,
            payload_len: end - header,
        })
    }

    /// The payload of `packet`, the datagram this header was parsed from
    /// (shorter if only the datagram's start is at hand).
    pub fn payload<'p>(&self, packet: &'p [u8]) -> &'p [u8] {
        let end = (self.payload_offset + self.payload_len).min(packet.len());
        &packet[self.payload_offset.min(end)..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use webrtc_util::marshal::{Marshal, Unmarshal};

    fn packet(seq: u16, payload: &[u8]) -> Vec<u8> {
        let p = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 90_000,
                ssrc: 0xdead_beef,
                csrc: vec![1, 2],
                ..Default::default()
            },
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        p.marshal().unwrap().to_vec()
    }

    #[test]
    fn reads_what_the_rtp_crate_writes() {
        let h = RtpHeader::parse(&packet(65535, b"hello")).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                payload_type: 96,
                marker: true,
                sequence: 65535,
                timestamp: 90_000,
                ssrc: 0xdead_beef,
                payload_offset: 20,
                payload_len: 5
            }
        );
        assert_eq!(h.payload(&packet(1, b"hello")), b"hello", "after 2 CSRCs");
    }

    #[test]
    fn refuses_inconsistent_headers() {
        let good = packet(1, b"payload!");
        assert_eq!(RtpHeader::parse(&good[..11]), Err(RtpError::TooShort));
        let mut v1 = good.clone();
        v1[0] = (v1[0] & 0x3f) | 0x40;
        assert_eq!(RtpHeader::parse(&v1), Err(RtpError::Version));
        // CC = 15 claims 60 bytes of CSRC.
        let mut cc = good.clone();
        cc[0] |= 0x0f;
        assert_eq!(RtpHeader::parse(&cc), Err(RtpError::HeaderOverrun));
        // Extension bit with a length past the end.
        let mut ext = good[..20].to_vec();
        ext[0] |= 0x10;
        ext.extend_from_slice(&[0xbe, 0xde, 0x00, 0x09]);
        assert_eq!(RtpHeader::parse(&ext), Err(RtpError::HeaderOverrun));
        // Padding bit with a count larger than the packet, and with count 0.
        let mut pad = good.clone();
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 200;
        assert_eq!(RtpHeader::parse(&pad), Err(RtpError::Padding));
        *pad.last_mut().unwrap() = 0;
        assert_eq!(RtpHeader::parse(&pad), Err(RtpError::Padding));
        *pad.last_mut().unwrap() = 3;
        assert_eq!(RtpHeader::parse(&pad).unwrap().payload_len, 5);
        // An RTCP receiver report (PT 201 = marker + 73) on a media port.
        let mut rr = good.clone();
        rr[1] = 201;
        assert_eq!(RtpHeader::parse(&rr), Err(RtpError::RtcpOnMediaPort));
    }

    /// RFC 5761 §4: a second byte of 192–223 is an RTCP packet type (200–207
    /// among them: payload types 72–79 with the marker set), so it is never
    /// RTP on a media port; payload types 72–76 are reserved with or without
    /// the marker. Every other second byte, the neighbours included, is RTP.
    #[test]
    fn every_rtcp_typed_second_byte_is_refused_and_its_neighbours_are_not() {
        let good = packet(1, b"payload!");
        for second in 0..=255u8 {
            let mut p = good.clone();
            p[1] = second;
            let rtcp = (192..=223).contains(&second) || (72..=76).contains(&(second & 0x7f));
            let parsed = RtpHeader::parse(&p);
            if rtcp {
                assert_eq!(
                    parsed,
                    Err(RtpError::RtcpOnMediaPort),
                    "second byte {second}"
                );
            } else {
                let h = parsed.unwrap_or_else(|e| panic!("second byte {second}: {e:?}"));
                assert_eq!((h.marker, h.payload_type), (second >= 128, second & 0x7f));
            }
        }
        for valid in [191, 224, 71, 77, 96, 224 | 0x1f] {
            let mut p = good.clone();
            p[1] = valid;
            assert!(RtpHeader::parse(&p).is_ok(), "second byte {valid}");
        }
    }

    proptest! {
        /// Whatever the bytes, the parser never panics, and what it accepts the
        /// rtp crate reads with the same fields.
        #[test]
        fn agrees_with_the_rtp_crate(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(h) = RtpHeader::parse(&bytes) {
                let mut buf = bytes::Bytes::copy_from_slice(&bytes);
                let theirs = rtp::packet::Packet::unmarshal(&mut buf).unwrap();
                prop_assert_eq!(theirs.header.sequence_number, h.sequence);
                prop_assert_eq!(theirs.header.ssrc, h.ssrc);
                prop_assert_eq!(theirs.header.payload_type, h.payload_type);
                prop_assert_eq!(theirs.payload.len(), h.payload_len);
            }
        }
    }
}
