//! SPEC §3 on the kernel fast path, over real networks: every test builds its
//! own network namespaces — appliance ↔ relay ↔ Wowza, joined by veth pairs,
//! addresses from 198.18.0.0/15 — runs the real binary in the relay's with
//! `fast_path = "ebpf"`, and removes every namespace, link and pin it made,
//! also when it fails. Nothing is attached in the machine's own namespace.
//!
//! The kernel's share is made visible by stopping the relay process
//! (SIGSTOP): whatever still arrives was forwarded by the program.
//!
//! Where the fast path cannot load these tests fail; `RTP_RELAY_SKIP_EBPF=1`
//! skips them explicitly.

mod common;
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const RELAY_A: &str = "198.18.1.1";
const APPLIANCE: &str = "198.18.1.2";
const STRANGER: &str = "198.18.1.3";
const RELAY_W: &str = "198.18.2.1";
const WOWZA: &str = "198.18.2.2";
/// Group 0: media 65528, control 65529 (audio-only).
const MEDIA: u16 = 65528;
const CONTROL: u16 = 65529;

fn skip() -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_EBPF").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_EBPF=1: fast-path test skipped");
    }
    skip
}

/// Three namespaces — appliance (`a`), relay (`r`), Wowza (`w`) — and two veth
/// pairs; deleted (with everything in them) on drop.
struct Net {
    names: [String; 3],
    dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run ip ({e}): install iproute2, or set RTP_RELAY_SKIP_EBPF=1 to skip")
    });
    assert!(
        out.status.success(),
        "ip {}: {} (the fast-path tests need root; RTP_RELAY_SKIP_EBPF=1 skips them)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Net {
    fn new() -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "rtpfp{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let names = ["a", "r", "w"].map(|s| format!("{tag}{s}"));
        let net = Net {
            names,
            dir: tempfile::tempdir().unwrap(),
        };
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

    fn ns(&self, which: usize) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.names[which]))
    }

    fn appliance(&self) -> PathBuf {
        self.ns(0)
    }

    fn relay_ns(&self) -> PathBuf {
        self.ns(1)
    }

    fn wowza(&self) -> PathBuf {
        self.ns(2)
    }

    /// A UDP socket bound to `addr` inside namespace `ns`.
    fn socket(&self, ns: &Path, addr: &str) -> UdpSocket {
        let s = in_netns(Some(ns), || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.display()));
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a relay configuration (fast path required) and starts the relay
    /// in the relay namespace.
    fn start(&self, wowza: &str, data: &str) -> Relay {
        let config = self.dir.path().join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[control]\nlisten = \"127.0.0.1:0\"\n[data]\nbind_address = \"{RELAY_A}\"\nfast_path = \"ebpf\"\nmax_packet_size = 1000\n{data}\n[wowza]\naddress = \"{wowza}\"\nport_offset = 0\n[state]\npath = \"{}\"\n[log]\nlevel = \"info\"\n",
                self.state().display()
            ),
        )
        .unwrap();
        Relay::start_in(&config, Some(&self.relay_ns()))
            .unwrap_or_else(|log| panic!("the relay did not start on the fast path:\n{log}"))
    }

    /// lo's accept_local and route_localnet in the relay namespace.
    fn lo_settings(&self, accept_local: &str, route_localnet: &str) {
        in_netns(Some(&self.relay_ns()), || {
            for (name, value) in [
                ("accept_local", accept_local),
                ("route_localnet", route_localnet),
            ] {
                std::fs::write(format!("/proc/sys/net/ipv4/conf/lo/{name}"), value).unwrap();
            }
        });
    }

    fn pins(&self) -> PathBuf {
        rtp_relay::dataplane::ebpf::pin_dir(&self.state())
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

/// Stops the relay process (SIGSTOP) and waits until every one of its
/// threads is stopped: from then on only the kernel forwards.
fn freeze(relay: &Relay) {
    relay.signal(Signal::SIGSTOP);
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

fn rtp(ssrc: u32, seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// An RTCP sender report (28 bytes), or a receiver report with one block.
fn rtcp(pt: u8) -> Vec<u8> {
    let mut p = match pt {
        200 => vec![0x80, 200, 0, 6],
        _ => vec![0x81, 201, 0, 7],
    };
    p.resize(if pt == 200 { 28 } else { 32 }, 7);
    p
}

/// Everything `s` receives until it is quiet for its read timeout.
fn drain(s: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        out.push((buf[..n].to_vec(), from));
    }
    out
}

fn reserve(relay: &Relay, id: &str, group: u16, extra: &str) {
    let body = format!(
        r#"{{"event_id": "{id}", "group": {group}, "layout": "audio-only", "start": "{}", "end": "{}"{extra}}}"#,
        at(0),
        at(600)
    );
    let a = relay.post("/v1/reservations", &body);
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (201, Some("active")),
        "{}",
        a.text
    );
}

fn media_stats(relay: &Relay, id: &str) -> Value {
    let v = relay.get(&format!("/v1/reservations/{id}")).body;
    v["streams"][0]["rtp"].clone()
}

#[test]
fn remote_destination_strict_policy_every_rule_on_the_fast_path() {
    if skip() {
        return;
    }
    let net = Net::new();
    let relay = net.start(WOWZA, "");
    let metrics = relay.get("/metrics").text;
    assert!(
        metrics.contains("rtp_relay_data_path_info{interfaces=\"vra\",path=\"ebpf\"} 1"),
        "{metrics}"
    );
    reserve(
        &relay,
        "strict",
        0,
        &format!(r#", "source": "{APPLIANCE}""#),
    );
    let appliance = net.socket(&net.appliance(), &format!("{APPLIANCE}:0"));
    let stranger = net.socket(&net.appliance(), &format!("{STRANGER}:0"));
    let wowza_media = net.socket(&net.wowza(), &format!("{WOWZA}:{MEDIA}"));
    let wowza_control = net.socket(&net.wowza(), &format!("{WOWZA}:{CONTROL}"));
    let media: SocketAddr = format!("{RELAY_A}:{MEDIA}").parse().unwrap();
    let control: SocketAddr = format!("{RELAY_A}:{CONTROL}").parse().unwrap();

    // Byte for byte, from the relay's port, with the relay process running…
    let mut sent = Vec::new();
    for seq in 0..20u16 {
        let p = rtp(0xabc, seq, 100 + usize::from(seq) * 7);
        appliance.send_to(&p, media).unwrap();
        sent.push(p);
    }
    // …and with it stopped: only the kernel can forward these.
    freeze(&relay);
    for seq in 20..40u16 {
        let p = rtp(0xabc, seq, 100 + usize::from(seq) * 7);
        appliance.send_to(&p, media).unwrap();
        sent.push(p);
    }
    let got = drain(&wowza_media);
    relay.signal(Signal::SIGCONT);
    assert_eq!(got.len(), sent.len(), "every packet reaches Wowza");
    for ((data, from), p) in got.iter().zip(&sent) {
        assert_eq!(data, p, "forwarded unchanged");
        assert_eq!(*from, media, "from the relay's port");
    }

    // Strangers, malformed and oversize packets never reach Wowza.
    stranger.send_to(&rtp(0xabc, 40, 100), media).unwrap();
    appliance.send_to(&[0x40, 96, 0, 41], media).unwrap();
    appliance.send_to(&rtp(0xabc, 42, 1100), media).unwrap();
    assert!(drain(&wowza_media).is_empty(), "nothing else arrives");

    // RTCP: the sender report goes to Wowza, its receiver report back to the
    // appliance (control ports are forwarded in userspace).
    appliance.send_to(&rtcp(200), control).unwrap();
    let (sr, from) = wowza_control.recv_from(&mut [0u8; 64]).unwrap();
    assert_eq!((sr, from), (28, control));
    wowza_control.send_to(&rtcp(201), control).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = appliance.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&rtcp(201)[..], control));

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
    assert_eq!(s["appliance"], appliance.local_addr().unwrap().to_string());

    // A freed group is closed to the kernel before the API answers.
    assert_eq!(relay.delete("/v1/reservations/strict").status, 200);
    appliance.send_to(&rtp(0xabc, 43, 100), media).unwrap();
    assert!(
        drain(&wowza_media).is_empty(),
        "a freed group forwards nothing"
    );
}

