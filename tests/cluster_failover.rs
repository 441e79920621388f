//! docs/cluster.md's failures on a real network. Every test builds a LAN of
//! network namespaces of its own — a Linux bridge (namespace `br`) and, each
//! in a namespace with a veth (`eth0`) to the bridge, addresses in
//! 198.18.0.0/24:
//!
//! - `app`: the appliance (198.18.0.2), sending RTP to the service address
//!   198.18.0.10 at 200 packets/s;
//! - `ra`, `rb`: the relays `relay-a` (198.18.0.11) and `relay-b`
//!   (198.18.0.12), the real binary, `lease_ttl = "3s"`, the service address
//!   on their `eth0`;
//! - `wz`: Wowza (198.18.0.20), a socket noting every packet's sequence
//!   number, source address and arrival time;
//! - `e0` (`e1`, `e2`): etcd (198.18.0.30, .31, .32), Debian's etcd-server.
//!
//! Each test fails the active node in one way and asserts what docs/cluster.md
//! promises: the sink sees no packet twice, the media gap is at most
//! `lease_ttl` + 1 s (printed, to be quoted), and no acknowledged reservation
//! is lost. Every namespace (and with it every veth and the bridge) and every
//! pin is removed at the end, also when a test fails.
//!
//! Needs root and iproute2; `RTP_RELAY_SKIP_NETNS=1` skips these tests, and
//! `RTP_RELAY_SKIP_EBPF=1` the one on the kernel fast path.

mod common;
use common::etcd::Etcd;
use common::netns::{skip_fast_path, skip_netns};
use common::{Relay, Setup, at, base, enter_netns, root_command, rtp, wait_until};
use nix::sys::signal::Signal;
use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every relay's lease: failover within this + 1 s.
const TTL: Duration = Duration::from_secs(3);
/// The longest media gap a failover may cost (docs/cluster.md).
const MAX_GAP: Duration = Duration::from_secs(4);
const SERVICE: &str = "198.18.0.10";
const APPLIANCE: &str = "198.18.0.2";
const RELAY_A: &str = "198.18.0.11";
const RELAY_B: &str = "198.18.0.12";
const WOWZA: &str = "198.18.0.20";
const ETCD: [&str; 3] = ["198.18.0.30", "198.18.0.31", "198.18.0.32"];
/// The group on air (audio-only: media on `base(GROUP)`).
const GROUP: u16 = 10;
/// The interface every host has to the bridge.
const DEV: &str = "eth0";
/// The appliance's packet interval (200 packets/s).
const INTERVAL: Duration = Duration::from_millis(5);
/// No test sends for longer than this, whatever happens.
const MAX_SENDING: Duration = Duration::from_secs(30);

/// The namespaces of one test: the bridge's, and each host's; deleted on drop.
struct Lan {
    tag: String,
    hosts: Vec<&'static str>,
}

