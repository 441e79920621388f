//! The kernel's copy of the forwarding table and its per-port stream state,
//! laid out exactly as `relay.bpf.c` declares them (`struct rule`,
//! `struct stream`). Pure data and conversions: no maps, no syscalls.

use crate::dataplane::rule::{Admission, PortRule};
use crate::group::Plane;
use crate::reservation::SourcePolicy;
use crate::stats::rtp::RtpCounts;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// `rules[port]`: one bound port's rule (written by userspace only).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// 1: a bound port of a live group.
    pub active: u32,
    /// New on every fresh bind; the kernel then restarts the port's stream.
    pub generation: u32,
    /// Bumped by a re-latch; the kernel then forgets the latched appliance.
    pub latch_epoch: u32,
    /// Network order; 0: any local address.
    pub bind_addr: u32,
    /// Network order.
    pub dest_addr: u32,
    /// Network order: the address the relay's socket sends to the destination from.
    pub src_addr: u32,
    /// Network order: the strict policy's appliance.
    pub source_addr: u32,
    /// The interface toward the destination; 0: the destination is local.
    pub egress_ifindex: u32,
    /// The loopback interface (local deliveries enter through it).
    pub loopback_ifindex: u32,
    /// Larger UDP payloads are left to userspace (which drops them).
    pub max_packet_size: u32,
    /// Media clock (Hz) for jitter.
    pub clock_rate: u32,
    /// Host order.
    pub dest_port: u16,
    /// 0: RTP, 1: RTCP.
    pub plane: u8,
    /// 0: strict, 1: latch, 2: any.
    pub policy: u8,
    /// The reservation holding the port ([`crate::dataplane::rule::owner`] of its event id).
    pub owner: u32,
    /// 1: a local destination may be reached from other interfaces (see
    /// [`Route::local_ok`]); else only packets arriving on lo go kernel-side.
    pub local_ok: u8,
    /// 1: a video stream's port: copies of the packets that may carry H.264
    /// parameter sets go to the `learn` ring ([`LearnCopy`]).
    pub learn: u8,
    /// Bumped by every install ([`Rule::carry_over`]): the kernel then
    /// forgets which parameter sets it copied, as the port's learner may be
    /// new, and copies the next ones again.
    pub learn_epoch: u16,
    /// CLOCK_BOOTTIME nanoseconds at which the window closes.
    pub window_end_ns: u64,
}

/// `streams[port]`: the kernel's measurement of one port (written by the
/// program only; userspace reads it).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    lock: u32,
    /// The rule generation this state belongs to.
    pub generation: u32,
    latch_epoch: u32,
    latched_addr: u32,
    latched_local: u32,
    latched_ifindex: u32,
    latched_port: u16,
    has_source: u8,
    probation: u8,
    has_transit: u8,
    payload_type: u8,
    max_seq: u16,
    ssrc: u32,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    transit: u32,
    pad: u32,
    /// RFC 3550 A.8 jitter in timestamp units × 16.
    pub jitter_q4: u64,
    received: u64,
    seen_lo: u64,
    seen_hi: u64,
    first_ns: u64,
    /// CLOCK_BOOTTIME nanoseconds of the latest packet from the appliance.
    pub last_ns: u64,
    packets: u64,
    bytes: u64,
    duplicates: u64,
    reordered: u64,
    ssrc_changes: u64,
    prior_expected: u64,
    prior_received: u64,
    /// Appliance → destination packets of a control port (a media port's
    /// are `packets`: [`Stream::to_wowza_packets`]).
    to_wowza_packets: u64,
    to_wowza_bytes: u64,
    /// Destination → appliance packets.
    pub to_appliance_packets: u64,
    /// … bytes.
    pub to_appliance_bytes: u64,
    /// Packets the kernel could not send on.
    pub send_errors: u64,
    /// Packets of senders the policy refused, dropped by the kernel (they
    /// never reach userspace, which counts the rest).
    pub unknown_source: u64,
    /// A control port's sender reports from the appliance.
    pub sender_reports: u64,
    /// … receiver reports from the appliance.
    pub receiver_reports: u64,
    wowza_jitter: u32,
    wowza_lost: u32,
    wowza_fraction: u8,
    has_wowza_report: u8,
    learn_epoch: u16,
    pad2: [u8; 4],
    /// Packets dropped past the fence's deadline (docs/cluster.md, "Fencing").
    pub fenced: u64,
    /// Fingerprints of the parameter-set packets last copied to the `learn`
    /// ring (an SPS or STAP-A, a PPS): the same again is not copied.
    learned: [u32; 2],
}

