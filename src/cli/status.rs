//! `rtp-relay status`: one line per open window of a running relay — group,
//! event, state, packets per second, loss, jitter, the last packet's age —
//! from its API, read twice an interval apart for the rates.

use super::report::{fail, print_report};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The relay's control plane.
    #[arg(long, default_value = "http://127.0.0.1:9870")]
    pub relay: String,
    /// How long to measure packet rates over, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One open window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The port group.
    pub group: u64,
    /// The reservation.
    pub event_id: String,
    /// `active` or `degraded`.
    pub state: String,
    /// Media packets per second toward Wowza, all streams.
    pub packets_per_second: f64,
    /// Lost over expected, all streams, in percent (none before a packet).
    pub loss_percent: Option<f64>,
    /// The highest jitter of its streams, in milliseconds.
    pub jitter_ms: Option<f64>,
    /// Seconds since the latest packet of any of its streams.
    pub last_packet_age_s: Option<f64>,
}

/// The status: the data path and every open window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// `ebpf` or `userspace`, with the interfaces (from `/metrics`).
    pub data_path: Option<String>,
    /// A cluster node's role (`active`, `standby`; from `/metrics`); `None`
    /// for a single relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// One row per open window.
    pub windows: Vec<Row>,
}

/// `rtp-relay status [--relay URL] [--interval D] [--json]`.
pub fn status(a: StatusArgs) -> ExitCode {
    let base = a.relay.trim_end_matches('/');
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let get = |path: &str| -> Result<String, String> {
        agent
            .get(format!("{base}{path}"))
            .call()
            .map_err(|e| format!("cannot read {base}{path}: {e}"))?
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("cannot read {base}{path}: {e}"))
    };
    let list = |text: String| {
        serde_json::from_str::<Value>(&text).map_err(|e| format!("{base} answered no list: {e}"))
    };
    let result = (|| {
        let before = list(get("/v1/reservations")?)?;
        std::thread::sleep(a.interval);
        let after = list(get("/v1/reservations")?)?;
        let metrics = get("/metrics").unwrap_or_default();
        Ok::<_, String>(Status {
            data_path: data_path(&metrics),
            role: role(&metrics),
            windows: rows(&before, &after, a.interval.as_secs_f64()),
        })
    })();
    match result {
        Ok(s) => {
            print_report(a.json, &s, || table(&s));
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, 1),
    }
}

/// The open windows of `after`, with rates over the `seconds` since `before`.
pub fn rows(before: &Value, after: &Value, seconds: f64) -> Vec<Row> {
    let reservations = |v: &Value| v["reservations"].as_array().cloned().unwrap_or_default();
    let earlier = reservations(before);
    reservations(after)
        .iter()
        .filter(|r| matches!(r["state"].as_str(), Some("active" | "degraded")))
        .map(|r| {
            let id = r["event_id"].as_str().unwrap_or_default();
            let sent = |r: &Value| {
                media(r)
                    .map(|m| m["packets_to_wowza"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            };
            let was = earlier.iter().find(|e| e["event_id"] == id).map_or(0, sent);
            let (lost, expected) = media(r).fold((0i64, 0u64), |(l, e), m| {
                (
                    l + m["media"]["lost"].as_i64().unwrap_or(0),
                    e + m["media"]["expected"].as_u64().unwrap_or(0),
                )
            });
            let jitter = media(r)
                .filter_map(|m| m["media"]["jitter_seconds"].as_f64())
                .fold(None, |a: Option<f64>, j| Some(a.map_or(j, |a| a.max(j))));
            let age = r["streams"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| [&s["rtp"], &s["rtcp"]])
                .filter_map(|p| p["seconds_since_last_packet"].as_f64())
                .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))));
            Row {
                group: r["group"].as_u64().unwrap_or_default(),
                event_id: id.to_string(),
                state: r["state"].as_str().unwrap_or_default().to_string(),
                packets_per_second: sent(r).saturating_sub(was) as f64 / seconds.max(1e-3),
                loss_percent: (expected > 0).then(|| lost.max(0) as f64 * 100.0 / expected as f64),
                jitter_ms: jitter.map(|j| j * 1e3),
                last_packet_age_s: age,
            }
        })
        .collect()
}

/// The media ports of a reservation view, with their figures.
fn media(r: &Value) -> impl Iterator<Item = &Value> {
    r["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["rtp"])
        .filter(|p| p.is_object())
}

/// The data path line of `/metrics`: `ebpf (lo)`, `userspace`.
pub fn data_path(metrics: &str) -> Option<String> {
    let (path, interfaces) = crate::control::exporter::data_path_of(metrics)?;
    Some(if interfaces.is_empty() {
        path
    } else {
        format!("{path} ({interfaces})")
    })
}

/// A cluster node's role from `/metrics`: the `rtp_relay_cluster_role`
/// series whose value is 1.
pub fn role(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("rtp_relay_cluster_role{role=\"")?;
        let (role, value) = rest.split_once("\"}")?;
        (value.trim() == "1").then(|| role.to_string())
    })
}

