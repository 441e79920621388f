//! The command line (docs/cli.md) as an operator meets it: exact output, one-line
//! errors, exit status 2 for bad arguments and configuration.

mod common;
use common::BIN;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

/// `dir/relay.toml`: the control plane on `listen`, the fast path off, state
/// in `dir`, then `extra`.
fn minimal_config(dir: &Path, listen: &str, extra: &str) -> PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "[control]\nlisten = \"{listen}\"\n[data]\nfast_path = \"off\"\n[wowza]\nport_offset = -16384\n[state]\npath = \"{}/state\"\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn ports_prints_the_spec_table() {
    let out = run(&["ports", "14", "--layout", "audio-dual-video"]);
    assert!(out.status.success());
    let expected = "\
Primary audio stream      65416
Primary audio control     65417
Secondary video stream    65418
Secondary video control   65419
Primary video stream      65420
Primary video control     65421
Unused                    65422
Unused                    65423
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn ports_json_has_the_same_rows() {
    let out = run(&["ports", "0", "--layout", "audio-display-video", "--json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ports = doc["ports"].as_array().unwrap();
    let rows: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["role"].as_str().unwrap_or("-"),
                p["plane"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (65528, "primary_audio", "rtp"),
            (65529, "primary_audio", "rtcp"),
            (65530, "primary_display", "rtp"),
            (65531, "primary_display", "rtcp"),
            (65532, "primary_video", "rtp"),
            (65533, "primary_video", "rtcp"),
            (65534, "-", "rtp"),
            (65535, "-", "rtcp"),
        ]
    );
    assert_eq!(doc["base"], 65528);
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    assert!(one_line_error(&run(&["ports", "8064"])).contains("GROUP: group 8064 is out of range"));
    assert!(one_line_error(&run(&["ports", "-1"])).contains("-1"));
    assert!(one_line_error(&run(&["ports", "14", "--layout", "triple"])).contains("--layout"));
    assert!(one_line_error(&run(&["ports"])).contains("GROUP"));
    assert!(one_line_error(&run(&[])).contains("a command is required"));
    assert!(one_line_error(&run(&["fly"])).contains("fly"));
    assert!(one_line_error(&run(&["run", "--bogus"])).contains("--bogus"));
    assert!(run(&["--help"]).status.success());
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
    let out = run(&["check-config", "--config", shipped]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("port_offset = -16384") && text.contains("lead = \"30m\""),
        "{text}"
    );
    assert!(text.contains("group 0 -> 127.0.0.1:49144"), "{text}");
}

#[test]
fn bad_configuration_is_one_line_naming_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[wowza]\nport_offset = -16384\n[data]\nmax_groupz = 3\n",
            "data.max_groupz: unknown key",
        ),
        (
            "[wowza]\nport_offset = -16384\n[schedule]\nlead = \"soon\"\n",
            "schedule.lead",
        ),
        (
            "[wowza]\nport_offset = -16384\n[control]\nlisten = \"nowhere\"\n",
            "control.listen",
        ),
        ("[wowza]\nport_offset = 0\n", "wowza.address/port_offset"),
        (
            "[wowza]\nport_offset = -16384\n[control]\ntoken_file = \"/nonexistent/token\"\n",
            "control.token_file",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        for cmd in ["check-config", "run"] {
            let err = one_line_error(&run(&[cmd, "--config", path]));
            assert!(err.contains(key), "{cmd} {text:?}: {err}");
        }
    }
    let err = one_line_error(&run(&["run", "--config", "/nonexistent.toml"]));
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[test]
fn a_busy_control_port_is_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = minimal_config(dir.path(), &busy.local_addr().unwrap().to_string(), "");
    let out = run(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control.listen") && err.contains("Address already in use"),
        "{err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = minimal_config(dir.path(), "127.0.0.1:0", "[log]\nformat = \"json\"\n");
    let mut child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().take(3) {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        seen.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if v["fields"]["addr"].is_string() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|m| m == "control plane listening"),
        "{seen:?}"
    );
}

/// `rtp-relay status` against a running relay: a line for the open window
/// with its packet rate, and nothing for a scheduled one.
#[test]
fn status_shows_every_open_window_with_its_rate() {
    use common::{Setup, at, base, reservation, rtp};
    let group = 640;
    let relay = Setup::new().start();
    relay.create(
        &reservation("status-live", Some(group), "audio-only", &at(0), &at(600)),
        "active",
    );
    relay.create(
        &reservation(
            "status-later",
            Some(641),
            "audio-only",
            &at(7200),
            &at(9000),
        ),
        "scheduled",
    );
    // 100 packets a second into the open window for 3 s, while status reads.
    let sender = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in 0..300u16 {
            s.send_to(&rtp(9, seq, 100), ("127.0.0.1", base(group)))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = run(&[
        "status",
        "--relay",
        &relay.url,
        "--interval",
        "1s",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["data_path"], "userspace", "{s}");
    let windows = s["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{s}");
    let w = &windows[0];
    assert_eq!(
        (
            w["group"].as_u64(),
            w["event_id"].as_str(),
            w["state"].as_str()
        ),
        (Some(u64::from(group)), Some("status-live"), Some("active"))
    );
    let rate = w["packets_per_second"].as_f64().unwrap();
    assert!(
        (60.0..=110.0).contains(&rate),
        "about 100 packets/s: {rate}"
    );
    assert_eq!(w["loss_percent"], 0.0);
    assert!(w["last_packet_age_s"].as_f64().unwrap() < 1.0, "{w}");
    let table = run(&["status", "--relay", &relay.url, "--interval", "100ms"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("data path: userspace\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("status-live") && l.contains("active")),
        "{text}"
    );
    assert!(!text.contains("status-later"), "{text}");
    sender.join().unwrap();
    // No relay there: status 1, naming where it looked.
    let none = run(&[
        "status",
        "--relay",
        "http://127.0.0.1:9",
        "--interval",
        "10ms",
    ]);
    assert_eq!(none.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains("cannot read http://127.0.0.1:9/v1/reservations"),
        "{stderr}"
    );
}
