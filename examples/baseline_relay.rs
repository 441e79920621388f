//! Benchmark baseline, not part of the product: the simplest userspace relay,
//! one tokio task per socket doing `recv_from` then `send_to`. It binds the
//! used ports of groups `first..first+n` on 127.0.0.1 and forwards each to the
//! port 16384 lower (as the shipped configuration does); what comes back from
//! there goes to the last sender.
//!
//! `cargo run --release --example baseline_relay -- GROUPS [FIRST_GROUP]`
//! then `rtp-relay loadtest --external-pid PID --groups GROUPS`.

use rtp_relay::group::{GroupId, Layout, Plane};
use std::net::SocketAddr;
use tokio::net::UdpSocket;

#[tokio::main]
async fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, first) = (
        args.first().copied().unwrap_or(64),
        args.get(1).copied().unwrap_or(0),
    );
    let mut tasks = Vec::new();
    for g in first..first + n {
        let g = GroupId::try_from(g).expect("group in range");
        for (pair, _) in Layout::AudioDisplayVideo.pairs() {
            for plane in Plane::BOTH {
                let port = g.port(pair, plane);
                let socket = UdpSocket::bind(("127.0.0.1", port)).await.expect("bind");
                let dest = SocketAddr::from(([127, 0, 0, 1], port - 16384));
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut appliance: Option<SocketAddr> = None;
                    loop {
                        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                            continue;
                        };
                        let to = if from == dest {
                            match appliance {
                                Some(a) => a,
                                None => continue,
                            }
                        } else {
                            appliance = Some(from);
                            dest
                        };
                        let _ = socket.send_to(&buf[..len], to).await;
                    }
                }));
            }
        }
    }
    println!("baseline relay forwarding {} sockets", tasks.len());
    for t in tasks {
        let _ = t.await;
    }
}
