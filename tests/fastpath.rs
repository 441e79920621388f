//! docs/forwarding.md on the kernel fast path, over real networks: every test builds its
//! own network namespaces ([`common::netns`]: appliance ↔ relay ↔ Wowza, joined
//! by veth pairs, addresses from 198.18.0.0/15), runs the real binary in the
//! relay's with `fast_path = "ebpf"`, and removes every namespace, link and pin
//! it made, also when it fails. Nothing is attached in the machine's own
//! namespace.
//!
//! The kernel's share is made visible by stopping the relay process
//! (SIGSTOP): whatever still arrives was forwarded by the program.
//!
//! Where the fast path cannot load these tests fail; `RTP_RELAY_SKIP_EBPF=1`
//! (or `RTP_RELAY_SKIP_NETNS=1`) skips them explicitly.

mod common;
use common::netns::*;
use common::*;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

/// Group 0's control port (audio-only: media on `base(0)`, 65528).
const CONTROL: u16 = 65529;

#[test]
fn remote_destination_strict_policy_every_rule_on_the_fast_path() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    let relay = net.start();
    let metrics = relay.get("/metrics").text;
    assert!(
        metrics.contains("rtp_relay_data_path_info{interfaces=\"vra\",path=\"ebpf\"} 1"),
        "{metrics}"
    );
    let lane = net.lane(&relay, "strict", 0);
    let stranger = net.sender(STRANGER);
    let wowza_control = net.wowza(CONTROL);
    let (media, control) = (lane.media, relay_port(CONTROL));

    // Byte for byte, from the relay's port, with the relay process running…
    let len = |seq: u16| 100 + usize::from(seq) * 7;
    let mut sent = lane.send(0xabc, 0..20, len);
    // …and with it stopped: only the kernel can forward these.
    freeze(&relay);
    sent.extend(lane.send(0xabc, 20..40, len));
    let got = lane.drain();
    relay.signal(Signal::SIGCONT);
    assert_eq!(got.len(), sent.len(), "every packet reaches Wowza");
    for ((data, from), p) in got.iter().zip(&sent) {
        assert_eq!(data, p, "forwarded unchanged");
        assert_eq!(*from, media, "from the relay's port");
    }

    // Strangers, malformed and oversize packets never reach Wowza.
    send_rtp(&stranger, media, 0xabc, 40..41, |_| 100);
    lane.appliance.send_to(&[0x40, 96, 0, 41], media).unwrap();
    lane.send(0xabc, 42..43, |_| 1100);
    assert!(lane.drain().is_empty(), "nothing else arrives");

    // RTCP: the sender report goes to Wowza — by the kernel (the relay
    // stopped), counted — and its receiver report back to the appliance (by
    // userspace: Wowza's side, vrw, is not among the program's interfaces).
    freeze(&relay);
    lane.appliance
        .send_to(&sender_report(0xabc), control)
        .unwrap();
    let (sr, from) = wowza_control.recv_from(&mut [0u8; 64]).unwrap();
    relay.signal(Signal::SIGCONT);
    assert_eq!((sr, from), (28, control));
    let rr = receiver_report(0xabc, 7);
    wowza_control.send_to(&rr, control).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = lane.appliance.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&rr[..], control));
    let c = &relay.get("/v1/reservations/strict").body["streams"][0]["rtcp"];
    assert_eq!(c["packets_to_wowza"], 1, "{c}");
    assert_eq!(c["packets_to_appliance"], 1, "{c}");
    assert_eq!(c["control"]["sender_reports"], 1, "{c}");
    assert_eq!(c["control"]["wowza_cumulative_lost"], 7, "{c}");
    assert_eq!(c["control"]["wowza_fraction_lost"], 51.0 / 256.0, "{c}");
    // A malformed compound still goes up to userspace, which drops it.
    lane.appliance.send_to(&[0x80, 200, 0, 9], control).unwrap();
    let control = || relay.get("/v1/reservations/strict").body["streams"][0]["rtcp"].clone();
    assert!(wait_until(Duration::from_secs(3), || control()["dropped"]
        ["malformed"]
        == 1));
    assert_eq!(control()["packets_to_wowza"], 1);

    // The API's figures: the kernel's and userspace's together.
    let s = media_stats(&relay, "strict");
    let bytes: usize = sent.iter().map(Vec::len).sum();
    assert_eq!(s["packets_to_wowza"], 40, "{s}");
    assert_eq!(s["bytes_to_wowza"], bytes, "{s}");
    assert_eq!(s["dropped"]["unknown_source"], 1, "{s}");
    assert_eq!(s["dropped"]["malformed"], 1, "{s}");
    assert_eq!(s["dropped"]["oversize"], 1, "{s}");
    assert_eq!(s["media"]["ssrc"], 0xabc, "{s}");
    assert_eq!(s["media"]["extended_highest_sequence"], 39, "{s}");
    assert_eq!(s["media"]["lost"], 0, "{s}");
    assert_eq!(
        s["appliance"],
        lane.appliance.local_addr().unwrap().to_string()
    );

    // A freed group is closed to the kernel before the API answers.
    assert_eq!(relay.delete("/v1/reservations/strict").status, 200);
    lane.send(0xabc, 43..44, |_| 100);
    assert!(lane.drain().is_empty(), "a freed group forwards nothing");
}