/// The status as a table.
pub fn table(s: &Status) -> String {
    let mut out = format!(
        "data path: {}\n",
        s.data_path.as_deref().unwrap_or("unknown")
    );
    if let Some(role) = &s.role {
        out.push_str(&format!("cluster role: {role}\n"));
    }
    if s.windows.is_empty() {
        out.push_str("no open window\n");
        return out;
    }
    out.push_str(&format!(
        "{:>5}  {:<32} {:<9} {:>9} {:>7} {:>10} {:>9}\n",
        "GROUP", "EVENT", "STATE", "PKT/S", "LOSS %", "JITTER ms", "LAST PKT"
    ));
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
    for r in &s.windows {
        out.push_str(&format!(
            "{:>5}  {:<32} {:<9} {:>9.0} {:>7} {:>10} {:>9}\n",
            r.group,
            r.event_id,
            r.state,
            r.packets_per_second,
            opt(r.loss_percent, ""),
            opt(r.jitter_ms, ""),
            r.last_packet_age_s
                .map_or("-".to_string(), |a| format!("{a:.1} s")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(id: &str, state: &str, sent: [u64; 2], lost: i64, age: f64) -> Value {
        json!({
            "event_id": id, "group": 14, "state": state,
            "streams": [
                {"stream": "primary_audio",
                 "rtp": {"port": 65416, "packets_to_wowza": sent[0], "seconds_since_last_packet": age,
                         "media": {"lost": lost, "expected": 1000, "jitter_seconds": 0.002}},
                 "rtcp": {"port": 65417, "packets_to_wowza": 3, "seconds_since_last_packet": age / 2.0}},
                {"stream": "primary_video",
                 "rtp": {"port": 65418, "packets_to_wowza": sent[1], "seconds_since_last_packet": age,
                         "media": {"lost": 0, "expected": 1000, "jitter_seconds": 0.004}}}
            ]
        })
    }

    #[test]
    fn a_row_per_open_window_with_rates_loss_jitter_and_age() {
        let before = json!({"reservations": [view("a", "active", [100, 200], 0, 0.1)]});
        let after = json!({"reservations": [
            view("a", "active", [147, 290], 20, 0.1),
            view("later", "scheduled", [0, 0], 0, 0.0),
            view("new", "degraded", [30, 0], -3, 0.4),
        ]});
        let rows = rows(&before, &after, 0.5);
        assert_eq!(rows.len(), 2, "the scheduled one has no open window");
        let a = &rows[0];
        assert_eq!(
            (a.group, a.event_id.as_str(), a.state.as_str()),
            (14, "a", "active")
        );
        // (47 + 90) packets in 0.5 s.
        assert_eq!(a.packets_per_second, 274.0);
        // 20 of 2000 expected.
        assert_eq!(a.loss_percent, Some(1.0));
        assert_eq!(a.jitter_ms, Some(4.0), "the worst stream's");
        assert_eq!(
            a.last_packet_age_s,
            Some(0.05),
            "the freshest port, RTCP included"
        );
        let n = &rows[1];
        assert_eq!(n.packets_per_second, 60.0, "new since the first reading");
        assert_eq!(n.loss_percent, Some(0.0), "duplicates are no negative loss");
        let t = table(&Status {
            data_path: Some("ebpf (lo)".into()),
            role: None,
            windows: rows,
        });
        assert!(t.starts_with("data path: ebpf (lo)\n"), "{t}");
        assert!(
            t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["14", "a", "active", "274", "1.00", "4.00", "0.1", "s"]),
            "{t}"
        );
    }

    #[test]
    fn the_data_path_comes_from_its_metric() {
        let m = "# HELP x\nrtp_relay_data_path_info{interfaces=\"lo,eth0\",path=\"ebpf\"} 1\n";
        assert_eq!(data_path(m).as_deref(), Some("ebpf (lo,eth0)"));
        let m = "rtp_relay_data_path_info{interfaces=\"\",path=\"userspace\"} 1\n";
        assert_eq!(data_path(m).as_deref(), Some("userspace"));
        assert_eq!(data_path("nothing"), None);
        let empty = table(&Status {
            data_path: None,
            role: None,
            windows: Vec::new(),
        });
        assert_eq!(empty, "data path: unknown\nno open window\n");
    }

    #[test]
    fn a_cluster_nodes_role_comes_from_its_metric() {
        let m = "rtp_relay_cluster_role{role=\"active\"} 0\nrtp_relay_cluster_role{role=\"standby\"} 1\n";
        assert_eq!(role(m).as_deref(), Some("standby"));
        assert_eq!(role("rtp_relay_bound_sockets 0\n"), None);
        let t = table(&Status {
            data_path: Some("userspace".into()),
            role: role(m),
            windows: Vec::new(),
        });
        assert_eq!(
            t,
            "data path: userspace\ncluster role: standby\nno open window\n"
        );
    }
}
