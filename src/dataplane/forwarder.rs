//! One bound socket's forwarding decision and accounting, sans-IO:
//! a datagram, its sender and the arrival time in; where to send it (or why
//! not) out. The worker owns one [`Forwarder`] per socket; nothing here locks,
//! allocates or looks anything up.

use super::counters::{DropReason, PortCounters};
use super::rule::{PortRule, canonical};
use crate::group::Plane;
use crate::packet::rtcp;
use crate::packet::rtp::RtpHeader;
use crate::reservation::SourcePolicy;
use crate::stats::rtcp::RtcpStream;
use crate::stats::rtp::RtpStream;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// What to do with a datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, unchanged, from the same socket to this address.
    Forward(SocketAddr),
    /// Drop it, counted under this reason.
    Drop(DropReason),
}

/// Which way a forwarded packet went.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Appliance → destination.
    ToWowza,
    /// Destination → appliance.
    ToAppliance,
}

/// What a port measured and latched, as an upgrade in place hands it to the
/// next process (docs/configuration.md, "Signals"): with it the port's
/// counters go on from where they were instead of from zero.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortState {
    /// The latched appliance.
    pub latched: Option<SocketAddr>,
    /// Appliance → destination packets and bytes.
    pub to_wowza: (u64, u64),
    /// Destination → appliance packets and bytes.
    pub to_appliance: (u64, u64),
    /// Drops, in [`DropReason::ALL`] order.
    pub dropped: [u64; 5],
    /// Nanoseconds since the last accepted packet, when there was one.
    pub last_packet_age_ns: Option<u64>,
    /// The highest loss the exporter published (its counter never goes down).
    pub lost_exported: u64,
    /// The media stream's RFC 3550 state.
    pub media: RtpStream,
    /// The control stream's figures.
    pub control: RtcpStream,
}

/// A port's state: its rule, latched appliance, and statistics.
#[derive(Debug)]
pub struct Forwarder {
    rule: PortRule,
    latched: Option<SocketAddr>,
    media: RtpStream,
    control: RtcpStream,
    counters: Arc<PortCounters>,
    epoch: Instant,
}

impl Forwarder {
    /// A port with nothing latched. `epoch` is the data plane's time origin for
    /// published arrival times; `clock_rate` the media clock for jitter.
    pub fn new(
        rule: PortRule,
        clock_rate: u32,
        counters: Arc<PortCounters>,
        epoch: Instant,
    ) -> Self {
        Forwarder {
            rule,
            latched: None,
            media: RtpStream::new(clock_rate),
            control: RtcpStream::default(),
            counters,
            epoch,
        }
    }

