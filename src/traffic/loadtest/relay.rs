//! The relay a load test measures, as the load test sees it: its control
//! plane ([`Client`]: reserve and release the groups, list reservations), and
//! a relay spawned for the run in a temporary directory ([`Spawned`]).

use super::SINK_OFFSET;
use crate::group::{GroupId, Layout, Role};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The reservations of a relay (`GET /v1/reservations`).
pub fn reservations(url: &str) -> Result<Vec<Value>, String> {
    let url = url.trim_end_matches('/');
    let mut r = ureq::get(format!("{url}/v1/reservations"))
        .call()
        .map_err(|e| format!("cannot list the reservations of {url}: {e}"))?;
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().map_err(|e| e.to_string())?)
        .map_err(|e| format!("{url} answered something that is not JSON: {e}"))?;
    Ok(v["reservations"].as_array().cloned().unwrap_or_default())
}

/// Talks to the relay's control plane.
pub(super) struct Client {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the control plane at `url`, sending `token` as a bearer.
    pub(super) fn new(url: &str, token: Option<String>) -> Self {
        Client {
            url: url.to_string(),
            token,
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build(),
            ),
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// Creates the group's reservation (active now); its streams' ports.
    pub(super) fn reserve(
        &self,
        g: GroupId,
        layout: Layout,
        duration: Duration,
    ) -> Result<Vec<(Role, u16, u16)>, String> {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| crate::reservation::rfc3339(t);
        let body = json!({
            "event_id": format!("loadtest-{g}"),
            "group": g,
            "layout": layout,
            "start": fmt(now),
            "end": fmt(now + duration + Duration::from_secs(120)),
            "source": "127.0.0.1",
            "source_policy": "strict",
        });
        let mut r = self
            .auth(self.agent.post(format!("{}/v1/reservations", self.url)))
            .send(body.to_string())
            .map_err(|e| format!("cannot reach the relay at {}: {e}", self.url))?;
        let status = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(format!(
                "the relay refused group {g} ({status}): {}",
                v["message"]
            ));
        }
        if v["state"] != "active" {
            return Err(format!(
                "group {g} is {} on the relay, not active: {}",
                v["state"], v["errors"]
            ));
        }
        let ports = v["ports"].as_array().cloned().unwrap_or_default();
        Ok(ports
            .iter()
            .filter(|p| p["plane"] == "rtp")
            .filter_map(|p| {
                let role: Role = serde_json::from_value(p["stream"].clone()).ok()?;
                Some((
                    role,
                    p["port"].as_u64()? as u16,
                    p["destination_port"].as_u64()? as u16,
                ))
            })
            .collect())
    }

    /// Holds the relay's SDP of every video stream against what the sink
    /// received: the `sprop-parameter-sets` the relay learned must be the
    /// SPS and PPS the sink saw (`streams`: role, relay port, sink port).
    pub(super) fn check_sdp(
        &self,
        streams: &[(Role, u16, u16)],
        delivered: &crate::traffic::sink::Report,
    ) -> SdpCheck {
        let mut check = SdpCheck::default();
        for &(role, port, sink_port) in streams.iter().filter(|s| !s.0.is_audio()) {
            let Some(slot) = crate::group::GroupId::locate(port) else {
                continue;
            };
            let url = format!(
                "{}/v1/reservations/loadtest-{}/sdp?video={}",
                self.url,
                slot.group,
                role.as_str()
            );
            check.checked += 1;
            let sent = delivered
                .streams
                .iter()
                .find(|s| s.port == sink_port)
                .and_then(|s| s.sprop_parameter_sets.clone());
            let learned = match self.agent.get(&url).call() {
                Ok(mut r) if r.status().is_success() => {
                    let text = r.body_mut().read_to_string().unwrap_or_default();
                    sprop(&text).map(str::to_string)
                }
                _ => {
                    check.not_ready += 1;
                    continue;
                }
            };
            if learned.is_some() && learned == sent {
                check.matched += 1;
            } else if check.mismatched.len() < 5 {
                check.mismatched.push(format!(
                    "group {} {}: relay {learned:?}, sink {sent:?}",
                    slot.group,
                    role.as_str()
                ));
            }
        }
        check
    }

    /// Deletes the group's reservation (best effort).
    pub(super) fn release(&self, g: GroupId) {
        let _ = self
            .auth(
                self.agent
                    .delete(format!("{}/v1/reservations/loadtest-{g}", self.url)),
            )
            .call();
    }
}

/// A relay started for the run, with its own configuration and state.
pub(super) struct Spawned {
    /// The relay process.
    pub(super) child: Child,
    /// Its control plane, e.g. `http://127.0.0.1:40123`.
    pub(super) url: String,
    /// Where its fast path pins its program's links.
    pub(super) pins: std::path::PathBuf,
    _dir: TempDir,
}

impl Spawned {
    /// Starts a relay for up to `groups` webcasts; returns once it listens.
    pub(super) fn start(
        groups: u16,
        fast_path: crate::config::FastPath,
    ) -> Result<Spawned, String> {
        let dir = TempDir::new()?;
        let config = dir.0.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[control]\nlisten = \"127.0.0.1:0\"\n[data]\nbind_address = \"127.0.0.1\"\nmax_groups = {}\nfast_path = \"{}\"\n[wowza]\naddress = \"127.0.0.1\"\nport_offset = {SINK_OFFSET}\n[state]\npath = \"{}\"\n[log]\nlevel = \"info\"\n",
                groups.max(1),
                fast_path.as_str(),
                dir.0.join("state").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let stderr = child.stderr.take().ok_or("no relay stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        break rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err("the spawned relay exited before listening".into());
                }
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Spawned {
            child,
            url: format!("http://{addr}"),
            pins: crate::dataplane::ebpf::pin_dir(&dir.0.join("state")),
            _dir: dir,
        })
    }

    /// Stops it (SIGTERM) and waits for it to exit.
    pub(super) fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "rtp-relay-loadtest-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The relay's SDPs held against what the sink received.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SdpCheck {
    /// Video streams whose SDP was asked for.
    pub checked: u64,
    /// … whose `sprop-parameter-sets` were the SPS and PPS the sink saw.
    pub matched: u64,
    /// … for which the relay had no SDP (yet).
    pub not_ready: u64,
    /// The first few that differ.
    pub mismatched: Vec<String>,
}

/// The `sprop-parameter-sets` value of an SDP's first `a=fmtp` line.
fn sprop(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().split("sprop-parameter-sets=").nth(1))
        .map(|v| v.split(';').next().unwrap_or(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sprop_value_is_read_from_the_fmtp_line() {
        let sdp = "v=0\r\nm=video 1 RTP/AVP 96\r\na=fmtp:96 packetization-mode=1;profile-level-id=42E01F;sprop-parameter-sets=Z0I=,aM4=\r\n";
        assert_eq!(sprop(sdp), Some("Z0I=,aM4="));
        let later = "a=fmtp:96 sprop-parameter-sets=Z0I=,aM4=;packetization-mode=1\r\n";
        assert_eq!(sprop(later), Some("Z0I=,aM4="));
        assert_eq!(sprop("v=0\r\n"), None);
    }
}
