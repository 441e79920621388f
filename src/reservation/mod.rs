//! What a reservation is (docs/api.md, the create body) and the rules a request must meet.
//! Pure: the rules are built from the configuration by the caller.

pub mod schedule;

use crate::group::{GroupId, Layout, Role};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use time::OffsetDateTime;

/// Longest accepted `event_id`.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Earliest accepted `start` or `end`.
pub const EARLIEST: OffsetDateTime = time::macros::datetime!(1970-01-01 0:00 UTC);

/// Every accepted `start` and `end` is before this: a year short of the last
/// time the relay can represent, so a window ([`schedule::MAX_LEAD_TRAIL`]
/// wider on each side, under any configuration) can always be computed, and
/// no reload of `[schedule]` can push one out of range (README "Port groups").
pub const LATEST: OffsetDateTime = time::macros::datetime!(9999-01-01 0:00 UTC);

/// Which senders a reservation's ports accept (docs/forwarding.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourcePolicy {
    /// Only the reservation's `source` IP, any source port.
    Strict,
    /// The first sender on each port, until the reservation ends or is re-latched.
    Latch,
    /// Everyone (testing only).
    Any,
}

impl SourcePolicy {
    /// The name as written in config and requests.
    pub fn as_str(self) -> &'static str {
        match self {
            SourcePolicy::Strict => "strict",
            SourcePolicy::Latch => "latch",
            SourcePolicy::Any => "any",
        }
    }
}

impl fmt::Display for SourcePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a group's packets go: port `p` of the group goes to `base_port + (p - base(g))`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Wowza's address.
    pub address: IpAddr,
    /// Destination port of the group's first port.
    pub base_port: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.base_port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.base_port),
        }
    }
}

/// A reservation's content as the allocator asked for it (the create body).
/// The group actually used lives beside it in the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// The allocator's name for the webcast; unique.
    pub event_id: String,
    /// The requested port group; `None` lets the relay allocate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// What the capture sends.
    pub layout: Layout,
    /// Event start.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Event end.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// The appliance's IP (required with `strict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// Omitted: the configured default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_policy: Option<SourcePolicy>,
    /// Omitted: `[wowza] address` and `base(g) + port_offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Codec parameters for the SDP by stream role: the audio's, which RTP
    /// does not carry (else `[sdp]`'s), or a video's instead of the learned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub media: BTreeMap<Role, MediaParams>,
}

/// One stream's codec parameters as the SDP gives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaParams {
    /// `a=rtpmap` after the payload type, e.g. `MPEG4-GENERIC/48000/2`.
    pub rtpmap: String,
    /// `a=fmtp` after the payload type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmtp: Option<String>,
}

/// The body of `PATCH /v1/reservations/{event_id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// New end (an event that overruns, or ends early).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// New appliance address.
    #[serde(default)]
    pub source: Option<IpAddr>,
}

impl Reservation {
    /// True when `request` asks for exactly this reservation, now on `group`
    /// (an idempotent retry). An omitted group matches whatever was allocated.
    pub fn matches(&self, group: GroupId, request: &Reservation) -> bool {
        let without_group = |r: &Reservation| Reservation {
            group: None,
            ..r.clone()
        };
        request.group.is_none_or(|g| g == group) && without_group(self) == without_group(request)
    }

    /// The reservation with `change` applied (not yet validated).
    pub fn changed(&self, change: &Change) -> Reservation {
        let mut r = self.clone();
        if let Some(end) = change.end {
            r.end = end;
        }
        if let Some(source) = change.source {
            r.source = Some(source);
        }
        r
    }

    /// The policy in force: the reservation's own or the configured default.
    pub fn policy(&self, rules: &Rules) -> SourcePolicy {
        self.source_policy.unwrap_or(rules.default_policy)
    }

    /// The destination in force on `group`: the reservation's own or the default.
    pub fn destination(&self, rules: &Rules, group: GroupId) -> Destination {
        self.destination
            .unwrap_or_else(|| rules.wowza.for_group(group))
    }
}

/// The default destination from `[wowza]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DefaultDestination {
    /// `[wowza] address`.
    pub address: IpAddr,
    /// `[wowza] port_offset`: destination base = `base(g) + port_offset`.
    pub port_offset: i32,
}

