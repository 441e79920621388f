//! rtp-relay: relays live-webcast RTP/RTCP from lecture-capture appliances to a
//! Wowza Streaming Engine, one port group per webcast.
//!
//! Where things are:
//! - pure logic, no I/O and no clock: [`group`] (port-group arithmetic, layouts),
//!   [`reservation`] (requests, rules, and the [`reservation::schedule`]),
//!   [`packet`] (RTP/RTCP checks), [`stats`] (RFC 3550 stream statistics and
//!   the stream watcher), [`sdp`] (the SDP for Wowza: H.264 parameter sets
//!   learned in-band, the description; its folder in `sdp::files` is I/O);
//! - data plane: [`dataplane`] (forwarding rules, [`dataplane::forwarder`]: the
//!   per-socket decision, counters, epoll workers, and the kernel fast path
//!   [`dataplane::ebpf`]) over [`udp`] (sockets, batched `recvmmsg`/`sendmmsg`,
//!   shared with the traffic tools);
//! - control plane: [`control`] (HTTP API, `/metrics`, health), over its
//!   [`control::coordinator`] (schedule + [`store`] + data plane under one
//!   lock) and the [`control::published`] copy every reader uses instead;
//! - traffic tools: [`traffic`] (`gen`, `sink`, `loadtest`);
//! - the process: [`service`] (`run`: tasks, signals, stream logs), [`clock`]
//!   (the one place clocks are read), [`cli`], [`config`], [`logging`];
//! - high availability: [`cluster`] (etcd-shared reservations, the election, the service address).

#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod group;
pub mod logging;
pub mod packet;
pub mod reservation;
pub mod sdp;
pub mod service;
pub mod stats;
pub mod store;
pub mod traffic;
pub mod udp;
