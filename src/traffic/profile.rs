//! Traffic profiles: what each stream role sends.

use crate::group::Role;
use std::time::Duration;

/// How one role's encoder behaves.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct RoleProfile {
    /// Average bitrate of the payload, bits per second.
    pub bitrate: u32,
    /// Frames per second.
    pub frame_rate: f64,
    /// RTP clock (Hz).
    pub clock_rate: u32,
    /// A keyframe this often (video only); `None` for audio.
    pub keyframe_interval: Option<Duration>,
    /// A keyframe is this many times larger than another frame.
    pub keyframe_factor: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// Video: the profile_idc, constraint flags and level_idc its H.264 SPS
    /// announces (RFC 6184's profile-level-id). Unused by audio.
    pub profile_level_id: [u8; 3],
}

/// What every role of a webcast sends.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Profile {
    /// `primary_audio`.
    pub audio: RoleProfile,
    /// `primary_display`, `secondary_display`.
    pub display: RoleProfile,
    /// `primary_video`, `secondary_video`.
    pub video: RoleProfile,
}

/// Largest RTP packet the generator sends (header included).
pub const MAX_PACKET: usize = 1200;
/// Packets of parameter sets before each video keyframe, on average: one
/// STAP-A on even-numbered streams, an SPS and a PPS packet on odd ones.
pub const PARAMETER_SET_PACKETS: f64 = 1.5;
/// How often each stream sends an RTCP sender report.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);

impl Profile {
    /// `echo360-live`: AAC-like audio at 128 kbit/s (one packet per 1024-sample
    /// frame at 48 kHz, ~47 packets/s), H.264 display at 475 kbit/s (Main
    /// profile) and video at 365 kbit/s (Constrained Baseline), both level 3.1,
    /// 15 fps, a keyframe 5× larger every 2 s.
    pub fn echo360_live() -> Self {
        let video = |bitrate, profile_level_id| RoleProfile {
            bitrate,
            frame_rate: 15.0,
            clock_rate: 90_000,
            keyframe_interval: Some(Duration::from_secs(2)),
            keyframe_factor: 5,
            payload_type: 96,
            profile_level_id,
        };
        Profile {
            audio: RoleProfile {
                bitrate: 128_000,
                frame_rate: 48_000.0 / 1024.0,
                clock_rate: 48_000,
                keyframe_interval: None,
                keyframe_factor: 1,
                payload_type: 97,
                profile_level_id: [0; 3],
            },
            display: video(475_000, [0x4d, 0x40, 0x1f]),
            video: video(365_000, [0x42, 0xe0, 0x1f]),
        }
    }

    /// A named profile.
    pub fn named(name: &str) -> Result<Self, String> {
        match name {
            "echo360-live" => Ok(Self::echo360_live()),
            other => Err(format!(
                "unknown profile {other:?}: the profiles are echo360-live"
            )),
        }
    }

    /// The profile of a role.
    pub fn role(&self, role: Role) -> RoleProfile {
        match role {
            Role::PrimaryAudio => self.audio,
            Role::PrimaryDisplay | Role::SecondaryDisplay => self.display,
            Role::PrimaryVideo | Role::SecondaryVideo => self.video,
        }
    }

    /// Overrides a role family's bitrate (kbit/s) and frame rate, from CLI options.
    pub fn with(
        mut self,
        audio_kbps: Option<u32>,
        display: (Option<u32>, Option<f64>),
        video: (Option<u32>, Option<f64>),
    ) -> Self {
        if let Some(k) = audio_kbps {
            self.audio.bitrate = k * 1000;
        }
        for (target, (kbps, fps)) in [(&mut self.display, display), (&mut self.video, video)] {
            if let Some(k) = kbps {
                target.bitrate = k * 1000;
            }
            if let Some(f) = fps {
                target.frame_rate = f;
            }
        }
        self
    }
}

impl RoleProfile {
    /// Whether the role is video, sent as H.264 (RFC 6184): the roles with
    /// keyframes.
    pub fn is_video(&self) -> bool {
        self.keyframe_interval.is_some()
    }

    /// Payload bytes of an ordinary frame and of a keyframe, so that the average
    /// over a keyframe interval matches the bitrate. A video keyframe's bytes
    /// include the parameter sets sent before it.
    pub fn frame_sizes(&self) -> (usize, usize) {
        let per_second = f64::from(self.bitrate) / 8.0;
        match self.keyframe_interval {
            None => {
                let size = (per_second / self.frame_rate).round() as usize;
                (size, size)
            }
            Some(gop) => {
                let frames = self.frames_per_keyframe() as f64;
                let per_gop = per_second * gop.as_secs_f64();
                let ordinary = per_gop / (frames - 1.0 + f64::from(self.keyframe_factor));
                (
                    ordinary.round() as usize,
                    (ordinary * f64::from(self.keyframe_factor)).round() as usize,
                )
            }
        }
    }

    /// Frames from one keyframe to the next (1: every frame is alike, as audio).
    pub fn frames_per_keyframe(&self) -> u64 {
        self.keyframe_interval.map_or(1, |g| {
            (g.as_secs_f64() * self.frame_rate).round().max(1.0) as u64
        })
    }

    /// RTP packets a frame of `payload` bytes is split into.
    pub fn packets_per_frame(payload: usize) -> usize {
        payload.div_ceil(MAX_PACKET - crate::packet::rtp::FIXED_HEADER)
    }

    /// The average RTP packet rate of a stream (of video streams, averaged
    /// over the two ways they send parameter sets: [`PARAMETER_SET_PACKETS`]).
    pub fn packets_per_second(&self) -> f64 {
        let (ordinary, key) = self.frame_sizes();
        let frames = self.frames_per_keyframe() as f64;
        let parameter_sets = if self.is_video() {
            PARAMETER_SET_PACKETS
        } else {
            0.0
        };
        let per_keyframe = Self::packets_per_frame(key) as f64
            + parameter_sets
            + (frames - 1.0) * Self::packets_per_frame(ordinary) as f64;
        per_keyframe / frames * self.frame_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::source::StreamSource;
    use std::time::Instant;

    /// Packets one stream of `role` sends over `seconds`.
    fn sent(role: RoleProfile, index: u32, seconds: u64) -> usize {
        let t0 = Instant::now();
        let mut s = StreamSource::new(index, role, 1, 0, 0, t0);
        let mut n = 0;
        while s.next_frame_at() < t0 + Duration::from_secs(seconds) {
            s.frame(0, |_| n += 1);
        }
        n
    }

    #[test]
    fn the_announced_packet_rate_is_what_streams_send() {
        let p = Profile::echo360_live();
        for role in [
            p.display,
            p.video,
            p.with(None, (Some(2_000), None), (None, None)).display,
        ] {
            // An even stream (a STAP-A per keyframe) and an odd one (two packets).
            let pair = (sent(role, 0, 10) + sent(role, 1, 10)) as f64 / 2.0;
            assert_eq!(pair / 10.0, role.packets_per_second(), "{role:?}");
        }
        assert_eq!(
            sent(p.audio, 0, 32),
            (p.audio.packets_per_second() * 32.0) as usize
        );
    }
}
