//! A reservation's SDP from the published copy (docs/api.md, "The SDP of a
//! reservation"): the destination from its plan, each stream's payload type
//! from its statistics (either backend's), the video's H.264 parameter sets
//! from its port's learner, codec parameters given in the reservation or in
//! `[sdp]`; [`crate::sdp::render`] writes it. Used by the route and by the
//! keeper of `[wowza] sdp_dir`.

use super::published::Published;
use crate::clock::Now;
use crate::config;
use crate::group::{Layout, Plane, Role};
use crate::reservation::schedule::Entry;
use crate::sdp::files::Wanted;
use crate::sdp::render::{self, Given, H264, NotReady, Session, Stream};

/// Why a description cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub enum SdpError {
    /// The layout has no such video stream (404).
    NoSuchVideo(String),
    /// Not everything has been seen on the wire yet (503).
    NotReady(NotReady),
}

/// The video role an SDP carries unless asked otherwise: `primary_video`
/// where the layout has it, else `primary_display`; none for audio only.
pub fn default_video(layout: Layout) -> Option<Role> {
    let roles: Vec<Role> = layout.pairs().map(|(_, r)| r).collect();
    [Role::PrimaryVideo, Role::PrimaryDisplay]
        .into_iter()
        .find(|r| roles.contains(r))
}

/// The video roles of a layout, the default first.
pub fn video_roles(layout: Layout) -> Vec<Role> {
    let default = default_video(layout);
    let mut roles: Vec<Role> = default.into_iter().collect();
    roles.extend(
        layout
            .pairs()
            .map(|(_, r)| r)
            .filter(|r| !r.is_audio() && Some(*r) != default),
    );
    roles
}

/// The SDP of `e` with `video` (default: [`default_video`]).
pub fn describe(
    published: &Published,
    e: &Entry,
    video: Option<Role>,
    defaults: &config::Sdp,
    now: &Now,
) -> Result<String, SdpError> {
    let layout = e.reservation.layout;
    let video = match video.or_else(|| default_video(layout)) {
        Some(v) if !v.is_audio() && layout.pairs().any(|(_, r)| r == v) => v,
        Some(v) => {
            return Err(SdpError::NoSuchVideo(format!(
                "layout {layout} has no video stream {}; its video streams are {}",
                v.as_str(),
                names(&video_roles(layout))
            )));
        }
        None => {
            return Err(SdpError::NoSuchVideo(format!(
                "layout {layout} has no video stream: Wowza's SDP needs one"
            )));
        }
    };
    let plan = published.plan(e);
    let bound = published.bound();
    let pair_of = |role: Role| layout.pairs().find(|(_, r)| *r == role).map(|(p, _)| p);
    let facts = |role: Role| {
        let pair = pair_of(role).unwrap_or(0);
        let relay_port = e.group.port(pair, Plane::Rtp);
        let offset = |plane| {
            plan.destination
                .base_port
                .wrapping_add(e.group.port(pair, plane) - e.group.base())
        };
        let port = bound.port(relay_port);
        let payload_type = port
            .and_then(|p| bound.snapshot(p, now).media)
            .and_then(|m| m.payload_type);
        let (h264, version) = match port {
            Some(p) if !role.is_audio() => {
                let (sets, version) = p.counters.parameter_sets();
                let h264 = sets
                    .map(|s| (s.profile_level_id(), s.sprop_parameter_sets()))
                    .map_err(|m| m.to_string());
                (h264, version)
            }
            _ => (Err("not bound yet".to_string()), 0),
        };
        Facts {
            role,
            relay_port,
            port: offset(Plane::Rtp),
            rtcp_port: offset(Plane::Rtcp),
            payload_type,
            h264,
            version,
        }
    };
    let (a, v) = (facts(Role::PrimaryAudio), facts(video));
    let media = &e.reservation.media;
    let given = |role: Role| {
        media.get(&role).map(|m| Given {
            rtpmap: &m.rtpmap,
            fmtp: m.fmtp.as_deref(),
        })
    };
    let audio_given = given(Role::PrimaryAudio).or(Some(Given {
        rtpmap: &defaults.audio_rtpmap,
        fmtp: Some(&defaults.audio_fmtp),
    }));
    render::render(
        &Session {
            event_id: &e.reservation.event_id,
            address: plan.destination.address,
            version: v.version,
        },
        &a.stream(audio_given),
        &v.stream(given(video)),
    )
    .map_err(SdpError::NotReady)
}

/// What `[wowza] sdp_dir` should hold now: for every reservation whose group
/// is bound, `<event_id>.sdp` (the default video) and `<event_id>_<role>.sdp`
/// (every other video role), each once it is ready.
pub fn wanted(published: &Published, defaults: &config::Sdp, now: &Now) -> Vec<Wanted> {
    published
        .entries()
        .filter(|e| !published.bound().ports(e.group).is_empty())
        .map(|e| {
            let id = &e.reservation.event_id;
            let roles = video_roles(e.reservation.layout);
            let files = roles
                .iter()
                .enumerate()
                .filter_map(|(i, &role)| {
                    let sdp = describe(published, e, Some(role), defaults, now).ok()?;
                    let name = if i == 0 {
                        format!("{id}.sdp")
                    } else {
                        format!("{id}_{}.sdp", role.as_str())
                    };
                    Some((name, sdp))
                })
                .collect();
            Wanted {
                event_id: id.clone(),
                files,
            }
        })
        .collect()
}

/// What is known of one stream, owned; [`Facts::stream`] lends it to the
/// description.
struct Facts {
    role: Role,
    relay_port: u16,
    port: u16,
    rtcp_port: u16,
    payload_type: Option<u8>,
    h264: Result<(String, String), String>,
    version: u64,
}

impl Facts {
    fn stream<'a>(&'a self, given: Option<Given<'a>>) -> Stream<'a> {
        Stream {
            role: self.role,
            relay_port: self.relay_port,
            port: self.port,
            rtcp_port: self.rtcp_port,
            payload_type: self.payload_type,
            given,
            h264: match &self.h264 {
                Ok((p, s)) => Ok(H264 {
                    profile_level_id: p,
                    sprop_parameter_sets: s,
                }),
                Err(missing) => Err(missing),
            },
        }
    }
}

fn names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_video_is_the_primary_video_else_the_primary_display() {
        assert_eq!(
            default_video(Layout::AudioDisplayVideo),
            Some(Role::PrimaryVideo)
        );
        assert_eq!(
            default_video(Layout::AudioDualDisplay),
            Some(Role::PrimaryDisplay)
        );
        assert_eq!(default_video(Layout::AudioOnly), None);
        assert_eq!(
            video_roles(Layout::AudioDisplayVideo),
            [Role::PrimaryVideo, Role::PrimaryDisplay]
        );
        assert_eq!(
            video_roles(Layout::AudioDualVideo),
            [Role::PrimaryVideo, Role::SecondaryVideo]
        );
    }
}
