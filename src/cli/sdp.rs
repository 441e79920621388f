//! `rtp-relay sdp`: a reservation's SDP as a running relay serves it, for an
//! operator setting Wowza up by hand or checking what the relay writes.

use super::report::fail;
use clap::Args;
use std::process::ExitCode;

/// `sdp`.
#[derive(Debug, Args)]
pub struct SdpArgs {
    /// The reservation's event_id.
    pub event_id: String,
    /// The video stream to describe (default: primary_video where the layout
    /// has it, else primary_display).
    #[arg(long)]
    pub video: Option<crate::group::Role>,
    /// The relay's control plane.
    #[arg(long, default_value = "http://127.0.0.1:9870")]
    pub relay: String,
}

/// `rtp-relay sdp EVENT_ID [--video ROLE] [--relay URL]`: prints the SDP;
/// status 1 with the relay's reason when there is none (yet).
pub fn sdp(a: SdpArgs) -> ExitCode {
    let mut url = format!(
        "{}/v1/reservations/{}/sdp",
        a.relay.trim_end_matches('/'),
        a.event_id
    );
    if let Some(v) = a.video {
        url.push_str(&format!("?video={}", v.as_str()));
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build(),
    );
    let mut response = match agent.get(&url).call() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot reach the relay at {}: {e}", a.relay), 1),
    };
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if status.is_success() {
        print!("{body}");
        return ExitCode::SUCCESS;
    }
    // The relay's JSON error: its message says what is missing or wrong.
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(body);
    fail(
        format!("no SDP for {:?} ({status}): {message}", a.event_id),
        1,
    )
}
