//! The traffic tools over loopback, no relay: gen → sink delivers every packet
//! in sequence, intact, at the profile's rates, and the sink's receiver reports
//! reach the generator; the CLI commands run and report.

mod common;
use common::{BIN, loopback_streams};
use rtp_relay::group::{GroupId, Plane};
use rtp_relay::traffic::generator;
use rtp_relay::traffic::profile::Profile;
use rtp_relay::traffic::sink::{self, Sink};
use serde_json::Value;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

/// The JSON report of a tool that ran; its stderr if it failed.
fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `rtp-relay sink sink_args… --json` and, `head_start` later,
/// `rtp-relay gen gen_args… --json`; both must succeed. Their reports: (gen's, sink's).
fn gen_into_sink(sink_args: &[&str], head_start: Duration, gen_args: &[&str]) -> (Value, Value) {
    let sink = Command::new(BIN)
        .arg("sink")
        .args(sink_args)
        .arg("--json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(head_start);
    let generated = Command::new(BIN)
        .arg("gen")
        .args(gen_args)
        .arg("--json")
        .output()
        .unwrap();
    let g = report(&generated);
    (g, report(&sink.wait_with_output().unwrap()))
}

#[test]
fn gen_to_a_sink_with_a_socket_per_port_delivers_everything_at_the_profile_rate() {
    let s = gen_to_sink(200, sink::Receive::PerPort);
    assert_eq!(s.receive, "per-port");
}

/// As root (`CAP_BPF`, `CAP_NET_ADMIN`) the sink reads every media port
/// through one steered socket, and tells each datagram's stream by its port.
#[test]
fn gen_to_a_steered_sink_delivers_everything_at_the_profile_rate() {
    if common::skip_root("steered sink") {
        return;
    }
    let s = gen_to_sink(204, sink::Receive::Auto);
    assert_eq!(
        (s.receive.as_str(), s.steering_refused.as_deref()),
        ("steered", None),
        "this test needs root; RTP_RELAY_SKIP_ROOT=1 skips it"
    );
    // Gone with the sink: a port of it is an ordinary port again.
    let port = GroupId::try_from(204).unwrap().port(0, Plane::Rtp) - 16384;
    let again = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"after", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        again.recv(&mut buf).unwrap(),
        5,
        "the steering was detached"
    );
}

/// A sink stopped the moment the last datagram was sent still counts every
/// datagram that reached its sockets: what is queued when the stop comes is
/// read, not reported lost (a starved sink thread once did).
#[test]
fn a_sink_stopped_at_once_counts_every_datagram_that_arrived() {
    for (group, receive) in [(214, sink::Receive::PerPort), (215, sink::Receive::Auto)] {
        let (_, streams) = loopback_streams([group], false);
        let sink = Sink::start(
            IpAddr::from([127, 0, 0, 1]),
            &streams,
            &Profile::echo360_live(),
            sink::Options {
                receive,
                ..Default::default()
            },
        )
        .unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0u64;
        for seq in 0..3000u16 {
            let s = &streams[usize::from(seq) % streams.len()];
            let mut packet = [0u8; 172];
            packet[0] = 0x80;
            packet[1] = 96;
            packet[2..4].copy_from_slice(&(seq / 3).to_be_bytes());
            packet[8..12].copy_from_slice(&u32::from(seq % 3).to_be_bytes());
            sender
                .send_to(&packet, ("127.0.0.1", s.media_port))
                .unwrap();
            sent += 1;
        }
        let r = sink.finish();
        assert_eq!(r.packets, sent, "{receive:?}: {r:?}");
    }
}