/// The UDP checksum the program writes is right whichever way the kernel
/// holds it. Sent on the appliance's host through veth, a packet carries
/// only the pseudo-header's sum (CHECKSUM_PARTIAL); sent with the offload
/// off, a complete one. With the relay's egress offload off, the kernel
/// completes a partial sum from what the program left before the packet
/// leaves, and Wowza's stack checks every checksum: a wrong one is dropped
/// there and counted.
#[test]
fn the_udp_checksum_is_right_whether_or_not_the_sender_left_it_to_the_device() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    net.tx_checksum_off(&net.relay_ns(), "vrw");
    let relay = net.start();
    let lane = net.lane(&relay, "sums", 0);
    // Only the kernel forwards: the relay process is stopped.
    freeze(&relay);
    let mut sent = lane.send(0xabc, 0..20, |seq| 100 + usize::from(seq) * 13);
    net.tx_checksum_off(&net.appliance_ns(), "va");
    sent.extend(lane.send(0xabc, 20..40, |seq| 100 + usize::from(seq) * 13));
    let got = lane.drain();
    relay.signal(Signal::SIGCONT);
    assert_eq!(net.udp_checksum_errors(&net.wowza_ns()), 0);
    let got: Vec<Vec<u8>> = got.into_iter().map(|(data, _)| data).collect();
    assert_eq!(got, sent, "every packet reaches Wowza, unchanged");
    assert_eq!(media_stats(&relay, "sums")["packets_to_wowza"], 40);
}

