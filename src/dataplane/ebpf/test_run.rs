//! The program loaded but attached nowhere, run on crafted frames with
//! `BPF_PROG_TEST_RUN`: what the statistics parity test and the fast-path
//! benchmark use, with the frame builder and checksums they check rewrites by.

use super::table::{Locals, Rule};
use super::{
    LearnRing, Loaded, PIN_ROOT, PROGRAM, Streams, chain, load_object_pinned, load_pinned,
    remove_pins, unavailable, write_fence,
};
use aya::maps::{Array, MapData};
use aya::programs::SchedClassifier;
use std::path::{Path, PathBuf};

/// The program loaded but attached nowhere, its maps pinned in a directory of
/// its own (removed on drop): for tests and benchmarks that run it on crafted
/// frames with `BPF_PROG_TEST_RUN`.
pub struct Detached {
    ebpf: aya::Ebpf,
    rules: Array<MapData, Rule>,
    streams: Streams,
    locals: Array<MapData, Locals>,
    fence: Option<Array<MapData, u64>>,
    learn: Option<LearnRing>,
    dir: PathBuf,
}

impl Detached {
    /// Loads the program; `name` names the pin directory under [`PIN_ROOT`].
    pub fn load(name: &str) -> Result<Detached, String> {
        Self::load_from(None, name)
    }

    /// Loads `object` (a compiled `relay.bpf.c`, e.g. an earlier build's, for a
    /// benchmark's baseline) or, with `None`, this build's program.
    pub fn load_from(object: Option<&[u8]>, name: &str) -> Result<Detached, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let dir = Path::new(PIN_ROOT).join(name);
        let Loaded {
            mut ebpf,
            rules,
            streams,
            locals,
            fence,
        } = match object {
            Some(o) => load_object_pinned(o, &dir)?,
            None => load_pinned(&dir)?,
        };
        let learn = LearnRing::take(&mut ebpf);
        Ok(Detached {
            ebpf,
            rules,
            streams,
            locals,
            fence,
            learn,
            dir,
        })
    }

    /// Sets the local addresses the program matches destinations against
    /// (for rules bound on 0.0.0.0; none until set).
    pub fn set_locals(&mut self, addresses: &[std::net::Ipv4Addr]) -> Result<(), String> {
        self.locals
            .set(0, Locals::new(addresses), 0)
            .map_err(|e| chain(&e))
    }

    /// Sets the fence's deadline (CLOCK_BOOTTIME ns; `None`: no fence), as
    /// [`super::FastPath::fence`] does.
    pub fn set_fence(&mut self, deadline_ns: Option<u64>) -> Result<(), String> {
        let map = self.fence.as_mut().ok_or("this object has no fence map")?;
        write_fence(map, deadline_ns)
    }

    /// Sets `port`'s rule.
    pub fn set_rule(&mut self, port: u16, rule: Rule) -> Result<(), String> {
        self.rules
            .set(u32::from(port), rule, 0)
            .map_err(|e| chain(&e))
    }

    /// The stream map.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// The copies waiting in the `learn` ring, as (port, packet), taken out.
    pub fn learn_copies(&mut self) -> Vec<(u16, Vec<u8>)> {
        let mut copies = Vec::new();
        if let Some(ring) = self.learn.as_mut() {
            ring.drain(|c| copies.push((c.port, c.packet.to_vec())));
        }
        copies
    }

    /// Runs the program `repeat` times on `frame` (an Ethernet frame; the
    /// kernel keeps its rewrites between repeats): its verdict, the kernel's
    /// mean time per run, and the frame as the program left it.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<Run, String> {
        use aya::programs::{TestRun, TestRunOptions};
        let program: &SchedClassifier = self
            .ebpf
            .program(PROGRAM)
            .ok_or("no rtp_relay_ingress program")?
            .try_into()
            .map_err(|e| chain(&e))?;
        let mut out = vec![0u8; frame.len() + 64];
        let run = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| chain(&e))?;
        out.truncate(run.data_size_out as usize);
        Ok(Run {
            verdict: run.return_value,
            per_run: run.duration,
            frame: out,
        })
    }
}

