//! Port-group arithmetic (the README's "Port groups"), pure: no I/O, no clock.
//!
//! A group is 8 consecutive UDP ports counted down from 65535:
//! group `g` is `base(g) ..= base(g) + 7` with `base(g) = 65528 - 8g`.
//! Inside a group, pair `k` uses `base + 2k` for media (RTP) and `base + 2k + 1`
//! for control (RTCP).

mod layout;

pub use layout::{Layout, Role};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Ports in one group.
pub const GROUP_SIZE: u16 = 8;
/// Base port of group 0.
pub const TOP_BASE: u16 = 65528;
/// Last group inside the IANA dynamic range 49152–65535.
pub const LAST_DYNAMIC_GROUP: u16 = 2047;
/// Last group at all: its base is 1024, the lowest non-privileged port.
pub const LAST_GROUP: u16 = 8063;
/// Pairs in a group; pair 3 is reserved and never bound.
pub const PAIRS: u8 = 4;

/// A port-group number, guaranteed to be in `0..=LAST_GROUP`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u16")]
pub struct GroupId(u16);

/// Why a number is not a usable group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// Above 8063: the group would reach below port 1024.
    OutOfRange(u32),
    /// 2048–8063 without `allow_below_dynamic_range`.
    BelowDynamicRange(u16),
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::OutOfRange(g) => write!(
                f,
                "group {g} is out of range: groups are 0–{LAST_GROUP} (group {LAST_GROUP} is ports 1024–1031; no group reaches below port 1024)"
            ),
            GroupError::BelowDynamicRange(g) => {
                let base = GroupId(*g).base();
                write!(
                    f,
                    "group {g} (ports {base}–{}) lies below the dynamic range 49152–65535: use a group 0–{LAST_DYNAMIC_GROUP}, or set [data] allow_below_dynamic_range = true",
                    base + (GROUP_SIZE - 1)
                )
            }
        }
    }
}

impl std::error::Error for GroupError {}

impl TryFrom<u32> for GroupId {
    type Error = GroupError;
    fn try_from(n: u32) -> Result<Self, GroupError> {
        if n > u32::from(LAST_GROUP) {
            Err(GroupError::OutOfRange(n))
        } else {
            Ok(GroupId(n as u16))
        }
    }
}

impl From<GroupId> for u16 {
    fn from(g: GroupId) -> u16 {
        g.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl GroupId {
    /// Group 0, the highest ports.
    pub const FIRST: GroupId = GroupId(0);

    /// The group number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Checks that the group may be used under the configured range rule.
    pub fn check_allowed(self, allow_below_dynamic_range: bool) -> Result<Self, GroupError> {
        if self.0 > LAST_DYNAMIC_GROUP && !allow_below_dynamic_range {
            Err(GroupError::BelowDynamicRange(self.0))
        } else {
            Ok(self)
        }
    }

    /// The last group allocation may use under the configured range rule.
    pub fn last_allowed(allow_below_dynamic_range: bool) -> GroupId {
        GroupId(if allow_below_dynamic_range {
            LAST_GROUP
        } else {
            LAST_DYNAMIC_GROUP
        })
    }

    /// First port of the group: `65528 - 8g`.
    pub fn base(self) -> u16 {
        TOP_BASE - GROUP_SIZE * self.0
    }

    /// Last port of the group.
    pub fn last_port(self) -> u16 {
        self.base() + (GROUP_SIZE - 1)
    }

    /// The port carrying `plane` of `pair`.
    pub fn port(self, pair: u8, plane: Plane) -> u16 {
        debug_assert!(pair < PAIRS);
        self.base() + 2 * u16::from(pair) + plane.offset()
    }

    /// The group, pair and plane a port belongs to; `None` below port 1024.
    pub fn locate(port: u16) -> Option<PortSlot> {
        if port < GroupId(LAST_GROUP).base() {
            return None;
        }
        // Counting down from 65535: ports 65528–65535 are group 0.
        let from_top = u32::from(u16::MAX) - u32::from(port);
        let group = GroupId((from_top / u32::from(GROUP_SIZE)) as u16);
        let offset = port - group.base();
        Some(PortSlot {
            group,
            pair: (offset / 2) as u8,
            plane: if offset.is_multiple_of(2) {
                Plane::Rtp
            } else {
                Plane::Rtcp
            },
        })
    }
}

/// Media (RTP, even port) or control (RTCP, odd port).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Media stream on the even port.
    Rtp,
    /// Control stream on the next odd port.
    Rtcp,
}

impl Plane {
    /// Both planes, media first.
    pub const BOTH: [Plane; 2] = [Plane::Rtp, Plane::Rtcp];

