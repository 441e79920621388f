//! Real networks for tests that loopback cannot stand in for: three network
//! namespaces — appliance (`a`), relay (`r`), Wowza (`w`) — joined by two veth
//! pairs, addresses from 198.18.0.0/15, the relay (the real binary) running in
//! `r`. Every namespace, link and pin a [`Net`] made is removed when it is
//! dropped, also when the test fails; nothing is made in the machine's own
//! namespace.
//!
//! Needs root and iproute2 (scripts/test installs it). Where namespaces cannot
//! be made these tests fail; `RTP_RELAY_SKIP_NETNS=1` skips them explicitly.

use super::*;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The relay's address toward the appliance: its `bind_address`.
pub const RELAY_A: &str = "198.18.1.1";
pub const APPLIANCE: &str = "198.18.1.2";
/// A second sender beside the appliance.
pub const STRANGER: &str = "198.18.1.3";
/// The relay's address toward Wowza.
pub const RELAY_W: &str = "198.18.2.1";
pub const WOWZA: &str = "198.18.2.2";

/// True when `RTP_RELAY_SKIP_NETNS=1` asks to skip the tests that build
/// namespaces (and says so).
pub fn skip_netns() -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_NETNS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_NETNS=1: network-namespace test skipped");
    }
    skip
}

/// True when the fast-path tests are to be skipped: `RTP_RELAY_SKIP_EBPF=1`
/// (or [`skip_netns`]); says so.
pub fn skip_fast_path() -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_EBPF").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_EBPF=1: fast-path test skipped");
    }
    skip || skip_netns()
}

/// Stops the relay process (SIGSTOP) and waits until every one of its
/// threads is stopped: from then on only the kernel forwards.
pub fn freeze(relay: &Relay) {
    relay.signal(nix::sys::signal::Signal::SIGSTOP);
    let tasks = PathBuf::from(format!("/proc/{}/task", relay.pid()));
    let stopped = || {
        std::fs::read_dir(&tasks).unwrap().flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), stopped),
        "the relay did not stop"
    );
}

/// The relay's own UDP sockets (`/proc/<pid>/net/udp`, read in the relay's
/// namespace, for the sockets among the relay's descriptors): each one's
/// local port and the bytes waiting in its receive queue.
pub fn relay_udp_sockets(relay: &Relay) -> Vec<(u16, u64)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", relay.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{}/net/udp", relay.pid())).unwrap();
    let hex = |field: &str, part: usize| {
        u64::from_str_radix(field.split(':').nth(part).unwrap(), 16).unwrap()
    };
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| inodes.iter().any(|i| i == f[9]))
        // "address:port" and "tx_queue:rx_queue", in hex.
        .map(|f| (hex(f[1], 1) as u16, hex(f[4], 1)))
        .collect()
}

/// The bytes waiting in the receive queues of the relay's UDP sockets: what
/// its data plane has yet to read. On the fast path a port has no socket of
/// its own, and what the kernel leaves to userspace waits in a worker's
/// steering socket.
pub fn userspace_queue(relay: &Relay) -> u64 {
    let sockets = relay_udp_sockets(relay);
    assert!(!sockets.is_empty(), "the relay has no UDP socket");
    sockets.iter().map(|&(_, queued)| queued).sum()
}

/// Runs `ip args`; panics with its error (and how to skip) when it fails.
pub fn ip(args: &[&str]) {
    super::root_command("ip", args, "RTP_RELAY_SKIP_NETNS");
}

/// `[wowza]` keys sending group `g` to `address`, port `base(g)`.
pub fn wowza_at(address: &str) -> String {
    format!("address = \"{address}\"\nport_offset = 0\n")
}

/// `port` on the relay's appliance-side address.
pub fn relay_port(port: u16) -> SocketAddr {
    SocketAddr::new(RELAY_A.parse().unwrap(), port)
}

/// Three namespaces and two veth pairs; deleted (with everything in them) on drop.
pub struct Net {
    names: [String; 3],
    /// The relay's configuration: bound to [`RELAY_A`], Wowza at [`WOWZA`]
    /// without a port offset, the relay's default socket buffers, the fast
    /// path off unless `data` says otherwise. Change it before [`Net::start`].
    pub setup: Setup,
}

