//! High availability against a real etcd (Debian's etcd-server, started here
//! on loopback): relays share their reservations through it, one forwards,
//! another takes over when it dies or stops, and etcd trouble costs writes,
//! never an acknowledged reservation.

mod common;
use common::etcd::Etcd;
use common::{BIN, Relay, Setup, at, base, reservation, wait_until};
use nix::sys::signal::Signal;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// The lease every test relay takes: failover within this + 1 s.
const TTL: Duration = Duration::from_secs(3);

/// A node of the cluster on `etcd`, userspace data path on loopback.
fn node(etcd: &Etcd, name: &str) -> (Setup, Relay) {
    let mut setup = Setup::new();
    setup.extra = format!(
        "[cluster]\netcd_endpoints = [\"{}\"]\nnode_name = \"{name}\"\nlease_ttl = \"{}s\"\n",
        etcd.client,
        TTL.as_secs()
    );
    let relay = setup.start();
    (setup, relay)
}

fn role(relay: &Relay) -> Option<String> {
    let r = relay.get("/readyz");
    r.body["role"].as_str().map(str::to_string)
}

/// Starts `a` and then `b` on one etcd; `a` is active once both are ready.
fn pair(etcd: &Etcd) -> ((Setup, Relay), (Setup, Relay)) {
    let a = node(etcd, "relay-a");
    assert!(
        wait_until(Duration::from_secs(10), || role(&a.1).as_deref()
            == Some("active")),
        "the first node becomes active: {}",
        a.1.log()
    );
    let b = node(etcd, "relay-b");
    assert!(
        wait_until(Duration::from_secs(10), || role(&b.1).as_deref()
            == Some("standby")),
        "the second node follows: {}",
        b.1.log()
    );
    (a, b)
}

