//! The control plane's edge under hostile or careless use, against the real
//! binary: metric labels an anonymous client cannot multiply, connections that
//! cannot starve the API or the data plane of file descriptors, a warning for
//! an API open beyond loopback without a token, and the fast path's pins that
//! would not outlive the process (README "Operating notes").

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The relay's control address, `host:port`.
fn control_addr(relay: &Relay) -> String {
    relay.url.trim_start_matches("http://").to_string()
}

/// Sends `request` raw on a new connection and returns the answer's status
/// line (empty when the connection closed without one).
fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_string()
}

#[test]
fn arbitrary_methods_add_no_metric_series() {
    let relay = Setup::new().start();
    let addr = control_addr(&relay);
    for i in 0..200u32 {
        let method = format!("M{i}X{:08X}", fastrand::u32(..));
        let path = ["/v1/reservations", "/healthz", "/nowhere"][i as usize % 3];
        let status = raw(
            &addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            status.starts_with("HTTP/1.1 4"),
            "{method} {path}: {status}"
        );
    }
    let metrics = relay.get("/metrics").text;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("rtp_relay_control_requests_total{"))
        .collect();
    assert!(
        series.len() <= 4,
        "{} series after 200 methods:\n{}",
        series.len(),
        series.join("\n")
    );
    let others: f64 = series
        .iter()
        .filter(|l| l.contains("method=\"other\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(others, 200.0, "{}", series.join("\n"));
}
