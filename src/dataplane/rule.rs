//! The forwarding table's rows: plain data, so that any backend (this
//! userspace one, or a kernel fast path mirroring it into BPF maps) reads the
//! same thing.

use crate::group::{GroupId, Layout, Plane, Role};
use crate::reservation::schedule::Entry;
use crate::reservation::{Destination, Rules, SourcePolicy};
use std::net::{IpAddr, SocketAddr};
use time::OffsetDateTime;

/// What the data plane needs to bind and forward one reservation's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPlan {
    /// The group.
    pub group: GroupId,
    /// Which pairs are bound.
    pub layout: Layout,
    /// Where its packets go.
    pub destination: Destination,
    /// Which senders are accepted.
    pub policy: SourcePolicy,
    /// The appliance's IP (strict).
    pub source: Option<IpAddr>,
    /// Tags the reservation holding the group (see [`owner`]).
    pub owner: u32,
    /// When the window closes: past it the kernel forwards nothing, whether
    /// or not the relay still runs.
    pub closes_at: OffsetDateTime,
}

/// The owner tag of a reservation's rules: a port that changes hands gets a
/// new stream generation (in the kernel fast path) even if its forwarding
/// stays the same.
pub fn owner(event_id: &str) -> u32 {
    crc32fast::hash(event_id.as_bytes())
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a socket
/// bound on `::` sees IPv4 peers) as the IPv4 address it is: rules and
/// senders are compared in this form only (a copy, no allocation).
#[inline]
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        v4 => v4,
    }
}

/// One bound port's forwarding rule. Its addresses are [`canonical`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PortRule {
    /// The group it belongs to.
    pub group: GroupId,
    /// The relay's port.
    pub port: u16,
    /// Media or control.
    pub plane: Plane,
    /// The stream role.
    pub role: Role,
    /// Where the appliance's packets go (and whose packets go back).
    pub destination: SocketAddr,
    /// Which senders are accepted.
    pub policy: SourcePolicy,
    /// The appliance's IP (strict).
    pub source: Option<IpAddr>,
    /// Larger datagrams are dropped.
    pub max_packet_size: usize,
}

/// Which senders a port accepts: the part of its rule that a latched
/// appliance depends on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The source policy.
    pub policy: SourcePolicy,
    /// The appliance's IP (strict).
    pub source: Option<IpAddr>,
}

impl Admission {
    /// Does a port forget its latched appliance when its admission goes from
    /// `self` to `new`? A re-latch (a PATCH with `source`) or a changed source
    /// or policy does. The one place this is decided: the userspace port
    /// applies it directly, the kernel rule carries it as a bumped latch epoch.
    pub fn forgets_latch(&self, new: &Admission, relatch: bool) -> bool {
        relatch || self != new
    }
}

impl PortRule {
    /// Which senders the port accepts.
    pub fn admission(&self) -> Admission {
        Admission {
            policy: self.policy,
            source: self.source,
        }
    }
}

impl GroupPlan {
    /// What the data plane forwards for a reservation: its effective
    /// destination and policy under `rules`.
    pub fn of(e: &Entry, rules: &Rules) -> GroupPlan {
        let r = &e.reservation;
        GroupPlan {
            group: e.group,
            layout: r.layout,
            destination: r.destination(rules, e.group),
            policy: r.policy(rules),
            source: r.source,
            owner: owner(&r.event_id),
            closes_at: e.window.close,
        }
    }

    /// The rules of every port the layout uses, their addresses [`canonical`].
    pub fn rules(&self, max_packet_size: usize) -> impl Iterator<Item = PortRule> + '_ {
        self.layout.pairs().flat_map(move |(pair, role)| {
            Plane::BOTH.map(|plane| {
                let port = self.group.port(pair, plane);
                let offset = port - self.group.base();
                PortRule {
                    group: self.group,
                    port,
                    plane,
                    role,
                    destination: canonical(SocketAddr::new(
                        self.destination.address,
                        self.destination.base_port + offset,
                    )),
                    policy: self.policy,
                    source: self.source.map(|s| s.to_canonical()),
                    max_packet_size,
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Layout;

    #[test]
    fn rules_carry_ipv4_mapped_addresses_as_the_ipv4_addresses_they_name() {
        let plan = GroupPlan {
            group: GroupId::try_from(14).unwrap(),
            layout: Layout::AudioOnly,
            destination: Destination {
                address: "::ffff:198.51.100.5".parse().unwrap(),
                base_port: 40000,
            },
            policy: SourcePolicy::Strict,
            source: Some("::ffff:192.0.2.10".parse().unwrap()),
            owner: owner("e"),
            closes_at: OffsetDateTime::UNIX_EPOCH,
        };
        for rule in plan.rules(1500) {
            assert_eq!(
                rule.destination.ip(),
                "198.51.100.5".parse::<IpAddr>().unwrap()
            );
            assert_eq!(rule.source, Some("192.0.2.10".parse().unwrap()));
        }
        let v6 = "[2001:db8::1]:5004".parse().unwrap();
        assert_eq!(canonical(v6), v6, "real IPv6 stays IPv6");
    }
}