impl Net {
    pub fn new() -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "rtpns{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let names = ["a", "r", "w"].map(|s| format!("{tag}{s}"));
        let mut setup = Setup::new();
        setup.bind_address = RELAY_A.into();
        setup.socket_buffers = None;
        setup.wowza = wowza_at(WOWZA);
        let net = Net { names, setup };
        let [a, r, w] = &net.names;
        for n in &net.names {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        // Created inside the namespaces: no interface ever exists in ours.
        ip(&[
            "-n", r, "link", "add", "vra", "type", "veth", "peer", "name", "va", "netns", a,
        ]);
        ip(&[
            "-n", r, "link", "add", "vrw", "type", "veth", "peer", "name", "vw", "netns", w,
        ]);
        for (ns, dev, addrs) in [
            (a, "va", &[APPLIANCE, STRANGER][..]),
            (r, "vra", &[RELAY_A][..]),
            (r, "vrw", &[RELAY_W][..]),
            (w, "vw", &[WOWZA][..]),
        ] {
            for addr in addrs {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            }
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", a, "route", "add", "198.18.2.0/24", "via", RELAY_A]);
        ip(&["-n", w, "route", "add", "198.18.1.0/24", "via", RELAY_W]);
        net
    }

    /// As [`Net::new`], with the relay required to run on the fast path
    /// (`fast_path = "ebpf"`) and packets over 1000 bytes oversize.
    pub fn with_fast_path() -> Net {
        let mut net = Net::new();
        net.setup.data = "fast_path = \"ebpf\"\nmax_packet_size = 1000\n".into();
        net
    }

    /// The relay namespace's name (for `ip -n`).
    pub fn relay_name(&self) -> &str {
        &self.names[1]
    }

    fn ns(&self, which: usize) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.names[which]))
    }

    pub fn appliance_ns(&self) -> PathBuf {
        self.ns(0)
    }

    pub fn relay_ns(&self) -> PathBuf {
        self.ns(1)
    }

    pub fn wowza_ns(&self) -> PathBuf {
        self.ns(2)
    }

    /// `ip route add route…` in the relay namespace.
    pub fn relay_route(&self, route: &[&str]) {
        ip(&[&["-n", &self.names[1], "route", "add"][..], route].concat());
    }

    /// A UDP socket bound to `ip:port` inside namespace `ns`, with a read
    /// timeout of 400 ms (the quiet time that ends a [`drain`]).
    pub fn socket(&self, ns: &Path, ip: &str, port: u16) -> UdpSocket {
        let s = in_netns(Some(ns), || UdpSocket::bind((ip, port)))
            .unwrap_or_else(|e| panic!("bind {ip}:{port} in {}: {e}", ns.display()));
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s
    }

    /// A sender in the appliance namespace, from `ip` ([`APPLIANCE`] or [`STRANGER`]).
    pub fn sender(&self, ip: &str) -> UdpSocket {
        self.socket(&self.appliance_ns(), ip, 0)
    }

    /// Wowza's socket on `port` in the Wowza namespace.
    pub fn wowza(&self, port: u16) -> UdpSocket {
        self.socket(&self.wowza_ns(), WOWZA, port)
    }

    /// Writes the relay configuration and starts the relay in the relay namespace.
    pub fn start(&self) -> Relay {
        self.setup.start_in(&self.relay_ns())
    }

    /// Turns `dev`'s transmit checksum offload off in namespace `ns`
    /// (`ethtool -K dev tx off`): a UDP checksum the stack left to the
    /// device (CHECKSUM_PARTIAL, veth's default) is completed in software
    /// before the packet leaves, and a packet sent there carries a
    /// complete one.
    pub fn tx_checksum_off(&self, ns: &Path, dev: &str) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["ethtool", "-K", dev, "tx", "off"])
            .output()
            .expect("ethtool (Debian's ethtool) runs");
        assert!(out.status.success(), "ethtool -K {dev} tx off: {out:?}");
    }

    /// The UDP datagrams namespace `ns` dropped for a wrong checksum
    /// (`Udp: InCsumErrors`).
    pub fn udp_checksum_errors(&self, ns: &Path) -> u64 {
        // thread-self: the namespace this thread entered, not the process's.
        let snmp = in_netns(Some(ns), || {
            std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap()
        });
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
        let at = names
            .split_whitespace()
            .position(|n| n == "InCsumErrors")
            .unwrap();
        values.split_whitespace().nth(at).unwrap().parse().unwrap()
    }

    /// The relay namespace routes between the appliance's and Wowza's
    /// (`net.ipv4.ip_forward = 1`), as a host on the path would.
    pub fn route_through_relay(&self) {
        in_netns(Some(&self.relay_ns()), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        });
    }

    /// lo's accept_local and route_localnet in the relay namespace.
    pub fn lo_settings(&self, accept_local: &str, route_localnet: &str) {
        in_netns(Some(&self.relay_ns()), || {
            for (name, value) in [
                ("accept_local", accept_local),
                ("route_localnet", route_localnet),
            ] {
                std::fs::write(format!("/proc/sys/net/ipv4/conf/lo/{name}"), value).unwrap();
            }
        });
    }

    /// Where a relay on the fast path pins its maps and links.
    pub fn pins(&self) -> PathBuf {
        rtp_relay::dataplane::ebpf::pin_dir(&self.setup.state_path())
    }

    /// Reserves `group` (audio-only) for the appliance (`source` [`APPLIANCE`])
    /// and binds the appliance's and Wowza's sockets for its media.
    pub fn lane(&self, relay: &Relay, id: &str, group: u16) -> Lane {
        self.lane_for(relay, id, group, 600)
    }

    /// As [`Net::lane`], for an event that ends in `secs` seconds.
    pub fn lane_for(&self, relay: &Relay, id: &str, group: u16, secs: i64) -> Lane {
        reserve_for(relay, id, group, secs, &from_appliance());
        Lane {
            appliance: self.sender(APPLIANCE),
            media: relay_port(base(group)),
            wowza: self.wowza(base(group)),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veths and, with them, the links
        // attached there; removing the pins frees the maps.
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        rtp_relay::dataplane::ebpf::remove_pins(&self.pins());
    }
}

