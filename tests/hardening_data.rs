//! The data plane against an attacker and an unlucky operator (issue 12):
//! a dual-stack relay (`bind_address = "::"`) sees IPv4 appliances and Wowza
//! as IPv4-mapped addresses and must treat them as the IPv4 addresses they
//! are; destinations the relay cannot reach, or that loop back into it, are
//! refused (the real binary on loopback; groups 940–959 are this file's).
//! On the kernel fast path (network namespaces of the tests' own, as in
//! tests/fastpath.rs), the program forwards only packets addressed to the
//! relay and drops strangers' floods before they reach a socket.

mod common;
use common::netns::*;
use common::*;
use nix::sys::signal::Signal;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// A socket on 127.0.0.1 that gives up a read after 2 s.
fn v4_socket(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// A create body for `group` (audio-only, from now for 10 minutes) with
/// `extra` JSON members (each with a leading comma).
fn body(id: &str, group: u16, extra: &str) -> String {
    format!(
        r#"{{"event_id": "{id}", "group": {group}, "layout": "audio-only", "start": "{}", "end": "{}"{extra}}}"#,
        at(0),
        at(600)
    )
}

#[test]
fn dual_stack_strict_accepts_an_ipv4_appliance_and_returns_wowzas_reports() {
    let mut setup = Setup::new();
    setup.bind_address = "::".into();
    let relay = setup.start();
    let g = 940;
    relay.create(
        &body(
            "dual",
            g,
            r#", "source": "127.0.0.1", "source_policy": "strict""#,
        ),
        "active",
    );
    let (media, control) = (base(g), base(g) + 1);
    let wowza_media = v4_socket(media - 16384);
    let wowza_control = v4_socket(control - 16384);
    let appliance = v4_socket(0);
    let relay_at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    // Media and a sender report reach Wowza, from the relay's ports…
    let sent = send_rtp(&appliance, relay_at(media), 0xd5, 0..5, |_| 100);
    let got = drain(&wowza_media);
    assert_eq!(got.len(), sent.len(), "{}", relay.log());
    for ((data, from), p) in got.iter().zip(&sent) {
        assert_eq!((data, from.port()), (p, media));
    }
    appliance
        .send_to(&sender_report(0xd5), relay_at(control))
        .unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = wowza_control.recv_from(&mut buf).unwrap();
    assert_eq!((n, from.port()), (28, control));

    // …and Wowza's receiver report comes back to the appliance.
    let rr = receiver_report(0xd5, 2);
    wowza_control.send_to(&rr, from).unwrap();
    let (n, back) = appliance.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], back.port()), (&rr[..], control));

    // The relay counts a send after sendmmsg returns, so the appliance may
    // have the report first: wait for the count to settle.
    let mut v = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(2), || {
            v = relay.get("/v1/reservations/dual").body;
            v["streams"][0]["rtcp"]["packets_to_appliance"] == 1
        }),
        "the receiver report is counted: {v}"
    );
    let rtp = &v["streams"][0]["rtp"];
    assert_eq!(rtp["packets_to_wowza"], 5, "{v}");
    assert_eq!(rtp["dropped"]["unknown_source"], 0, "{v}");
    // The appliance as the IPv4 address it is, not ::ffff:127.0.0.1.
    let appliance_at = appliance.local_addr().unwrap().to_string();
    assert_eq!(rtp["appliance"], appliance_at.as_str(), "{v}");
}

#[test]
fn dual_stack_refuses_an_ipv4_mapped_destination_into_its_own_ports() {
    let mut setup = Setup::new();
    setup.bind_address = "::".into();
    let relay = setup.start();
    for (i, address) in ["::ffff:127.0.0.1", "::ffff:127.0.0.2", "::ffff:0.0.0.0"]
        .iter()
        .enumerate()
    {
        let extra = format!(
            r#", "source_policy": "latch", "destination": {{"address": "{address}", "base_port": {}}}"#,
            base(941)
        );
        let a = relay.post("/v1/reservations", &body(&format!("loop{i}"), 942, &extra));
        assert_eq!(a.status, 400, "{address}: {}", a.text);
        assert!(a.text.contains("loop back into the relay"), "{}", a.text);
    }
    // The same port range on another host is fine.
    let extra = format!(
        r#", "source_policy": "latch", "destination": {{"address": "::ffff:192.0.2.7", "base_port": {}}}"#,
        base(941)
    );
    relay.create(&body("elsewhere", 942, &extra), "active");
}

