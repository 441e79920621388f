//! The kernel fast path's own cost per packet: the loaded program run by the
//! kernel on one media frame (`BPF_PROG_TEST_RUN`, repeated; the kernel times
//! the runs). Each repeat is the whole forwarding work — rule lookup, window
//! and RTP checks, the stream's spin lock, RFC 3550 sequence state, counters,
//! address and port rewrite with checksum updates — except the jitter update
//! (after the first run the frame is a duplicate). Needs root; with
//! `RTP_RELAY_SKIP_EBPF=1` it is skipped.
//!
//! `cargo bench --bench fast_path`

use criterion::{Criterion, criterion_group, criterion_main};
use rtp_relay::dataplane::ebpf::{
    table::Rule,
    test_run::{Detached, rtp_frame},
};
use std::net::SocketAddrV4;
use std::time::Duration;

const PORT: u16 = 61100;

fn program(c: &mut Criterion) {
    if std::env::var("RTP_RELAY_SKIP_EBPF").is_ok_and(|v| v == "1") {
        eprintln!("RTP_RELAY_SKIP_EBPF=1: fast-path benchmark skipped");
        return;
    }
    let name = format!("bench-{}", std::process::id());
    let mut k = Detached::load(&name).unwrap_or_else(|why| {
        panic!("the fast path cannot load here ({why}); RTP_RELAY_SKIP_EBPF=1 skips this benchmark")
    });
    // The rewrite leaves the frame as it was (from 127.0.0.2:PORT to
    // 127.0.0.1:PORT), so every repeat takes the same forwarding path.
    let from = SocketAddrV4::new([127, 0, 0, 2].into(), PORT);
    let to = SocketAddrV4::new([127, 0, 0, 1].into(), PORT);
    let mut rule = Rule::default();
    rule.active = 1;
    rule.generation = 1;
    rule.dest_addr = u32::from_ne_bytes(to.ip().octets());
    rule.dest_port = PORT;
    rule.src_addr = u32::from_ne_bytes(from.ip().octets());
    rule.loopback_ifindex = nix::net::if_::if_nametoindex("lo").unwrap();
    rule.max_packet_size = 4096;
    rule.clock_rate = 90_000;
    rule.policy = 2;
    rule.window_end_ns = u64::MAX;
    k.set_rule(PORT, rule).unwrap();
    let frame = rtp_frame(from, to, 0x1234, 1, 3000, 1188);
    assert_eq!(
        k.run(&frame, 1).unwrap().verdict,
        0,
        "forwarded up the local stack"
    );
    c.bench_function("ebpf_program_per_packet", |b| {
        b.iter_custom(|iters| {
            let run = k.run(&frame, iters.min(u64::from(u32::MAX)) as u32);
            run.unwrap().per_run * iters as u32
        })
    });
    let forwarded = k.streams().get(PORT).unwrap().to_wowza_packets;
    assert!(forwarded > 1, "the repeats were forwarded: {forwarded}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = program
}
criterion_main!(benches);
