//! The in-band H.264 learner: one per video stream, fed the RTP payloads that
//! [`wants`] picks, it keeps the stream's current SPS and PPS for the SDP.
//! Sans-IO: payloads, sequence numbers, timestamps and `Instant`s in, the
//! parameter sets out. Memory is allocated only when a parameter set is
//! stored, and once for the FU-A reassembly buffer ([`MAX_PARAMETER_SET_LEN`]
//! bytes, when a fragmented parameter set first arrives).
//!
//! FU-A reassembly never yields a unit the sender did not send whole: the
//! fragments must run from a start (S) to an end (E) fragment in consecutive
//! sequence numbers (mod 2^16) with one timestamp and one NAL header, within
//! [`MAX_REASSEMBLY_AGE`]. Anything else — a lost or reordered fragment, a
//! new start, a timestamp change, any other packet between the fragments
//! (RFC 6184 §5.8 sends none) — abandons the partial unit; the encoder
//! repeats its parameter sets at the next keyframe.

use super::h264::{
    self, FuA, H264Error, MAX_PARAMETER_SET_LEN, ParameterSetKind, ParameterSets, Payload,
};
use std::fmt;
use std::time::{Duration, Instant};

/// A partial FU-A unit older than this (from its first fragment) is dropped.
/// Parameter sets are a few packets sent back to back: two seconds is ample
/// for any jitter, and far less than a stream takes to wrap its 2^16 sequence
/// numbers (a minute or more at video rates).
pub const MAX_REASSEMBLY_AGE: Duration = Duration::from_secs(2);

/// Whether an RTP payload may carry a parameter set, from its first two bytes:
/// the learner needs exactly the payloads for which this is true.
///
/// The rule, which the kernel fast path applies too: let `t = payload[0] & 0x1f`
/// (the NAL unit or payload type); the payload is wanted when
/// - `t` is 7 (SPS), 8 (PPS) or 24 (STAP-A, whatever it aggregates), or
/// - `t` is 28 (FU-A) and the payload has a second byte with
///   `payload[1] & 0x1f` equal to 7 or 8 (a fragment of an SPS or PPS).
///
/// An empty payload is not wanted. Nothing else is looked at: the F bit,
/// NRI and the FU start/end bits are left to the learner, which refuses what
/// is malformed. The payloads this rejects never matter to the learner: one
/// between two fragments shows as a sequence gap all the same. A path that
/// cannot see the payload's end exactly (say it reads padding as a second
/// byte) may hand over more: extra payloads are harmless, while a missing
/// FU-A fragment makes its unit unusable.
pub fn wants(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(h264::SPS | h264::PPS | h264::STAP_A) => true,
        Some(h264::FU_A) => matches!(
            payload.get(1).map(|b| b & 0x1f),
            Some(h264::SPS | h264::PPS)
        ),
        _ => false,
    }
}

/// What the learner still lacks for [`ParameterSets`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Neither an SPS nor a PPS has been seen.
    Both,
    /// A PPS but no SPS.
    Sps,
    /// An SPS but no PPS.
    Pps,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missing::Both => "no SPS or PPS seen yet",
            Missing::Sps => "no SPS seen yet",
            Missing::Pps => "no PPS seen yet",
        })
    }
}

/// What one payload did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new SPS or PPS (or both) replaced what the learner held: the
    /// version increased.
    Changed,
    /// Parameter sets equal to those held: nothing changed.
    Unchanged,
    /// A fragment of an SPS or PPS, kept until the unit's end fragment.
    Kept,
    /// A fragment of an SPS or PPS that cannot be used; any partial unit is
    /// abandoned (except for a [`Discard::Duplicate`], which leaves it be).
    Discarded(Discard),
    /// No parameter set in it (a slice, SEI, a fragment of a slice, or a
    /// type packetization mode 1 does not use).
    Ignored,
    /// Malformed: nothing from it was used.
    Malformed(H264Error),
}

/// Why a fragment of a parameter set was not used.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Discard {
    /// A continuation with no partial unit to continue (its start was lost,
    /// or the unit was abandoned earlier).
    NoStart,
    /// Not the next fragment of the partial unit: a sequence gap (a lost
    /// fragment), a reordered fragment, or another unit's fragment.
    NotNext,
    /// The next sequence number but another timestamp.
    TimestampChanged,
    /// The partial unit is older than [`MAX_REASSEMBLY_AGE`].
    Stale,
    /// The unit would exceed [`MAX_PARAMETER_SET_LEN`].
    TooLarge,
    /// The same sequence number as the last fragment: a network duplicate,
    /// skipped; the partial unit is kept.
    Duplicate,
}

