//! RTCP (RFC 3550 §6) compound-packet checks and the fields the relay reads:
//! packet counts by type and the report blocks of sender/receiver reports.

/// Sender report.
pub const SR: u8 = 200;
/// Receiver report.
pub const RR: u8 = 201;

/// Why a datagram is not a valid RTCP compound packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RtcpError {
    /// Shorter than one RTCP header.
    TooShort,
    /// A packet's version is not 2.
    Version,
    /// A packet type outside 192–223.
    PacketType,
    /// The length fields do not add up to the datagram.
    Length,
    /// A report count that does not fit its SR/RR.
    ReportCount,
}

/// One report block (RFC 3550 §6.4.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// The media source reported on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// What a valid compound packet contains.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sender reports in it.
    pub sender_reports: u32,
    /// Receiver reports in it.
    pub receiver_reports: u32,
}

/// Checks a compound packet: every packet version 2 with type 192–223, lengths
/// adding up to the datagram, SR/RR report counts fitting their length.
pub fn check(p: &[u8]) -> Result<Summary, RtcpError> {
    if p.len() < 4 {
        return Err(RtcpError::TooShort);
    }
    let mut summary = Summary::default();
    for packet in Packets(p) {
        let (pt, count, body) = packet?;
        let fixed = match pt {
            SR => 24,
            RR => 4,
            _ => continue,
        };
        if body.len() < fixed + 24 * usize::from(count) {
            return Err(RtcpError::ReportCount);
        }
        if pt == SR {
            summary.sender_reports += 1;
        } else {
            summary.receiver_reports += 1;
        }
    }
    Ok(summary)
}

/// The report blocks of every SR and RR in a compound packet already [`check`]ed.
pub fn report_blocks(p: &[u8]) -> impl Iterator<Item = ReportBlock> + '_ {
    Packets(p)
        .filter_map(Result::ok)
        .flat_map(|(pt, count, body)| {
            let fixed = match pt {
                SR => 24,
                RR => 4,
                _ => body.len(),
            };
            let blocks = body.get(fixed..).unwrap_or(&[]);
            blocks
                .chunks_exact(24)
                .take(usize::from(count))
                .map(|b| ReportBlock {
                    ssrc: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    fraction_lost: b[4],
                    // 24-bit two's complement.
                    cumulative_lost: (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8,
                    highest_sequence: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                    jitter: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
                })
        })
}

/// Iterates the packets of a compound: (type, count field, body after the header).
struct Packets<'a>(&'a [u8]);

impl<'a> Iterator for Packets<'a> {
    type Item = Result<(u8, u8, &'a [u8]), RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        let p = self.0;
        if p.is_empty() {
            return None;
        }
        let item = (|| {
            if p.len() < 4 {
                return Err(RtcpError::Length);
            }
            if p[0] >> 6 != 2 {
                return Err(RtcpError::Version);
            }
            let pt = p[1];
            if !(192..=223).contains(&pt) {
                return Err(RtcpError::PacketType);
            }
            let len = 4 * (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1);
            if len > p.len() {
                return Err(RtcpError::Length);
            }
            Ok((pt, p[0] & 0x1f, &p[4..len], len))
        })();
        match item {
            Ok((pt, count, body, len)) => {
                self.0 = &p[len..];
                Some(Ok((pt, count, body)))
            }
            Err(e) => {
                self.0 = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::receiver_report::ReceiverReport;
    use rtcp::reception_report::ReceptionReport;
    use rtcp::sender_report::SenderReport;
    use rtcp::source_description::SourceDescription;
    use webrtc_util::marshal::Marshal;

    fn block(ssrc: u32, lost: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost: 64,
            total_lost: lost,
            last_sequence_number: 70_000,
            jitter: 321,
            last_sender_report: 0,
            delay: 0,
        }
    }

    fn compound() -> Vec<u8> {
        let sr = SenderReport {
            ssrc: 7,
            ntp_time: 1 << 40,
            rtp_time: 90_000,
            packet_count: 10,
            octet_count: 1000,
            reports: vec![],
            profile_extensions: bytes::Bytes::new(),
        };
        let rr = ReceiverReport {
            ssrc: 9,
            reports: vec![block(7, 12), block(8, 0x00ff_ffff)],
            profile_extensions: bytes::Bytes::new(),
        };
        let sdes = SourceDescription::default();
        let mut out = sr.marshal().unwrap().to_vec();
        out.extend_from_slice(&rr.marshal().unwrap());
        out.extend_from_slice(&sdes.marshal().unwrap());
        out
    }

    #[test]
    fn reads_what_the_rtcp_crate_writes() {
        let p = compound();
        assert_eq!(
            check(&p),
            Ok(Summary {
                sender_reports: 1,
                receiver_reports: 1
            })
        );
        let blocks: Vec<_> = report_blocks(&p).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[0],
            ReportBlock {
                ssrc: 7,
                fraction_lost: 64,
                cumulative_lost: 12,
                highest_sequence: 70_000,
                jitter: 321
            }
        );
        // 0xffffff is -1 in 24-bit two's complement (duplicates exceed expected).
        assert_eq!(blocks[1].cumulative_lost, -1);
    }

    #[test]
    fn refuses_what_is_not_rtcp() {
        let good = compound();
        assert_eq!(check(&good[..3]), Err(RtcpError::TooShort));
        assert_eq!(check(&good[..good.len() - 2]), Err(RtcpError::Length));
        assert_eq!(check(&good[..good.len() - 6]), Err(RtcpError::Length));
        let mut longer = good.clone();
        longer.extend_from_slice(&[0x80, 201, 0]);
        assert_eq!(check(&longer), Err(RtcpError::Length));
        let mut v1 = good.clone();
        v1[0] &= 0x3f;
        assert_eq!(check(&v1), Err(RtcpError::Version));
        // An RTP packet (PT 96) on a control port.
        let mut rtp = good.clone();
        rtp[1] = 96;
        assert_eq!(check(&rtp), Err(RtcpError::PacketType));
        // An RR claiming 5 report blocks in a packet that holds none.
        let rr = [0x85, 201, 0, 1, 0, 0, 0, 9];
        assert_eq!(check(&rr), Err(RtcpError::ReportCount));
    }
}