/// The most local addresses `locals` holds (`MAX_LOCALS` in `relay.bpf.c`).
pub const MAX_LOCALS: usize = 64;

/// `locals[0]`: the host's IPv4 addresses but 127.0.0.0/8 (the program takes
/// 127.0.0.0/8 as local on lo), against which it matches the destination of
/// packets to ports bound on 0.0.0.0 (written by userspace only).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Locals {
    count: u32,
    addr: [u32; MAX_LOCALS],
}

impl Locals {
    /// The list of `addresses` (duplicates and 127.0.0.0/8 left out). Past
    /// [`MAX_LOCALS`] it is marked incomplete: the program then leaves packets
    /// to the addresses it lacks to userspace.
    pub fn new(addresses: &[Ipv4Addr]) -> Locals {
        let mut kept: Vec<Ipv4Addr> = addresses
            .iter()
            .copied()
            .filter(|a| !a.is_loopback())
            .collect();
        kept.sort();
        kept.dedup();
        let mut l = Locals {
            count: u32::try_from(kept.len()).unwrap_or(u32::MAX),
            addr: [0; MAX_LOCALS],
        };
        for (slot, a) in l.addr.iter_mut().zip(&kept) {
            *slot = u32::from_ne_bytes(a.octets());
        }
        l
    }

    /// Does the list lack addresses (more than [`MAX_LOCALS`])?
    pub fn incomplete(&self) -> bool {
        self.count as usize > MAX_LOCALS
    }
}

/// The most of a packet the program copies to the `learn` ring: parameter
/// sets are tens of bytes, a STAP-A of them rarely more than a few hundred.
pub const LEARN_MAX: usize = 2048;

/// One record of the `learn` ring: a copy of an RTP packet (from its fixed
/// header on, at most [`LEARN_MAX`] bytes) that the program forwarded on a
/// video port and whose payload may carry an SPS or PPS (the rule of
/// [`crate::sdp::learn::wants`]): the kernel's way of letting the relay learn
/// what its SDP needs from packets that never reach a socket.
#[derive(Debug, PartialEq, Eq)]
pub struct LearnCopy<'a> {
    /// The relay's port it arrived on.
    pub port: u16,
    /// The packet (its start, if it was longer than [`LEARN_MAX`]).
    pub packet: &'a [u8],
}

impl<'a> LearnCopy<'a> {
    /// Reads a ring record: `port: u32, len: u32, data[LEARN_MAX]` in host
    /// order; `None` if it is not one.
    pub fn parse(record: &'a [u8]) -> Option<LearnCopy<'a>> {
        let port = u32::from_ne_bytes(record.get(0..4)?.try_into().ok()?);
        let len = u32::from_ne_bytes(record.get(4..8)?.try_into().ok()?) as usize;
        Some(LearnCopy {
            port: u16::try_from(port).ok()?,
            packet: record.get(8..8 + len.min(LEARN_MAX))?,
        })
    }
}

const _: () = assert!(size_of::<Rule>() == 64);
const _: () = assert!(size_of::<Locals>() == 4 + 4 * MAX_LOCALS);
const _: () = assert!(size_of::<Stream>() == 256);

// SAFETY: plain `repr(C)` integers without implicit padding (sizes asserted above).
unsafe impl aya::Pod for Rule {}
// SAFETY: as above.
unsafe impl aya::Pod for Stream {}
// SAFETY: as above.
unsafe impl aya::Pod for Locals {}

/// Where the relay's own socket would send a rule's packets: from which
/// address, out of which interface (none: the destination is local).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The source address the kernel picks toward the destination.
    pub source: Ipv4Addr,
    /// The egress interface; `None` for a local destination.
    pub egress_ifindex: Option<u32>,
    /// For a local destination: will lo take a packet from the relay's own
    /// address that was redirected to it (`accept_local`, and `route_localnet`
    /// for 127.0.0.0/8)? The relay's own send needs neither: it has a route.
    pub local_ok: bool,
}

/// Why a port cannot be put on the fast path (it stays in userspace).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// IPv6 destination, source or bind address.
    Ipv6,
}

/// A port the kernel can carry, with its addresses in the rule's form.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Eligible {
    bind_addr: u32,
    dest_addr: u32,
    source_addr: u32,
}