impl DefaultDestination {
    /// The default destination of `group`. Config validation guarantees it is in range.
    pub fn for_group(&self, group: GroupId) -> Destination {
        let base = i32::from(group.base()) + self.port_offset;
        Destination {
            address: self.address,
            base_port: base.clamp(1, i32::from(u16::MAX)) as u16,
        }
    }
}

/// Refuses destinations that would send into the relay's own group ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopGuard {
    /// `[data] bind_address`.
    pub bind_address: IpAddr,
    /// The host's interface addresses (used when binding the unspecified address).
    pub local_addresses: Vec<IpAddr>,
    /// Lowest port the relay may bind: the base of the last allowed group.
    pub lowest_port: u16,
}

impl LoopGuard {
    /// Would `address` reach sockets the relay binds? Addresses are compared
    /// canonically: `::ffff:127.0.0.1` is 127.0.0.1.
    pub fn is_relay_address(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        let bind = self.bind_address.to_canonical();
        if address.is_unspecified() || address == bind {
            return true;
        }
        bind.is_unspecified()
            && (address.is_loopback()
                || self
                    .local_addresses
                    .iter()
                    .any(|a| a.to_canonical() == address))
    }

    /// Can the relay's sockets send to `address` at all? An IPv4 bind
    /// reaches IPv4 only, an IPv6 bind other than `::` IPv6 only; `::` is
    /// dual-stack (IPv4 as `::ffff:a.b.c.d`). The error says how to fix it.
    pub fn reaches(&self, address: IpAddr) -> Result<(), String> {
        let bind = self.bind_address.to_canonical();
        let dual_stack = self.bind_address.is_ipv6() && self.bind_address.is_unspecified();
        let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
        let address = address.to_canonical();
        if dual_stack || address.is_ipv4() == bind.is_ipv4() {
            return Ok(());
        }
        Err(format!(
            "{address} is {} but the relay's ports are bound on bind_address {} ({}): it can never send there; use an {} address, or bind_address = \"::\" to reach both families",
            family(address),
            self.bind_address,
            family(bind),
            family(bind),
        ))
    }

    /// Checks one destination range of 8 ports; the error says why it loops.
    pub fn check(&self, address: IpAddr, first: u16, last: u16) -> Result<(), String> {
        if self.is_relay_address(address) && last >= self.lowest_port {
            return Err(format!(
                "destination {address} ports {first}–{last} overlap the relay's own group ports {}–65535 on an address the relay listens on: packets would loop back into the relay; send to ports below {} or to another address",
                self.lowest_port, self.lowest_port
            ));
        }
        Ok(())
    }
}

/// Everything a request is checked against, taken from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `[data] allow_below_dynamic_range`.
    pub allow_below_dynamic_range: bool,
    /// `[source] policy`.
    pub default_policy: SourcePolicy,
    /// `[wowza]`.
    pub wowza: DefaultDestination,
    /// The forwarding-loop check.
    pub loop_guard: LoopGuard,
}

