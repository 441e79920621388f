//! Upgrade in place (docs/configuration.md, "Signals"): the relay runs from a
//! copy of the binary; mid-stream the test installs a new copy over it (a
//! rename, as installers do) and sends `SIGUSR2`. The same process goes on as
//! the new binary, on the same sockets: nothing is lost, RTCP included, and
//! the counters go on. A new binary that cannot run leaves the old relay
//! forwarding.

mod common;
use common::netns::*;
use common::*;
use nix::sys::signal::Signal;
use rtp_relay::group::{GroupId, Plane};
use rtp_relay::traffic::generator;
use rtp_relay::traffic::profile::Profile;
use rtp_relay::traffic::sink::{self, Sink};
use serde_json::Value;
use std::net::{IpAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A copy of the binary in `dir`, for the relay to run from and the test to replace.
fn installed(dir: &Path) -> PathBuf {
    let path = dir.join("rtp-relay");
    std::fs::copy(BIN, &path).unwrap();
    path
}

/// Installs `from` at `path` as installers do: a copy beside it, renamed
/// over it (a running binary's file cannot be written to).
fn install(from: &Path, path: &Path) {
    let next = path.with_extension("next");
    std::fs::copy(from, &next).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// The time of the first log line containing `needle`, when one does.
fn logged_at(log: &str, needle: &str) -> Option<time::OffsetDateTime> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?;
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()
}

/// Sends `SIGUSR2` to a relay whose binary was replaced and waits until the
/// new process forwards again; its log line, and the milliseconds from the
/// signal's log line to it.
fn upgrade(relay: &Relay) -> (String, f64) {
    const DONE: &str = "upgrade: forwarding again on the handed-over sockets";
    relay.signal(Signal::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(20), || relay.log().contains(DONE)),
        "no upgrade:\n{}",
        relay.log()
    );
    let log = relay.log();
    let line = log.lines().find(|l| l.contains(DONE)).unwrap().to_string();
    let from = logged_at(&log, "SIGUSR2: upgrading in place").unwrap();
    let to = logged_at(&log, DONE).unwrap();
    (line, (to - from).as_seconds_f64() * 1e3)
}