#[test]
fn a_destination_of_a_family_the_bind_address_cannot_reach_is_refused() {
    // An IPv4 bind cannot send to IPv6…
    let relay = Setup::new().start();
    let extra =
        r#", "source_policy": "latch", "destination": {"address": "::1", "base_port": 30000}"#;
    let a = relay.post("/v1/reservations", &body("v6dest", 943, extra));
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.text.contains("IPv6") && a.text.contains("bind_address"),
        "{}",
        a.text
    );
    // …but an IPv4-mapped one is IPv4.
    let extra = r#", "source_policy": "latch", "destination": {"address": "::ffff:192.0.2.7", "base_port": 30000}"#;
    relay.create(&body("mapped", 943, extra), "active");
    drop(relay);

    // An IPv6 bind other than "::" cannot send to IPv4.
    let mut setup = Setup::new();
    setup.bind_address = "::1".into();
    setup.wowza = "address = \"::1\"\nport_offset = -16384\n".into();
    let relay = setup.start();
    let extra = r#", "source_policy": "latch", "destination": {"address": "192.0.2.7", "base_port": 30000}"#;
    let a = relay.post("/v1/reservations", &body("v4dest", 944, extra));
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("IPv4"), "{}", a.text);
}

#[test]
fn check_config_refuses_a_default_destination_the_relay_cannot_reach_or_that_loops() {
    let dir = tempfile::tempdir().unwrap();
    let check = |bind: &str, wowza: &str, offset: i32| {
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            format!(
                "[data]\nbind_address = \"{bind}\"\nfast_path = \"off\"\n[wowza]\naddress = \"{wowza}\"\nport_offset = {offset}\n[state]\npath = \"{}/state\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        (out.status.code(), err)
    };
    let (status, err) = check("0.0.0.0", "2001:db8::5", -16384);
    assert_eq!(status, Some(2), "{err}");
    assert!(
        err.contains("wowza.address") && err.contains("bind_address"),
        "{err}"
    );
    let (status, err) = check("::", "::ffff:127.0.0.1", 0);
    assert_eq!(status, Some(2), "{err}");
    assert!(err.contains("loop back into the relay"), "{err}");
    assert_eq!(check("::", "127.0.0.1", -16384).0, Some(0));
    assert_eq!(check("0.0.0.0", "::ffff:192.0.2.7", 0).0, Some(0));
}

/// The namespaces with the relay on the fast path, bound on `bind`.
fn fast_net(bind: &str) -> Net {
    let mut net = Net::with_fast_path();
    net.setup.bind_address = bind.into();
    net
}

#[test]
fn the_kernel_forwards_only_packets_addressed_to_the_relay() {
    if skip_fast_path() {
        return;
    }
    let net = fast_net("0.0.0.0");
    // The relay's host routes: a packet to Wowza's address goes through it.
    net.route_through_relay();
    let relay = net.start();
    let lane = net.lane(&relay, "routed", 945);
    let port = lane.media.port();
    let appliance = lane.appliance.local_addr().unwrap();
    let relay_w: std::net::IpAddr = RELAY_W.parse().unwrap();

    freeze(&relay);
    // To Wowza's own address, on the relay's media port: not the relay's.
    let foreign = SocketAddr::new(WOWZA.parse().unwrap(), port);
    lane.appliance.send_to(&rtp(0xf0, 0, 100), foreign).unwrap();
    let routed = lane.drain();
    // To the relay's address: the kernel forwards it.
    let sent = lane.send(0xf0, 1..3, |_| 100);
    let relayed = lane.drain();
    relay.signal(Signal::SIGCONT);
    assert_eq!(routed.len(), 1, "the host routes the foreign packet");
    assert_eq!(
        routed[0].1, appliance,
        "unchanged, as any router would: not relayed from the relay's port"
    );
    assert_eq!(relayed.len(), sent.len(), "the relay's own packets arrive");
    for ((data, from), p) in relayed.iter().zip(&sent) {
        assert_eq!((data, *from), (p, SocketAddr::new(relay_w, port)));
    }
    let s = media_stats(&relay, "routed");
    assert_eq!(s["packets_to_wowza"], 2, "{s}");

    // An address the relay's host gains later is its own too: the kernel
    // learns it (netlink) and forwards what is sent to it.
    ip(&[
        "-n",
        net.relay_name(),
        "addr",
        "add",
        "198.18.1.9/24",
        "dev",
        "vra",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    freeze(&relay);
    let later = SocketAddr::from(([198, 18, 1, 9], port));
    lane.appliance.send_to(&rtp(0xf0, 3, 100), later).unwrap();
    let got = lane.drain();
    relay.signal(Signal::SIGCONT);
    assert_eq!(got.len(), 1, "forwarded by the kernel: {}", relay.log());
    assert_eq!(got[0].1, SocketAddr::new(relay_w, port));
}
#[test]
fn the_kernel_drops_a_strangers_flood_on_a_strict_port_before_its_socket() {
    if skip_fast_path() {
        return;
    }
    let net = fast_net(RELAY_A);
    let relay = net.start();
    let lane = net.lane(&relay, "flooded", 946);
    let stranger = net.sender(STRANGER);

    freeze(&relay);
    send_rtp(&stranger, lane.media, 0xbad, 0..100, |_| 100);
    // The stranger's oversize and malformed packets are the stranger's too.
    send_rtp(&stranger, lane.media, 0xbad, 100..101, |_| 1100);
    stranger.send_to(b"not rtp", lane.media).unwrap();
    let sent = lane.send(0x600d, 0..10, |_| 100);
    let got = lane.drain();
    let queued = userspace_queue(&relay);
    relay.signal(Signal::SIGCONT);
    assert_eq!(got.len(), sent.len(), "the appliance's stream goes on");
    assert_eq!(queued, 0, "nothing of the stranger's reached userspace");
    let s = media_stats(&relay, "flooded");
    assert_eq!(
        s["dropped"]["unknown_source"], 102,
        "counted by the kernel: {s}"
    );
    assert_eq!(s["dropped"]["oversize"], 0, "{s}");
    assert_eq!(s["dropped"]["malformed"], 0, "{s}");
    assert_eq!(s["packets_to_wowza"], 10, "{s}");
}

#[test]
fn on_a_latch_port_the_kernel_latches_returns_replies_and_drops_the_next_sender() {
    if skip_fast_path() {
        return;
    }
    let mut net = fast_net(RELAY_A);
    // Wowza's replies come in on vrw: the program is to see them too.
    net.setup.data += "fast_path_interfaces = [\"vra\", \"vrw\"]\n";
    let relay = net.start();
    reserve(&relay, "latched", 947, r#", "source_policy": "latch""#);
    let media = relay_port(base(947));
    let first = net.sender(APPLIANCE);
    let stranger = net.sender(STRANGER);
    let wowza = net.wowza(base(947));

    freeze(&relay);
    // Nothing latched yet: the first sender is latched and forwarded…
    send_rtp(&first, media, 1, 0..5, |_| 100);
    let got = drain(&wowza);
    // …Wowza's reply goes back to it…
    let reply = rtp(2, 0, 40);
    wowza.send_to(&reply, media).unwrap();
    let mut buf = [0u8; 256];
    let back = first.recv_from(&mut buf);
    // …and the next sender is dropped in the kernel.
    send_rtp(&stranger, media, 3, 0..50, |_| 100);
    let late = drain(&wowza);
    let queued = userspace_queue(&relay);
    relay.signal(Signal::SIGCONT);
    assert_eq!(got.len(), 5, "the first sender is forwarded");
    let (n, from) = back.expect("Wowza's reply returns to the latched sender");
    assert_eq!((&buf[..n], from), (&reply[..], media));
    assert!(late.is_empty(), "the next sender is not forwarded");
    assert_eq!(queued, 0, "nor does it reach userspace");
    let s = media_stats(&relay, "latched");
    assert_eq!(s["dropped"]["unknown_source"], 50, "{s}");
    assert_eq!(s["packets_to_appliance"], 1, "{s}");
    assert_eq!(
        s["appliance"],
        first.local_addr().unwrap().to_string(),
        "{s}"
    );
}