#[test]
fn local_destination_latch_and_any_on_the_fast_path() {
    if skip_fast_path() {
        return;
    }
    let mut net = Net::with_fast_path();
    // Wowza on the relay's own host (its other address): the kernel hands the
    // packets to the local stack, which takes them with lo's accept_local.
    net.lo_settings("1", "0");
    net.setup.wowza = wowza_at(RELAY_W);
    let relay = net.start();
    reserve(&relay, "latch", 0, r#", "source_policy": "latch""#);
    reserve(&relay, "any", 1, r#", "source_policy": "any""#);
    let first = net.sender(APPLIANCE);
    let second = net.sender(STRANGER);
    let (latch_media, any_media) = (relay_port(base(0)), relay_port(base(1)));
    let wowza_latch = net.socket(&net.relay_ns(), RELAY_W, base(0));
    let wowza_any = net.socket(&net.relay_ns(), RELAY_W, base(1));

    // The first sender is latched — by the kernel, the relay being stopped.
    freeze(&relay);
    for seq in 0..10u16 {
        first.send_to(&rtp(7, seq, 200), latch_media).unwrap();
        first.send_to(&rtp(8, seq, 200), any_media).unwrap();
        second.send_to(&rtp(9, seq, 200), any_media).unwrap();
    }
    let latched = drain(&wowza_latch);
    let any = drain(&wowza_any);
    relay.signal(Signal::SIGCONT);
    assert_eq!(latched.len(), 10, "the latched sender's packets arrive");
    for (data, from) in &latched {
        assert_eq!(data[8..12], 7u32.to_be_bytes());
        assert_eq!(*from, latch_media, "from the relay's port");
    }
    assert_eq!(any.len(), 20, "any: both senders arrive");

    // A second sender after latching never arrives.
    send_rtp(&second, latch_media, 9, 10..15, |_| 200);
    assert!(drain(&wowza_latch).is_empty(), "the late sender is dropped");
    let s = media_stats(&relay, "latch");
    assert_eq!(s["packets_to_wowza"], 10, "{s}");
    assert_eq!(s["dropped"]["unknown_source"], 5, "{s}");
    assert_eq!(
        s["appliance"],
        first.local_addr().unwrap().to_string(),
        "{s}"
    );
}

#[test]
fn wowza_on_127_0_0_1_goes_kernel_side_only_with_lo_accepting_it() {
    if skip_fast_path() {
        return;
    }
    let mut net = Net::with_fast_path();
    net.setup.wowza = wowza_at("127.0.0.1");
    let relay = net.start();
    // Read when a group is bound: group 0 without, group 1 with.
    net.lo_settings("0", "0");
    reserve(&relay, "plain", 0, &from_appliance());
    net.lo_settings("1", "1");
    reserve(&relay, "localnet", 1, &from_appliance());
    let appliance = net.sender(APPLIANCE);
    let (plain, localnet) = (relay_port(base(0)), relay_port(base(1)));
    let wowza_plain = net.socket(&net.relay_ns(), "127.0.0.1", base(0));
    let wowza_localnet = net.socket(&net.relay_ns(), "127.0.0.1", base(1));

    freeze(&relay);
    for seq in 0..10u16 {
        appliance.send_to(&rtp(1, seq, 300), plain).unwrap();
        appliance.send_to(&rtp(2, seq, 300), localnet).unwrap();
    }
    let kernel_plain = drain(&wowza_plain);
    let kernel_localnet = drain(&wowza_localnet);
    relay.signal(Signal::SIGCONT);
    assert_eq!(
        kernel_localnet.len(),
        10,
        "accept_local + route_localnet: the kernel forwards"
    );
    assert!(
        kernel_plain.is_empty(),
        "without it the kernel leaves them to userspace"
    );
    let user_plain = drain(&wowza_plain);
    assert_eq!(user_plain.len(), 10, "which forwards them once it runs");
    for (data, from) in user_plain.iter().chain(&kernel_localnet) {
        assert_eq!(data.len(), 312);
        assert_eq!(
            from.ip(),
            RELAY_A.parse::<std::net::IpAddr>().unwrap(),
            "from the bind address"
        );
    }
}

#[test]
fn a_killed_relay_loses_nothing_and_its_restart_keeps_counting() {
    if skip_fast_path() {
        return;
    }
    let mut net = Net::with_fast_path();
    // Both sides: Wowza's RTCP comes in on vrw.
    net.setup.data += "fast_path_interfaces = [\"vra\", \"vrw\"]\n";
    let relay = net.start();
    let Lane {
        appliance,
        media,
        wowza,
    } = net.lane(&relay, "steady", 0);
    // 1500 packets over 3 s; the relay dies 0.5 s in and is back later.
    const COUNT: u16 = 1500;
    let counter = std::thread::spawn(move || {
        let mut got = 0u32;
        let end = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        wowza
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        while got < u32::from(COUNT) && Instant::now() < end {
            if wowza.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        got
    });
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..COUNT {
            let due = start + Duration::from_millis(2) * u32::from(seq);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            appliance.send_to(&rtp(0x5eed, seq, 160), media).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    relay.crash();
    assert!(net.pins().join("rules").exists(), "the maps stay pinned");
    // RTCP, too, goes both ways while no relay process runs.
    let (appliance_rtcp, wowza_control) = (net.sender(APPLIANCE), net.wowza(CONTROL));
    let control = relay_port(CONTROL);
    let (sr, rr) = (sender_report(0x5eed), receiver_report(0x5eed, 0));
    let mut buf = [0u8; 64];
    appliance_rtcp.send_to(&sr, control).unwrap();
    let (n, from) = wowza_control.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&sr[..], control),
        "RTCP with the relay dead"
    );
    wowza_control.send_to(&rr, control).unwrap();
    let (n, from) = appliance_rtcp.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&rr[..], control), "and back");
    std::thread::sleep(Duration::from_millis(300));
    let relay = net.start();
    sender.join().unwrap();
    let got = counter.join().unwrap();
    assert_eq!(
        got,
        u32::from(COUNT),
        "zero packets lost across kill -9 and restart"
    );
    let s = media_stats(&relay, "steady");
    assert_eq!(s["packets_to_wowza"], COUNT, "counters continue: {s}");
    assert_eq!(s["media"]["lost"], 0, "{s}");
    assert_eq!(s["media"]["extended_highest_sequence"], COUNT - 1, "{s}");
    let c = &relay.get("/v1/reservations/steady").body["streams"][0]["rtcp"];
    assert_eq!(c["control"]["sender_reports"], 1, "counted while dead: {c}");
    assert_eq!(c["packets_to_appliance"], 1, "{c}");

    // SIGTERM detaches and removes every pin.
    let mut relay = relay;
    relay.signal(Signal::SIGTERM);
    assert!(
        relay.wait(Duration::from_secs(10)).is_some(),
        "stops on SIGTERM"
    );
    assert!(!net.pins().exists(), "pins removed on SIGTERM");
}