impl Reservation {
    /// Checks a request or changed reservation; the error names the field and the fix.
    pub fn validate(&self, rules: &Rules) -> Result<(), String> {
        check_event_id(&self.event_id)?;
        check_time("start", self.start)?;
        check_time("end", self.end)?;
        if let Some(g) = self.group {
            g.check_allowed(rules.allow_below_dynamic_range)
                .map_err(|e| format!("group: {e}"))?;
        }
        if self.end <= self.start {
            return Err(format!(
                "end ({}) must be after start ({})",
                rfc3339(self.end),
                rfc3339(self.start)
            ));
        }
        if self.policy(rules) == SourcePolicy::Strict && self.source.is_none() {
            return Err(
                "source is required with source_policy \"strict\": give the appliance's IP address, or choose source_policy \"latch\""
                    .into(),
            );
        }
        for (role, m) in &self.media {
            if !self.layout.pairs().any(|(_, r)| r == *role) {
                return Err(format!(
                    "media.{}: layout {} has no such stream; its streams are {}",
                    role.as_str(),
                    self.layout,
                    self.layout
                        .pairs()
                        .map(|(_, r)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            crate::sdp::render::check_rtpmap(&m.rtpmap)
                .map_err(|e| format!("media.{}.rtpmap: {e}", role.as_str()))?;
            if let Some(f) = &m.fmtp {
                crate::sdp::render::check_fmtp(f)
                    .map_err(|e| format!("media.{}.fmtp: {e}", role.as_str()))?;
            }
        }
        if let Some(d) = self.destination {
            let last = d.base_port.checked_add(crate::group::GROUP_SIZE - 1);
            let Some(last) = last.filter(|_| d.base_port > 0) else {
                return Err(format!(
                    "destination.base_port {} is out of range: it must be 1–65528 so that all 8 ports fit",
                    d.base_port
                ));
            };
            let guard = &rules.loop_guard;
            guard
                .reaches(d.address)
                .and_then(|()| guard.check(d.address, d.base_port, last))
                .map_err(|e| format!("destination: {e}"))?;
        }
        Ok(())
    }
}

impl Reservation {
    /// Checks a reservation held on `group` (one loaded from the journal, or
    /// kept across a reload): [`Reservation::validate`], the group itself, and
    /// that it is the requested one, as the API would have admitted it.
    pub fn validate_on(&self, group: GroupId, rules: &Rules) -> Result<(), String> {
        self.validate(rules)?;
        group
            .check_allowed(rules.allow_below_dynamic_range)
            .map_err(|e| format!("group: {e}"))?;
        match self.group {
            Some(requested) if requested != group => Err(format!(
                "it is held on group {group} but names requested group {requested}; the relay only holds a reservation on the group it requests"
            )),
            _ => Ok(()),
        }
    }
}

/// `event_id` appears in URLs and metric labels: keep it short and URL-safe.
pub fn check_event_id(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~');
    if id.is_empty() || id.len() > MAX_EVENT_ID_LEN || !id.chars().all(ok_char) {
        return Err(format!(
            "event_id {id:?} is invalid: use 1–{MAX_EVENT_ID_LEN} characters from A–Z a–z 0–9 - _ . ~"
        ));
    }
    Ok(())
}

/// `start` and `end` must lie in [`EARLIEST`, [`LATEST`]).
fn check_time(field: &str, t: OffsetDateTime) -> Result<(), String> {
    if (EARLIEST..LATEST).contains(&t) {
        return Ok(());
    }
    Err(format!(
        "{field} {} is out of range: start and end must be from {} up to (not including) {}",
        rfc3339(t),
        rfc3339(EARLIEST),
        rfc3339(LATEST)
    ))
}

/// RFC 3339 text of a time, for messages and responses.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn rules() -> Rules {
        Rules {
            allow_below_dynamic_range: false,
            default_policy: SourcePolicy::Strict,
            wowza: DefaultDestination {
                address: "127.0.0.1".parse().unwrap(),
                port_offset: -16384,
            },
            loop_guard: LoopGuard {
                bind_address: "0.0.0.0".parse().unwrap(),
                local_addresses: vec!["192.0.2.1".parse().unwrap()],
                lowest_port: 49152,
            },
        }
    }

    pub(crate) fn request(id: &str, group: Option<u32>) -> Reservation {
        Reservation {
            event_id: id.into(),
            group: group.map(|g| GroupId::try_from(g).unwrap()),
            layout: Layout::AudioDualVideo,
            start: datetime!(2026-11-24 10:00 UTC),
            end: datetime!(2026-11-24 11:00 UTC),
            source: Some("192.0.2.10".parse().unwrap()),
            source_policy: None,
            destination: None,
            media: Default::default(),
        }
    }

    #[test]
    fn parses_the_spec_example() {
        let body = r#"{
          "event_id": "bio101-2026-11-24", "group": 14, "layout": "audio-dual-video",
          "start": "2026-11-24T10:00:00Z", "end": "2026-11-24T11:00:00Z",
          "source": "192.0.2.10", "source_policy": "strict",
          "destination": { "address": "198.51.100.5", "base_port": 65416 } }"#;
        let r: Reservation = serde_json::from_str(body).unwrap();
        assert_eq!(r.group.unwrap().get(), 14);
        assert!(r.validate(&rules()).is_ok());
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        let err = |body: &str| {
            serde_json::from_str::<Reservation>(body)
                .unwrap_err()
                .to_string()
        };
        let base = r#""event_id":"e","layout":"audio-only","start":"2026-11-24T10:00:00Z","end":"2026-11-24T11:00:00Z""#;
        assert!(err(&format!("{{{base},\"colour\":1}}")).contains("unknown field `colour`"));
        assert!(err(&format!("{{{base},\"group\":8064}}")).contains("out of range"));
        let bad_layout = base.replace("audio-only", "audio-triple");
        assert!(err(&format!("{{{bad_layout}}}")).contains("unknown variant `audio-triple`"));

        let r = rules();
        let mut q = request("e", Some(2048));
        assert!(
            q.validate(&r)
                .unwrap_err()
                .contains("allow_below_dynamic_range")
        );
        q.group = None;
        q.end = q.start;
        assert!(q.validate(&r).unwrap_err().contains("must be after start"));
        let mut q = request("e", None);
        q.source = None;
        assert!(q.validate(&r).unwrap_err().contains("source is required"));
        q.source_policy = Some(SourcePolicy::Latch);
        assert!(q.validate(&r).is_ok());
        q.event_id = "has space".into();
        assert!(q.validate(&r).unwrap_err().contains("event_id"));
    }

    #[test]
    fn media_parameters_name_a_stream_of_the_layout_and_are_checked() {
        let r = rules();
        let with = |body: &str| {
            let mut q = request("e", None);
            q.media = serde_json::from_str(body).unwrap();
            q.validate(&r)
        };
        assert_eq!(
            with(
                r#"{"primary_audio":{"rtpmap":"MPEG4-GENERIC/44100/2","fmtp":"config=1210"},"secondary_video":{"rtpmap":"H264/90000"}}"#
            ),
            Ok(())
        );
        let e = with(r#"{"primary_display":{"rtpmap":"H264/90000"}}"#).unwrap_err();
        assert_eq!(
            e,
            "media.primary_display: layout audio-dual-video has no such stream; its streams are primary_audio, secondary_video, primary_video"
        );
        let e = with(r#"{"primary_audio":{"rtpmap":"AAC"}}"#).unwrap_err();
        assert!(
            e.starts_with("media.primary_audio.rtpmap: \"AAC\" is not an rtpmap"),
            "{e}"
        );
        let e = with(r#"{"primary_audio":{"rtpmap":"L16/48000","fmtp":"a\r\nm=video 1"}}"#)
            .unwrap_err();
        assert!(
            e.starts_with("media.primary_audio.fmtp: contains '\\r'"),
            "{e}"
        );
        assert!(serde_json::from_str::<MediaParams>(r#"{"rtpmap":"L16/8000","pt":3}"#).is_err());
        // Kept as given, and left out when there are none.
        let mut q = request("e", None);
        assert!(!serde_json::to_string(&q).unwrap().contains("media"));
        q.media = serde_json::from_str(r#"{"primary_audio":{"rtpmap":"L16/48000"}}"#).unwrap();
        let back: Reservation = serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
        assert_eq!(back, q);
    }

    #[test]
    fn refuses_times_out_of_range_naming_the_field() {
        let r = rules();
        let mut q = request("e", None);
        q.end = datetime!(9999-12-31 23:50 UTC);
        let err = q.validate(&r).unwrap_err();
        assert!(
            err.starts_with("end 9999-12-31T23:50:00Z is out of range"),
            "{err}"
        );
        assert!(err.contains("1970-01-01T00:00:00Z") && err.contains("9999-01-01T00:00:00Z"));
        // Compared as instants: 23:59 at -00:01 is already 9999-01-01 in UTC.
        q.end = datetime!(9998-12-31 23:59:59 -0:01);
        assert!(q.validate(&r).unwrap_err().starts_with("end"));
        q.end = datetime!(9998-12-31 23:59:59 UTC);
        assert!(q.validate(&r).is_ok());
        q.start = datetime!(1969-12-31 23:59:59 UTC);
        assert!(q.validate(&r).unwrap_err().starts_with("start"));
    }

    #[test]
    fn a_held_reservation_is_checked_with_its_group() {
        let r = rules();
        let g = |n| GroupId::try_from(n).unwrap();
        assert!(
            request("e", None)
                .validate_on(g(3000), &r)
                .unwrap_err()
                .starts_with("group:")
        );
        assert!(request("e", Some(14)).validate_on(g(14), &r).is_ok());
        let err = request("e", Some(14)).validate_on(g(15), &r).unwrap_err();
        assert!(
            err.contains("held on group 15 but names requested group 14"),
            "{err}"
        );
        let mut bad = request("e", None);
        bad.end = bad.start;
        assert!(bad.validate_on(g(1), &r).is_err());
    }

    #[test]
    fn refuses_forwarding_loops() {
        let r = rules();
        let mut q = request("e", Some(0));
        for (addr, port, loops) in [
            ("127.0.0.1", 65528, true),
            ("127.0.0.1", 49144, false), // below the group range
            ("127.0.0.1", 49148, true),  // straddles 49152
            ("192.0.2.1", 60000, true),  // a local interface
            ("198.51.100.5", 65528, false),
            ("0.0.0.0", 60000, true),
        ] {
            q.destination = Some(Destination {
                address: addr.parse().unwrap(),
                base_port: port,
            });
            assert_eq!(q.validate(&r).is_err(), loops, "{addr}:{port}");
        }
        q.destination = Some(Destination {
            address: "198.51.100.5".parse().unwrap(),
            base_port: 65529,
        });
        assert!(q.validate(&r).unwrap_err().contains("base_port"));
    }

    #[test]
    fn ipv4_mapped_destinations_are_their_ipv4_address() {
        let mut r = rules();
        r.loop_guard.bind_address = "::".parse().unwrap();
        let mut q = request("e", Some(0));
        for (addr, port, refused) in [
            ("::ffff:127.0.0.1", 65528, true),
            ("::ffff:127.0.0.9", 60000, true),
            ("::ffff:0.0.0.0", 60000, true),
            ("::ffff:192.0.2.1", 60000, true), // a local interface
            ("::1", 60000, true),
            ("::ffff:127.0.0.1", 49144, false),
            ("::ffff:198.51.100.5", 65528, false),
            ("198.51.100.5", 65528, false),
            ("2001:db8::5", 65528, false),
        ] {
            q.destination = Some(Destination {
                address: addr.parse().unwrap(),
                base_port: port,
            });
            assert_eq!(q.validate(&r).is_err(), refused, "{addr}:{port}");
        }
        // An IPv4 bind reaches the mapped form of IPv4 too, and loops through it.
        let r = rules();
        for (addr, refused) in [("::ffff:192.0.2.1", true), ("::ffff:198.51.100.5", false)] {
            q.destination = Some(Destination {
                address: addr.parse().unwrap(),
                base_port: 60000,
            });
            assert_eq!(q.validate(&r).is_err(), refused, "{addr}");
        }
    }

    #[test]
    fn destinations_of_a_family_the_bind_address_cannot_reach_are_refused() {
        let guard = |bind: &str| LoopGuard {
            bind_address: bind.parse().unwrap(),
            local_addresses: vec![],
            lowest_port: 49152,
        };
        for (bind, dest, ok) in [
            ("0.0.0.0", "198.51.100.5", true),
            ("0.0.0.0", "::ffff:198.51.100.5", true),
            ("0.0.0.0", "2001:db8::5", false),
            ("127.0.0.1", "::1", false),
            ("::", "198.51.100.5", true),
            ("::", "2001:db8::5", true),
            ("::1", "2001:db8::5", true),
            ("::1", "198.51.100.5", false),
            ("2001:db8::1", "::ffff:198.51.100.5", false),
        ] {
            let got = guard(bind).reaches(dest.parse().unwrap());
            assert_eq!(got.is_ok(), ok, "{bind} -> {dest}: {got:?}");
            if let Err(e) = got {
                assert!(e.contains("bind_address"), "{e}");
            }
        }
    }

    #[test]
    fn identical_content_matches() {
        let g14 = GroupId::try_from(14).unwrap();
        let stored = request("e", None);
        assert!(stored.matches(g14, &request("e", None)));
        assert!(stored.matches(g14, &request("e", Some(14))));
        assert!(!stored.matches(g14, &request("e", Some(15))));
        assert!(request("e", Some(14)).matches(g14, &request("e", None)));
        let mut other = request("e", None);
        other.end = datetime!(2026-11-24 11:30 UTC);
        assert!(!stored.matches(g14, &other));
    }

    #[test]
    fn default_destination_follows_the_group() {
        let r = rules();
        let stored = request("e", None);
        assert_eq!(
            stored.destination(&r, GroupId::try_from(14).unwrap()),
            Destination {
                address: "127.0.0.1".parse().unwrap(),
                base_port: 65416 - 16384
            }
        );
    }
}