fn bound_sockets(relay: &Relay) -> u64 {
    let text = relay.get("/metrics").text;
    text.lines()
        .find_map(|l| l.strip_prefix("rtp_relay_bound_sockets "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn writes_on_any_node_are_committed_in_etcd_and_followed_by_every_node() {
    let etcd = Etcd::start();
    let ((_sa, a), (_sb, b)) = pair(&etcd);
    // Created through the standby: committed in etcd, bound by the active node.
    b.create(
        &reservation("lecture", Some(320), "audio-only", &at(60), &at(3600)),
        "scheduled",
    );
    let stored = etcd
        .ctl(&[
            "get",
            "--print-value-only",
            "/rtp-relay/reservations/lecture",
        ])
        .unwrap();
    assert!(stored.contains("\"group\":320"), "{stored}");
    assert!(
        wait_until(Duration::from_secs(3), || a
            .get("/v1/reservations/lecture")
            .body["state"]
            == "active"),
        "the active node binds what the standby admitted"
    );
    assert_eq!((bound_sockets(&a), bound_sockets(&b)), (2, 0));
    // Changed through the active node, seen by the standby.
    let end = at(7200);
    let p = a.patch(
        "/v1/reservations/lecture",
        &format!(r#"{{"end": "{end}"}}"#),
    );
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(wait_until(Duration::from_secs(3), || {
        b.get("/v1/reservations/lecture").body["end"].as_str() == p.body["end"].as_str()
    }));
    // A conflict is judged against what every node committed.
    let clash = b.post(
        "/v1/reservations",
        &reservation("clash", Some(320), "audio-only", &at(120), &at(600)),
    );
    assert_eq!(clash.status, 409, "{}", clash.text);
    // Deleted through the standby: the active node frees the ports.
    assert_eq!(b.delete("/v1/reservations/lecture").status, 200);
    assert!(wait_until(Duration::from_secs(3), || bound_sockets(&a) == 0));
    assert_eq!(a.get("/v1/reservations/lecture").status, 404);
    assert_eq!(
        etcd.ctl(&["get", "--prefix", "--keys-only", "/rtp-relay/reservations/"])
            .unwrap()
            .trim(),
        ""
    );
    // Both say which role they have.
    for (relay, r) in [(&a, "active"), (&b, "standby")] {
        let m = relay.get("/metrics").text;
        assert!(
            m.contains(&format!("rtp_relay_cluster_role{{role=\"{r}\"}} 1")),
            "{m}"
        );
    }
}

#[test]
fn creates_on_two_nodes_at_once_never_both_win() {
    let etcd = Etcd::start();
    let ((_sa, a), (_sb, b)) = pair(&etcd);
    for round in 0..10u16 {
        let group = 330 + round;
        let body = |node: &str| {
            reservation(
                &format!("r{round}-{node}"),
                Some(group),
                "audio-only",
                &at(600),
                &at(1200),
            )
        };
        let (ba, bb) = (body("a"), body("b"));
        let (sa, sb) = std::thread::scope(|s| {
            let x = s.spawn(|| a.post("/v1/reservations", &ba).status);
            let y = s.spawn(|| b.post("/v1/reservations", &bb).status);
            (x.join().unwrap(), y.join().unwrap())
        });
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: one wins group {group}"
        );
    }
    // Allocated groups, 8 creates on each node at once: all distinct.
    let made: Vec<(u16, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16u16)
            .map(|i| {
                let relay = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    let r = relay.post(
                        "/v1/reservations",
                        &reservation(&format!("auto{i}"), None, "audio-only", &at(600), &at(1200)),
                    );
                    (r.status, r.body["group"].as_u64().unwrap_or(u64::MAX))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(made.iter().all(|(s, _)| *s == 201), "{made:?}");
    let mut groups: Vec<u64> = made.iter().map(|(_, g)| *g).collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), 16, "{made:?}");
    // Each node follows the other's creates through etcd's watch, so its
    // list catches up shortly after the last create returns.
    let listed = |relay: &Relay| {
        relay.get("/v1/reservations").body["reservations"]
            .as_array()
            .map_or(0, Vec::len)
    };
    for (name, relay) in [("a", &a), ("b", &b)] {
        assert!(
            wait_until(Duration::from_secs(3), || listed(relay) == 26),
            "node {name} lists {} reservations, not 26",
            listed(relay)
        );
    }
}

/// Sends an RTP packet to the relay's first port every 5 ms from 127.0.0.1
/// (the reservation's strict source) until `stop`; the sink counts what
/// arrives and notes the longest gap.
fn media_through(group: u16, stop: &std::sync::atomic::AtomicBool) -> (u64, Duration) {
    let sink = UdpSocket::bind(("127.0.0.1", base(group) - 16384)).unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seq = 0u16;
    let mut received = 0;
    let mut last: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    let mut buf = [0u8; 2048];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = sender.send_to(&common::rtp(0x5eed, seq, 160), ("127.0.0.1", base(group)));
        seq = seq.wrapping_add(1);
        let until = Instant::now() + Duration::from_millis(5);
        while let Ok(n) = sink.recv(&mut buf) {
            if n > 0 {
                received += 1;
                let now = Instant::now();
                if let Some(l) = last {
                    longest = longest.max(now - l);
                }
                last = Some(now);
            }
            if Instant::now() >= until {
                break;
            }
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }
    (received, longest)
}

#[test]
fn a_killed_active_node_is_replaced_within_the_lease() {
    let etcd = Etcd::start();
    let ((_sa, a), (_sb, b)) = pair(&etcd);
    let group = 350;
    a.create(
        &reservation("live", Some(group), "audio-only", &at(-60), &at(3600)),
        "active",
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (received, gap) = std::thread::scope(|s| {
        let media = s.spawn(|| media_through(group, &stop));
        std::thread::sleep(Duration::from_millis(500));
        a.crash();
        let t0 = Instant::now();
        assert!(
            wait_until(TTL + Duration::from_secs(3), || bound_sockets(&b) == 2),
            "the standby took over: {}",
            b.log()
        );
        eprintln!(
            "failover: the standby bound the group {:?} after the kill",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        media.join().unwrap()
    });
    eprintln!("failover: media gap {gap:?}, {received} packets through");
    // Some 150 a second, 1.5 s of them: media before and after the gap.
    assert!(received > 100, "{received}");
    assert!(gap <= TTL + Duration::from_secs(1), "media gap {gap:?}");
    assert_eq!(role(&b).as_deref(), Some("active"));
}

#[test]
fn a_stopped_active_node_hands_over_at_once() {
    let etcd = Etcd::start();
    let ((_sa, mut a), (_sb, b)) = pair(&etcd);
    a.create(
        &reservation("talk", Some(352), "audio-only", &at(-60), &at(3600)),
        "active",
    );
    // No upgrade in place on a cluster node: refused, and it goes on as it was.
    a.signal(Signal::SIGUSR2);
    assert!(wait_until(Duration::from_secs(3), || a
        .log()
        .contains("no upgrade in place on a cluster node")));
    assert_eq!(role(&a).as_deref(), Some("active"));
    assert_eq!(bound_sockets(&a), 2);
    let t0 = Instant::now();
    a.signal(Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(2), || bound_sockets(&b) == 2),
        "{}",
        b.log()
    );
    eprintln!("hand-over on SIGTERM: {:?}", t0.elapsed());
    assert!(a.wait(Duration::from_secs(5)).is_some_and(|s| s.success()));
}

#[test]
fn etcd_trouble_costs_writes_not_reservations_and_the_node_resumes() {
    let etcd = Etcd::start();
    let ((_sa, a), (_sb, b)) = pair(&etcd);
    a.create(
        &reservation("kept", Some(354), "audio-only", &at(-60), &at(3600)),
        "active",
    );
    // etcd stops answering (as when it is unreachable).
    etcd.signal(Signal::SIGSTOP);
    let t0 = Instant::now();
    // Hours ahead: its window stays closed, whether or not etcd took it.
    let unconfirmed = reservation("unconfirmed", Some(355), "audio-only", &at(7200), &at(9000));
    let refused = b.post("/v1/reservations", &unconfirmed);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.body["error"], "unavailable");
    assert!(
        refused.text.contains("etcd did not confirm"),
        "{}",
        refused.text
    );
    // The active node forwards until its lease could expire, then stops.
    assert!(
        wait_until(TTL, || bound_sockets(&a) == 0),
        "the active node stepped down before its lease could expire: {}",
        a.log()
    );
    let stepped = t0.elapsed();
    assert!(stepped < TTL, "{stepped:?}");
    // Reads go on from each node's copy.
    assert_eq!(a.get("/v1/reservations/kept").status, 200);
    etcd.signal(Signal::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(10), || bound_sockets(&a)
            + bound_sockets(&b)
            == 2),
        "a node forwards again once etcd answers:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    // The unconfirmed create may have committed once etcd woke up (it got
    // the request): retried, as the 503 says, it is there exactly once.
    let retried = b.post("/v1/reservations", &unconfirmed);
    assert!([200, 201].contains(&retried.status), "{}", retried.text);
    for relay in [&a, &b] {
        assert!(wait_until(Duration::from_secs(3), || {
            relay.get("/v1/reservations/kept").status == 200
                && relay.get("/v1/reservations/unconfirmed").status == 200
        }));
    }
}

#[test]
fn a_node_started_while_etcd_is_down_serves_once_it_answers() {
    let etcd = Etcd::start();
    etcd.signal(Signal::SIGSTOP);
    let (_s, a) = node(&etcd, "relay-a");
    let r = a.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("etcd"), "{}", r.text);
    etcd.signal(Signal::SIGCONT);
    assert!(wait_until(Duration::from_secs(10), || role(&a).as_deref()
        == Some("active")));
}

#[test]
fn a_bad_cluster_section_is_refused_by_key() {
    for (extra, key) in [
        (
            "[cluster]\netcd_endpoints = []\nnode_name = \"a\"\n",
            "cluster.etcd_endpoints",
        ),
        (
            "[cluster]\netcd_endpoints = [\"https://127.0.0.1:2379\"]\nnode_name = \"a\"\n",
            "cluster.etcd_endpoints",
        ),
        (
            "[cluster]\netcd_endpoints = [\"127.0.0.1:2379\"]\nnode_name = \"a\"\n",
            "cluster.etcd_endpoints",
        ),
        (
            "[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nnode_name = \"a b\"\n",
            "cluster.node_name",
        ),
        (
            "[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nnode_name = \"a\"\nlease_ttl = \"1500ms\"\n",
            "cluster.lease_ttl",
        ),
        (
            "[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nnode_name = \"a\"\nservice_address = \"10.0.0.1\"\n",
            "cluster.service_address",
        ),
    ] {
        let mut setup = Setup::new();
        setup.extra = extra.into();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(setup.write_config())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{extra}: {err}");
    }
}
