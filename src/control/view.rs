//! The JSON shape of a reservation in API responses.

use super::published::Published;
use crate::clock::Now;
use crate::dataplane::BoundPorts;
use crate::dataplane::counters::PortSnapshot;
use crate::group::{GroupId, Plane, Role};
use crate::reservation::schedule::{Binding, Entry, PortFailure, State};
use crate::reservation::{Destination, SourcePolicy, rfc3339};
use serde::Serialize;
use std::net::IpAddr;

/// A reservation with its state, window and ports.
#[derive(Debug, Serialize)]
pub struct ReservationView {
    /// The allocator's name for the webcast.
    pub event_id: String,
    /// The group in use.
    pub group: GroupId,
    /// What the capture sends.
    pub layout: crate::group::Layout,
    /// Event start (RFC 3339).
    pub start: String,
    /// Event end (RFC 3339).
    pub end: String,
    /// The appliance's IP, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The policy in force.
    pub source_policy: SourcePolicy,
    /// The destination in force.
    pub destination: Destination,
    /// `scheduled` | `active` | `degraded` | `ended`.
    pub state: State,
    /// When the ports are bound and freed.
    pub window: WindowView,
    /// The ports the layout uses.
    pub ports: Vec<PortView>,
    /// Ports that could not be bound (state `degraded`), with the OS error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<PortFailure>,
    /// When binding is retried (state `degraded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Live statistics of every stream whose ports are bound.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamView>,
    /// Why its SDP files cannot be written into `[wowza] sdp_dir` (the relay
    /// keeps trying).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp_file_error: Option<String>,
}

/// One stream (pair) with the live figures of its two ports.
#[derive(Debug, Serialize)]
pub struct StreamView {
    /// The role.
    pub stream: Role,
    /// The media port and its figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtp: Option<PortStats>,
    /// The control port and its figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtcp: Option<PortStats>,
}

/// A bound port's number and figures.
#[derive(Debug, Serialize)]
pub struct PortStats {
    /// The relay's port.
    pub port: u16,
    /// Its figures.
    #[serde(flatten)]
    pub stats: PortSnapshot,
}

/// `[start - lead, end + trail)`.
#[derive(Debug, Serialize)]
pub struct WindowView {
    /// Ports bound from (RFC 3339).
    pub bind_at: String,
    /// Ports freed at (RFC 3339).
    pub free_at: String,
}

/// One used port of the group.
#[derive(Debug, Serialize)]
pub struct PortView {
    /// The relay's port.
    pub port: u16,
    /// The stream role.
    pub stream: Role,
    /// `rtp` | `rtcp`.
    pub plane: Plane,
    /// Where its packets go.
    pub destination_port: u16,
}

/// Builds the view of an entry with live statistics at `now`; `ended`
/// overrides the state (a deleted reservation).
pub fn reservation(published: &Published, e: &Entry, ended: bool, now: &Now) -> ReservationView {
    let bound = published.bound();
    let r = &e.reservation;
    let w = e.window;
    let plan = published.plan(e);
    let ports = plan
        .rules(bound.max_packet_size())
        .map(|rule| PortView {
            port: rule.port,
            stream: rule.role,
            plane: rule.plane,
            destination_port: rule.destination.port(),
        })
        .collect();
    let (errors, retry_at) = match &e.binding {
        Binding::Degraded { failures, retry_at } if !ended => {
            (failures.clone(), Some(rfc3339(*retry_at)))
        }
        _ => (Vec::new(), None),
    };
    ReservationView {
        event_id: r.event_id.clone(),
        group: e.group,
        layout: r.layout,
        start: rfc3339(r.start),
        end: rfc3339(r.end),
        source: r.source,
        source_policy: plan.policy,
        destination: plan.destination,
        state: if ended { State::Ended } else { e.state() },
        window: WindowView {
            bind_at: rfc3339(w.open),
            free_at: rfc3339(w.close),
        },
        ports,
        errors,
        retry_at,
        streams: if ended {
            Vec::new()
        } else {
            streams(bound, e, now)
        },
        sdp_file_error: None,
    }
}

fn streams(bound: &BoundPorts, e: &Entry, now: &Now) -> Vec<StreamView> {
    if bound.ports(e.group).is_empty() {
        return Vec::new();
    }
    let stats = |pair: u8, plane: Plane| {
        let port = e.group.port(pair, plane);
        bound.port(port).map(|p| PortStats {
            port,
            stats: bound.snapshot(p, now),
        })
    };
    e.reservation
        .layout
        .pairs()
        .map(|(pair, role)| StreamView {
            stream: role,
            rtp: stats(pair, Plane::Rtp),
            rtcp: stats(pair, Plane::Rtcp),
        })
        .collect()
}