impl Lan {
    /// The bridge, the appliance, two relays, Wowza and `etcd_members` etcd
    /// hosts (`e0`…).
    fn new(etcd_members: usize) -> Lan {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "rtpfo{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut hosts = vec![
            ("app", APPLIANCE),
            ("ra", RELAY_A),
            ("rb", RELAY_B),
            ("wz", WOWZA),
        ];
        hosts.extend(["e0", "e1", "e2"].into_iter().zip(ETCD).take(etcd_members));
        let lan = Lan {
            tag,
            hosts: std::iter::once("br")
                .chain(hosts.iter().map(|(h, _)| *h))
                .collect(),
        };
        for host in &lan.hosts {
            root_ip(&["netns", "add", &lan.name(host)]);
            lan.ip(host, &["link", "set", "lo", "up"]);
        }
        lan.ip("br", &["link", "add", "br0", "type", "bridge"]);
        lan.ip("br", &["link", "set", "br0", "up"]);
        for (host, address) in hosts {
            // Made inside the namespaces: no interface ever exists in ours.
            let port = format!("p{host}");
            lan.ip(
                host,
                &[
                    "link",
                    "add",
                    DEV,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &lan.name("br"),
                ],
            );
            lan.ip("br", &["link", "set", &port, "master", "br0", "up"]);
            lan.ip(host, &["addr", "add", &format!("{address}/24"), "dev", DEV]);
            lan.ip(host, &["link", "set", DEV, "up"]);
        }
        lan
    }

    fn name(&self, host: &str) -> String {
        format!("{}{host}", self.tag)
    }

    /// The namespace of `host`, for setns.
    fn ns(&self, host: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name(host)))
    }

    /// `ip -n <host> args…`'s output.
    fn ip(&self, host: &str, args: &[&str]) -> String {
        root_ip(&[&["-n", &self.name(host)][..], args].concat())
    }

    /// True when `host` has the service address on its `eth0`.
    fn holds_service_address(&self, host: &str) -> bool {
        self.ip(host, &["-4", "-o", "addr", "show", "dev", DEV])
            .contains(&format!(" {SERVICE}/24 "))
    }

    /// The MAC address of `host`'s `eth0`.
    fn mac(&self, host: &str) -> String {
        let link = self.ip(host, &["-o", "link", "show", "dev", DEV]);
        link.split("link/ether ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no MAC in {link}"))
            .to_string()
    }

    /// The MAC the appliance sends the service address's packets to.
    fn appliance_sends_to(&self) -> String {
        self.ip("app", &["neigh", "show", SERVICE, "dev", DEV])
    }

    /// Takes `host` off the LAN for good: its namespace deleted.
    fn delete(&self, host: &str) {
        root_ip(&["netns", "del", &self.name(host)]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth and, with the bridge's, the
        // bridge. One already deleted by the test fails here, harmlessly.
        for host in &self.hosts {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.name(host)])
                .output();
        }
    }
}

fn root_ip(args: &[&str]) -> String {
    root_command("ip", args, "RTP_RELAY_SKIP_NETNS")
}

/// A relay of the cluster running in its host's namespace; its fast path's
/// pins (if any) removed on drop.
struct Node {
    setup: Setup,
    relay: Option<Relay>,
    host: &'static str,
}

impl Node {
    /// Starts `name` on `host` with the service address on its `eth0`;
    /// `data`: `[data]` keys beyond the bind address (the fast path).
    fn start(lan: &Lan, etcd: &Etcd, host: &'static str, name: &str, data: &str) -> Node {
        let mut setup = Setup::new();
        setup.bind_address = "0.0.0.0".into();
        setup.socket_buffers = None;
        setup.wowza = format!("address = \"{WOWZA}\"\nport_offset = 0\n");
        setup.data = data.into();
        setup.extra = format!(
            "[cluster]\netcd_endpoints = {}\nnode_name = \"{name}\"\nservice_address = \"{SERVICE}/24\"\nservice_interface = \"{DEV}\"\nlease_ttl = \"{}s\"\n",
            etcd.endpoints_toml(),
            TTL.as_secs()
        );
        let relay = setup.start_in(&lan.ns(host));
        Node {
            setup,
            relay: Some(relay),
            host,
        }
    }

    fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("the relay runs")
    }

    /// The role `/readyz` names.
    fn role(&self) -> Option<String> {
        self.relay().get("/readyz").body["role"]
            .as_str()
            .map(str::to_string)
    }

    /// `rtp_relay_bound_sockets`.
    fn bound_sockets(&self) -> u64 {
        self.relay()
            .get("/metrics")
            .text
            .lines()
            .find_map(|l| l.strip_prefix("rtp_relay_bound_sockets "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Active, and the group's two ports bound.
    fn forwards(&self) -> bool {
        self.role().as_deref() == Some("active") && self.bound_sockets() == 2
    }

    /// Back in etcd after losing it (a second session), as standby.
    fn rejoined(&self) -> bool {
        self.log().matches("cluster: joined").count() >= 2
            && self.role().as_deref() == Some("standby")
    }

    /// kill -9.
    fn crash(&mut self) {
        self.relay.take().expect("the relay runs").crash();
    }

    fn log(&self) -> String {
        self.relay.as_ref().map(Relay::log).unwrap_or_default()
    }

    /// The log's cluster events and warnings only (the debug log is long).
    fn events(&self) -> String {
        self.log()
            .lines()
            .filter(|l| l.contains("cluster:") || l.contains(" WARN ") || l.contains(" ERROR "))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.relay.take());
        rtp_relay::dataplane::ebpf::remove_pins(&rtp_relay::dataplane::ebpf::pin_dir(
            &self.setup.state_path(),
        ));
    }
}

/// A create body for `id` on `group`, from the appliance, `start`..`end`
/// seconds from now.
fn reservation(id: &str, group: u16, start: i64, end: i64) -> String {
    format!(
        r#"{{"event_id": "{id}", "group": {group}, "layout": "audio-only", "start": "{}", "end": "{}", "source": "{APPLIANCE}"}}"#,
        at(start),
        at(end)
    )
}

/// The cluster on `etcd`: `relay-a` on `ra`, active, then `relay-b` on `rb`,
/// standby; the webcast on air (`live`, created on the active node) and one
/// for later (`later`, created on the standby), both acknowledged.
fn cluster(lan: &Lan, etcd: &Etcd, data: &str) -> (Node, Node) {
    let a = Node::start(lan, etcd, "ra", "relay-a", data);
    assert!(
        wait_until(Duration::from_secs(10), || a.role().as_deref()
            == Some("active")),
        "relay-a becomes active: {}",
        a.log()
    );
    let b = Node::start(lan, etcd, "rb", "relay-b", data);
    assert!(
        wait_until(Duration::from_secs(10), || b.role().as_deref()
            == Some("standby")),
        "relay-b stands by: {}",
        b.log()
    );
    a.relay()
        .create(&reservation("live", GROUP, -60, 3600), "active");
    b.relay()
        .create(&reservation("later", GROUP + 1, 3600, 7200), "scheduled");
    assert!(lan.holds_service_address("ra"));
    assert!(!lan.holds_service_address("rb"));
    (a, b)
}

/// Every acknowledged reservation is on `node` and in etcd, and `node`
/// still takes writes.
fn assert_reservations_kept(node: &Node, etcd: &Etcd) {
    for id in ["live", "later"] {
        let r = node.relay().get(&format!("/v1/reservations/{id}"));
        assert_eq!(r.status, 200, "{id} on relay-{}: {}", node.host, r.text);
        let stored = etcd
            .ctl(&[
                "get",
                "--print-value-only",
                &format!("/rtp-relay/reservations/{id}"),
            ])
            .unwrap_or_default();
        assert!(stored.contains(&format!("\"{id}\"")), "{id} in etcd");
    }
    node.relay()
        .create(&reservation("after", GROUP + 2, 3600, 7200), "scheduled");
}

/// One packet at the sink.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    seq: u16,
    from: IpAddr,
    at: Instant,
}