/// gen → sink over 4 webcasts from `first_group` (sink ports 16384 below, as
/// the shipped config forwards) for 7 s, asserting that every packet arrives,
/// intact, in order, at the profile's rates, with reports both ways; the
/// sink's report.
fn gen_to_sink(first_group: u32, receive: sink::Receive) -> sink::Report {
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let profile = Profile::echo360_live();
    let (targets, streams) = loopback_streams(first_group..first_group + 4, false);
    let sink = Sink::start(
        localhost,
        &streams,
        &profile,
        sink::Options {
            receive,
            ..Default::default()
        },
    )
    .unwrap();
    let options = generator::Options {
        targets,
        profile,
        duration: Duration::from_secs(7),
        sockets: 4,
        bind: localhost,
        threads: 2,
        cpus: Vec::new(),
        realtime: false,
    };
    let g = generator::run(&options, &AtomicBool::new(false), &AtomicU64::new(0)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = sink.finish();

    assert!(!g.fell_behind(), "{g:?}");
    assert_eq!(s.packets, g.packets, "every packet arrives");
    assert_eq!(
        (s.lost, s.duplicates, s.reordered, s.corrupt, s.foreign),
        (0, 0, 0, 0, 0)
    );
    // Per stream: A.1 counts every packet but the first (probation).
    for st in &s.streams {
        assert_eq!(st.lost, 0);
        assert!(st.packets > 0);
    }
    // Rates within 3 % of the profile: 12 streams, ~147 packets/s per group.
    let rate = g.packets as f64 / g.seconds;
    assert!(
        (rate / g.target_packets_per_second - 1.0).abs() < 0.03,
        "{rate} vs {}",
        g.target_packets_per_second
    );
    let bits = g.bytes as f64 * 8.0 / g.seconds;
    let expected_bits = 4.0 * (128_000.0 + 475_000.0 + 365_000.0);
    // Payload bitrates plus headers (12 bytes per packet).
    let with_headers = expected_bits + rate * 12.0 * 8.0;
    assert!(
        (bits / with_headers - 1.0).abs() < 0.05,
        "{bits} vs {with_headers}"
    );
    // Each stream sent a sender report in the first 5 s, and got receiver reports back.
    assert!(g.sender_reports >= 12, "{}", g.sender_reports);
    assert!(s.rtcp_packets >= 12);
    assert!(
        s.receiver_reports >= 12 && g.received_reports >= 12,
        "{} / {}",
        s.receiver_reports,
        g.received_reports
    );
    assert!(
        s.latency_ms.p50 > 0.0 && s.latency_ms.p50 < 50.0,
        "{:?}",
        s.latency_ms
    );
    s
}

#[test]
fn gen_and_sink_commands_run_and_report() {
    // Sink on group 210's ports −16384, gen toward them with the same offset.
    let (g, s) = gen_into_sink(
        &[
            "--groups",
            "210",
            "--layout",
            "audio-only",
            "--duration",
            "3s",
        ],
        Duration::from_millis(300),
        &[
            "--groups",
            "210",
            "--layout",
            "audio-only",
            "--port-offset",
            "-16384",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(s["packets"], g["packets"]);
    assert!(
        g["packets"].as_u64().unwrap() >= 90,
        "audio: ~47 packets/s for 2 s: {g}"
    );

    let bad = Command::new(BIN)
        .args(["gen", "--groups", "9000"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--groups"));
}

#[test]
fn a_port_in_use_or_a_cpu_out_of_reach_is_refused_by_name() {
    // Group 212's first sink port held by someone else: refused, steered or not.
    let port = GroupId::try_from(212).unwrap().port(0, Plane::Rtp) - 16384;
    let _holder = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    for receive in ["auto", "per-port"] {
        let out = Command::new(BIN)
            .args([
                "sink",
                "--groups",
                "212",
                "--duration",
                "1s",
                "--receive",
                receive,
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{receive}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("sink cannot bind 127.0.0.1:{port}")),
            "{receive}: {stderr}"
        );
    }
    // No machine has CPU 4095 for us: a bad argument (status 2), and the
    // tools say which CPUs they may use.
    for args in [
        &[
            "sink",
            "--groups",
            "213",
            "--duration",
            "1s",
            "--cpu",
            "4095",
        ][..],
        &[
            "gen",
            "--groups",
            "213",
            "--duration",
            "1s",
            "--cpus",
            "0,4095",
        ][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("CPU 4095 is not one this process may run on (it may use 0"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn loadtest_through_a_spawned_relay_reports_as_json() {
    // Groups 220–223 on the spawned relay; the sink 16384 ports lower.
    let out = Command::new(BIN)
        .args([
            "loadtest",
            "--groups",
            "4",
            "--first-group",
            "220",
            "--duration",
            "6s",
            // Never attach to this namespace's lo from a test.
            "--fast-path",
            "off",
            "--json",
        ])
        .output()
        .unwrap();
    let r = report(&out);
    assert_eq!(r["mode"], "spawn");
    assert_eq!(r["streams"], 12);
    assert!(r["sent"].as_u64().unwrap() > 6 * 500, "{r}");
    assert_eq!(
        r["received"], r["sent"],
        "nothing lost through the relay: {r}"
    );
    assert_eq!(
        (r["duplicates"].as_u64(), r["corrupt"].as_u64()),
        (Some(0), Some(0))
    );
    // Receiver reports went sink → relay → generator.
    assert!(r["receiver_reports_returned"].as_u64().unwrap() > 0, "{r}");
    let cpu = r["relay_cpu_us_per_packet"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 1000.0, "{cpu}");
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // The reservations were deleted and the relay stopped: the ports are free.
    for port in [65528 - 8 * 220, 65528 - 8 * 223 + 5] {
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", port as u16)).is_ok(),
            "{port}"
        );
    }
}

#[test]
fn loadtest_compares_a_spawned_relay_with_the_direct_path_as_json() {
    // Groups 240–241, one pair of runs: through a spawned relay, then direct.
    let out = Command::new(BIN)
        .args([
            "loadtest",
            "--compare",
            "direct",
            "--pairs",
            "1",
            "--groups",
            "2",
            "--first-group",
            "240",
            "--duration",
            "2s",
            "--fast-path",
            "off",
            "--json",
        ])
        .output()
        .unwrap();
    let c = report(&out);
    let pairs = c["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{c}");
    for (side, mode) in [("relay", "spawn"), ("direct", "direct")] {
        let r = &pairs[0][side];
        assert_eq!(r["mode"], mode, "{c}");
        assert_eq!(r["streams"], 6);
        // ~295 packets/s for 2 s.
        assert!(r["sent"].as_u64().unwrap() > 400, "{side}: {r}");
        assert_eq!(r["received"], r["sent"], "{side}: nothing lost: {r}");
        assert!(r["cores"].as_u64().unwrap() >= 1, "{r}");
        for share in ["box_idle_share", "tools_idle_share"] {
            let s = r[share].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&s), "{side} {share}: {s}");
        }
        assert!(r["tools_cpu_us_per_packet"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(
        pairs[0]["relay"]["relay_cpu_us_per_packet"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(pairs[0]["direct"]["relay_cpu_us_per_packet"].is_null());
    for figure in [
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_p999_ms",
        "latency_max_ms",
        "box_cpu_us_per_packet",
    ] {
        for side in ["relay", "direct"] {
            let median = c["medians"][side][figure].as_f64().unwrap();
            assert!(median > 0.0, "{side} {figure}: {c}");
        }
        let ratio = c["ratios"][figure].as_f64();
        assert!(
            ratio.is_some_and(|r| r.is_finite() && r > 0.0),
            "{figure}: {ratio:?}"
        );
    }
    // Nothing lost directly: no loss ratio, rather than a division by zero.
    assert_eq!(c["medians"]["direct"]["loss_ratio"], 0.0);
    assert!(c["ratios"]["loss_ratio"].is_null(), "{c}");

    // A ramp and a comparison do not mix.
    let both = Command::new(BIN)
        .args(["loadtest", "--ramp", "--compare", "direct"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(err.contains("--ramp") && err.contains("--compare"), "{err}");
}

#[test]
fn gen_and_sink_follow_a_relays_reservations() {
    use common::{Setup, at, reservation};
    let relay = Setup::new().start();
    relay.create(
        &reservation("tools", Some(230), "audio-video", &at(0), &at(600)),
        "active",
    );
    let (g, s) = gen_into_sink(
        &["--relay", &relay.url, "--duration", "4s"],
        Duration::from_millis(500),
        &["--relay", &relay.url, "--duration", "2s"],
    );
    assert_eq!(g["streams"], 2);
    assert_eq!(s["streams"].as_array().unwrap().len(), 2);
    assert!(g["packets"].as_u64().unwrap() > 100);
    assert_eq!(
        s["packets"], g["packets"],
        "everything went through the relay"
    );
    // The relay counted the same packets.
    let view = relay.get("/v1/reservations/tools").body;
    let sent: u64 = view["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["rtp"]["packets_to_wowza"].as_u64().unwrap())
        .sum();
    assert_eq!(serde_json::json!(sent), g["packets"]);
}
