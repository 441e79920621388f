//! What the traffic commands share: the arguments of `gen` and `sink`, the
//! profile overrides of `gen` and `loadtest`, and the streams `gen` and `sink`
//! address.

use super::groups::{Groups, offset_ports, parse_groups};
use crate::group::{Layout, Role};
use crate::traffic::profile::Profile;
use clap::Args;

/// What the traffic tools send or expect.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    /// Port groups: a number, a range or a list, e.g. 14, 0-9, 0,3,10-19.
    #[arg(long, value_parser = parse_groups, required_unless_present = "relay")]
    pub groups: Option<Groups>,
    /// Layout of every group.
    #[arg(long, default_value = "audio-display-video")]
    pub layout: Layout,
    /// Traffic profile.
    #[arg(long, default_value = "echo360-live", value_parser = Profile::named)]
    pub profile: Profile,
    /// How long to run, e.g. 30s, 5m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Overrides of a profile's bitrates and frame rates.
#[derive(Debug, Args)]
pub struct RateArgs {
    /// Audio bitrate override (kbit/s).
    #[arg(long)]
    pub audio_kbps: Option<u32>,
    /// Display bitrate override (kbit/s).
    #[arg(long)]
    pub display_kbps: Option<u32>,
    /// Display frame rate override.
    #[arg(long)]
    pub display_fps: Option<f64>,
    /// Video bitrate override (kbit/s).
    #[arg(long)]
    pub video_kbps: Option<u32>,
    /// Video frame rate override.
    #[arg(long)]
    pub video_fps: Option<f64>,
}

impl RateArgs {
    /// `profile` with these overrides.
    pub fn apply(&self, profile: Profile) -> Profile {
        profile.with(
            self.audio_kbps,
            (self.display_kbps, self.display_fps),
            (self.video_kbps, self.video_fps),
        )
    }
}

/// The streams of a traffic command: (role, media port) from `--groups` moved by
/// `offset`, or from a relay's reservations (their group ports, or with
/// `destination` their destination ports). An error comes with its exit status.
pub(super) fn streams(
    t: &TrafficArgs,
    relay: Option<&str>,
    offset: i32,
    destination: bool,
) -> Result<Vec<(Role, u16)>, (String, u8)> {
    let Some(url) = relay else {
        let groups = t
            .groups
            .as_ref()
            .ok_or(("--groups or --relay is required".to_string(), 2))?;
        return offset_ports(groups, t.layout, offset).map_err(|e| (e, 2));
    };
    let list = crate::traffic::loadtest::reservations(url).map_err(|e| (e, 1))?;
    let key = if destination {
        "destination_port"
    } else {
        "port"
    };
    let mut out = Vec::new();
    for r in &list {
        for p in r["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["plane"] == "rtp")
        {
            let role =
                serde_json::from_value(p["stream"].clone()).map_err(|e| (e.to_string(), 1))?;
            let port = p[key]
                .as_u64()
                .ok_or(("a reservation without ports".to_string(), 1))?;
            out.push((role, port as u16));
        }
    }
    if out.is_empty() {
        return Err((
            format!(
                "the relay at {url} has no reservations to {}",
                if destination { "receive" } else { "send" }
            ),
            1,
        ));
    }
    Ok(out)
}

/// Checks CPUs given on the command line (`flag` names them): one this
/// process may not use is a bad argument, exit status 2.
pub(super) fn check_cpus(flag: &str, cpus: &[usize]) -> Result<(), std::process::ExitCode> {
    for &cpu in cpus {
        crate::traffic::scheduling::check(cpu)
            .map_err(|e| super::report::fail(format!("{flag}: {e}"), 2))?;
    }
    Ok(())
}