    /// The rule in force.
    pub fn rule(&self) -> &PortRule {
        &self.rule
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<PortCounters> {
        &self.counters
    }

    /// Replaces the rule (a changed source or destination); forgets the latched
    /// appliance as [`super::rule::Admission::forgets_latch`] says.
    pub fn set_rule(&mut self, rule: PortRule, relatch: bool) {
        if self
            .rule
            .admission()
            .forgets_latch(&rule.admission(), relatch)
        {
            self.set_latched(None);
        }
        self.rule = rule;
    }

    /// Everything the port measured and latched, at `now`, for the next
    /// process of an upgrade (the worker has stopped reading: nothing changes
    /// it meanwhile).
    pub fn state(&self, now: Instant) -> PortState {
        let c = &self.counters;
        let last = c.last_packet_nanos.get();
        let since_epoch = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        PortState {
            latched: self.latched,
            to_wowza: (c.to_wowza_packets.get(), c.to_wowza_bytes.get()),
            to_appliance: (c.to_appliance_packets.get(), c.to_appliance_bytes.get()),
            dropped: DropReason::ALL.map(|r| c.dropped(r)),
            last_packet_age_ns: (last != 0).then(|| since_epoch.saturating_sub(last)),
            lost_exported: c.media.lost_exported.load(Relaxed),
            media: self.media.clone(),
            control: self.control.clone(),
        }
    }

    /// Goes on from a previous process's [`PortState`] (before its first
    /// datagram here): its counters, streams and latched appliance.
    pub fn restore(&mut self, state: PortState, now: Instant) {
        let c = &self.counters;
        c.to_wowza_packets.set(state.to_wowza.0);
        c.to_wowza_bytes.set(state.to_wowza.1);
        c.to_appliance_packets.set(state.to_appliance.0);
        c.to_appliance_bytes.set(state.to_appliance.1);
        for (counter, n) in c.dropped.iter().zip(state.dropped) {
            counter.set(n);
        }
        if let Some(age) = state.last_packet_age_ns {
            // Before this data plane's epoch: the age as far as it goes, at least 1 ns (0 is "none").
            let since_epoch = now.saturating_duration_since(self.epoch);
            let at = since_epoch.saturating_sub(Duration::from_nanos(age));
            c.last_packet_nanos.set((at.as_nanos() as u64).max(1));
        }
        c.media
            .lost_exported
            .fetch_max(state.lost_exported, Relaxed);
        self.media = state.media.resumed(self.media.clock_rate());
        if self.rule.plane == Plane::Rtp {
            c.media.store(&self.media.counts());
        }
        self.control = state.control;
        c.publish_control(&self.control);
        self.set_latched(state.latched);
    }

    /// Takes the appliance the kernel fast path latched (a port on the fast
    /// path sees only what the kernel passed up: it must judge by the same latch).
    pub fn adopt_latch(&mut self, latched: SocketAddr) {
        if self.latched != Some(latched) {
            self.set_latched(Some(latched));
        }
    }

    /// Decides and accounts one datagram of `len` bytes (`len` may exceed the
    /// buffer: then `data` holds only its start). An IPv4 sender seen through
    /// a dual-stack socket (`::ffff:a.b.c.d`) is judged and latched as the
    /// IPv4 address it is, as the rule's addresses are.
    #[inline]
    pub fn on_datagram(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        len: usize,
        now: Instant,
    ) -> Verdict {
        let from = canonical(from);
        let verdict = self.decide(from, data, len, now);
        match verdict {
            Verdict::Drop(reason) => self.counters.count_drop(reason),
            Verdict::Forward(_) => {}
        }
        verdict
    }

    /// Counts a forwarded packet once it is sent.
    #[inline]
    pub fn sent(&self, direction: Direction, len: usize) {
        let c = &self.counters;
        match direction {
            Direction::ToWowza => {
                c.to_wowza_packets.add(1);
                c.to_wowza_bytes.add(len as u64);
            }
            Direction::ToAppliance => {
                c.to_appliance_packets.add(1);
                c.to_appliance_bytes.add(len as u64);
            }
        }
    }

    /// Counts a packet the kernel refused to send.
    pub fn send_failed(&self) {
        self.counters.count_drop(DropReason::SendError);
    }

    /// The direction of a forward to `to`.
    #[inline]
    pub fn direction(&self, to: SocketAddr) -> Direction {
        if to == self.rule.destination {
            Direction::ToWowza
        } else {
            Direction::ToAppliance
        }
    }

    fn decide(&mut self, from: SocketAddr, data: &[u8], len: usize, now: Instant) -> Verdict {
        let from_destination = from == self.rule.destination;
        if !from_destination && !self.accepts(from) {
            return Verdict::Drop(DropReason::UnknownSource);
        }
        if len > self.rule.max_packet_size {
            return Verdict::Drop(DropReason::Oversize);
        }
        if from_destination {
            let Some(appliance) = self.latched else {
                return Verdict::Drop(DropReason::NoReturnAddress);
            };
            if !self.valid(data) {
                return Verdict::Drop(DropReason::Malformed);
            }
            if self.rule.plane == Plane::Rtcp {
                self.control.on_destination_report(data, None);
                self.counters.publish_control(&self.control);
            }
            return Verdict::Forward(appliance);
        }
        match self.rule.plane {
            Plane::Rtp => {
                let Ok(h) = RtpHeader::parse(data) else {
                    return Verdict::Drop(DropReason::Malformed);
                };
                self.media.on_packet(&h, len, now);
                self.counters.media.store(&self.media.counts());
                // The SDP's parameter sets: a rare packet takes the learner's lock.
                if !self.rule.role.is_audio() && crate::sdp::wants(h.payload(data)) {
                    self.counters.learn(&h, data, now);
                }
            }
            Plane::Rtcp => {
                let Ok(summary) = rtcp::check(data) else {
                    return Verdict::Drop(DropReason::Malformed);
                };
                self.control.on_compound(summary);
                self.counters.publish_control(&self.control);
            }
        }
        self.counters
            .last_packet_nanos
            .set(now.duration_since(self.epoch).as_nanos() as u64);
        // Latch keeps its first sender; strict and any follow the latest one.
        let relatch = match self.rule.policy {
            SourcePolicy::Latch => self.latched.is_none(),
            SourcePolicy::Strict | SourcePolicy::Any => self.latched != Some(from),
        };
        if relatch {
            self.set_latched(Some(from));
        }
        Verdict::Forward(self.rule.destination)
    }

    /// The source policy: strict accepts the reservation's IP (any port), latch
    /// the first sender only, any everyone. `relay.bpf.c` mirrors this
    /// (tests/fastpath.rs runs each policy through both paths).
    #[inline]
    fn accepts(&self, from: SocketAddr) -> bool {
        match self.rule.policy {
            SourcePolicy::Strict => self.rule.source == Some(from.ip()),
            SourcePolicy::Latch => self.latched.is_none_or(|l| l == from),
            SourcePolicy::Any => true,
        }
    }

    fn valid(&self, data: &[u8]) -> bool {
        match self.rule.plane {
            Plane::Rtp => RtpHeader::parse(data).is_ok(),
            Plane::Rtcp => rtcp::check(data).is_ok(),
        }
    }

    fn set_latched(&mut self, to: Option<SocketAddr>) {
        self.latched = to;
        *self
            .counters
            .latched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{GroupId, Role};

    const APPLIANCE: &str = "192.0.2.10:5004";
    const WOWZA: &str = "198.51.100.5:49032";

    fn port(plane: Plane, policy: SourcePolicy) -> Forwarder {
        let rule = PortRule {
            group: GroupId::try_from(14).unwrap(),
            port: 65416,
            plane,
            role: Role::PrimaryAudio,
            destination: WOWZA.parse().unwrap(),
            policy,
            source: Some("192.0.2.10".parse().unwrap()),
            max_packet_size: 200,
        };
        Forwarder::new(rule, 48_000, Arc::default(), Instant::now())
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xab; 20]);
        p
    }

