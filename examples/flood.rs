//! Benchmark tool, not part of the product: a stranger's flood, bounded. It
//! sends one 200-byte RTP packet over and over from `FROM` to `TO` at `RATE`
//! packets/s (0: as fast as one thread can; `sendmmsg`, 64 a call), for at
//! most `SECONDS` (≤ 60) and `PACKETS` packets (≤ 100 million), then prints
//! what it sent.
//!
//! `cargo run --release --example flood -- FROM TO SECONDS [RATE [PACKETS]]`,
//! e.g. `flood 127.0.0.2 127.0.0.1:65532 10 440000`; benches/flood.sh drives it.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
const MAX_SECONDS: u64 = 60;
const MAX_PACKETS: u64 = 100_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: flood FROM TO SECONDS [RATE [PACKETS]]";
    let (Some(from), Some(to), Some(seconds)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let parsed = (
        from.parse::<std::net::IpAddr>(),
        to.parse::<SocketAddr>(),
        seconds.parse::<u64>(),
        args.get(3).map_or(Ok(0), |r| r.parse::<u64>()),
        args.get(4).map_or(Ok(MAX_PACKETS), |p| p.parse::<u64>()),
    );
    let (Ok(from), Ok(to), Ok(seconds), Ok(rate), Ok(packets)) = parsed else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let limit = Duration::from_secs(seconds.min(MAX_SECONDS));
    let packets = packets.min(MAX_PACKETS);
    let socket = UdpSocket::bind((from, 0))
        .and_then(|s| s.connect(to).map(|()| s))
        .unwrap_or_else(|e| {
            eprintln!("flood: cannot send from {from} to {to}: {e}");
            std::process::exit(1);
        });
    // RTP version 2, payload type 96, SSRC 0xbad: a plausible stream's packet.
    let mut packet = vec![0xa5u8; 200];
    packet[..12].copy_from_slice(&[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0x0b, 0xad]);
    let mut iov = libc::iovec {
        iov_base: packet.as_mut_ptr().cast(),
        iov_len: packet.len(),
    };
    // SAFETY: all-zero is a valid mmsghdr; each one points at the one iovec,
    // which outlives every call below.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for h in &mut hdrs {
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let (mut sent, mut refused) = (0u64, 0u64);
    while sent < packets && start.elapsed() < limit {
        if rate > 0 {
            // Paced from the start: a late batch is caught up, not skipped.
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let n = (packets - sent).min(BATCH as u64) as libc::c_uint;
        // SAFETY: hdrs holds BATCH valid headers and n <= BATCH.
        let done = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n, 0) };
        if done > 0 {
            sent += done as u64;
        } else {
            // ECONNREFUSED from an earlier ICMP error, ENOBUFS: keep going.
            refused += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "flood: {sent} packets in {secs:.2} s ({:.0} packets/s) from {from} to {to}; {refused} calls failed",
        sent as f64 / secs
    );
}
