//! Capture layouts and the stream role of each pair (the README's "Port groups").

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a capture sends: which pairs of the group carry which stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Audio only.
    AudioOnly,
    /// Audio and one display (graphics channel 1).
    AudioDisplay,
    /// Audio and one video (graphics channel 2).
    AudioVideo,
    /// Audio, display and video.
    AudioDisplayVideo,
    /// Audio and two videos.
    AudioDualVideo,
    /// Audio and two displays.
    AudioDualDisplay,
}

/// The role of a stream, used as the `stream` label.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Pair 0 in every layout.
    PrimaryAudio,
    /// The (first) display.
    PrimaryDisplay,
    /// The second display of `audio-dual-display`.
    SecondaryDisplay,
    /// The (first) video.
    PrimaryVideo,
    /// The second video of `audio-dual-video`.
    SecondaryVideo,
}

impl Layout {
    /// Every layout, in the order of the README's "Port groups" table.
    pub const ALL: [Layout; 6] = [
        Layout::AudioOnly,
        Layout::AudioDisplay,
        Layout::AudioVideo,
        Layout::AudioDisplayVideo,
        Layout::AudioDualVideo,
        Layout::AudioDualDisplay,
    ];

    /// The layout's name as written in requests and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::AudioOnly => "audio-only",
            Layout::AudioDisplay => "audio-display",
            Layout::AudioVideo => "audio-video",
            Layout::AudioDisplayVideo => "audio-display-video",
            Layout::AudioDualVideo => "audio-dual-video",
            Layout::AudioDualDisplay => "audio-dual-display",
        }
    }

    /// The role carried by `pair`, or `None` when the layout leaves it unused.
    pub fn role(self, pair: u8) -> Option<Role> {
        use Layout::*;
        use Role::*;
        match (pair, self) {
            (0, _) => Some(PrimaryAudio),
            (1, AudioDisplay | AudioDisplayVideo | AudioDualDisplay) => Some(PrimaryDisplay),
            (1, AudioDualVideo) => Some(SecondaryVideo),
            (2, AudioVideo | AudioDisplayVideo | AudioDualVideo) => Some(PrimaryVideo),
            (2, AudioDualDisplay) => Some(SecondaryDisplay),
            _ => None,
        }
    }

    /// The pairs the layout uses, with their roles: only these are bound.
    pub fn pairs(self) -> impl Iterator<Item = (u8, Role)> {
        (0..super::PAIRS).filter_map(move |p| self.role(p).map(|r| (p, r)))
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Layout::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Layout::ALL.iter().map(|l| l.as_str()).collect();
                format!("unknown layout `{s}`, expected one of {}", names.join(", "))
            })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown stream role `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::PrimaryAudio,
        Role::PrimaryDisplay,
        Role::SecondaryDisplay,
        Role::PrimaryVideo,
        Role::SecondaryVideo,
    ];

    /// The `stream` label value, e.g. `primary_audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PrimaryAudio => "primary_audio",
            Role::PrimaryDisplay => "primary_display",
            Role::SecondaryDisplay => "secondary_display",
            Role::PrimaryVideo => "primary_video",
            Role::SecondaryVideo => "secondary_video",
        }
    }

    /// How an operator reads it, e.g. "Primary audio".
    pub fn label(self) -> &'static str {
        match self {
            Role::PrimaryAudio => "Primary audio",
            Role::PrimaryDisplay => "Primary display",
            Role::SecondaryDisplay => "Secondary display",
            Role::PrimaryVideo => "Primary video",
            Role::SecondaryVideo => "Secondary video",
        }
    }

    /// Audio streams use the audio clock rate; the rest the video clock rate.
    pub fn is_audio(self) -> bool {
        self == Role::PrimaryAudio
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