/// The paused time the new process logged.
fn paused_ms(line: &str) -> f64 {
    line.split("paused_ms=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The inode of the binary the process `pid` runs.
fn running_inode(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// Reservation `id`'s streams as the API shows them.
fn streams(relay: &Relay, id: &str) -> Vec<Value> {
    relay.get(&format!("/v1/reservations/{id}")).body["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sums `plane.field` over the streams of the reservations `ids`.
fn total(relay: &Relay, ids: &[String], plane: &str, field: &str) -> u64 {
    ids.iter()
        .flat_map(|id| streams(relay, id))
        .map(|s| s[plane][field].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn an_upgrade_in_place_loses_nothing_on_the_userspace_path() {
    let setup = Setup::new();
    let exe = installed(setup.dir.path());
    let mut relay = Relay::start_program(&exe, &setup.write_config(), None, |_| {})
        .unwrap_or_else(|log| panic!("relay did not start:\n{log}"));
    let pid = relay.pid();
    let old_binary = running_inode(pid);
    let groups = [230u32, 231];
    let ids: Vec<String> = groups.iter().map(|g| format!("upgrade-{g}")).collect();
    for (g, id) in groups.iter().zip(&ids) {
        let body = reservation(
            id,
            Some(*g as u16),
            "audio-display-video",
            &at(-60),
            &at(600),
        );
        relay.create(&body, "active");
    }

    // gen → relay → sink (16384 below, as the setup forwards), both ways for RTCP.
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let profile = Profile::echo360_live();
    let (targets, wanted) = loopback_streams(groups, true);
    let sink = Sink::start(localhost, &wanted, &profile, sink::Options::default()).unwrap();
    let options = generator::Options {
        targets,
        profile,
        // Past the sink's first receiver reports (5 s), well before its next.
        duration: Duration::from_secs(7),
        sockets: 4,
        bind: localhost,
        threads: 1,
        cpus: Vec::new(),
        realtime: false,
    };
    let generating = std::thread::spawn(move || {
        generator::run(&options, &AtomicBool::new(false), &AtomicU64::new(0)).unwrap()
    });

    std::thread::sleep(Duration::from_millis(2500));
    install(Path::new(BIN), &exe);
    let (line, signal_to_reading_ms) = upgrade(&relay);
    let g = generating.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = sink.finish();

    assert!(
        line.contains("sockets=12"),
        "every socket handed over: {line}"
    );
    assert_eq!(relay.pid(), pid);
    let new_binary = std::fs::metadata(&exe).unwrap().ino();
    assert_ne!(new_binary, old_binary);
    assert_eq!(running_inode(pid), new_binary, "it runs the new binary");

    assert!(g.packets > 1500, "{g:?}");
    assert_eq!(s.packets, g.packets, "every packet arrives");
    assert_eq!(
        (s.lost, s.duplicates, s.reordered, s.corrupt, s.foreign),
        (0, 0, 0, 0, 0),
        "no sequence gap"
    );
    assert!(
        s.receiver_reports >= 6,
        "one per stream at least: {}",
        s.receiver_reports
    );
    assert_eq!(
        g.received_reports, s.receiver_reports,
        "every receiver report reaches the generator"
    );
    // Continuous, not restarted: the relay's counts are everything sent.
    let settled = || {
        total(&relay, &ids, "rtp", "packets_to_wowza") == g.packets
            && total(&relay, &ids, "rtcp", "packets_to_appliance") == s.receiver_reports
    };
    assert!(
        wait_until(Duration::from_secs(2), settled),
        "relay: rtp {} of {}, rtcp to the appliance {} of {}",
        total(&relay, &ids, "rtp", "packets_to_wowza"),
        g.packets,
        total(&relay, &ids, "rtcp", "packets_to_appliance"),
        s.receiver_reports
    );
    assert_eq!(
        total(&relay, &ids, "rtcp", "packets_to_wowza"),
        g.sender_reports
    );
    for st in ids.iter().flat_map(|id| streams(&relay, id)) {
        assert_eq!(st["rtp"]["media"]["lost"], 0, "{st}");
    }
    let metrics = relay.get("/metrics").text;
    assert!(
        metrics.contains("rtp_relay_"),
        "the API is served on the same listener"
    );
    eprintln!(
        "upgrade in place, userspace: SIGUSR2 to reading {signal_to_reading_ms:.1} ms, sockets unread {:.1} ms; sink latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms over {} packets",
        paused_ms(&line),
        s.latency_ms.p50,
        s.latency_ms.p99,
        s.latency_ms.p999,
        s.latency_ms.max,
        s.packets
    );

    // SIGTERM still stops promptly.
    relay.signal(Signal::SIGTERM);
    let status = relay
        .wait(Duration::from_secs(10))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_new_binary_that_cannot_run_leaves_the_relay_forwarding() {
    let setup = Setup::new();
    let exe = installed(setup.dir.path());
    let relay = Relay::start_program(&exe, &setup.write_config(), None, |_| {})
        .unwrap_or_else(|log| panic!("relay did not start:\n{log}"));
    relay.create(
        &reservation("broken", Some(232), "audio-only", &at(-60), &at(600)),
        "active",
    );
    let port = GroupId::try_from(232).unwrap().port(0, Plane::Rtp);
    let appliance = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wowza = UdpSocket::bind(("127.0.0.1", port - 16384)).unwrap();
    wowza
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    appliance
        .send_to(&rtp(5, 0, 100), ("127.0.0.1", port))
        .unwrap();
    assert_eq!(wowza.recv(&mut buf).unwrap(), 112);

    let broken = setup.dir.path().join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\necho 'not a relay' >&2\nexit 1\n").unwrap();
    install(&broken, &exe);
    relay.signal(Signal::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .log()
            .contains("SIGUSR2: no upgrade, this relay carries on")),
        "{}",
        relay.log()
    );
    assert!(
        relay.log().contains("not a relay"),
        "the check's error is logged"
    );
    assert!(
        !setup.state_path().with_extension("handover").exists(),
        "nothing handed over"
    );
    for seq in 1..11 {
        appliance
            .send_to(&rtp(5, seq, 100), ("127.0.0.1", port))
            .unwrap();
        assert_eq!(wowza.recv(&mut buf).unwrap(), 112, "still forwarding");
    }
    let counted = || streams(&relay, "broken")[0]["rtp"]["packets_to_wowza"] == 11;
    assert!(
        wait_until(Duration::from_secs(2), counted),
        "{:?}",
        streams(&relay, "broken")
    );
}

/// Group 0's control port (audio-only: media on `base(0)`, 65528).
const CONTROL: u16 = 65529;

#[test]
fn an_upgrade_in_place_loses_nothing_on_the_fast_path() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    let exe = installed(net.setup.dir.path());
    let relay = Relay::start_program(
        &exe,
        &net.setup.write_config(),
        Some(&net.relay_ns()),
        |_| {},
    )
    .unwrap_or_else(|log| panic!("relay did not start:\n{log}"));
    assert!(relay.log().contains("path=\"ebpf\""), "{}", relay.log());
    let pid = relay.pid();
    let Lane {
        appliance,
        media,
        wowza,
    } = net.lane(&relay, "steady", 0);
    let control = relay_port(CONTROL);
    let appliance_control = net.sender(APPLIANCE);
    let wowza_control = net.wowza(CONTROL);
    // The threads below end once quiet this long.
    for s in [&wowza, &appliance_control, &wowza_control] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }

    // 1500 RTP packets over 3 s, a sender report every 20 ms answered by a
    // receiver report; the upgrade 1 s in.
    const COUNT: u16 = 1500;
    let counter = std::thread::spawn(move || {
        let mut got = 0u32;
        let mut buf = [0u8; 2048];
        while got < u32::from(COUNT) && wowza.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    let reports_at_wowza = Arc::new(AtomicU32::new(0));
    let answered = reports_at_wowza.clone();
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = wowza_control.recv_from(&mut buf) {
            answered.fetch_add(1, Ordering::Relaxed);
            wowza_control
                .send_to(&receiver_report(0x5eed, 0), from)
                .unwrap();
        }
    });
    let reading = appliance_control.try_clone().unwrap();
    let answers = std::thread::spawn(move || {
        let mut n = 0u32;
        let mut buf = [0u8; 2048];
        while reading.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        let mut reports = 0u32;
        for seq in 0..COUNT {
            let due = start + Duration::from_millis(2) * u32::from(seq);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            appliance.send_to(&rtp(0x5eed, seq, 160), media).unwrap();
            if seq % 10 == 0 {
                appliance_control
                    .send_to(&sender_report(0x5eed), control)
                    .unwrap();
                reports += 1;
            }
        }
        reports
    });
    std::thread::sleep(Duration::from_millis(1000));
    install(Path::new(BIN), &exe);
    let (line, signal_to_reading_ms) = upgrade(&relay);
    let reports = sender.join().unwrap();
    let got = counter.join().unwrap();
    answering.join().unwrap();
    let answers = answers.join().unwrap();

    assert!(line.contains("sockets=2"), "{line}");
    assert_eq!(relay.pid(), pid);
    assert_eq!(running_inode(pid), std::fs::metadata(&exe).unwrap().ino());
    assert!(relay.log().contains("path=\"ebpf\""));
    assert_eq!(got, u32::from(COUNT), "no RTP packet lost");
    assert_eq!(
        reports_at_wowza.load(Ordering::Relaxed),
        reports,
        "no sender report lost"
    );
    assert_eq!(answers, reports, "no receiver report lost");
    let s = relay.get("/v1/reservations/steady").body["streams"][0].clone();
    assert_eq!(
        s["rtp"]["packets_to_wowza"], COUNT,
        "counters continue: {s}"
    );
    assert_eq!(s["rtp"]["media"]["lost"], 0, "{s}");
    assert_eq!(s["rtcp"]["packets_to_wowza"], reports, "{s}");
    assert_eq!(s["rtcp"]["packets_to_appliance"], answers, "{s}");
    eprintln!(
        "upgrade in place, fast path: SIGUSR2 to reading {signal_to_reading_ms:.1} ms, sockets unread {:.1} ms",
        paused_ms(&line)
    );
}