#[test]
fn the_stream_watch_logs_what_only_the_kernel_saw() {
    if skip_fast_path() {
        return;
    }
    let mut net = Net::with_fast_path();
    net.setup.extra = "[stream]\nstall_timeout = \"1s\"\n".into();
    let relay = net.start();
    let lane = net.lane(&relay, "watched", 0);
    let stranger = net.sender(STRANGER);
    // Forwarded and refused by the program alone: the relay's sockets see
    // none of these, so every line below comes from the kernel's state.
    let sent = lane.send(0xabc, 0..20, |_| 100);
    send_rtp(&stranger, lane.media, 0xabc, 0..5, |_| 100);
    assert_eq!(
        lane.drain().len(),
        sent.len(),
        "the appliance's packets arrive"
    );
    let s = media_stats(&relay, "watched");
    assert_eq!(s["packets_to_wowza"], 20, "{s}");
    assert_eq!(s["dropped"]["unknown_source"], 5, "{s}");
    // The encoder restarts: a new SSRC.
    let log = assert_stream_life_logged(&relay, |seq| {
        lane.send(0xdef, seq..seq + 1, |_| 100);
    });
    let line = |what: &str| log.lines().find(|l| l.contains(what)).unwrap().to_owned();
    assert!(line("stream started").contains("ssrc=2748"), "{log}");
    assert!(
        line("packets dropped").contains("unknown_source=5"),
        "{log}"
    );
    let changed = line("SSRC changed");
    assert!(
        changed.contains("from=2748") && changed.contains("to=3567"),
        "{changed}"
    );
}

/// `nsenter` into the relay namespace, then `setpriv` without CAP_BPF and
/// CAP_SYS_ADMIN, then the binary.
/// `timeout` bounds a command expected to exit: a relay that does start (the
/// drop failed) is stopped and fails the test. Without it, nsenter and setpriv
/// exec, so the child is the relay itself.
fn unprivileged(net: &Net, bounded: bool, args: &[&str]) -> Command {
    let mut c = Command::new(if bounded { "timeout" } else { "nsenter" });
    if bounded {
        c.args(["20", "nsenter"]);
    }
    c.arg(format!("--net={}", net.relay_ns().display()))
        .args(["setpriv", "--bounding-set", "-bpf,-sys_admin", "--", BIN])
        .args(args)
        .stdout(std::process::Stdio::piped());
    c
}

#[test]
fn modes_name_the_missing_capability() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    let dir = net.setup.dir.path();
    let config = |mode: &str| {
        let path = dir.join(format!("{mode}.toml"));
        std::fs::write(
            &path,
            format!(
                "[control]\nlisten = \"127.0.0.1:0\"\n[data]\nbind_address = \"{RELAY_A}\"\nfast_path = \"{mode}\"\n[state]\npath = \"{}\"\n",
                dir.join(mode).display()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let (ebpf, auto) = (config("ebpf"), config("auto"));

    // "ebpf": a one-line refusal naming the capability, and check-config says so.
    let out = unprivileged(&net, true, &["run", "--config", &ebpf])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("fast_path = \"ebpf\"") && err.contains("CAP_BPF"),
        "{err}"
    );
    let out = unprivileged(&net, true, &["check-config", "--config", &ebpf])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# data path: none: fast_path = \"ebpf\" would refuse to start: missing capability CAP_BPF"),
        "{text}"
    );

    // "auto": userspace, and the log says why; check-config too.
    let out = unprivileged(&net, true, &["check-config", "--config", &auto])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# data path: userspace (missing capability CAP_BPF"),
        "{text}"
    );
    let mut child = unprivileged(&net, false, &["run", "--config", &auto])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let chosen = lines
        .map_while(Result::ok)
        .find(|l| l.contains("data path chosen"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        chosen.contains("path=\"userspace\"") && chosen.contains("CAP_BPF"),
        "{chosen}"
    );

    // Privileged, check-config names the interface it would attach to.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", net.relay_ns().display()))
        .args([BIN, "check-config", "--config", &ebpf])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# data path: eBPF at TCX ingress of vra"),
        "{text}"
    );
}