/// Decides which ports go kernel-side: media and control ports whose bind
/// address, destination and source are IPv4. The one place this is decided; everything
/// else stays in userspace. The addresses come canonical (IPv4-mapped ones as
/// IPv4): the rule's from [`GroupPlan::rules`], the bind address from
/// `Config::fast_path_options`.
///
/// [`GroupPlan::rules`]: crate::dataplane::rule::GroupPlan::rules
pub fn eligible(rule: &PortRule, bind: IpAddr) -> Result<Eligible, Unsupported> {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(a) => Ok(u32::from_ne_bytes(a.octets())),
        IpAddr::V6(_) => Err(Unsupported::Ipv6),
    };
    Ok(Eligible {
        bind_addr: v4(bind)?,
        dest_addr: v4(rule.destination.ip())?,
        source_addr: rule.source.map(v4).transpose()?.unwrap_or(0),
    })
}

/// The program's policy codes, in `SourcePolicy` order.
const POLICIES: [SourcePolicy; 3] = [SourcePolicy::Strict, SourcePolicy::Latch, SourcePolicy::Any];

impl Rule {
    /// The kernel rule for `rule`, an [`eligible`] port. `window_end_ns` is the
    /// window's close on CLOCK_BOOTTIME. Its generation and latch epoch are set
    /// by [`Rule::carry_over`].
    pub fn new(
        rule: &PortRule,
        addresses: Eligible,
        route: Route,
        loopback_ifindex: u32,
        clock_rate: u32,
        window_end_ns: u64,
        owner: u32,
    ) -> Rule {
        Rule {
            active: 1,
            generation: 0,
            latch_epoch: 0,
            bind_addr: addresses.bind_addr,
            dest_addr: addresses.dest_addr,
            src_addr: u32::from_ne_bytes(route.source.octets()),
            source_addr: addresses.source_addr,
            egress_ifindex: route.egress_ifindex.unwrap_or(0),
            loopback_ifindex,
            max_packet_size: u32::try_from(rule.max_packet_size).unwrap_or(u32::MAX),
            clock_rate,
            dest_port: rule.destination.port(),
            plane: u8::from(rule.plane == Plane::Rtcp),
            policy: POLICIES.iter().position(|p| *p == rule.policy).unwrap_or(0) as u8,
            owner,
            local_ok: u8::from(route.local_ok),
            learn: u8::from(rule.plane == Plane::Rtp && !rule.role.is_audio()),
            learn_epoch: 0,
            window_end_ns,
        }
    }

    /// Which senders the rule accepts, as the userspace rule says it.
    fn admission(&self) -> Admission {
        Admission {
            policy: POLICIES[usize::from(self.policy).min(POLICIES.len() - 1)],
            source: (self.source_addr != 0)
                .then(|| IpAddr::V4(Ipv4Addr::from(self.source_addr.to_ne_bytes()))),
        }
    }

    /// Takes over from the rule the port had (in this process or, after a
    /// restart, in the previous one): the same owner keeps its stream (a
    /// restart, a changed destination) and its latch unless
    /// [`Admission::forgets_latch`] says otherwise — then the latch epoch is
    /// bumped, which the program reads as "forget". Anyone else starts a new
    /// stream generation. The learn epoch is bumped whatever the owner.
    pub fn carry_over(&mut self, old: &Rule, relatch: bool) {
        self.learn_epoch = old.learn_epoch.wrapping_add(1);
        if old.active != 0 && old.owner == self.owner {
            self.generation = old.generation;
            let forget = old.admission().forgets_latch(&self.admission(), relatch);
            self.latch_epoch = old.latch_epoch.wrapping_add(u32::from(forget));
        } else {
            self.generation = old.generation.wrapping_add(1).max(1);
            self.latch_epoch = old.latch_epoch;
        }
    }
}

/// The few fields of a port's [`Stream`] the stream watch reads each second
/// ([`crate::dataplane::BoundPort::sample`]), read one by one: fields the
/// program may be writing meanwhile, each whole (aligned), together perhaps
/// from two packets apart — which the watch's once-a-second view tolerates.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Glance {
    /// As [`Stream::generation`].
    pub generation: u32,
    /// The measured SSRC, if a media packet was measured.
    pub ssrc: Option<u32>,
    /// As [`Stream::last_ns`].
    pub last_ns: u64,
    /// As [`Stream::send_errors`].
    pub send_errors: u64,
    /// As [`Stream::unknown_source`].
    pub unknown_source: u64,
}

impl Glance {
    /// The glance of a whole copy.
    pub fn of(s: &Stream) -> Glance {
        Glance {
            generation: s.generation,
            ssrc: s.has_source().then_some(s.ssrc),
            last_ns: s.last_ns,
            send_errors: s.send_errors,
            unknown_source: s.unknown_source,
        }
    }

