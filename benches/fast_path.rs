//! The kernel fast path's own cost per packet: the loaded program run by the
//! kernel on one media frame (`BPF_PROG_TEST_RUN`, repeated; the kernel times
//! the runs). Each repeat is the whole forwarding work — rule lookup, window
//! and RTP checks, the stream's spin lock, RFC 3550 sequence state, counters,
//! address and port rewrite with checksum updates — except the jitter update
//! (after the first run the frame is a duplicate). Needs root; with
//! `RTP_RELAY_SKIP_EBPF=1` it is skipped.
//!
//! A video port (`learn` set) also looks at the payload's first two bytes for
//! H.264 parameter sets (`..._video`: an ordinary slice, not copied). With
//! `RTP_RELAY_BASELINE_OBJECT=path/to/relay.bpf.o` (an earlier build's
//! program) the same frames run through it too, in the same run: the
//! baseline. `benches/fast_path_before_after.sh` builds one from a git
//! revision and runs both.
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
    let baseline = std::env::var("RTP_RELAY_BASELINE_OBJECT").ok().map(|path| {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // ELF parsing wants the object aligned: copied into u64s.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: words has room for bytes.len() bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            )
        };
        (words, bytes.len())
    });
    let programs: Vec<(&str, Option<&[u8]>)> = match &baseline {
        // SAFETY: the first len bytes of words are the object's.
        Some((words, len)) => vec![
            (
                "baseline_",
                Some(unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), *len) }),
            ),
            ("", None),
        ],
        None => vec![("", None)],
    };
    for (prefix, object) in programs {
        // The rewrite leaves the frame as it was (from 127.0.0.2:PORT to
        // 127.0.0.1:PORT), so every repeat takes the same forwarding path.
        let local = ([127, 0, 0, 2], [127, 0, 0, 1]);
        per_packet(
            c,
            object,
            &format!("{prefix}ebpf_program_per_packet"),
            local,
            0,
        );
        // A video port: the payload (0xa5…, a slice) is looked at, not copied.
        per_packet(
            c,
            object,
            &format!("{prefix}ebpf_program_per_packet_video"),
            local,
            1,
        );
        // The same to a host address of a relay bound on 0.0.0.0: the program
        // finds it last of the host's four in its list of local addresses.
        per_packet(
            c,
            object,
            &format!("{prefix}ebpf_program_per_packet_host_address"),
            ([192, 0, 2, 2], [192, 0, 2, 1]),
            0,
        );
    }
}

/// The program's (`object`'s, else this build's) time per packet for one
/// media frame `from` → `to`, which the rewrite leaves unchanged (the rule
/// sends to `to` from `from`); `learn`: the rule's video flag.
fn per_packet(
    c: &mut Criterion,
    object: Option<&[u8]>,
    name: &str,
    (from, to): ([u8; 4], [u8; 4]),
    learn: u8,
) {
    let pins = format!("bench-{}-{name}", std::process::id());
    let mut k = Detached::load_from(object, &pins).unwrap_or_else(|why| {
        panic!("the fast path cannot load here ({why}); RTP_RELAY_SKIP_EBPF=1 skips this benchmark")
    });
    let from = SocketAddrV4::new(from.into(), PORT);
    let to = SocketAddrV4::new(to.into(), PORT);
    let host = ["10.0.0.1", "10.0.0.2", "172.16.0.1", "192.0.2.1"].map(|a| a.parse().unwrap());
    k.set_locals(&host).unwrap();
    let rule = Rule {
        active: 1,
        generation: 1,
        dest_addr: u32::from_ne_bytes(to.ip().octets()),
        dest_port: PORT,
        src_addr: u32::from_ne_bytes(from.ip().octets()),
        loopback_ifindex: nix::net::if_::if_nametoindex("lo").unwrap(),
        max_packet_size: 4096,
        clock_rate: 90_000,
        policy: 2,
        window_end_ns: u64::MAX,
        learn,
        ..Rule::default()
    };
    k.set_rule(PORT, rule).unwrap();
    let frame = rtp_frame(from, to, 0x1234, 1, 3000, 1188);
    assert_eq!(
        k.run(&frame, 1).unwrap().verdict,
        0,
        "forwarded up the local stack"
    );
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let run = k.run(&frame, iters.min(u64::from(u32::MAX)) as u32);
            run.unwrap().per_run * iters as u32
        })
    });
    let forwarded = k.streams().get(PORT).unwrap().to_wowza_packets();
    assert!(forwarded > 1, "the repeats were forwarded: {forwarded}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = program
}
criterion_main!(benches);