/// The appliance sending to the service address, and Wowza receiving.
struct Traffic {
    stop: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    sender: Option<JoinHandle<(u16, Instant)>>,
    sink: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts both; returns once the sink has seen the first packets (from
    /// relay-a).
    fn start(lan: &Lan) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (wowza_ns, appliance_ns) = (lan.ns("wz"), lan.ns("app"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = {
            let (stop, arrivals) = (stop.clone(), arrivals.clone());
            std::thread::spawn(move || {
                enter_netns(&wowza_ns).unwrap();
                let socket = UdpSocket::bind((WOWZA, base(GROUP))).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 2048];
                // Until stopped and quiet for 300 ms; never past the limit.
                let limit = Instant::now() + MAX_SENDING + Duration::from_secs(5);
                let mut quiet_since = None;
                while Instant::now() < limit {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) if n >= 12 => {
                            quiet_since = None;
                            arrivals.lock().unwrap().push(Arrival {
                                seq: u16::from_be_bytes([buf[2], buf[3]]),
                                from: from.ip(),
                                at: Instant::now(),
                            });
                        }
                        _ if stop.load(Ordering::Relaxed) => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(300) {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        ready_rx.recv().unwrap();
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                enter_netns(&appliance_ns).unwrap();
                let socket = UdpSocket::bind((APPLIANCE, 0)).unwrap();
                let to = (SERVICE, base(GROUP));
                let start = Instant::now();
                let mut seq = 0u16;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < MAX_SENDING {
                    let due = start + INTERVAL * u32::from(seq);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    // An error (no ARP answer yet) is a packet lost on the way.
                    let _ = socket.send_to(&rtp(0x5eed, seq, 160), to);
                    seq += 1;
                }
                (seq, Instant::now())
            })
        };
        let traffic = Traffic {
            stop,
            arrivals,
            sender: Some(sender),
            sink: Some(sink),
        };
        assert!(
            wait_until(Duration::from_secs(3), || traffic.received() > 20),
            "media flows through relay-a"
        );
        traffic
    }

    fn received(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// Stops the appliance, waits for the sink to be quiet: what arrived.
    fn finish(mut self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, stopped) = self.sender.take().unwrap().join().unwrap();
        self.sink.take().unwrap().join().unwrap();
        let arrivals = std::mem::take(&mut *self.arrivals.lock().unwrap());
        Outcome {
            sent,
            stopped,
            arrivals,
        }
    }
}

impl Drop for Traffic {
    /// A test that fails before [`Traffic::finish`] stops both threads too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the sink saw of the packets the appliance sent.
struct Outcome {
    sent: u16,
    /// When the appliance stopped sending.
    stopped: Instant,
    arrivals: Vec<Arrival>,
}

impl Outcome {
    /// Packets that arrived more than once.
    fn duplicates(&self) -> usize {
        let mut seen = vec![false; usize::from(self.sent)];
        let mut twice = 0;
        for a in &self.arrivals {
            match seen.get_mut(usize::from(a.seq)) {
                Some(s) if *s => twice += 1,
                Some(s) => *s = true,
                None => panic!("a packet never sent: {a:?}"),
            }
        }
        twice
    }

    /// Packets sent that never arrived.
    fn lost(&self) -> usize {
        let mut seen = vec![false; usize::from(self.sent)];
        for a in &self.arrivals {
            seen[usize::from(a.seq)] = true;
        }
        seen.iter().filter(|s| !**s).count()
    }

    /// The longest time without a packet at the sink, the silence after the
    /// last one until the appliance stopped included.
    fn gap(&self) -> Duration {
        let mut longest = Duration::ZERO;
        for pair in self.arrivals.windows(2) {
            longest = longest.max(pair[1].at - pair[0].at);
        }
        let last = self.arrivals.last().expect("some packets arrived");
        longest.max(self.stopped.saturating_duration_since(last.at))
    }

    /// The first and last arrival from `relay`.
    fn span(&self, relay: &str) -> Option<(Instant, Instant)> {
        let ip: IpAddr = relay.parse().unwrap();
        let mut from = self.arrivals.iter().filter(|a| a.from == ip);
        let first = from.next()?.at;
        Some((first, from.next_back().map_or(first, |a| a.at)))
    }

    /// Where the packets came from, for messages.
    fn sources(&self) -> String {
        let mut counts = std::collections::BTreeMap::<IpAddr, usize>::new();
        for a in &self.arrivals {
            *counts.entry(a.from).or_default() += 1;
        }
        format!("{counts:?}")
    }

    /// No duplicate, the gap within the lease + 1 s, relay-a's last packet
    /// before relay-b's first (never two forwarding at once); prints the gap.
    fn assert_failover(&self, scenario: &str) {
        let gap = self.gap();
        eprintln!(
            "{scenario}: media gap {gap:?}; {} sent, {} lost, {} duplicates, from {}",
            self.sent,
            self.lost(),
            self.duplicates(),
            self.sources()
        );
        assert_eq!(self.duplicates(), 0, "{scenario}: no packet twice");
        assert!(gap <= MAX_GAP, "{scenario}: media gap {gap:?}");
        let (_, a_last) = self.span(RELAY_A).expect("relay-a forwarded");
        let (b_first, _) = self.span(RELAY_B).expect("relay-b forwarded");
        assert!(
            a_last < b_first,
            "{scenario}: relay-a forwarded {:?} after relay-b started",
            a_last - b_first
        );
    }
}

/// Waits until relay-b has taken over (active, the group bound, the
/// service address on its interface); how long that took from `since`.
fn takes_over(lan: &Lan, b: &Node, since: Instant) -> Duration {
    assert!(
        wait_until(TTL + Duration::from_secs(3), || b.forwards()),
        "relay-b took over: {}",
        b.log()
    );
    let took = since.elapsed();
    assert!(lan.holds_service_address("rb"));
    took
}

#[test]
fn a_killed_active_relay_is_replaced_by_the_standby() {
    if skip_netns() {
        return;
    }
    let lan = Lan::new(1);
    let etcd = Etcd::start_members(&[(&lan.ns("e0"), ETCD[0])]);
    let (mut a, b) = cluster(&lan, &etcd, "");
    let traffic = Traffic::start(&lan);
    std::thread::sleep(Duration::from_millis(500));
    a.crash();
    let took = takes_over(&lan, &b, Instant::now());
    eprintln!("kill -9: relay-b forwards {took:?} after the kill");
    // The appliance follows relay-b's announcement.
    let b_mac = lan.mac("rb");
    assert!(
        wait_until(Duration::from_secs(1), || lan
            .appliance_sends_to()
            .contains(&b_mac)),
        "the appliance's entry moved to relay-b ({b_mac}): {}",
        lan.appliance_sends_to()
    );
    std::thread::sleep(Duration::from_secs(1));
    traffic.finish().assert_failover("kill -9");
    assert_reservations_kept(&b, &etcd);
}

#[test]
fn an_active_relay_whose_link_goes_down_is_replaced_and_rejoins_as_standby() {
    if skip_netns() {
        return;
    }
    let lan = Lan::new(1);
    let etcd = Etcd::start_members(&[(&lan.ns("e0"), ETCD[0])]);
    let (a, b) = cluster(&lan, &etcd, "");
    let traffic = Traffic::start(&lan);
    std::thread::sleep(Duration::from_millis(500));
    lan.ip("ra", &["link", "set", DEV, "down"]);
    let t0 = Instant::now();
    let took = takes_over(&lan, &b, t0);
    eprintln!("link down: relay-b forwards {took:?} after");
    // Cut off from etcd, relay-a stepped down and gave the address up.
    assert!(
        wait_until(Duration::from_secs(1), || !lan.holds_service_address("ra")),
        "relay-a released the service address: {}",
        a.log()
    );
    assert_eq!(a.bound_sockets(), 0);
    // Back on the LAN, relay-a follows as standby and forwards nothing.
    lan.ip("ra", &["link", "set", DEV, "up"]);
    assert!(
        wait_until(Duration::from_secs(10), || a.rejoined()),
        "relay-a rejoins: {}",
        a.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let outcome = traffic.finish();
    outcome.assert_failover("link down");
    assert!(!lan.holds_service_address("ra"));
    assert!(b.forwards());
    assert_reservations_kept(&b, &etcd);
}

#[test]
fn an_active_relay_whose_host_is_gone_is_replaced() {
    if skip_netns() {
        return;
    }
    let lan = Lan::new(1);
    let etcd = Etcd::start_members(&[(&lan.ns("e0"), ETCD[0])]);
    let (mut a, b) = cluster(&lan, &etcd, "");
    let traffic = Traffic::start(&lan);
    std::thread::sleep(Duration::from_millis(500));
    // A namespace lives on while a process is in it: the host goes with
    // its process, its interfaces with its namespace.
    a.crash();
    lan.delete("ra");
    let took = takes_over(&lan, &b, Instant::now());
    eprintln!("host gone: relay-b forwards {took:?} after");
    std::thread::sleep(Duration::from_secs(1));
    traffic.finish().assert_failover("host gone");
    assert_reservations_kept(&b, &etcd);
}

#[test]
fn an_active_relay_cut_off_from_etcd_steps_down_before_the_standby_starts() {
    if skip_netns() {
        return;
    }
    let lan = Lan::new(1);
    let etcd = Etcd::start_members(&[(&lan.ns("e0"), ETCD[0])]);
    let (a, b) = cluster(&lan, &etcd, "");
    let traffic = Traffic::start(&lan);
    std::thread::sleep(Duration::from_millis(500));
    let route = format!("{}/32", ETCD[0]);
    lan.ip("ra", &["route", "add", "blackhole", &route]);
    let cut = Instant::now();
    let took = takes_over(&lan, &b, cut);
    eprintln!("partition: relay-b forwards {took:?} after the cut");
    assert!(
        !lan.holds_service_address("ra"),
        "relay-a gave the address up"
    );
    assert_eq!(a.bound_sockets(), 0);
    // Healed, relay-a follows as standby.
    lan.ip("ra", &["route", "del", "blackhole", &route]);
    assert!(
        wait_until(Duration::from_secs(10), || a.rejoined()),
        "relay-a rejoins: {}",
        a.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let outcome = traffic.finish();
    outcome.assert_failover("partition from etcd");
    // Stopped by its own deadline: within the lease less the margin of the cut.
    let (_, a_last) = outcome.span(RELAY_A).unwrap();
    let forwarded = a_last.saturating_duration_since(cut);
    eprintln!("partition: relay-a forwarded {forwarded:?} after the cut");
    assert!(forwarded < TTL, "{forwarded:?}");
    assert!(!lan.holds_service_address("ra"));
    assert_reservations_kept(&b, &etcd);
}

/// Three etcd members on the LAN, relay-a active: kills the etcd leader or
/// one of the followers (the one relay-a's client talks to first, so that
/// its streams break) while the appliance sends; the outcome, and both nodes.
fn kill_an_etcd_member(leader: bool) -> (Lan, Etcd, Node, Node, Outcome) {
    let lan = Lan::new(3);
    let members: Vec<(PathBuf, &str)> = ["e0", "e1", "e2"]
        .iter()
        .zip(ETCD)
        .map(|(h, ip)| (lan.ns(h), ip))
        .collect();
    let members: Vec<(&std::path::Path, &str)> =
        members.iter().map(|(p, ip)| (p.as_path(), *ip)).collect();
    let mut etcd = Etcd::start_members(&members);
    let (a, b) = cluster(&lan, &etcd, "");
    let traffic = Traffic::start(&lan);
    let current = etcd.leader().expect("etcd names its leader");
    // The relays ask the first member listed until it fails.
    let victim = if leader {
        current
    } else if current == 0 {
        1
    } else {
        0
    };
    std::thread::sleep(Duration::from_millis(500));
    etcd.kill(victim);
    // Twice the lease: a renewal lost to the dead member would show.
    std::thread::sleep(2 * TTL);
    let outcome = traffic.finish();
    eprintln!(
        "etcd {} (member {victim}) killed: media gap {:?}; {} sent, {} lost, {} duplicates, from {}",
        if leader { "leader" } else { "follower" },
        outcome.gap(),
        outcome.sent,
        outcome.lost(),
        outcome.duplicates(),
        outcome.sources()
    );
    // Writes go on, through either node: a few, as each may be sent to any
    // member first.
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let id = format!("during{i}");
        let r = node.relay().post(
            "/v1/reservations",
            &reservation(&id, GROUP + 3 + i as u16, 3600, 7200),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let stored = etcd
            .ctl(&[
                "get",
                "--print-value-only",
                &format!("/rtp-relay/reservations/{id}"),
            ])
            .unwrap_or_default();
        assert!(stored.contains(&format!("\"{id}\"")), "{id} is in etcd");
    }
    assert_reservations_kept(&a, &etcd);
    (lan, etcd, a, b, outcome)
}

/// Nothing changes: relay-a stays active and forwards every packet, relay-b
/// forwards nothing, both still take writes.
fn assert_nothing_changed(etcd: &Etcd, a: &Node, b: &Node, outcome: &Outcome) {
    assert!(
        !a.log().contains("stepping down"),
        "relay-a stepped down with two of three etcd members up:\n{}\n--- relay-b:\n{}\n{}",
        a.events(),
        b.events(),
        etcd.logs()
    );
    assert_eq!(a.role().as_deref(), Some("active"), "{}", a.events());
    assert_eq!(b.role().as_deref(), Some("standby"), "{}", b.events());
    assert_eq!(outcome.duplicates(), 0);
    assert_eq!(outcome.lost(), 0, "no failover, nothing lost");
    assert!(outcome.span(RELAY_B).is_none(), "relay-b forwarded nothing");
}

#[test]
fn an_etcd_follower_killed_changes_nothing() {
    if skip_netns() {
        return;
    }
    let (_lan, etcd, a, b, outcome) = kill_an_etcd_member(false);
    assert_nothing_changed(&etcd, &a, &b, &outcome);
}

/// The leader's loss costs an election inside etcd (well under a second with
/// a LAN's timing, docs/cluster.md "etcd") and the relays a move to a live
/// member: inside the active node's lease.
#[test]
fn the_etcd_leader_killed_changes_nothing() {
    if skip_netns() {
        return;
    }
    let (_lan, etcd, a, b, outcome) = kill_an_etcd_member(true);
    assert_nothing_changed(&etcd, &a, &b, &outcome);
}

#[test]
fn a_stopped_active_relay_hands_over_without_losing_a_packet() {
    if skip_netns() {
        return;
    }
    let lan = Lan::new(1);
    let etcd = Etcd::start_members(&[(&lan.ns("e0"), ETCD[0])]);
    let (a, b) = cluster(&lan, &etcd, "");
    let traffic = Traffic::start(&lan);
    std::thread::sleep(Duration::from_millis(500));
    a.relay().signal(Signal::SIGTERM);
    let took = takes_over(&lan, &b, Instant::now());
    eprintln!("SIGTERM: relay-b forwards {took:?} after the signal");
    let mut a = a;
    assert!(
        a.relay
            .as_mut()
            .unwrap()
            .wait(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "relay-a stops cleanly: {}",
        a.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let outcome = traffic.finish();
    outcome.assert_failover("SIGTERM");
    assert_eq!(outcome.lost(), 0, "a planned hand-over loses nothing");
    assert_reservations_kept(&b, &etcd);
}

#[test]
fn a_killed_active_relay_on_the_fast_path_forwards_until_its_fence_then_the_standby() {
    if skip_fast_path() {
        return;
    }
    let lan = Lan::new(1);
    let etcd = Etcd::start_members(&[(&lan.ns("e0"), ETCD[0])]);
    let data = format!("fast_path = \"ebpf\"\nfast_path_interfaces = [\"{DEV}\"]\n");
    let (mut a, b) = cluster(&lan, &etcd, &data);
    for node in [&a, &b] {
        let m = node.relay().get("/metrics").text;
        assert!(
            m.contains("rtp_relay_data_path_info{interfaces=\"eth0\",path=\"ebpf\"} 1"),
            "{m}"
        );
    }
    let traffic = Traffic::start(&lan);
    std::thread::sleep(Duration::from_millis(500));
    a.crash();
    let killed = Instant::now();
    let took = takes_over(&lan, &b, killed);
    eprintln!("kill -9 on the fast path: relay-b forwards {took:?} after the kill");
    std::thread::sleep(Duration::from_secs(1));
    let outcome = traffic.finish();
    outcome.assert_failover("kill -9, fast path");
    // The kernel went on without the process, until the fence: the fence is
    // TTL less the margin (TTL / 6) after the last renewal's sending, which
    // was at most a keepalive interval (TTL / 3) before the kill. Slack for
    // the keepalive timer, the reaping and the packet interval.
    let (_, a_last) = outcome.span(RELAY_A).unwrap();
    let after = a_last.saturating_duration_since(killed);
    eprintln!("kill -9 on the fast path: relay-a's kernel forwarded {after:?} after the kill");
    let fence_after_renewal = TTL - TTL / 6;
    assert!(
        after + TTL / 3 + Duration::from_millis(300) >= fence_after_renewal,
        "the kernel forwarded until the fence: {after:?}"
    );
    assert!(
        after <= fence_after_renewal + Duration::from_millis(200),
        "and nothing past it: {after:?}"
    );
    assert_reservations_kept(&b, &etcd);
}