    /// Reads it from the stream at `p` field by field.
    ///
    /// # Safety
    /// `p` points to a live `Stream` (the program's mapped value) for the
    /// duration of the call.
    pub unsafe fn read(p: *const Stream) -> Glance {
        use std::ptr::{addr_of, read_volatile};
        // SAFETY: per the caller's promise; each field aligned, read whole.
        unsafe {
            let has_source = read_volatile(addr_of!((*p).has_source)) != 0;
            Glance {
                generation: read_volatile(addr_of!((*p).generation)),
                ssrc: has_source.then(|| read_volatile(addr_of!((*p).ssrc))),
                last_ns: read_volatile(addr_of!((*p).last_ns)),
                send_errors: read_volatile(addr_of!((*p).send_errors)),
                unknown_source: read_volatile(addr_of!((*p).unknown_source)),
            }
        }
    }
}

impl Stream {
    /// Appliance → destination packets (a media port counts them once, as
    /// measured packets).
    pub fn to_wowza_packets(&self) -> u64 {
        self.to_wowza_packets + self.packets
    }

    /// … bytes.
    pub fn to_wowza_bytes(&self) -> u64 {
        self.to_wowza_bytes + self.bytes
    }

    /// Was a CPU updating it when it was read?
    pub fn locked(&self) -> bool {
        self.lock != 0
    }

    /// Has a media packet been measured?
    pub fn has_source(&self) -> bool {
        self.has_source != 0
    }

    /// Does this state belong to `rule` (and not to an earlier bind of the port)?
    pub fn belongs_to(&self, rule: &Rule) -> bool {
        self.generation == rule.generation
    }