/// What [`Detached::run`] returns.
#[derive(Clone, Debug)]
pub struct Run {
    /// The program's return value (`TC_ACT_*`).
    pub verdict: u32,
    /// The kernel's mean time per run.
    pub per_run: std::time::Duration,
    /// The frame after the program.
    pub frame: Vec<u8>,
}

/// The Internet checksum (RFC 1071) of `chunks` concatenated, each of even
/// length but the last.
pub fn internet_checksum<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Drop for Detached {
    fn drop(&mut self) {
        remove_pins(&self.dir);
    }
}

/// An Ethernet + IPv4 + UDP frame carrying an RTP packet of `payload` bytes
/// (for [`Detached::run`]).
pub fn rtp_frame(
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    ssrc: u32,
    seq: u16,
    ts: u32,
    payload: usize,
) -> Vec<u8> {
    let mut rtp = vec![0x80, 96];
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&ts.to_be_bytes());
    rtp.extend_from_slice(&ssrc.to_be_bytes());
    rtp.resize(12 + payload, 0xa5);
    udp_frame(from, to, &rtp)
}

/// An Ethernet + IPv4 + UDP frame carrying `datagram` (for [`Detached::run`]).
pub fn udp_frame(
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    datagram: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&((20 + 8 + datagram.len()) as u16).to_be_bytes());
    f.extend_from_slice(&from.ip().octets());
    f.extend_from_slice(&to.ip().octets());
    f.extend_from_slice(&from.port().to_be_bytes());
    f.extend_from_slice(&to.port().to_be_bytes());
    f.extend_from_slice(&((8 + datagram.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(datagram);
    // Both checksums set, as a NIC that verifies none would deliver it.
    let ip = internet_checksum([&f[14..34]]);
    f[24..26].copy_from_slice(&ip.to_be_bytes());
    let udp = udp_checksum(&f);
    f[40..42].copy_from_slice(&udp.to_be_bytes());
    f
}

/// The UDP checksum of an Ethernet + IPv4 (no options) + UDP frame.
pub fn udp_checksum(frame: &[u8]) -> u16 {
    let udp = &frame[34..];
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&frame[26..34]);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    let header = [&udp[..6], &[0, 0][..]].concat();
    match internet_checksum([&pseudo[..], &header, &udp[8..]]) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    //! The kernel's statistics against the userspace module's, packet by
    //! packet: crafted sequences run through the loaded program with
    //! `BPF_PROG_TEST_RUN` (no interface is attached), each packet's kernel
    //! arrival time fed to [`RtpStream`] as its arrival instant.

    use super::*;
    use crate::packet::rtp::RtpHeader;
    use crate::stats::rtp::RtpStream;
    use std::time::{Duration, Instant};

    const PORT: u16 = 61000;
    const CLOCK: u32 = 90_000;
    /// The program's verdicts: sent up the local stack, left to the stack as
    /// is, dropped.
    const TC_ACT_OK: u32 = 0;
    const TC_ACT_UNSPEC: u32 = u32::MAX;
    const TC_ACT_SHOT: u32 = 2;

    /// The program with maps of its own: each test names its pin directory
    /// (tests run in parallel in one process).
    fn load(test: &str) -> Option<Detached> {
        if std::env::var("RTP_RELAY_SKIP_EBPF").is_ok_and(|v| v == "1") {
            eprintln!("RTP_RELAY_SKIP_EBPF=1: kernel test skipped");
            return None;
        }
        let name = format!("unit-test-{}-{test}", std::process::id());
        Some(Detached::load(&name).unwrap_or_else(|why| {
            panic!("the fast path cannot load here ({why}); RTP_RELAY_SKIP_EBPF=1 skips this test")
        }))
    }

    fn frame(ssrc: u32, seq: u16, ts: u32, payload: usize) -> Vec<u8> {
        rtp_frame(
            "127.0.0.2:5004".parse().unwrap(),
            std::net::SocketAddrV4::new([127, 0, 0, 1].into(), PORT),
            ssrc,
            seq,
            ts,
            payload,
        )
    }

    /// (ssrc, seq) in arrival order: wraparound, a loss burst, reordering
    /// inside and beyond MAX_MISORDER, duplicates, a restarted sequence and a
    /// new SSRC (a restarted encoder).
    fn sequence() -> Vec<(u32, u16)> {
        let mut s: Vec<(u32, u16)> = (65500..=65535).chain(0..40).map(|q| (1, q)).collect();
        s.extend((70..90).map(|q| (1, q))); // 30 lost
        s.extend([(1, 92), (1, 91), (1, 94), (1, 93), (1, 95)]); // reordered
        s.extend([(1, 95), (1, 93), (1, 60)]); // duplicates; 60 is lost and late
        s.extend((96..150).map(|q| (1, q)));
        s.push((1, 149u16.wrapping_sub(400))); // far behind, beyond MAX_MISORDER
        s.extend([(1, 20_000), (1, 20_001)]); // a jump, confirmed: restart
        s.extend((20_002..20_050).map(|q| (1, q)));
        s.extend((500..560).map(|q| (2, q))); // a new SSRC
        s
    }

    /// Sent on as the relay's socket would send it (127.0.0.1:PORT →
    /// 127.0.0.1:40000), payload untouched, both checksums right.
    fn check_rewrite(sent: &[u8], out: &[u8]) {
        assert_eq!(out.len(), sent.len());
        assert_eq!(out[26..34], [127, 0, 0, 1, 127, 0, 0, 1], "addresses");
        assert_eq!(out[34..36], PORT.to_be_bytes(), "source port");
        assert_eq!(out[36..38], 40000u16.to_be_bytes(), "destination port");
        assert_eq!(out[42..], sent[42..], "payload");
        assert_eq!(internet_checksum([&out[14..34]]), 0, "IP header checksum");
        assert_eq!(out[40..42], udp_checksum(out).to_be_bytes(), "UDP checksum");
    }

    /// A rule forwarding `PORT` from anyone to 127.0.0.1:40000, open forever.
    fn any_rule() -> Rule {
        Rule {
            active: 1,
            generation: 1,
            dest_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            src_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            loopback_ifindex: super::super::route::ifindex("lo").unwrap(),
            max_packet_size: 1500,
            clock_rate: CLOCK,
            dest_port: 40000,
            policy: 2,
            window_end_ns: u64::MAX,
            ..Rule::default()
        }
    }

    #[test]
    fn kernel_statistics_equal_the_userspace_module() {
        let Some(mut k) = load("statistics") else {
            return;
        };
        k.set_rule(PORT, any_rule()).unwrap();
        // Read from memory, as the relay reads it: no system call a port.
        assert!(k.streams().mapped(), "the stream map is mapped");
        let mut user = RtpStream::new(CLOCK);
        let base = Instant::now();
        let mut first_ns = None;
        for (i, (ssrc, seq)) in sequence().into_iter().enumerate() {
            // Sender clock: 20 ms a packet; arrivals jittered by real sleeps.
            let ts = (i as u32).wrapping_mul(1800);
            let payload = 100 + i % 50;
            let data = frame(ssrc, seq, ts, payload);
            std::thread::sleep(Duration::from_micros((i as u64 * 7919) % 3000));
            let run = k.run(&data, 1).unwrap();
            assert_eq!(run.verdict, 0, "packet {i} forwarded up the local stack");
            check_rewrite(&data, &run.frame);
            let s = k.streams().get(PORT).unwrap();
            let first = *first_ns.get_or_insert(s.last_ns);
            let arrived = base + Duration::from_nanos(s.last_ns - first);
            let h = RtpHeader::parse(&data[42..]).unwrap();
            user.on_packet(&h, data.len() - 42, arrived);
            // The raw state itself, not only what the one derivation makes of it.
            assert_eq!(
                s.counts(),
                user.counts(),
                "after packet {i} (ssrc {ssrc}, seq {seq})"
            );
            assert_eq!(s.counts().snapshot(CLOCK), user.snapshot());
        }
        let s = k.streams().get(PORT).unwrap().counts().snapshot(CLOCK);
        assert!(s.lost > 0 && s.duplicates >= 2 && s.reordered >= 2 && s.ssrc_changes == 1);
        assert!(s.jitter_seconds > 0.0, "{s:?}");
    }

    /// Whatever the addresses and ports, a packet leaves with the rule's
    /// and both checksums right, both written by the program. A test run's
    /// packet is one whose UDP checksum covers the whole datagram
    /// (CHECKSUM_NONE, as a NIC that verifies nothing delivers it); a
    /// partial sum is tested over veth (tests/fastpath.rs).
    #[test]
    fn the_kernel_rewrites_any_addresses_with_both_checksums_right() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        const TC_ACT_REDIRECT: u32 = 7;
        let Some(k) = load("checksums") else {
            return;
        };
        let k = std::cell::RefCell::new(k);
        let lo = super::super::route::ifindex("lo").unwrap();
        let generation = std::cell::Cell::new(1u32);
        let mut runner = TestRunner::new(Config {
            cases: 500,
            ..Config::default()
        });
        let cases = (any::<[u32; 4]>(), any::<[u16; 2]>(), 0usize..300);
        let outcome = runner.run(&cases, |([from, to, src, dest], [sport, dport], len)| {
            let mut k = k.borrow_mut();
            generation.set(generation.get() + 1);
            let (to, from) = (std::net::Ipv4Addr::from(to), std::net::Ipv4Addr::from(from));
            k.set_rule(
                PORT,
                Rule {
                    generation: generation.get(),
                    bind_addr: u32::from_ne_bytes(to.octets()),
                    dest_addr: dest,
                    src_addr: src,
                    dest_port: dport,
                    egress_ifindex: lo,
                    ..any_rule()
                },
            )
            .unwrap();
            let sent = rtp_frame(
                std::net::SocketAddrV4::new(from, sport),
                std::net::SocketAddrV4::new(to, PORT),
                1,
                0,
                0,
                len,
            );
            let out = k.run(&sent, 1).unwrap();
            prop_assert_eq!(out.verdict, TC_ACT_REDIRECT, "sent on toward Wowza");
            let f = &out.frame;
            prop_assert_eq!(&f[26..30], &src.to_ne_bytes(), "source address");
            prop_assert_eq!(&f[30..34], &dest.to_ne_bytes(), "destination address");
            prop_assert_eq!(&f[34..36], &PORT.to_be_bytes(), "source port");
            prop_assert_eq!(&f[36..38], &dport.to_be_bytes(), "destination port");
            prop_assert_eq!(&f[42..], &sent[42..], "payload");
            prop_assert_eq!(internet_checksum([&f[14..34]]), 0, "IP header checksum");
            prop_assert_eq!(&f[40..42], &udp_checksum(f).to_be_bytes(), "UDP checksum");
            Ok(())
        });
        drop(k);
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }

    /// The kernel forwards exactly the second bytes `RtpHeader::parse`
    /// accepts: RTCP-typed ones (RFC 5761 §4: 192–223) and reserved payload
    /// types are left to userspace, which drops them as malformed.
    #[test]
    fn the_kernel_leaves_rtcp_typed_second_bytes_to_userspace() {
        let Some(mut k) = load("rtcp-typed") else {
            return;
        };
        k.set_rule(PORT, any_rule()).unwrap();
        let mut forwarded = 0;
        for second in 0..=255u8 {
            let mut data = frame(1, u16::from(second), 0, 100);
            data[43] = second;
            let run = k.run(&data, 1).unwrap();
            let rtp = RtpHeader::parse(&data[42..]).is_ok();
            let expected = if rtp { TC_ACT_OK } else { TC_ACT_UNSPEC };
            assert_eq!(run.verdict, expected, "second byte {second}");
            forwarded += u64::from(rtp);
            let s = k.streams().get(PORT).unwrap();
            assert_eq!(s.to_wowza_packets(), forwarded, "second byte {second}");
        }
        assert_eq!(forwarded, 256 - 32 - 5, "192–223 and payload types 72–76");
    }

    /// A rule bound on 0.0.0.0 takes packets to the host's addresses only (as
    /// its socket would); one bound to an address, packets to it only.
    #[test]
    fn the_kernel_forwards_only_packets_addressed_to_the_relay() {
        let Some(mut k) = load("addressed") else {
            return;
        };
        k.set_rule(PORT, any_rule()).unwrap();
        let to = |k: &Detached, ip: [u8; 4], seq: u16| {
            let from = "192.0.2.50:5004".parse().unwrap();
            let frame = rtp_frame(
                from,
                std::net::SocketAddrV4::new(ip.into(), PORT),
                1,
                seq,
                0,
                100,
            );
            k.run(&frame, 1).unwrap().verdict
        };
        // Not a local address (none is known yet): left to the stack.
        assert_eq!(to(&k, [192, 0, 2, 1], 0), TC_ACT_UNSPEC);
        k.set_locals(&["10.0.0.1".parse().unwrap(), "192.0.2.1".parse().unwrap()])
            .unwrap();
        assert_eq!(to(&k, [192, 0, 2, 1], 1), TC_ACT_OK);
        assert_eq!(to(&k, [10, 0, 0, 1], 2), TC_ACT_OK);
        assert_eq!(to(&k, [192, 0, 2, 99], 3), TC_ACT_UNSPEC, "routed through");
        // 127.0.0.0/8 is local on lo (test runs arrive there).
        assert_eq!(to(&k, [127, 0, 0, 9], 4), TC_ACT_OK);
        // Bound to one address: that one only.
        let mut bound = any_rule();
        bound.bind_addr = u32::from_ne_bytes([10, 0, 0, 1]);
        k.set_rule(PORT, bound).unwrap();
        assert_eq!(to(&k, [10, 0, 0, 1], 5), TC_ACT_OK);
        assert_eq!(to(&k, [192, 0, 2, 1], 6), TC_ACT_UNSPEC);
        let s = k.streams().get(PORT).unwrap();
        assert_eq!(s.to_wowza_packets(), 4);
    }

    /// A sender the policy refuses is dropped by the kernel, whatever it
    /// sends, and counted; the accepted sender's bad packets and Wowza's
    /// before a latch go up to userspace.
    #[test]
    fn the_kernel_drops_and_counts_refused_senders() {
        let Some(mut k) = load("refused") else { return };
        let appliance = "127.0.0.2:5004".parse().unwrap();
        let stranger = "127.0.0.3:5004".parse().unwrap();
        let wowza = "127.0.0.1:40000".parse().unwrap();
        let to = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), PORT);
        let run = |k: &Detached, from, seq: u16, payload: usize| {
            k.run(&rtp_frame(from, to, 1, seq, 0, payload), 1)
                .unwrap()
                .verdict
        };
        let unknown = |k: &Detached| k.streams().get(PORT).unwrap().unknown_source;
        for policy in [0, 1] {
            let mut rule = any_rule();
            rule.generation = 10 + u32::from(policy);
            rule.policy = policy;
            rule.source_addr = u32::from_ne_bytes([127, 0, 0, 2]);
            k.set_rule(PORT, rule).unwrap();
            // Nothing latched: Wowza's packet goes up (no_return_address).
            assert_eq!(run(&k, wowza, 0, 100), TC_ACT_UNSPEC, "policy {policy}");
            assert_eq!(run(&k, appliance, 1, 100), TC_ACT_OK, "policy {policy}");
            assert_eq!(run(&k, wowza, 2, 100), TC_ACT_OK, "policy {policy}");
            assert_eq!(run(&k, appliance, 3, 2000), TC_ACT_UNSPEC, "oversize");
            // A stranger: dropped, whatever it sends (oversize, too).
            assert_eq!(run(&k, stranger, 4, 100), TC_ACT_SHOT, "policy {policy}");
            assert_eq!(run(&k, stranger, 5, 2000), TC_ACT_SHOT, "policy {policy}");
            assert_eq!(unknown(&k), 2, "policy {policy}");
        }
        // Any: no stranger.
        k.set_rule(PORT, any_rule()).unwrap();
        assert_eq!(run(&k, stranger, 6, 100), TC_ACT_OK);
    }

    /// The fence: with none, or a deadline ahead, the port forwards; past
    /// the deadline every packet of a relay port is dropped — both ways, and
    /// those the kernel would leave to userspace too — and counted; packets
    /// that are not the relay's are still left to the stack. Lifted, the port
    /// forwards again.
    #[test]
    fn the_kernel_forwards_nothing_past_the_fence() {
        let Some(mut k) = load("fence") else { return };
        k.set_rule(PORT, any_rule()).unwrap();
        let to = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), PORT);
        let appliance = "127.0.0.2:5004".parse().unwrap();
        let wowza = "127.0.0.1:40000".parse().unwrap();
        let run = |k: &Detached, from, seq: u16| {
            k.run(&rtp_frame(from, to, 1, seq, 0, 100), 1)
                .unwrap()
                .verdict
        };
        let malformed = |k: &Detached| {
            let mut data = frame(1, 99, 0, 100);
            data[42] = 0x40; // RTP version 1
            k.run(&data, 1).unwrap().verdict
        };
        let elsewhere = |k: &Detached| {
            let frame = rtp_frame(appliance, "192.0.2.99:61000".parse().unwrap(), 1, 0, 0, 100);
            k.run(&frame, 1).unwrap().verdict
        };
        let stream = |k: &Detached| k.streams().get(PORT).unwrap();

        assert_eq!(run(&k, appliance, 0), TC_ACT_OK, "no fence");
        assert_eq!(run(&k, wowza, 0), TC_ACT_OK, "no fence, back");
        let now = crate::clock::boot_nanos();
        k.set_fence(Some(now + 60_000_000_000)).unwrap();
        assert_eq!(run(&k, appliance, 1), TC_ACT_OK, "a deadline ahead");
        assert_eq!(run(&k, wowza, 1), TC_ACT_OK, "a deadline ahead, back");
        assert_eq!(malformed(&k), TC_ACT_UNSPEC, "left to userspace");
        assert_eq!(stream(&k).fenced, 0);

        k.set_fence(Some(crate::clock::boot_nanos())).unwrap();
        assert_eq!(run(&k, appliance, 2), TC_ACT_SHOT, "past the deadline");
        assert_eq!(run(&k, wowza, 2), TC_ACT_SHOT, "past the deadline, back");
        assert_eq!(malformed(&k), TC_ACT_SHOT, "not even to userspace");
        assert_eq!(elsewhere(&k), TC_ACT_UNSPEC, "not the relay's");
        // A deadline of 0 ns is long past, not "no fence".
        k.set_fence(Some(0)).unwrap();
        assert_eq!(run(&k, appliance, 3), TC_ACT_SHOT, "0 ns");
        let s = stream(&k);
        assert_eq!(s.fenced, 4, "counted");
        assert_eq!(s.to_wowza_packets(), 2, "neither forwarded nor measured");
        assert_eq!(s.to_appliance_packets, 2);

        k.set_fence(None).unwrap();
        assert_eq!(run(&k, appliance, 4), TC_ACT_OK, "lifted");
        let s = stream(&k);
        assert_eq!((s.fenced, s.to_wowza_packets()), (4, 3));
    }

    /// One packet of a compound: (second byte, count, body words, whether
    /// its length field tells the truth). Mostly SR/RR, now and then another
    /// type or a wrong one; bodies mostly what the count needs, now and then
    /// a word short.
    fn rtcp_part() -> impl proptest::strategy::Strategy<Value = (u8, u8, u16, bool)> {
        use proptest::prelude::*;
        let pt = prop_oneof![
            4 => Just(200u8),
            4 => Just(201u8),
            2 => Just(202u8),
            1 => 190u8..=226,
        ];
        (
            pt,
            0u8..4,
            prop_oneof![9 => 0u16..3, 1 => Just(u16::MAX)],
            proptest::bool::weighted(0.97),
        )
            .prop_map(|(pt, count, extra, honest)| {
                let needed = match pt {
                    200 => 6 + 6 * u16::from(count),
                    201 => 1 + 6 * u16::from(count),
                    _ => 0,
                };
                (pt, count, needed.wrapping_add(extra).min(40), honest)
            })
    }

    /// The packets of a compound as its length fields chain them.
    fn packets_in(data: &[u8]) -> usize {
        let (mut off, mut n) = (0, 0);
        while off + 4 <= data.len() {
            n += 1;
            off += 4 * (usize::from(u16::from_be_bytes([data[off + 2], data[off + 3]])) + 1);
        }
        n
    }

    fn compound(parts: &[(u8, u8, u16, bool)], version: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &(pt, count, words, honest)) in parts.iter().enumerate() {
            let length = if honest { words } else { words + 1 };
            out.push((if i == 0 { version } else { 2 }) << 6 | count);
            out.push(pt);
            out.extend_from_slice(&length.to_be_bytes());
            let start = out.len();
            out.extend((0..4 * usize::from(words)).map(|b| (b * 37 + start) as u8));
        }
        out
    }

    /// A video port's parameter-set packets are copied to the `learn` ring
    /// once each while they repeat unchanged (an encoder sends them before
    /// every keyframe), again when they change or the rule is installed anew
    /// (the learner may be new); FU-A fragments and long payloads always,
    /// other packets never.
    #[test]
    fn the_kernel_copies_each_parameter_set_once_until_it_changes() {
        let Some(mut k) = load("learn") else { return };
        let mut rule = any_rule();
        rule.learn = 1;
        rule.learn_epoch = 1;
        k.set_rule(PORT, rule).unwrap();
        let from = "127.0.0.2:5004".parse().unwrap();
        let to = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), PORT);
        let mut seq = 0u16;
        // Sends an RTP packet with each payload and checks how many copies
        // of it the ring took.
        let mut sends = |k: &mut Detached, steps: &[(&[u8], usize, &str)]| {
            for &(payload, copies, what) in steps {
                let mut rtp = rtp_frame(from, to, 7, seq, 0, 0)[42..].to_vec();
                rtp.extend_from_slice(payload);
                seq += 1;
                let frame = udp_frame(from, to, &rtp);
                assert_eq!(k.run(&frame, 1).unwrap().verdict, TC_ACT_OK, "{what}");
                let taken = k.learn_copies();
                assert!(taken.iter().all(|(p, c)| *p == PORT && *c == rtp), "{what}");
                assert_eq!(taken.len(), copies, "{what}");
            }
        };
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut other_sps = sps;
        other_sps[4] = 0xda;
        let stap_a = [&[0x78, 0x00, 10][..], &sps, &[0x00, 4], &pps].concat();
        let fu_a = [0x7c, 0x87, 0x42, 0xc0, 0x1e];
        let long_sps = [&sps[..], &[0x11; 90]].concat();
        let slice = [0x65, 0x88, 0x84, 0x00];

        sends(
            &mut k,
            &[
                (&sps, 1, "a first SPS"),
                (&sps, 0, "the same SPS again"),
                (&pps, 1, "a first PPS"),
                (&sps, 0, "the SPS after the PPS"),
                (&pps, 0, "the PPS after the SPS"),
                (&other_sps, 1, "a changed SPS"),
                (&other_sps, 0, "the changed SPS again"),
                (&sps, 1, "the first SPS back"),
                (&sps[..9], 1, "a shorter SPS"),
                (&stap_a, 1, "a STAP-A"),
                (&stap_a, 0, "the same STAP-A"),
                (&fu_a, 1, "a fragment"),
                (&fu_a, 1, "fragments always"),
                (&long_sps, 1, "a long SPS"),
                (&long_sps, 1, "long ones always"),
                (&slice, 0, "a slice never"),
                (&pps, 0, "the PPS is still the one copied"),
            ],
        );

        // Installed anew: the sets are copied again, once.
        rule.learn_epoch = 2;
        k.set_rule(PORT, rule).unwrap();
        sends(
            &mut k,
            &[
                (&pps, 1, "the PPS, for a new learner"),
                (&pps, 0, "and only once"),
                (&stap_a, 1, "the STAP-A, for a new learner"),
            ],
        );

        // A port without a learner: nothing.
        rule.learn = 0;
        rule.learn_epoch = 3;
        k.set_rule(PORT, rule).unwrap();
        sends(&mut k, &[(&other_sps, 0, "not a video port")]);
    }

    /// RTCP on a control port: the kernel forwards exactly the compounds
    /// `rtcp::check` accepts (up to RTCP_MAX_PARTS packets; longer ones go to
    /// userspace, which judges them as always), counts the appliance's
    /// reports as `RtcpStream::on_compound` does and reads the destination's
    /// first report block as `on_destination_report` does. One program for
    /// every case (loading it per case would take seconds), dropped — its pins
    /// removed — when the test ends.
    #[test]
    fn the_kernel_judges_and_counts_rtcp_as_userspace_does() {
        use crate::packet::rtcp;
        use crate::stats::rtcp::RtcpStream;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let Some(k) = load("rtcp") else {
            return;
        };
        // The runner takes a `Fn`: the program is borrowed per case.
        let k = std::cell::RefCell::new(k);
        let cases = (
            proptest::collection::vec(rtcp_part(), 1..11), // (around RTCP_MAX_PARTS, too)
            prop_oneof![9 => Just(2u8), 1 => 0u8..4],
        );
        // A new rule generation per case (shrinking included): a fresh stream.
        let generation = std::cell::Cell::new(1u32);
        let mut runner = TestRunner::new(Config {
            cases: 300,
            ..Config::default()
        });
        let outcome = runner.run(&cases, |(parts, version)| {
            let mut k = k.borrow_mut();
            let mut rule = any_rule();
            rule.plane = 1;
            generation.set(generation.get() + 1);
            rule.generation = generation.get();
            k.set_rule(PORT, rule).unwrap();
            let data = compound(&parts, version);
            let to = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), PORT);
            let appliance = "127.0.0.2:5005".parse().unwrap();
            let wowza = "127.0.0.1:40000".parse().unwrap();
            let checked = rtcp::check(&data);
            // A part whose length field lies swallows what follows: count the
            // packets as the lengths chain them.
            let kernel_takes = checked.is_ok() && packets_in(&data) <= 8;

            let run = k.run(&udp_frame(appliance, to, &data), 1).unwrap();
            let mut user = RtcpStream::default();
            if kernel_takes {
                prop_assert_eq!(run.verdict, TC_ACT_OK);
                check_rewrite(&udp_frame(appliance, to, &data), &run.frame);
                user.on_compound(checked.unwrap());
            } else {
                prop_assert_eq!(run.verdict, TC_ACT_UNSPEC, "{:?}", checked);
            }
            let s = k.streams().get(PORT).unwrap();
            prop_assert_eq!(s.sender_reports, user.sender_reports);
            prop_assert_eq!(s.receiver_reports, user.receiver_reports);
            prop_assert_eq!(s.to_wowza_packets(), u64::from(kernel_takes));

            // The destination's compound back, once an appliance is latched.
            if kernel_takes {
                let run = k.run(&udp_frame(wowza, to, &data), 1).unwrap();
                prop_assert_eq!(run.verdict, TC_ACT_OK);
                user.on_destination_report(&data, None);
                let s = k.streams().get(PORT).unwrap();
                let kernel = s
                    .wowza_report()
                    .map(|(f, l, j)| (f64::from(f) / 256.0, i64::from(l), j));
                let expected = user.wowza_fraction_lost.map(|f| {
                    (
                        f,
                        user.wowza_cumulative_lost.unwrap(),
                        user.wowza_jitter.unwrap(),
                    )
                });
                prop_assert_eq!(kernel, expected);
                prop_assert_eq!(s.to_appliance_packets, 1);
            }
            Ok(())
        });
        drop(k);
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }
}
