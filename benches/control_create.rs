//! The control plane's create rate over HTTP: one client on loopback, one
//! keep-alive connection, against the real release binary. Every create is
//! validated, allocated, journaled with `fdatasync` and answered. Baseline in
//! the same run: `GET /healthz` on the same connection (HTTP round trip only).
//!
//! `cargo bench --bench control_create` (2000 creates; under `cargo test` a
//! 50-create smoke run).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = if full { 2000 } else { 50 };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nlisten = \"127.0.0.1:0\"\n[data]\nbind_address = \"127.0.0.1\"\nfast_path = \"off\"\n[wowza]\nport_offset = -16384\n[state]\npath = \"{}/state\"\n[log]\nlevel = \"info\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtp-relay"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.split("addr=").nth(1) {
                    break rest.split_whitespace().next().unwrap().to_string();
                }
            }
            _ => panic!("relay did not start"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{addr}");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );

    let health = measure(n, |_| {
        let r = agent.get(format!("{url}/healthz")).call().unwrap();
        assert_eq!(r.status(), 200);
    });
    let start = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let (s, e) = (
        start.format(&Rfc3339).unwrap(),
        (start + time::Duration::hours(1)).format(&Rfc3339).unwrap(),
    );
    let create = measure(n, |i| {
        // All in one hour: allocation passes every group already taken.
        let body = format!(
            r#"{{"event_id":"bench-{i}","layout":"audio-display-video","start":"{s}","end":"{e}","source":"192.0.2.10"}}"#
        );
        let r = agent
            .post(format!("{url}/v1/reservations"))
            .send(body)
            .unwrap();
        assert_eq!(r.status(), 201);
    });
    let _ = child.kill();
    let _ = child.wait();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("control plane, one client on loopback, {n} requests each, {cores} cores");
    println!(
        "{:<32} {:>12} {:>10} {:>10}",
        "request", "req/s", "p50 µs", "p99 µs"
    );
    for (name, r) in [
        ("GET /healthz (baseline)", &health),
        ("POST /v1/reservations", &create),
    ] {
        println!(
            "{:<32} {:>12.0} {:>10.0} {:>10.0}",
            name, r.rate, r.p50, r.p99
        );
    }
    println!(
        "create costs {:.1}x a bare round trip",
        health.rate / create.rate
    );
}

struct Rate {
    rate: f64,
    p50: f64,
    p99: f64,
}

fn measure(n: usize, mut f: impl FnMut(usize)) -> Rate {
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Rate {
        rate: n as f64 / total,
        p50: lat[n / 2],
        p99: lat[(n * 99 / 100).min(n - 1)],
    }
}
