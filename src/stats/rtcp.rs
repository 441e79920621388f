//! Statistics of one control stream: packets and bytes each way, sender and
//! receiver reports, and what the destination's receiver reports say about the
//! media stream (downstream loss and jitter).

use crate::packet::rtcp::{ReportBlock, Summary, report_blocks};
use serde::{Deserialize, Serialize};

/// A control stream's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RtcpStream {
    /// Sender reports from the appliance.
    pub sender_reports: u64,
    /// Receiver reports from the appliance (Wowza's feed the `wowza_*` fields).
    pub receiver_reports: u64,
    /// The destination's latest report on the media stream: fraction lost (0–1).
    pub wowza_fraction_lost: Option<f64>,
    /// … cumulative packets lost.
    pub wowza_cumulative_lost: Option<i64>,
    /// … interarrival jitter in timestamp units.
    pub wowza_jitter: Option<u32>,
}

impl RtcpStream {
    /// Accounts a compound packet already checked.
    pub fn on_compound(&mut self, summary: Summary) {
        self.sender_reports += u64::from(summary.sender_reports);
        self.receiver_reports += u64::from(summary.receiver_reports);
    }

    /// Reads the destination's report on `media_ssrc` (or its first block when
    /// the media SSRC is not known yet) from a checked compound packet.
    pub fn on_destination_report(&mut self, packet: &[u8], media_ssrc: Option<u32>) {
        let mut pick: Option<ReportBlock> = None;
        for block in report_blocks(packet) {
            if media_ssrc.is_none_or(|s| s == block.ssrc) {
                pick = Some(block);
                break;
            }
        }
        if let Some(b) = pick {
            self.wowza_fraction_lost = Some(f64::from(b.fraction_lost) / 256.0);
            self.wowza_cumulative_lost = Some(i64::from(b.cumulative_lost));
            self.wowza_jitter = Some(b.jitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::rtcp::check;
    use rtcp::receiver_report::ReceiverReport;
    use rtcp::reception_report::ReceptionReport;
    use webrtc_util::marshal::Marshal;

    #[test]
    fn takes_the_block_of_the_media_ssrc() {
        let block = |ssrc, fraction_lost, total_lost| ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost,
            jitter: ssrc * 10,
            ..Default::default()
        };
        let rr = ReceiverReport {
            ssrc: 99,
            reports: vec![block(1, 0, 0), block(2, 128, 40)],
            profile_extensions: bytes::Bytes::new(),
        }
        .marshal()
        .unwrap();
        let mut s = RtcpStream::default();
        s.on_compound(check(&rr).unwrap());
        s.on_destination_report(&rr, Some(2));
        assert_eq!(s.receiver_reports, 1);
        assert_eq!(s.wowza_fraction_lost, Some(0.5));
        assert_eq!(s.wowza_cumulative_lost, Some(40));
        assert_eq!(s.wowza_jitter, Some(20));
        s.on_destination_report(&rr, None);
        assert_eq!(s.wowza_cumulative_lost, Some(0));
    }
}