    fn rr() -> Vec<u8> {
        // RR with one report block: fraction 64/256, cumulative lost 3, jitter 480.
        let mut p = vec![0x81, 201, 0, 7, 0, 0, 0, 9, 0, 0, 0, 7, 64, 0, 0, 3];
        p.extend_from_slice(&[0, 0, 0, 100, 0, 0, 1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p
    }

    fn send(p: &mut Forwarder, from: &str, data: &[u8]) -> Verdict {
        p.on_datagram(from.parse().unwrap(), data, data.len(), Instant::now())
    }

    /// `p`'s state through JSON into a new forwarder of the same rule, with
    /// counters and an epoch of its own, as the next process makes it.
    fn handed_over(p: &Forwarder) -> Forwarder {
        let now = Instant::now();
        let json = serde_json::to_vec(&p.state(now)).unwrap();
        let mut next = Forwarder::new(*p.rule(), 48_000, Arc::default(), now);
        next.restore(serde_json::from_slice(&json).unwrap(), now);
        next
    }

    fn figures(p: &Forwarder) -> super::super::counters::PortSnapshot {
        let mut s = p.counters().snapshot(
            p.rule().plane == Plane::Rtp,
            48_000,
            p.epoch,
            Instant::now(),
        );
        s.seconds_since_last_packet = s.seconds_since_last_packet.map(|a| (a * 10.0).round());
        s
    }

    #[test]
    fn a_media_port_handed_over_counts_on_from_where_it_was() {
        let mut p = port(Plane::Rtp, SourcePolicy::Latch);
        for seq in 0..10 {
            send(&mut p, APPLIANCE, &rtp(seq));
        }
        p.sent(Direction::ToWowza, 32);
        send(&mut p, "192.0.2.99:1", &rtp(10));
        send(&mut p, APPLIANCE, &[0x80, 96]);
        p.counters().media.lost_exported.store(3, Relaxed);
        let next = &mut handed_over(&p);
        assert_eq!(figures(next), figures(&p));
        assert_eq!(next.counters().media.lost_exported.load(Relaxed), 3);
        // The latch holds: the stranger is still refused, the appliance goes on.
        assert_eq!(
            send(next, "192.0.2.99:1", &rtp(11)),
            Verdict::Drop(DropReason::UnknownSource)
        );
        send(next, APPLIANCE, &rtp(10));
        next.sent(Direction::ToWowza, 32);
        let s = figures(next);
        assert_eq!(s.packets_to_wowza, 2);
        assert_eq!(s.dropped.unknown_source, 2);
        assert_eq!(s.dropped.malformed, 1);
        let m = s.media.unwrap();
        assert_eq!((m.expected, m.received, m.lost), (10, 10, 0));
        assert_eq!(m.extended_highest_sequence, Some(10));
    }

    #[test]
    fn a_control_port_handed_over_keeps_reports_and_the_way_back() {
        let mut p = port(Plane::Rtcp, SourcePolicy::Strict);
        assert!(matches!(
            send(&mut p, APPLIANCE, &rr()),
            Verdict::Forward(_)
        ));
        send(&mut p, WOWZA, &rr());
        let next = &mut handed_over(&p);
        assert_eq!(figures(next), figures(&p));
        assert_eq!(
            send(next, WOWZA, &rr()),
            Verdict::Forward(APPLIANCE.parse().unwrap()),
            "the destination's reports still reach the latched appliance"
        );
        assert_eq!(figures(next).control.unwrap().receiver_reports, 1);
    }

    #[test]
    fn a_port_that_saw_nothing_hands_over_nothing() {
        let p = port(Plane::Rtp, SourcePolicy::Latch);
        let next = handed_over(&p);
        assert_eq!(figures(&next), figures(&p));
        assert_eq!(next.counters().last_packet_nanos.get(), 0, "no packet yet");
    }

    #[test]
    fn strict_forwards_the_source_ip_from_any_port_and_returns_to_the_latest() {
        let mut p = port(Plane::Rtp, SourcePolicy::Strict);
        let wowza: SocketAddr = WOWZA.parse().unwrap();
        // Before the appliance spoke, Wowza's packets have nowhere to go.
        assert_eq!(
            send(&mut p, WOWZA, &rtp(1)),
            Verdict::Drop(DropReason::NoReturnAddress)
        );
        assert_eq!(send(&mut p, APPLIANCE, &rtp(1)), Verdict::Forward(wowza));
        assert_eq!(
            send(&mut p, "192.0.2.10:6000", &rtp(2)),
            Verdict::Forward(wowza)
        );
        assert_eq!(
            send(&mut p, "192.0.2.11:5004", &rtp(3)),
            Verdict::Drop(DropReason::UnknownSource)
        );
        // The last accepted source address:port is latched for the reverse path.
        assert_eq!(
            send(&mut p, WOWZA, &rtp(9)),
            Verdict::Forward("192.0.2.10:6000".parse().unwrap())
        );
        assert_eq!(
            p.counters().latched(),
            Some("192.0.2.10:6000".parse().unwrap())
        );
        assert_eq!(p.counters().dropped(DropReason::UnknownSource), 1);
        assert_eq!(p.counters().dropped(DropReason::NoReturnAddress), 1);
    }

    #[test]
    fn ipv4_senders_seen_through_a_dual_stack_socket_are_their_ipv4_address() {
        let mut p = port(Plane::Rtp, SourcePolicy::Strict);
        let wowza: SocketAddr = WOWZA.parse().unwrap();
        assert_eq!(
            send(&mut p, "[::ffff:192.0.2.10]:5004", &rtp(1)),
            Verdict::Forward(wowza)
        );
        assert_eq!(p.counters().latched(), Some(APPLIANCE.parse().unwrap()));
        // Wowza's reply is from the destination, and goes back to the appliance.
        assert_eq!(
            send(&mut p, "[::ffff:198.51.100.5]:49032", &rtp(2)),
            Verdict::Forward(APPLIANCE.parse().unwrap())
        );
        assert_eq!(
            send(&mut p, "[::ffff:192.0.2.11]:5004", &rtp(3)),
            Verdict::Drop(DropReason::UnknownSource)
        );
        // A latched mapped sender is the same sender as its IPv4 form.
        let mut l = port(Plane::Rtp, SourcePolicy::Latch);
        send(&mut l, "[::ffff:203.0.113.1]:7000", &rtp(1));
        assert_eq!(
            send(&mut l, "203.0.113.1:7000", &rtp(2)),
            Verdict::Forward(wowza)
        );
    }

    #[test]
    fn latch_keeps_the_first_sender_until_relatched() {
        let mut p = port(Plane::Rtp, SourcePolicy::Latch);
        let wowza: SocketAddr = WOWZA.parse().unwrap();
        assert_eq!(
            send(&mut p, "203.0.113.1:7000", &rtp(1)),
            Verdict::Forward(wowza)
        );
        assert_eq!(
            send(&mut p, "203.0.113.1:7001", &rtp(2)),
            Verdict::Drop(DropReason::UnknownSource)
        );
        assert_eq!(
            send(&mut p, APPLIANCE, &rtp(3)),
            Verdict::Drop(DropReason::UnknownSource)
        );
        let rule = *p.rule();
        p.set_rule(rule, true);
        assert_eq!(send(&mut p, APPLIANCE, &rtp(4)), Verdict::Forward(wowza));
        assert_eq!(
            send(&mut p, "203.0.113.1:7000", &rtp(5)),
            Verdict::Drop(DropReason::UnknownSource)
        );
    }

    #[test]
    fn any_accepts_everyone_and_returns_to_the_last_sender() {
        let mut p = port(Plane::Rtp, SourcePolicy::Any);
        assert!(matches!(
            send(&mut p, "203.0.113.1:7000", &rtp(1)),
            Verdict::Forward(_)
        ));
        assert!(matches!(
            send(&mut p, "203.0.113.2:7000", &rtp(2)),
            Verdict::Forward(_)
        ));
        assert_eq!(
            send(&mut p, WOWZA, &rtp(3)),
            Verdict::Forward("203.0.113.2:7000".parse().unwrap())
        );
    }

    #[test]
    fn malformed_and_oversize_never_forward() {
        let mut p = port(Plane::Rtp, SourcePolicy::Strict);
        assert_eq!(
            send(&mut p, APPLIANCE, b"hello world!"),
            Verdict::Drop(DropReason::Malformed)
        );
        assert_eq!(
            send(&mut p, APPLIANCE, &rr()),
            Verdict::Drop(DropReason::Malformed),
            "RTCP on a media port"
        );
        // RFC 5761 §4's range, whatever the rest of the header says.
        for second in [192, 197, 206, 221, 223] {
            let mut p2 = rtp(1);
            p2[1] = second;
            assert_eq!(
                send(&mut p, APPLIANCE, &p2),
                Verdict::Drop(DropReason::Malformed),
                "second byte {second} on a media port"
            );
        }
        let big = [rtp(1), vec![0; 200]].concat();
        assert_eq!(
            send(&mut p, APPLIANCE, &big),
            Verdict::Drop(DropReason::Oversize)
        );
        // A malformed packet latches nothing.
        assert_eq!(p.counters().latched(), None);

        let mut c = port(Plane::Rtcp, SourcePolicy::Strict);
        assert_eq!(
            send(&mut c, APPLIANCE, &rtp(1)),
            Verdict::Drop(DropReason::Malformed),
            "RTP on a control port"
        );
        assert!(matches!(
            send(&mut c, APPLIANCE, &rr()),
            Verdict::Forward(_)
        ));
        assert_eq!(
            send(&mut c, WOWZA, b"junk"),
            Verdict::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn statistics_and_counters_follow_the_traffic() {
        let mut p = port(Plane::Rtp, SourcePolicy::Strict);
        for seq in [1, 2, 3, 5, 5, 4] {
            let v = send(&mut p, APPLIANCE, &rtp(seq));
            if let Verdict::Forward(to) = v {
                p.sent(p.direction(to), 32);
            }
        }
        let c = p.counters();
        assert_eq!(c.to_wowza_packets.get(), 6);
        assert_eq!(c.to_wowza_bytes.get(), 6 * 32);
        let m = c.media.load().snapshot(48_000);
        assert_eq!(m.ssrc, Some(7));
        assert_eq!((m.duplicates, m.reordered), (1, 1));
        assert_eq!((m.expected, m.received), (4, 4));

        let mut ctl = port(Plane::Rtcp, SourcePolicy::Strict);
        send(&mut ctl, APPLIANCE, &rr());
        assert_eq!(
            send(&mut ctl, WOWZA, &rr()),
            Verdict::Forward(APPLIANCE.parse().unwrap())
        );
        let c = ctl.counters();
        assert_eq!(
            c.control.receiver_reports.get(),
            1,
            "only the appliance's RR is a report of this stream's sender"
        );
        assert_eq!(c.control.wowza_lost.get(), 3);
        assert_eq!(c.control.wowza_jitter.get(), 480);
    }
}