/// One reserved group's media path: the appliance's socket, the relay's media
/// port, and Wowza's socket where the relay sends it.
pub struct Lane {
    pub appliance: UdpSocket,
    pub media: SocketAddr,
    pub wowza: UdpSocket,
}

impl Lane {
    /// Sends `rtp(ssrc, seq, payload_len(seq))` for every `seq` to the relay.
    pub fn send(
        &self,
        ssrc: u32,
        seqs: Range<u16>,
        payload_len: impl Fn(u16) -> usize,
    ) -> Vec<Vec<u8>> {
        send_rtp(&self.appliance, self.media, ssrc, seqs, payload_len)
    }

    /// Everything Wowza receives until it is quiet.
    pub fn drain(&self) -> Vec<(Vec<u8>, SocketAddr)> {
        drain(&self.wowza)
    }
}

/// The `extra` of [`reserve`] that names the appliance as the source.
pub fn from_appliance() -> String {
    format!(r#", "source": "{APPLIANCE}""#)
}

/// Reserves `group` (audio-only) from now for 10 minutes, with `extra` JSON
/// members (each with a leading comma); asserts it is active at once.
pub fn reserve(relay: &Relay, id: &str, group: u16, extra: &str) {
    reserve_for(relay, id, group, 600, extra)
}

/// As [`reserve`], for `secs` seconds.
pub fn reserve_for(relay: &Relay, id: &str, group: u16, secs: i64, extra: &str) {
    let body = format!(
        r#"{{"event_id": "{id}", "group": {group}, "layout": "audio-only", "start": "{}", "end": "{}"{extra}}}"#,
        at(0),
        at(secs)
    );
    relay.create(&body, "active");
}

/// The media (first) stream's `rtp` statistics of reservation `id`.
pub fn media_stats(relay: &Relay, id: &str) -> Value {
    let v = relay.get(&format!("/v1/reservations/{id}")).body;
    v["streams"][0]["rtp"].clone()
}
