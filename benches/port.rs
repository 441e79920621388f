//! The per-packet path of the data plane, without the system calls: check the
//! header, apply the source policy, update the RFC 3550 statistics, publish the
//! counters and choose the destination (`Forwarder::on_datagram`), plus counting the
//! send. Baseline in the same run: the RTP header check alone.
//!
//! `cargo bench --bench port`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rtp_relay::dataplane::counters::PortCounters;
use rtp_relay::dataplane::forwarder::{Forwarder, Verdict};
use rtp_relay::dataplane::rule::PortRule;
use rtp_relay::group::{GroupId, Plane, Role};
use rtp_relay::packet::rtp::RtpHeader;
use rtp_relay::reservation::SourcePolicy;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

fn port(plane: Plane) -> Forwarder {
    let rule = PortRule {
        group: GroupId::try_from(14).unwrap(),
        port: 65416,
        plane,
        role: Role::PrimaryVideo,
        destination: "127.0.0.1:49032".parse().unwrap(),
        policy: SourcePolicy::Strict,
        source: Some("127.0.0.1".parse().unwrap()),
        max_packet_size: 4096,
    };
    Forwarder::new(
        rule,
        90_000,
        Arc::new(PortCounters::default()),
        Instant::now(),
    )
}

fn bench(c: &mut Criterion) {
    let appliance: SocketAddr = "127.0.0.1:5004".parse().unwrap();
    let wowza: SocketAddr = "127.0.0.1:49032".parse().unwrap();
    // A 1200-byte video packet.
    let mut packet = vec![0u8; 1200];
    packet[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
    let sr: Vec<u8> = [
        &[0x80u8, 200, 0, 6, 0x12, 0x34, 0x56, 0x78][..],
        &[0; 20][..],
    ]
    .concat();

    let mut g = c.benchmark_group("per_packet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_rtp_header_check", |b| {
        b.iter(|| RtpHeader::parse(black_box(&packet)))
    });

    let mut media = port(Plane::Rtp);
    let mut seq: u16 = 0;
    let now = Instant::now();
    g.bench_function("media_to_wowza", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
            let v = media.on_datagram(appliance, black_box(&packet), packet.len(), now);
            if let Verdict::Forward(to) = v {
                media.sent(media.direction(to), packet.len());
            }
            v
        })
    });

    let mut control = port(Plane::Rtcp);
    control.on_datagram(appliance, &sr, sr.len(), now);
    g.bench_function("control_to_wowza", |b| {
        b.iter(|| control.on_datagram(appliance, black_box(&sr), sr.len(), now))
    });
    g.bench_function("reverse_to_appliance", |b| {
        b.iter(|| control.on_datagram(wowza, black_box(&sr), sr.len(), now))
    });
    let stranger: SocketAddr = "127.0.0.2:5004".parse().unwrap();
    g.bench_function("drop_unknown_source", |b| {
        b.iter(|| media.on_datagram(stranger, black_box(&packet), packet.len(), now))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