    /// The appliance the kernel latched (the reverse path's address).
    pub fn latched(&self, rule: &Rule) -> Option<SocketAddr> {
        (self.belongs_to(rule) && self.latch_epoch == rule.latch_epoch && self.latched_addr != 0)
            .then(|| {
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(self.latched_addr.to_ne_bytes()),
                    u16::from_be(self.latched_port),
                ))
            })
    }

    /// A control port's destination report (the first report block of its
    /// latest compound): fraction lost in 1/256, cumulative lost, jitter in
    /// timestamp units, as [`crate::stats::rtcp::RtcpStream`] reads it.
    pub fn wowza_report(&self) -> Option<(u8, i32, u32)> {
        (self.has_wowza_report != 0).then_some((
            self.wowza_fraction,
            self.wowza_lost as i32,
            self.wowza_jitter,
        ))
    }

    /// The raw RFC 3550 state, in the shape the userspace [`RtpStream`]
    /// keeps it (field for field: the figures are derived once, by
    /// [`RtpCounts::snapshot`], for both backends).
    ///
    /// [`RtpStream`]: crate::stats::rtp::RtpStream
    pub fn counts(&self) -> RtpCounts {
        let source = self.has_source != 0;
        RtpCounts {
            ssrc: source.then_some(self.ssrc),
            // As RtpStream::counts: no source, no payload type, not valid.
            payload_type: if source { self.payload_type } else { 0 },
            valid: source && self.probation == 0,
            extended_max: self.cycles.wrapping_add(u32::from(self.max_seq)),
            base_seq: self.base_seq,
            received: self.received,
            prior_expected: self.prior_expected,
            prior_received: self.prior_received,
            packets: self.packets,
            bytes: self.bytes,
            duplicates: self.duplicates,
            reordered: self.reordered,
            ssrc_changes: self.ssrc_changes,
            jitter_q4: self.jitter_q4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glance_in_place_reads_the_fields_a_copy_holds() {
        let mut s = Stream {
            generation: 7,
            last_ns: 123_456_789,
            send_errors: 3,
            unknown_source: 11,
            ssrc: 0xabc,
            ..Stream::default()
        };
        // SAFETY: a live local.
        let read = |s: &Stream| unsafe { Glance::read(s) };
        assert_eq!(read(&s).ssrc, None, "no source measured yet");
        s.has_source = 1;
        assert_eq!(read(&s), Glance::of(&s));
        assert_eq!(
            read(&s),
            Glance {
                generation: 7,
                ssrc: Some(0xabc),
                last_ns: 123_456_789,
                send_errors: 3,
                unknown_source: 11,
            }
        );
    }

    #[test]
    fn a_learn_record_is_read_as_the_program_writes_it() {
        let mut record = vec![0u8; 8 + LEARN_MAX];
        record[0..4].copy_from_slice(&65530u32.to_ne_bytes());
        record[4..8].copy_from_slice(&5u32.to_ne_bytes());
        record[8..13].copy_from_slice(b"\x80\x60abc");
        let c = LearnCopy::parse(&record).unwrap();
        assert_eq!((c.port, c.packet), (65530, &b"\x80\x60abc"[..]));
        // A length past the record, a port past u16, a short record: not records.
        record[4..8].copy_from_slice(&(LEARN_MAX as u32 + 1).to_ne_bytes());
        assert_eq!(LearnCopy::parse(&record).unwrap().packet.len(), LEARN_MAX);
        record[0..4].copy_from_slice(&70000u32.to_ne_bytes());
        assert_eq!(LearnCopy::parse(&record), None);
        assert_eq!(LearnCopy::parse(&record[..6]), None);
    }
    use crate::group::{GroupId, Role};

    fn port_rule(plane: Plane, policy: SourcePolicy, source: &str) -> PortRule {
        PortRule {
            group: GroupId::try_from(14).unwrap(),
            port: 65416,
            plane,
            role: Role::PrimaryAudio,
            destination: "198.51.100.5:49032".parse().unwrap(),
            policy,
            source: Some(source.parse().unwrap()),
            max_packet_size: 1500,
        }
    }

    fn kernel_rule(r: &PortRule, owner: u32) -> Rule {
        let route = Route {
            source: Ipv4Addr::new(192, 0, 2, 1),
            egress_ifindex: Some(2),
            local_ok: false,
        };
        let bind = "0.0.0.0".parse().unwrap();
        Rule::new(r, eligible(r, bind).unwrap(), route, 1, 90_000, 0, owner)
    }

    #[test]
    fn only_ipv4_ports_are_eligible() {
        let v4: IpAddr = "0.0.0.0".parse().unwrap();
        let rtp = port_rule(Plane::Rtp, SourcePolicy::Strict, "192.0.2.10");
        assert!(eligible(&rtp, v4).is_ok());
        let rtcp = port_rule(Plane::Rtcp, SourcePolicy::Strict, "192.0.2.10");
        assert!(eligible(&rtcp, v4).is_ok());
        assert_eq!(kernel_rule(&rtcp, 1).plane, 1);
        assert_eq!(kernel_rule(&rtp, 1).plane, 0);
        assert_eq!(
            eligible(&rtp, "::".parse().unwrap()),
            Err(Unsupported::Ipv6)
        );
        let v6_source = port_rule(Plane::Rtp, SourcePolicy::Strict, "2001:db8::1");
        assert_eq!(eligible(&v6_source, v4), Err(Unsupported::Ipv6));
    }

    #[test]
    fn locals_leave_out_loopback_and_say_when_they_are_incomplete() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let l = Locals::new(&[
            a("192.0.2.1"),
            a("127.0.0.1"),
            a("10.0.0.1"),
            a("192.0.2.1"),
        ]);
        assert_eq!(l.count, 2);
        assert_eq!(
            l.addr[..2],
            [[10, 0, 0, 1], [192, 0, 2, 1]].map(u32::from_ne_bytes)
        );
        assert!(!l.incomplete());
        let many: Vec<Ipv4Addr> = (0..=MAX_LOCALS as u32)
            .map(|i| (0x0a00_0000 + i).into())
            .collect();
        assert!(Locals::new(&many).incomplete());
        assert!(!Locals::new(&many[..MAX_LOCALS]).incomplete());
    }

    #[test]
    fn the_kernel_rule_forgets_the_latch_on_relatch_or_a_new_policy_or_source() {
        let policies = [SourcePolicy::Strict, SourcePolicy::Latch, SourcePolicy::Any];
        let sources = ["192.0.2.10", "192.0.2.11"];
        let rules: Vec<PortRule> = policies
            .iter()
            .flat_map(|p| sources.map(|s| port_rule(Plane::Rtp, *p, s)))
            .collect();
        for old in &rules {
            for new in &rules {
                for relatch in [false, true] {
                    let before = kernel_rule(old, 7);
                    let mut after = kernel_rule(new, 7);
                    after.carry_over(&before, relatch);
                    // Forgotten on a re-latch, a new policy or a new source only.
                    let forgets = relatch || old.policy != new.policy || old.source != new.source;
                    assert_eq!(
                        after.latch_epoch != before.latch_epoch,
                        forgets,
                        "{old:?} -> {new:?}, relatch {relatch}"
                    );
                    assert_eq!(after.generation, before.generation, "same owner");
                    // The learner may be new whatever else holds (a restart).
                    assert_ne!(after.learn_epoch, before.learn_epoch);
                }
            }
        }
        // Another owner: a new stream generation, whatever the admission.
        let mut theirs = kernel_rule(&rules[0], 8);
        let mine = kernel_rule(&rules[0], 7);
        theirs.carry_over(&mine, false);
        assert_ne!(theirs.generation, mine.generation);
        assert_ne!(theirs.learn_epoch, mine.learn_epoch);
    }
}