/// The FU-A unit being reassembled (its bytes are in `H264Learner::buffer`).
#[derive(Copy, Clone, Debug)]
struct Partial {
    last_seq: u16,
    timestamp: u32,
    nal_header: u8,
    started: Instant,
}

/// Learns one video stream's current SPS and PPS from its RTP payloads.
#[derive(Clone, Debug, Default)]
pub struct H264Learner {
    /// The current SPS and PPS; empty until seen.
    sps: Vec<u8>,
    pps: Vec<u8>,
    version: u64,
    partial: Option<Partial>,
    /// The partial unit's bytes, reconstructed NAL header first.
    buffer: Vec<u8>,
}

impl H264Learner {
    /// A learner that knows nothing yet (version 0).
    pub fn new() -> H264Learner {
        H264Learner::default()
    }

    /// Takes one RTP payload (after the RTP header, CSRCs, extension and
    /// padding): its sequence number and timestamp, and when it arrived.
    /// Correct for any payload, though only those [`wants`] picks can matter.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, payload: &[u8], now: Instant) -> Outcome {
        let parsed = match h264::parse_payload(payload) {
            Ok(parsed) => parsed,
            Err(why) => {
                self.partial = None;
                return Outcome::Malformed(why);
            }
        };
        match parsed {
            Payload::FuA(fu) => self.on_fragment(seq, timestamp, fu, now),
            // Nothing else comes between fragments (RFC 6184 §5.8).
            Payload::Single(nal) => {
                self.partial = None;
                self.offer(std::iter::once(nal))
            }
            Payload::StapA(stap) => {
                self.partial = None;
                self.offer(stap.units())
            }
            Payload::Unsupported(_) => {
                self.partial = None;
                Outcome::Ignored
            }
        }
    }

    /// One FU-A fragment.
    fn on_fragment(&mut self, seq: u16, timestamp: u32, fu: FuA<'_>, now: Instant) -> Outcome {
        if !matches!(fu.nal_type(), h264::SPS | h264::PPS) {
            // A fragment of a slice: never reassembled.
            self.partial = None;
            return Outcome::Ignored;
        }
        if fu.start {
            self.partial = None;
            if 1 + fu.fragment.len() > MAX_PARAMETER_SET_LEN {
                return Outcome::Discarded(Discard::TooLarge);
            }
            self.buffer.clear();
            // Once, to the bound: no allocation per fragment after that.
            self.buffer.reserve_exact(MAX_PARAMETER_SET_LEN);
            self.buffer.push(fu.nal_header);
            self.buffer.extend_from_slice(fu.fragment);
            self.partial = Some(Partial {
                last_seq: seq,
                timestamp,
                nal_header: fu.nal_header,
                started: now,
            });
            return Outcome::Kept;
        }
        let Some(partial) = self.partial else {
            return Outcome::Discarded(Discard::NoStart);
        };
        if seq == partial.last_seq && timestamp == partial.timestamp {
            return Outcome::Discarded(Discard::Duplicate);
        }
        let discard =
            if seq != partial.last_seq.wrapping_add(1) || fu.nal_header != partial.nal_header {
                Some(Discard::NotNext)
            } else if timestamp != partial.timestamp {
                Some(Discard::TimestampChanged)
            } else if now.saturating_duration_since(partial.started) > MAX_REASSEMBLY_AGE {
                Some(Discard::Stale)
            } else if self.buffer.len() + fu.fragment.len() > MAX_PARAMETER_SET_LEN {
                Some(Discard::TooLarge)
            } else {
                None
            };
        if let Some(why) = discard {
            self.partial = None;
            return Outcome::Discarded(why);
        }
        self.buffer.extend_from_slice(fu.fragment);
        if !fu.end {
            self.partial = Some(Partial {
                last_seq: seq,
                ..partial
            });
            return Outcome::Kept;
        }
        self.partial = None;
        // Lend the buffer out to `offer`, keeping its capacity for next time.
        let unit = std::mem::take(&mut self.buffer);
        let outcome = self.offer(std::iter::once(unit.as_slice()));
        self.buffer = unit;
        outcome
    }

    /// Stores the last SPS and the last PPS among `units` (whole NAL units,
    /// in order), unless one of them is malformed: a payload is used whole or
    /// not at all, and the version increases at most once for it.
    fn offer<'u>(&mut self, units: impl Iterator<Item = &'u [u8]>) -> Outcome {
        let (mut sps, mut pps) = (None, None);
        for unit in units {
            match h264::parameter_set(unit) {
                Err(why) => return Outcome::Malformed(why),
                Ok(None) => {}
                Ok(Some(ParameterSetKind::Sps)) => sps = Some(unit),
                Ok(Some(ParameterSetKind::Pps)) => pps = Some(unit),
            }
        }
        if sps.is_none() && pps.is_none() {
            return Outcome::Ignored;
        }
        let changed = store(&mut self.sps, sps) | store(&mut self.pps, pps);
        if changed {
            self.version += 1;
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    /// The current SPS and PPS, once both have been seen: each the last one
    /// received whole. Copies them (for the SDP, rarely).
    pub fn parameter_sets(&self) -> Option<ParameterSets> {
        ParameterSets::new(&self.sps, &self.pps).ok()
    }

    /// What is missing while [`H264Learner::parameter_sets`] is `None`.
    pub fn missing(&self) -> Option<Missing> {
        match (self.sps.is_empty(), self.pps.is_empty()) {
            (true, true) => Some(Missing::Both),
            (true, false) => Some(Missing::Sps),
            (false, true) => Some(Missing::Pps),
            (false, false) => None,
        }
    }

    /// Increases whenever the held SPS or PPS changes (0: nothing learned);
    /// the same bytes again leave it. An SPS and PPS that change in one
    /// payload (a STAP-A) count once, so a reader never sees half of it.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// Replaces `held` with `new` when it differs; true if it did. The only
/// allocation of the learner: a new parameter set longer than the last.
fn store(held: &mut Vec<u8>, new: Option<&[u8]>) -> bool {
    match new {
        Some(new) if held.as_slice() != new => {
            held.clear();
            held.extend_from_slice(new);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11,
    ];
    const SPS2: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];
    const PPS2: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];

    fn t0() -> Instant {
        Instant::now()
    }

    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for unit in units {
            p.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            p.extend_from_slice(unit);
        }
        p
    }

    /// `nal` cut into FU-A payloads after its header at the given offsets.
    fn fu_a(nal: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(body.len());
        let last = bounds.len() - 2;
        (0..=last)
            .map(|i| {
                let mut header = nal[0] & 0x1f;
                if i == 0 {
                    header |= 0x80;
                }
                if i == last {
                    header |= 0x40;
                }
                let mut p = vec![(nal[0] & 0xe0) | 28, header];
                p.extend_from_slice(&body[bounds[i]..bounds[i + 1]]);
                p
            })
            .collect()
    }

    /// Feeds `(seq, timestamp, payload)` at 1 ms steps; the outcomes.
    fn feed(
        learner: &mut H264Learner,
        start: Instant,
        packets: &[(u16, u32, &[u8])],
    ) -> Vec<Outcome> {
        packets
            .iter()
            .enumerate()
            .map(|(i, &(seq, ts, p))| {
                learner.on_packet(seq, ts, p, start + Duration::from_millis(i as u64))
            })
            .collect()
    }

    fn learned(learner: &H264Learner) -> Option<(Vec<u8>, Vec<u8>)> {
        learner
            .parameter_sets()
            .map(|s| (s.sps().to_vec(), s.pps().to_vec()))
    }

    #[test]
    fn wants_exactly_the_payloads_that_may_carry_parameter_sets() {
        let wanted: [&[u8]; 9] = [
            &[0x67],
            &[0x67, 0x42],
            &[0x68, 0xce],
            &[0x78, 0x00],
            &[0x7c, 0x87],
            &[0x5c, 0x47, 0x01],
            &[0x1c, 0x08],
            // The rule ignores F and the FU bits: the learner judges those.
            &[0xe7, 0x42],
            &[0x7c, 0xc8],
        ];
        for p in wanted {
            assert!(wants(p), "{p:02x?}");
        }
        let unwanted: [&[u8]; 9] = [
            &[],
            &[0x7c],
            &[0x7c, 0x85],
            &[0x7c, 0x01],
            &[0x65, 0x88],
            &[0x41, 0x9a],
            &[0x06, 0x05],
            &[0x09, 0xf0],
            &[0x7d, 0x87],
        ];
        for p in unwanted {
            assert!(!wants(p), "{p:02x?}");
        }
    }

    #[test]
    fn single_nal_units_fill_in_sps_then_pps() {
        let mut l = H264Learner::new();
        assert_eq!((l.missing(), l.version()), (Some(Missing::Both), 0));
        assert_eq!(l.parameter_sets(), None);
        let now = t0();
        assert_eq!(l.on_packet(1, 0, SPS, now), Outcome::Changed);
        assert_eq!((l.missing(), l.version()), (Some(Missing::Pps), 1));
        assert_eq!(l.parameter_sets(), None);
        assert_eq!(l.on_packet(2, 0, IDR, now), Outcome::Ignored);
        assert_eq!(l.on_packet(3, 0, PPS, now), Outcome::Changed);
        assert_eq!((l.missing(), l.version()), (None, 2));
        assert_eq!(learned(&l), Some((SPS.to_vec(), PPS.to_vec())));
        let sets = l.parameter_sets().unwrap();
        assert_eq!(sets.profile_level_id(), "42C01E");
        // The same bytes again change nothing.
        assert_eq!(l.on_packet(4, 3000, SPS, now), Outcome::Unchanged);
        assert_eq!(l.on_packet(5, 3000, PPS, now), Outcome::Unchanged);
        assert_eq!(l.version(), 2);
    }

    #[test]
    fn a_pps_before_any_sps_is_kept() {
        let mut l = H264Learner::new();
        let now = t0();
        assert_eq!(l.on_packet(7, 0, PPS, now), Outcome::Changed);
        assert_eq!(l.missing(), Some(Missing::Sps));
        assert_eq!(l.missing().unwrap().to_string(), "no SPS seen yet");
        assert_eq!(l.on_packet(8, 0, SPS, now), Outcome::Changed);
        assert_eq!(learned(&l), Some((SPS.to_vec(), PPS.to_vec())));
    }

    #[test]
    fn missing_reads_as_a_sentence() {
        assert_eq!(Missing::Both.to_string(), "no SPS or PPS seen yet");
        assert_eq!(Missing::Pps.to_string(), "no PPS seen yet");
    }

    #[test]
    fn a_stap_a_with_both_counts_once() {
        let mut l = H264Learner::new();
        let now = t0();
        let stap = stap_a(&[&[0x06, 0x05, 0x01], SPS, PPS, IDR]);
        assert_eq!(l.on_packet(1, 0, &stap, now), Outcome::Changed);
        assert_eq!(
            (l.version(), learned(&l)),
            (1, Some((SPS.to_vec(), PPS.to_vec())))
        );
        assert_eq!(l.on_packet(2, 3000, &stap, now), Outcome::Unchanged);
        // Without parameter sets it is of no use.
        assert_eq!(
            l.on_packet(3, 3000, &stap_a(&[IDR, IDR]), now),
            Outcome::Ignored
        );
        // New sets in one packet: one step, never half of it.
        assert_eq!(
            l.on_packet(4, 6000, &stap_a(&[SPS2, PPS2]), now),
            Outcome::Changed
        );
        assert_eq!(
            (l.version(), learned(&l)),
            (2, Some((SPS2.to_vec(), PPS2.to_vec())))
        );
        // Two SPS in one aggregate: the last one wins, in one step.
        assert_eq!(
            l.on_packet(5, 6000, &stap_a(&[SPS2, SPS]), now),
            Outcome::Changed
        );
        assert_eq!((l.version(), l.sps.as_slice()), (3, SPS));
    }

    #[test]
    fn new_parameter_sets_replace_the_old() {
        let mut l = H264Learner::new();
        let now = t0();
        feed(&mut l, now, &[(1, 0, SPS), (2, 0, PPS)]);
        assert_eq!(l.version(), 2);
        // A resolution change: a new SPS, the same PPS.
        assert_eq!(l.on_packet(3, 9000, SPS2, now), Outcome::Changed);
        assert_eq!(l.on_packet(4, 9000, PPS, now), Outcome::Unchanged);
        assert_eq!(
            (l.version(), learned(&l)),
            (3, Some((SPS2.to_vec(), PPS.to_vec())))
        );
        // Back to the first: a change again.
        assert_eq!(l.on_packet(5, 18000, SPS, now), Outcome::Changed);
        assert_eq!(l.on_packet(6, 18000, PPS2, now), Outcome::Changed);
        assert_eq!(
            (l.version(), learned(&l)),
            (5, Some((SPS.to_vec(), PPS2.to_vec())))
        );
    }

    #[test]
    fn malformed_payloads_change_nothing() {
        let mut l = H264Learner::new();
        let now = t0();
        feed(&mut l, now, &[(1, 0, SPS), (2, 0, PPS)]);
        let mut damaged = SPS2.to_vec();
        damaged[0] |= 0x80;
        let stap_with_short_sps = stap_a(&[&[0x67, 0x42, 0xc0], PPS2]);
        let truncated_stap = &stap_a(&[SPS2, PPS2])[..14];
        let cases: [(&[u8], H264Error); 6] = [
            (&[], H264Error::Empty),
            (&damaged, H264Error::Forbidden),
            (&[0x67, 0x42, 0xc0], H264Error::ParameterSetTooShort),
            (&[0x68], H264Error::ParameterSetTooShort),
            (&stap_with_short_sps, H264Error::ParameterSetTooShort),
            (truncated_stap, H264Error::StapTruncated),
        ];
        for (seq, (p, why)) in (10..).zip(cases) {
            assert_eq!(
                l.on_packet(seq, 0, p, now),
                Outcome::Malformed(why),
                "{p:02x?}"
            );
        }
        let oversized: Vec<u8> = [0x67]
            .into_iter()
            .chain([0x42; MAX_PARAMETER_SET_LEN])
            .collect();
        assert_eq!(
            l.on_packet(20, 0, &oversized, now),
            Outcome::Malformed(H264Error::ParameterSetTooLong)
        );
        assert_eq!(
            (l.version(), learned(&l)),
            (2, Some((SPS.to_vec(), PPS.to_vec())))
        );
    }

    #[test]
    fn fu_a_in_order_is_reassembled() {
        let mut l = H264Learner::new();
        let frags = fu_a(SPS, &[2, 5]);
        assert_eq!(frags.len(), 3);
        let out = feed(
            &mut l,
            t0(),
            &[
                (100, 9, &frags[0]),
                (101, 9, &frags[1]),
                (102, 9, &frags[2]),
                (103, 9, PPS),
            ],
        );
        assert_eq!(
            out,
            [
                Outcome::Kept,
                Outcome::Kept,
                Outcome::Changed,
                Outcome::Changed
            ]
        );
        assert_eq!(learned(&l), Some((SPS.to_vec(), PPS.to_vec())));
        // The same again: unchanged.
        let out = feed(
            &mut l,
            t0(),
            &[
                (200, 10, &frags[0]),
                (201, 10, &frags[1]),
                (202, 10, &frags[2]),
            ],
        );
        assert_eq!(out, [Outcome::Kept, Outcome::Kept, Outcome::Unchanged]);
        assert_eq!(l.version(), 2);
    }

    #[test]
    fn fu_a_across_the_sequence_wrap() {
        let mut l = H264Learner::new();
        let frags = fu_a(PPS, &[1, 2]);
        let out = feed(
            &mut l,
            t0(),
            &[
                (65534, 1, &frags[0]),
                (65535, 1, &frags[1]),
                (0, 1, &frags[2]),
            ],
        );
        assert_eq!(out, [Outcome::Kept, Outcome::Kept, Outcome::Changed]);
        assert_eq!(l.pps, PPS);
    }

    #[test]
    fn a_lost_middle_fragment_abandons_the_unit() {
        let mut l = H264Learner::new();
        let frags = fu_a(SPS, &[2, 5]);
        let out = feed(&mut l, t0(), &[(100, 9, &frags[0]), (102, 9, &frags[2])]);
        assert_eq!(out, [Outcome::Kept, Outcome::Discarded(Discard::NotNext)]);
        assert_eq!((l.version(), l.missing()), (0, Some(Missing::Both)));
        // The late middle fragment finds nothing to continue.
        assert_eq!(
            l.on_packet(101, 9, &frags[1], t0()),
            Outcome::Discarded(Discard::NoStart)
        );
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn reordered_fragments_abandon_the_unit() {
        let mut l = H264Learner::new();
        let frags = fu_a(SPS, &[2, 5, 7]);
        let out = feed(
            &mut l,
            t0(),
            &[
                (1, 9, &frags[0]),
                (3, 9, &frags[2]),
                (2, 9, &frags[1]),
                (4, 9, &frags[3]),
            ],
        );
        assert_eq!(
            out,
            [
                Outcome::Kept,
                Outcome::Discarded(Discard::NotNext),
                Outcome::Discarded(Discard::NoStart),
                Outcome::Discarded(Discard::NoStart),
            ]
        );
        assert_eq!(l.version(), 0);
        // An end fragment that overtook its start.
        let frags = fu_a(PPS, &[2]);
        let out = feed(&mut l, t0(), &[(11, 9, &frags[1]), (10, 9, &frags[0])]);
        assert_eq!(out, [Outcome::Discarded(Discard::NoStart), Outcome::Kept]);
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn a_duplicated_fragment_is_skipped() {
        let mut l = H264Learner::new();
        let frags = fu_a(SPS, &[2, 5]);
        let out = feed(
            &mut l,
            t0(),
            &[
                (5, 9, &frags[0]),
                (6, 9, &frags[1]),
                (6, 9, &frags[1]),
                (7, 9, &frags[2]),
            ],
        );
        assert_eq!(
            out,
            [
                Outcome::Kept,
                Outcome::Kept,
                Outcome::Discarded(Discard::Duplicate),
                Outcome::Changed
            ]
        );
        assert_eq!(l.sps, SPS);
        // A duplicated start arriving late is a new start, whose unit then
        // has a gap.
        let mut l = H264Learner::new();
        let out = feed(
            &mut l,
            t0(),
            &[
                (5, 9, &frags[0]),
                (6, 9, &frags[1]),
                (5, 9, &frags[0]),
                (7, 9, &frags[2]),
            ],
        );
        assert_eq!(out[3], Outcome::Discarded(Discard::NotNext));
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn a_timestamp_change_abandons_the_unit() {
        let mut l = H264Learner::new();
        let frags = fu_a(SPS, &[4]);
        let out = feed(&mut l, t0(), &[(1, 9, &frags[0]), (2, 10, &frags[1])]);
        assert_eq!(
            out,
            [Outcome::Kept, Outcome::Discarded(Discard::TimestampChanged)]
        );
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn other_packets_between_fragments_abandon_the_unit() {
        let frags = fu_a(SPS, &[4]);
        let idr_fragment = &fu_a(IDR, &[2])[0];
        let junk: [&[u8]; 5] = [IDR, PPS, &stap_a(&[PPS]), &[0x7f, 1, 2], idr_fragment];
        for between in junk {
            let mut l = H264Learner::new();
            let out = feed(
                &mut l,
                t0(),
                &[(1, 9, &frags[0]), (2, 9, between), (3, 9, &frags[1])],
            );
            assert_eq!(
                out[2],
                Outcome::Discarded(Discard::NoStart),
                "{between:02x?}"
            );
            assert!(l.sps.is_empty());
        }
        // A malformed packet too.
        let mut l = H264Learner::new();
        let out = feed(
            &mut l,
            t0(),
            &[
                (1, 9, &frags[0]),
                (2, 9, &[0x7c, 0xc7, 1]),
                (2, 9, &frags[1]),
            ],
        );
        assert_eq!(out[1], Outcome::Malformed(H264Error::FuStartAndEnd));
        assert_eq!(out[2], Outcome::Discarded(Discard::NoStart));
        // A fragment of another unit with the next sequence number.
        let mut l = H264Learner::new();
        let pps_end = &fu_a(PPS, &[2])[1];
        let out = feed(&mut l, t0(), &[(1, 9, &frags[0]), (2, 9, pps_end)]);
        assert_eq!(out[1], Outcome::Discarded(Discard::NotNext));
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn a_new_start_replaces_the_partial_unit() {
        let mut l = H264Learner::new();
        let first = fu_a(SPS, &[4]);
        let second = fu_a(SPS2, &[4]);
        let out = feed(
            &mut l,
            t0(),
            &[(1, 9, &first[0]), (2, 9, &second[0]), (3, 9, &second[1])],
        );
        assert_eq!(out, [Outcome::Kept, Outcome::Kept, Outcome::Changed]);
        assert_eq!(l.sps, SPS2);
    }

    #[test]
    fn a_stale_partial_unit_is_dropped() {
        let mut l = H264Learner::new();
        let frags = fu_a(SPS, &[2, 5]);
        let start = t0();
        assert_eq!(l.on_packet(1, 9, &frags[0], start), Outcome::Kept);
        assert_eq!(
            l.on_packet(2, 9, &frags[1], start + MAX_REASSEMBLY_AGE),
            Outcome::Kept
        );
        let late = start + MAX_REASSEMBLY_AGE + Duration::from_millis(1);
        assert_eq!(
            l.on_packet(3, 9, &frags[2], late),
            Outcome::Discarded(Discard::Stale)
        );
        assert_eq!(l.version(), 0);
    }

    #[test]
    fn reassembly_is_bounded() {
        let mut l = H264Learner::new();
        let mut big = vec![0x67, 0x42, 0xc0, 0x1e];
        big.resize(MAX_PARAMETER_SET_LEN, 0x11);
        // Exactly at the bound: kept.
        let frags = fu_a(&big, &[1000, 2000, 3000]);
        let seqs = [1, 2, 3, 4];
        for (i, (&seq, p)) in seqs.iter().zip(&frags).enumerate() {
            let expected = if i == 3 {
                Outcome::Changed
            } else {
                Outcome::Kept
            };
            assert_eq!(l.on_packet(seq, 9, p, t0()), expected);
        }
        assert_eq!(l.sps, big);
        // One byte more: dropped at the fragment that crosses the bound.
        big.push(0x22);
        let frags = fu_a(&big, &[1000, 2000, 3000]);
        let out: Vec<_> = (10..)
            .zip(&frags)
            .map(|(seq, p)| l.on_packet(seq, 9, p, t0()))
            .collect();
        assert_eq!(
            out,
            [
                Outcome::Kept,
                Outcome::Kept,
                Outcome::Kept,
                Outcome::Discarded(Discard::TooLarge)
            ]
        );
        assert_eq!(l.version(), 1);
        // A first fragment past the bound on its own.
        let mut start = vec![0x7c, 0x87];
        start.resize(MAX_PARAMETER_SET_LEN + 2, 0x11);
        assert_eq!(
            l.on_packet(20, 9, &start, t0()),
            Outcome::Discarded(Discard::TooLarge)
        );
        assert_eq!(
            l.on_packet(21, 9, &[0x7c, 0x47, 1], t0()),
            Outcome::Discarded(Discard::NoStart)
        );
        // The buffer stayed within the bound throughout.
        assert_eq!(l.buffer.capacity(), MAX_PARAMETER_SET_LEN);
    }

    #[test]
    fn fragments_of_slices_are_not_reassembled() {
        let mut l = H264Learner::new();
        let frags = fu_a(IDR, &[2]);
        let out = feed(&mut l, t0(), &[(1, 9, &frags[0]), (2, 9, &frags[1])]);
        assert_eq!(out, [Outcome::Ignored, Outcome::Ignored]);
        assert_eq!(l.buffer.capacity(), 0);
    }

    #[test]
    fn a_reassembled_unit_too_short_for_an_sps_is_malformed() {
        let mut l = H264Learner::new();
        let frags = fu_a(&[0x67, 0x42, 0xc0], &[1]);
        let out = feed(&mut l, t0(), &[(1, 9, &frags[0]), (2, 9, &frags[1])]);
        assert_eq!(out[1], Outcome::Malformed(H264Error::ParameterSetTooShort));
        assert_eq!(l.version(), 0);
    }

    /// A payload biased towards the structures the learner reads: the first
    /// two bytes from the interesting ones or anything, then random bytes.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let first = prop_oneof![
            Just(0x67u8),
            Just(0x68),
            Just(0x78),
            Just(0x7c),
            Just(0x65),
            any::<u8>()
        ];
        let second = prop_oneof![
            Just(0x87u8),
            Just(0x07),
            Just(0x47),
            Just(0x88),
            Just(0x48),
            Just(0x00),
            any::<u8>()
        ];
        (
            first,
            second,
            proptest::collection::vec(any::<u8>(), 0..24),
            0..3usize,
        )
            .prop_map(|(a, b, rest, cut)| {
                let mut p = vec![a, b];
                p.extend(rest);
                p.truncate(p.len().saturating_sub(cut));
                p
            })
    }

    proptest! {
        /// Whatever arrives, nothing panics; what is held is always a checked
        /// SPS and PPS; `Changed` is exactly a version step; and a payload
        /// `wants` rejects is never of use.
        #[test]
        fn any_input_is_handled(
            packets in proptest::collection::vec(
                (0..4u16, 0..2u32, payload(), 0..1500u64), 0..40),
        ) {
            let mut l = H264Learner::new();
            let (mut seq, mut ts, mut now) = (65530u16, 0u32, t0());
            for (dseq, dts, p, dt) in packets {
                seq = seq.wrapping_add(dseq);
                ts = ts.wrapping_add(dts);
                now += Duration::from_millis(dt);
                let before = l.version();
                let outcome = l.on_packet(seq, ts, &p, now);
                prop_assert_eq!(outcome == Outcome::Changed, l.version() == before + 1);
                prop_assert!(l.version() == before || l.version() == before + 1);
                if !wants(&p) {
                    prop_assert!(
                        matches!(outcome, Outcome::Ignored | Outcome::Malformed(_)),
                        "{:02x?}: {:?}", p, outcome
                    );
                }
                if !l.sps.is_empty() {
                    prop_assert_eq!(h264::parameter_set(&l.sps), Ok(Some(ParameterSetKind::Sps)));
                }
                if !l.pps.is_empty() {
                    prop_assert_eq!(h264::parameter_set(&l.pps), Ok(Some(ParameterSetKind::Pps)));
                }
                prop_assert_eq!(l.parameter_sets().is_some(), l.missing().is_none());
            }
        }
    }

    /// How the sender packetizes one unit.
    #[derive(Copy, Clone, Debug)]
    enum Packing {
        Single,
        /// Aggregated with the units after it into one STAP-A.
        Stap,
        /// Fragmented into FU-A payloads of this many bytes (at least 1).
        Fu(usize),
    }

    /// A sender's stream: access units of parameter sets (chosen among the
    /// originals) and slices, packetized as told; `(seq, timestamp, payload)`.
    fn send(
        originals: &[Vec<u8>],
        units: &[(usize, Packing)],
        first_seq: u16,
    ) -> Vec<(u16, u32, Vec<u8>)> {
        let mut payloads: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut stap: Vec<&[u8]> = Vec::new();
        for (i, &(pick, packing)) in units.iter().enumerate() {
            // Four units per access unit; a slice closes each.
            let ts = 3000 * (i / 4) as u32;
            let nal = &originals[pick % originals.len()];
            match packing {
                Packing::Stap => stap.push(nal),
                _ if !stap.is_empty() => {
                    stap.push(nal);
                    payloads.push((ts, stap_a(&stap)));
                    stap.clear();
                }
                Packing::Fu(size) if nal.len() > 2 => {
                    let size = size.clamp(1, nal.len() - 2);
                    let cuts: Vec<usize> = (size..nal.len() - 1).step_by(size).collect();
                    payloads.extend(fu_a(nal, &cuts).into_iter().map(|p| (ts, p)));
                }
                _ => payloads.push((ts, nal.clone())),
            }
            if i % 4 == 3 {
                if !stap.is_empty() {
                    payloads.push((ts, stap_a(&stap)));
                    stap.clear();
                }
                payloads.extend(
                    fu_a(&[0x65, 1, 2, 3, 4, 5], &[2, 4])
                        .into_iter()
                        .map(|p| (ts, p)),
                );
            }
        }
        if !stap.is_empty() {
            payloads.push((u32::MAX, stap_a(&stap)));
        }
        // Sequence numbers wrap past 65535, as on the wire.
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, (ts, p))| (first_seq.wrapping_add(i as u16), ts, p))
            .collect()
    }

    fn parameter_set_nal() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![Just(0x67u8), Just(0x27), Just(0x68), Just(0x48)],
            proptest::collection::vec(any::<u8>(), 3..40),
        )
            .prop_map(|(header, body)| [header].into_iter().chain(body).collect())
    }

    fn packing() -> impl Strategy<Value = Packing> {
        prop_oneof![
            Just(Packing::Single),
            Just(Packing::Stap),
            (1..12usize).prop_map(Packing::Fu)
        ]
    }

    proptest! {
        /// Sent over a network that drops, duplicates and reorders packets,
        /// whatever the learner holds is an SPS or PPS that was sent, byte for
        /// byte; over a perfect network it ends with the last of each kind.
        #[test]
        fn learns_only_what_was_sent_whole(
            originals in proptest::collection::vec(parameter_set_nal(), 1..5),
            units in proptest::collection::vec((any::<usize>(), packing()), 1..24),
            first_seq in any::<u16>(),
            network in proptest::collection::vec(0..10u8, 0..200),
        ) {
            let sent = send(&originals, &units, first_seq);
            // 0: drop, 1: duplicate, 2: swap with the next, else deliver.
            let mut arriving: Vec<&(u16, u32, Vec<u8>)> = Vec::new();
            let mut held: Option<&(u16, u32, Vec<u8>)> = None;
            for (i, packet) in sent.iter().enumerate() {
                match network.get(i).copied().unwrap_or(9) {
                    0 => {}
                    1 => arriving.extend([packet, packet]),
                    2 if held.is_none() => held = Some(packet),
                    _ => arriving.push(packet),
                }
                if held.is_some_and(|h| !std::ptr::eq(h, packet)) {
                    arriving.extend(held.take());
                }
            }
            arriving.extend(held);
            let mut l = H264Learner::new();
            let start = t0();
            for (i, (seq, ts, p)) in arriving.into_iter().enumerate() {
                l.on_packet(*seq, *ts, p, start + Duration::from_millis(i as u64));
                prop_assert!(l.sps.is_empty() || originals.contains(&l.sps), "SPS {:02x?}", l.sps);
                prop_assert!(l.pps.is_empty() || originals.contains(&l.pps), "PPS {:02x?}", l.pps);
            }

            // No loss: the last SPS and the last PPS sent.
            let mut l = H264Learner::new();
            for (seq, ts, p) in &sent {
                l.on_packet(*seq, *ts, p, start);
            }
            let last = |kind: u8| {
                units.iter().rev().map(|&(pick, _)| &originals[pick % originals.len()])
                    .find(|nal| nal[0] & 0x1f == kind).cloned().unwrap_or_default()
            };
            prop_assert_eq!(&l.sps, &last(h264::SPS));
            prop_assert_eq!(&l.pps, &last(h264::PPS));
        }
    }
}