#[test]
fn a_window_past_its_end_is_never_forwarded_even_with_the_relay_gone() {
    if skip_fast_path() {
        return;
    }
    let mut net = Net::with_fast_path();
    net.setup.schedule = "trail = \"0s\"\n".into();
    let relay = net.start();
    let created = Instant::now();
    let lane = net.lane_for(&relay, "short", 0, 3);
    lane.send(3, 0..1, |_| 100);
    assert_eq!(lane.drain().len(), 1, "forwarded while the window is open");
    // Gone: no one will free the group when its window ends.
    relay.crash();
    lane.send(3, 1..2, |_| 100);
    assert_eq!(
        lane.drain().len(),
        1,
        "the kernel forwards without the relay"
    );
    std::thread::sleep(Duration::from_secs(4).saturating_sub(created.elapsed()));
    lane.send(3, 2..5, |_| 100);
    assert!(
        lane.drain().is_empty(),
        "nothing is forwarded past the window's end"
    );
}

/// The fence of a cluster node (docs/cluster.md, "Fencing"), set some 2 s
/// ahead, holds with the relay killed: the kernel forwards until the
/// deadline, then nothing — and a restarted relay finds the fence and
/// forwards nothing either. The relay sets its fence through the library
/// (`DataPlane::fence`) only: the test writes the pinned map as the relay's
/// `FastPath::fence` does.
#[test]
fn a_fenced_relay_killed_forwards_until_the_deadline_then_nothing() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    let relay = net.start();
    let lane = net.lane(&relay, "fenced", 0);
    lane.send(0xfe, 0..1, |_| 100);
    assert_eq!(lane.drain().len(), 1, "forwarded before any fence");

    const AHEAD: Duration = Duration::from_secs(2);
    let fence = || {
        let data = aya::maps::MapData::from_pin(net.pins().join("fence")).unwrap();
        let map = aya::maps::Map::from_map_data(data).unwrap();
        aya::maps::Array::<_, u64>::try_from(map).unwrap()
    };
    let boot = rtp_relay::clock::boot_nanos();
    let deadline = Instant::now() + AHEAD;
    fence().set(0, boot + AHEAD.as_nanos() as u64, 0).unwrap();
    relay.crash();

    // A packet every 10 ms for twice as long, each one's send time kept.
    let Lane {
        appliance,
        media,
        wowza,
    } = lane;
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        let mut sent = Vec::new();
        for seq in 1..=(2 * AHEAD.as_millis() / 10) as u16 {
            let due = start + Duration::from_millis(10) * u32::from(seq);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            sent.push((seq, Instant::now()));
            appliance.send_to(&rtp(0xfe, seq, 100), media).unwrap();
        }
        sent
    });
    let mut got = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    let quiet = Instant::now() + 2 * AHEAD + Duration::from_millis(500);
    while Instant::now() < quiet {
        if let Ok((n, _)) = wowza.recv_from(&mut buf) {
            assert!(n >= 4, "an RTP packet");
            got.insert(u16::from_be_bytes([buf[2], buf[3]]));
        }
    }
    let sent = sender.join().unwrap();
    // Margins for the sender's scheduling (its send time is taken just before the send).
    let margin = Duration::from_millis(100);
    let before: Vec<u16> = sent
        .iter()
        .filter(|(_, at)| *at + margin < deadline)
        .map(|(seq, _)| *seq)
        .collect();
    let after: Vec<u16> = sent
        .iter()
        .filter(|(_, at)| *at > deadline + margin)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(before.len() > 100 && after.len() > 100, "{sent:?}");
    let missing: Vec<_> = before.iter().filter(|s| !got.contains(s)).collect();
    assert!(missing.is_empty(), "lost before the deadline: {missing:?}");
    let late: Vec<_> = after.iter().filter(|s| got.contains(s)).collect();
    assert!(late.is_empty(), "forwarded after the deadline: {late:?}");

    // Restarted without [cluster], the relay is a single relay: the fence
    // is a cluster node's, and it lifts it (a cluster node would keep it
    // until elected, docs/cluster.md).
    let relay = net.start();
    assert_eq!(fence().get(&0, 0).unwrap(), 0, "the fence is lifted");
    let lane = Lane {
        appliance: net.sender(APPLIANCE),
        media,
        wowza,
    };
    lane.send(0xfe, 1000..1010, |_| 100);
    assert_eq!(lane.drain().len(), 10, "a single relay forwards again");
    drop(relay);
}