#[test]
fn local_destination_latch_and_any_on_the_fast_path() {
    if skip() {
        return;
    }
    let net = Net::new();
    // Wowza on the relay's own host (its other address): the kernel hands the
    // packets to the local stack, which takes them with lo's accept_local.
    net.lo_settings("1", "0");
    let relay = net.start(RELAY_W, "");
    reserve(&relay, "latch", 0, r#", "source_policy": "latch""#);
    reserve(&relay, "any", 1, r#", "source_policy": "any""#);
    let first = net.socket(&net.appliance(), &format!("{APPLIANCE}:0"));
    let second = net.socket(&net.appliance(), &format!("{STRANGER}:0"));
    let latch_media: SocketAddr = format!("{RELAY_A}:{MEDIA}").parse().unwrap();
    let any_media: SocketAddr = format!("{RELAY_A}:{}", MEDIA - 8).parse().unwrap();
    let wowza_latch = net.socket(&net.relay_ns(), &format!("{RELAY_W}:{MEDIA}"));
    let wowza_any = net.socket(&net.relay_ns(), &format!("{RELAY_W}:{}", MEDIA - 8));

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
    for seq in 10..15u16 {
        second.send_to(&rtp(9, seq, 200), latch_media).unwrap();
    }
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
    if skip() {
        return;
    }
    let net = Net::new();
    let relay = net.start("127.0.0.1", "");
    // Read when a group is bound: group 0 without, group 1 with.
    net.lo_settings("0", "0");
    reserve(&relay, "plain", 0, &format!(r#", "source": "{APPLIANCE}""#));
    net.lo_settings("1", "1");
    reserve(
        &relay,
        "localnet",
        1,
        &format!(r#", "source": "{APPLIANCE}""#),
    );
    let appliance = net.socket(&net.appliance(), &format!("{APPLIANCE}:0"));
    let plain: SocketAddr = format!("{RELAY_A}:{MEDIA}").parse().unwrap();
    let localnet: SocketAddr = format!("{RELAY_A}:{}", MEDIA - 8).parse().unwrap();
    let wowza_plain = net.socket(&net.relay_ns(), &format!("127.0.0.1:{MEDIA}"));
    let wowza_localnet = net.socket(&net.relay_ns(), &format!("127.0.0.1:{}", MEDIA - 8));

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
    if skip() {
        return;
    }
    let net = Net::new();
    let relay = net.start(WOWZA, "");
    reserve(
        &relay,
        "steady",
        0,
        &format!(r#", "source": "{APPLIANCE}""#),
    );
    let wowza = net.socket(&net.wowza(), &format!("{WOWZA}:{MEDIA}"));
    let media: SocketAddr = format!("{RELAY_A}:{MEDIA}").parse().unwrap();
    let appliance = net.socket(&net.appliance(), &format!("{APPLIANCE}:0"));
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
    std::thread::sleep(Duration::from_millis(500));
    let relay = net.start(WOWZA, "");
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

    // SIGTERM detaches and removes every pin.
    let mut relay = relay;
    relay.signal(Signal::SIGTERM);
    assert!(
        relay.wait(Duration::from_secs(10)).is_some(),
        "stops on SIGTERM"
    );
    assert!(!net.pins().exists(), "pins removed on SIGTERM");
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
    if skip() {
        return;
    }
    let net = Net::new();
    let config = |mode: &str| {
        let path = net.dir.path().join(format!("{mode}.toml"));
        std::fs::write(
            &path,
            format!(
                "[control]\nlisten = \"127.0.0.1:0\"\n[data]\nbind_address = \"{RELAY_A}\"\nfast_path = \"{mode}\"\n[state]\npath = \"{}\"\n",
                net.dir.path().join(mode).display()
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
    if skip() {
        return;
    }
    let net = Net::new();
    let relay = net.start(WOWZA, "[schedule]\ntrail = \"0s\"\n");
    let created = Instant::now();
    let body = format!(
        r#"{{"event_id": "short", "group": 0, "layout": "audio-only", "start": "{}", "end": "{}", "source": "{APPLIANCE}"}}"#,
        at(0),
        at(3)
    );
    let a = relay.post("/v1/reservations", &body);
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (201, Some("active")),
        "{}",
        a.text
    );
    let appliance = net.socket(&net.appliance(), &format!("{APPLIANCE}:0"));
    let wowza = net.socket(&net.wowza(), &format!("{WOWZA}:{MEDIA}"));
    let media: SocketAddr = format!("{RELAY_A}:{MEDIA}").parse().unwrap();
    appliance.send_to(&rtp(3, 0, 100), media).unwrap();
    assert_eq!(drain(&wowza).len(), 1, "forwarded while the window is open");
    // Gone: no one will free the group when its window ends.
    relay.crash();
    appliance.send_to(&rtp(3, 1, 100), media).unwrap();
    assert_eq!(
        drain(&wowza).len(),
        1,
        "the kernel forwards without the relay"
    );
    std::thread::sleep(Duration::from_secs(4).saturating_sub(created.elapsed()));
    for seq in 2..5 {
        appliance.send_to(&rtp(3, seq, 100), media).unwrap();
    }
    assert!(
        drain(&wowza).is_empty(),
        "nothing is forwarded past the window's end"
    );
}