    /// Offset of this plane's port from the pair's first port.
    pub fn offset(self) -> u16 {
        match self {
            Plane::Rtp => 0,
            Plane::Rtcp => 1,
        }
    }

    /// The label value used in metrics (`rtp` | `rtcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::Rtp => "rtp",
            Plane::Rtcp => "rtcp",
        }
    }

    /// How an operator reads it in a port table.
    pub fn word(self) -> &'static str {
        match self {
            Plane::Rtp => "stream",
            Plane::Rtcp => "control",
        }
    }
}

/// Where one port sits: its group, pair and plane.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortSlot {
    /// The group the port belongs to.
    pub group: GroupId,
    /// Pair 0–3 inside the group.
    pub pair: u8,
    /// Media or control.
    pub plane: Plane,
}

impl PortSlot {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.group.port(self.pair, self.plane)
    }
}

/// One row of a group's port table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRow {
    /// UDP port number.
    pub port: u16,
    /// Pair 0–3.
    pub pair: u8,
    /// `rtp` or `rtcp`.
    pub plane: Plane,
    /// Stream role under the layout; `None` for an unused port.
    pub role: Option<Role>,
    /// What an operator reads, e.g. "Primary audio stream".
    pub label: String,
}

/// The 8 rows of a group's port table, with roles when a layout is given.
pub fn port_table(group: GroupId, layout: Option<Layout>) -> Vec<PortRow> {
    let mut rows = Vec::with_capacity(usize::from(GROUP_SIZE));
    for pair in 0..PAIRS {
        for plane in Plane::BOTH {
            let role = layout.and_then(|l| l.role(pair));
            let label = match (layout, role) {
                (_, Some(role)) => format!("{} {}", role.label(), plane.word()),
                (Some(_), None) => "Unused".to_string(),
                (None, None) => match pair {
                    0 => format!("Audio {}", plane.word()),
                    1 | 2 => format!("Graphics channel {pair} {}", plane.word()),
                    _ => "Reserved".to_string(),
                },
            };
            rows.push(PortRow {
                port: group.port(pair, plane),
                pair,
                plane,
                role,
                label,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(n: u32) -> GroupId {
        GroupId::try_from(n).unwrap()
    }

    fn ports(rows: &[PortRow]) -> Vec<(String, u16)> {
        rows.iter().map(|r| (r.label.clone(), r.port)).collect()
    }

    #[test]
    fn group_zero_audio_display_video() {
        let rows = port_table(g(0), Some(Layout::AudioDisplayVideo));
        let expect = [
            ("Primary audio stream", 65528),
            ("Primary audio control", 65529),
            ("Primary display stream", 65530),
            ("Primary display control", 65531),
            ("Primary video stream", 65532),
            ("Primary video control", 65533),
            ("Unused", 65534),
            ("Unused", 65535),
        ];
        let expect: Vec<_> = expect.iter().map(|(l, p)| (l.to_string(), *p)).collect();
        assert_eq!(ports(&rows), expect);
    }

    #[test]
    fn group_fourteen_audio_dual_video() {
        let rows = port_table(g(14), Some(Layout::AudioDualVideo));
        let expect = [
            ("Primary audio stream", 65416),
            ("Primary audio control", 65417),
            ("Secondary video stream", 65418),
            ("Secondary video control", 65419),
            ("Primary video stream", 65420),
            ("Primary video control", 65421),
            ("Unused", 65422),
            ("Unused", 65423),
        ];
        let expect: Vec<_> = expect.iter().map(|(l, p)| (l.to_string(), *p)).collect();
        assert_eq!(ports(&rows), expect);
    }

    #[test]
    fn seed_bases() {
        assert_eq!((g(0).base(), g(0).last_port()), (65528, 65535));
        assert_eq!((g(1).base(), g(1).last_port()), (65520, 65527));
        assert_eq!((g(14).base(), g(14).last_port()), (65416, 65423));
        assert_eq!((g(2046).base(), g(2046).last_port()), (49160, 49167));
        assert_eq!((g(2047).base(), g(2047).last_port()), (49152, 49159));
        assert_eq!((g(2048).base(), g(2048).last_port()), (49144, 49151));
        assert_eq!((g(8063).base(), g(8063).last_port()), (1024, 1031));
    }

    #[test]
    fn range_rules() {
        assert_eq!(GroupId::try_from(8064), Err(GroupError::OutOfRange(8064)));
        assert!(g(2047).check_allowed(false).is_ok());
        assert_eq!(
            g(2048).check_allowed(false),
            Err(GroupError::BelowDynamicRange(2048))
        );
        assert!(g(2048).check_allowed(true).is_ok());
        assert!(g(8063).check_allowed(true).is_ok());
        assert_eq!(GroupId::locate(1023), None);
        assert_eq!(GroupId::locate(1024).unwrap().group, g(8063));
        // The error tells the operator how to fix it.
        let msg = GroupError::BelowDynamicRange(2048).to_string();
        assert!(msg.contains("allow_below_dynamic_range"), "{msg}");
    }

    #[test]
    fn pair_three_is_never_a_role() {
        for layout in Layout::ALL {
            assert_eq!(layout.role(3), None);
            assert_eq!(layout.role(0), Some(Role::PrimaryAudio));
        }
    }

    proptest! {
        #[test]
        fn every_port_maps_back_to_one_slot(port in 1024u16..=65535) {
            let slot = GroupId::locate(port).unwrap();
            prop_assert_eq!(slot.port(), port);
            prop_assert!(slot.group.base() <= port && port <= slot.group.last_port());
            // Exactly one group contains the port.
            let owners = (0..=LAST_GROUP as u32)
                .filter(|&n| { let gr = g(n); gr.base() <= port && port <= gr.last_port() })
                .count();
            prop_assert_eq!(owners, 1);
        }

        #[test]
        fn groups_never_overlap(a in 0u32..=8063, b in 0u32..=8063) {
            prop_assume!(a != b);
            let (ga, gb) = (g(a), g(b));
            prop_assert!(ga.last_port() < gb.base() || gb.last_port() < ga.base());
        }

        #[test]
        fn every_slot_of_a_group_roundtrips(n in 0u32..=8063, pair in 0u8..4, rtcp: bool) {
            let plane = if rtcp { Plane::Rtcp } else { Plane::Rtp };
            let port = g(n).port(pair, plane);
            prop_assert_eq!(GroupId::locate(port), Some(PortSlot { group: g(n), pair, plane }));
            prop_assert_eq!(port % 2 == 1, rtcp);
        }

        #[test]
        fn layouts_assign_one_role_per_used_pair(layout in proptest::sample::select(Layout::ALL.to_vec())) {
            let rows = port_table(g(14), Some(layout));
            let used: Vec<_> = rows.iter().filter_map(|r| r.role).collect();
            prop_assert_eq!(used.len(), 2 * layout.pairs().count());
            prop_assert!(rows.iter().all(|r| (r.role.is_some()) == layout.role(r.pair).is_some()));
        }
    }
}