/// Pins left by a build whose maps are laid out otherwise (an upgrade that
/// changed `struct stream`) are replaced, not adopted: adopted, the program
/// would not load and the old one would go on forwarding by stale rules.
#[test]
fn pins_of_another_layout_are_replaced() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    let pins = net.pins();
    std::fs::create_dir_all(&pins).unwrap();
    // The stream map as an earlier build had it: 208-byte values.
    pin_array(&pins.join("streams"), 208);
    let relay = net.start();
    let log = relay.log();
    assert!(log.contains("is another build's"), "{log}");
    assert!(
        relay
            .get("/metrics")
            .text
            .contains("rtp_relay_data_path_info{interfaces=\"vra\",path=\"ebpf\"} 1"),
        "{log}"
    );
    let lane = net.lane(&relay, "after-upgrade", 0);
    freeze(&relay);
    let sent = lane.send(0xabc, 0..10, |_| 100);
    assert_eq!(lane.drain().len(), sent.len(), "the kernel forwards again");
    relay.signal(Signal::SIGCONT);
}

/// Creates an array map of 65536 `value_size`-byte values and pins it at `path`.
fn pin_array(path: &std::path::Path, value_size: u32) {
    use std::os::unix::ffi::OsStrExt;
    // union bpf_attr for BPF_MAP_CREATE (0): type, key size, value size, entries.
    let mut attr = [0u8; 128];
    for (i, v) in [2u32, 4, value_size, 65536].into_iter().enumerate() {
        attr[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: a zeroed bpf_attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // BPF_OBJ_PIN (6): pathname, then the fd.
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(name.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: as above; `name` outlives the call.
    let pinned = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
    assert_eq!(
        pinned,
        0,
        "BPF_OBJ_PIN: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: our own descriptor; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

/// The local ports of the relay's own UDP sockets.
fn relay_udp_ports(relay: &Relay) -> Vec<u16> {
    relay_udp_sockets(relay)
        .iter()
        .map(|&(port, _)| port)
        .collect()
}

/// A socket of the appliance whose datagrams carry IP options (four NOPs):
/// the program forwards only 20-byte IP headers, so these take the
/// userspace path.
fn with_ip_options(socket: std::net::UdpSocket) -> std::net::UdpSocket {
    use std::os::fd::AsRawFd;
    let options = [1u8, 1, 1, 1];
    // SAFETY: a valid socket and a 4-byte option buffer.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            options.len() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
    socket
}

#[test]
fn the_kernels_ports_have_no_socket_and_what_it_leaves_to_userspace_leaves_from_them() {
    if skip_fast_path() {
        return;
    }
    let net = Net::with_fast_path();
    let relay = net.start();
    let lane = net.lane(&relay, "steered", 5);
    let media = lane.media;

    // Held, and counted as held, without a socket of their own: the relay's
    // UDP sockets are its workers' steering sockets, on the control plane's
    // port number.
    let api_port: u16 = relay.url.rsplit(':').next().unwrap().parse().unwrap();
    let ports = relay_udp_ports(&relay);
    assert!(
        !ports.is_empty() && ports.iter().all(|&p| p == api_port),
        "the relay's sockets: {ports:?}, its API's port {api_port}"
    );
    let metrics = relay.get("/metrics").text;
    assert!(metrics.contains("rtp_relay_bound_sockets 2"), "{metrics}");

    // A port the kernel may hand out by itself (group 600: 60728–60729, in
    // the default ip_local_port_range 32768–60999) keeps its socket, until
    // the range is reserved (net.ipv4.ip_local_reserved_ports).
    let ns = net.relay_ns();
    let sysctl = |setting: &str| {
        common::root_command(
            "nsenter",
            &[&format!("--net={}", ns.display()), "sysctl", "-qw", setting],
            "RTP_RELAY_SKIP_NETNS",
        )
    };
    sysctl("net.ipv4.ip_local_port_range=32768 60999");
    reserve(&relay, "in-range", 600, &from_appliance());
    assert!(relay_udp_ports(&relay).contains(&base(600)));
    sysctl("net.ipv4.ip_local_reserved_ports=60000-61000");
    reserve(&relay, "reserved", 601, &from_appliance());
    let ports = relay_udp_ports(&relay);
    assert!(!ports.contains(&base(601)), "{ports:?}");
    assert_eq!(relay.delete("/v1/reservations/in-range").status, 200);
    assert_eq!(relay.delete("/v1/reservations/reserved").status, 200);
    // A neighbour bound and freed (group 4, whose ports share a word of the
    // steering program's port bitmap with group 5's) leaves group 5 steered.
    reserve(&relay, "neighbour", 4, &from_appliance());
    assert_eq!(relay.delete("/v1/reservations/neighbour").status, 200);

    // What the kernel does not forward waits for the relay process (stopped
    // here), which then forwards it from the relay's port.
    let appliance = with_ip_options(lane.appliance);
    freeze(&relay);
    let sent = send_rtp(&appliance, media, 0x51, 0..3, |_| 100);
    assert!(drain(&lane.wowza).is_empty(), "not forwarded by the kernel");
    relay.signal(Signal::SIGCONT);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    lane.wowza
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    while got.len() < sent.len() {
        let (n, from) = lane
            .wowza
            .recv_from(&mut buf)
            .expect("forwarded by userspace");
        got.push((buf[..n].to_vec(), from));
    }
    for ((data, from), p) in got.iter().zip(&sent) {
        assert_eq!(
            (data, *from),
            (p, media),
            "unchanged, from the relay's port"
        );
    }
    let s = || media_stats(&relay, "steered");
    assert!(
        wait_until(Duration::from_secs(2), || s()["packets_to_wowza"] == 3),
        "{}",
        s()
    );
    assert_eq!(s()["media"]["extended_highest_sequence"], 2, "{}", s());

    // Freed: no longer steered, and nothing of it is forwarded.
    assert_eq!(relay.delete("/v1/reservations/steered").status, 200);
    send_rtp(&appliance, media, 0x51, 3..4, |_| 100);
    assert!(
        drain(&lane.wowza).is_empty(),
        "a freed group forwards nothing"
    );
}

/// The load test through a relay on the fast path (its own namespace's `lo`):
/// nothing is lost, and the program's time, counted by the kernel for part of
/// the run and scaled to the whole of it, is charged to the relay. (That the
/// statistics are off while the machine's CPU is measured is not asserted.)
#[test]
fn the_load_test_charges_the_fast_paths_program_to_the_relay() {
    if skip_fast_path() {
        return;
    }
    let net = Net::new();
    let out = Command::new("nsenter")
        .arg(format!("--net={}", net.relay_ns().display()))
        .arg(BIN)
        .args(["loadtest", "--fast-path", "ebpf", "--groups", "4"])
        .args(["--first-group", "250", "--duration", "3s", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["data_path"], "ebpf", "{r}");
    assert!(r["sent"].as_u64().unwrap() > 1000, "{r}");
    assert_eq!(r["received"], r["sent"], "nothing lost: {r}");
    // Counted (the statistics were on for part of the run), and scaled to
    // the whole run: between 10 ns and 100 µs a packet.
    let kernel = r["relay_kernel_cpu_seconds"].as_f64().unwrap();
    let per_packet = kernel / r["received"].as_f64().unwrap();
    assert!(
        (1e-8..1e-4).contains(&per_packet),
        "{per_packet} s a packet: {r}"
    );
    assert!(r["relay_cpu_us_per_packet"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["box_cpu_us_per_packet"].as_f64().unwrap() > 0.0, "{r}");
}
