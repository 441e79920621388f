//! `rtp-relay sink`: stands in for Wowza. Binds the destination ports, checks
//! every stream (continuity, integrity, latency) and answers each with an RTCP
//! receiver report every 5 s, sent to where the stream's RTCP comes from.

use super::profile::{Profile, SR_INTERVAL};
use super::receiver::StreamReceiver;
use super::scheduling::Placement;
use crate::group::Role;
use crate::udp::steer::Steering;
use crate::udp::{BATCH, Batch};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One stream the sink receives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// Its role (for the clock rate).
    pub role: Role,
    /// The port its RTP arrives on.
    pub media_port: u16,
    /// The port its RTCP arrives on.
    pub control_port: u16,
}

/// What the sink found, per stream and in all.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// RTP packets received.
    pub packets: u64,
    /// RTP bytes received.
    pub bytes: u64,
    /// RTCP packets received.
    pub rtcp_packets: u64,
    /// RFC 3550 expected − received, all streams.
    pub lost: i64,
    /// Duplicates.
    pub duplicates: u64,
    /// Late packets.
    pub reordered: u64,
    /// Payloads whose checksum failed.
    pub corrupt: u64,
    /// Datagrams not from the generator.
    pub foreign: u64,
    /// H.264 structure out of order, all streams.
    pub malformed: u64,
    /// H.264 parameter-set packets (SPS, PPS, STAP-A) received.
    pub parameter_set_packets: u64,
    /// Receiver reports sent.
    pub receiver_reports: u64,
    /// How media was read: `steered` (every media port through one socket)
    /// or `per-port` (a socket each).
    pub receive: String,
    /// Why steering was not used, when it was asked for and refused.
    pub steering_refused: Option<String>,
    /// One-way latency percentiles, milliseconds.
    pub latency_ms: Latency,
    /// Per stream, in the order given.
    pub streams: Vec<StreamReport>,
}

/// Latency percentiles (milliseconds).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// One stream's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamReport {
    /// Its media port.
    pub port: u16,
    /// RTP packets received.
    pub packets: u64,
    /// Expected − received.
    pub lost: i64,
    /// Duplicates.
    pub duplicates: u64,
    /// Late packets.
    pub reordered: u64,
    /// Corrupt payloads.
    pub corrupt: u64,
    /// Receiver reports sent.
    pub receiver_reports: u64,
    /// H.264 structure out of order (FU-A fragments, S/E flags).
    pub malformed: u64,
    /// Video: the SPS and PPS last seen, as an SDP's `sprop-parameter-sets`
    /// (to hold against a relay's SDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sprop_parameter_sets: Option<String>,
}

/// How the sink reads its media ports.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Receive {
    /// Through one steered socket when the kernel and privileges allow it
    /// (`CAP_BPF`, `CAP_NET_ADMIN`), else a socket per port.
    #[default]
    Auto,
    /// A socket per port, read one by one as epoll reports them.
    PerPort,
}

/// How to run the sink.
#[derive(Copy, Clone, Debug, Default)]
pub struct Options {
    /// How media ports are read.
    pub receive: Receive,
    /// Where and how its thread runs.
    pub placement: Placement,
}

/// A running sink.
pub struct Sink {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<Report>>,
}

struct Port {
    socket: mio::net::UdpSocket,
    stream: usize,
    media: bool,
}

struct State {
    rx: StreamReceiver,
    peer_media: Option<SocketAddr>,
    peer_control: Option<SocketAddr>,
    /// When its next receiver report is due; none before its first packet.
    next_report: Option<Instant>,
}

/// The token of the steered socket (the per-port sockets' are their indices).
const STEERED: Token = Token(usize::MAX);
/// No stream on this port.
const NO_STREAM: u32 = u32::MAX;

impl Sink {
    /// Binds every port on `bind` (an error names the port) and starts receiving.
    pub fn start(
        bind: IpAddr,
        streams: &[Stream],
        profile: &Profile,
        options: Options,
    ) -> io::Result<Sink> {
        options.placement.check()?;
        let poll = Poll::new()?;
        let media_ports: Vec<u16> = streams.iter().map(|s| s.media_port).collect();
        // Steering first: its socket is bound on the first media port, so
        // that the sink holds no port but its own (a port the kernel picked
        // could be one a relay is about to bind).
        let (steering, refused) = match (options.receive, bind, media_ports.first()) {
            (Receive::PerPort, ..) | (_, _, None) => (None, None),
            (Receive::Auto, IpAddr::V6(_), _) => (None, Some("steering is IPv4 only".into())),
            (Receive::Auto, IpAddr::V4(a), Some(&first)) => match steer(a, first, &media_ports) {
                Ok(s) => (Some(s), None),
                Err(why) => (None, Some(why)),
            },
        };
        let steered_at = steering.as_ref().map(|_| media_ports[0]);
        let mut ports = Vec::with_capacity(streams.len() * 2);
        for (i, s) in streams.iter().enumerate() {
            for (port, media) in [(s.media_port, true), (s.control_port, false)] {
                if steered_at == Some(port) {
                    continue;
                }
                let socket = open(bind, port).map_err(|e| {
                    io::Error::new(e.kind(), format!("sink cannot bind {bind}:{port}: {e}"))
                })?;
                let mut socket = mio::net::UdpSocket::from_std(socket);
                // Registered even when steered: a datagram that reaches the
                // port's own socket (before the steering) is still read.
                poll.registry()
                    .register(&mut socket, Token(ports.len()), Interest::READABLE)?;
                ports.push(Port {
                    socket,
                    stream: i,
                    media,
                });
            }
        }
        let mut steered = match &steering {
            Some(s) => {
                let mut socket = mio::net::UdpSocket::from_std(s.socket(0).try_clone()?);
                poll.registry()
                    .register(&mut socket, STEERED, Interest::READABLE)?;
                Some(socket)
            }
            None => None,
        };
        let mut by_port = vec![NO_STREAM; 1 << 16];
        for (i, &port) in media_ports.iter().enumerate() {
            by_port[usize::from(port)] = i as u32;
        }
        let states: Vec<State> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| State {
                rx: StreamReceiver::new(profile.role(s.role).clock_rate, 0x5111_0000 + i as u32),
                peer_media: None,
                peer_control: None,
                next_report: None,
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let thread = std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                // Checked above; a refusal now leaves the thread as it was.
                let _ = options.placement.apply();
                let mut sink = Receiving {
                    states,
                    by_port,
                    report: Report {
                        receive: if steering.is_some() {
                            "steered"
                        } else {
                            "per-port"
                        }
                        .into(),
                        steering_refused: refused,
                        ..Report::default()
                    },
                    latency: Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
                        .expect("valid bounds"),
                    received: &received2,
                };
                sink.run(poll, &ports, steered.take(), &stop2);
                // The program stays attached until the last datagram is read.
                drop(steering);
                sink.finish(&media_ports)
            })?;
        Ok(Sink {
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// RTP and RTCP packets received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops receiving and reports.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sink {
    /// A sink dropped unfinished (a failed load test) stops, and its ports
    /// are free for the next run once its thread ends.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The steered socket's receive buffer: every media port's datagrams queue
/// there, so it holds what thousands of per-port buffers held (≈ 90 ms of
/// 2048 webcasts).
const STEERED_RECV_BUFFER: usize = 64 << 20;

/// Steers every media port on `address` to one socket, bound on `first`.
fn steer(address: std::net::Ipv4Addr, first: u16, media_ports: &[u16]) -> Result<Steering, String> {
    let mut steering = Steering::start(address, first, 1, STEERED_RECV_BUFFER, true)?;
    for &port in media_ports {
        steering.steer(port, 0)?;
    }
    Ok(steering)
}

fn open(bind: IpAddr, port: u16) -> io::Result<UdpSocket> {
    crate::udp::udp_socket(SocketAddr::new(bind, port), 1 << 20, 1 << 16)
}

/// The receiving thread's state.
struct Receiving<'a> {
    states: Vec<State>,
    /// Stream index by media port ([`NO_STREAM`] for none): the steered
    /// socket's datagrams are told apart by their destination port.
    by_port: Vec<u32>,
    report: Report,
    latency: Histogram<u64>,
    received: &'a AtomicU64,
}

impl Receiving<'_> {
    fn run(
        &mut self,
        mut poll: Poll,
        ports: &[Port],
        steered: Option<mio::net::UdpSocket>,
        stop: &AtomicBool,
    ) {
        let mut events = Events::with_capacity(4096);
        let mut batch = Batch::new(2048);
        let mut steered_batch = Batch::with_destinations(2048);
        // Each stream's control port, by stream (a steered sink's first
        // media port has no socket of its own, so indices do not pair up).
        let controls: Vec<&Port> = ports.iter().filter(|p| !p.media).collect();
        let mut next_reports = Instant::now();
        let mut timeout = IDLE_WAIT;
        while !stop.load(Ordering::Relaxed) {
            if poll.poll(&mut events, Some(timeout)).is_err() {
                continue;
            }
            let mut datagrams = 0;
            for event in events.iter() {
                if event.token() == STEERED {
                    if let Some(socket) = &steered {
                        datagrams += self.read_steered(socket, &mut steered_batch);
                    }
                } else {
                    datagrams += self.read_port(&ports[event.token().0], &mut batch);
                }
            }
            timeout = pace(datagrams);
            let now = Instant::now();
            if now >= next_reports {
                send_reports(&controls, &mut self.states, now);
                next_reports = now + Duration::from_millis(100);
            }
        }
        // What arrived before the stop counts, however late this thread ran:
        // a starved sink must not report queued datagrams as lost.
        if let Some(socket) = &steered {
            self.read_steered(socket, &mut steered_batch);
        }
        for port in ports {
            self.read_port(port, &mut batch);
        }
    }

    /// Reads one port's socket dry; the datagrams read.
    fn read_port(&mut self, port: &Port, batch: &mut Batch) -> usize {
        let mut datagrams = 0;
        while let Ok(n) = batch.recv(port.socket.as_raw_fd()) {
            let (now, wall_ns) = clocks();
            for i in 0..n {
                if let Some((from, data, _)) = batch.datagram(i) {
                    self.on_datagram(port.stream, port.media, from, data, now, wall_ns);
                }
            }
            datagrams += n;
            if n < BATCH {
                break;
            }
        }
        self.received.fetch_add(datagrams as u64, Ordering::Relaxed);
        datagrams
    }

    /// Reads the steered socket dry: every media port's datagrams, each
    /// accounted to the stream of its destination port.
    fn read_steered(&mut self, socket: &mio::net::UdpSocket, batch: &mut Batch) -> usize {
        let mut datagrams = 0;
        while let Ok(n) = batch.recv(socket.as_raw_fd()) {
            let (now, wall_ns) = clocks();
            for i in 0..n {
                let stream = batch
                    .destination(i)
                    .map_or(NO_STREAM, |to| self.by_port[usize::from(to.port())]);
                match batch.datagram(i) {
                    Some((from, data, _)) if stream != NO_STREAM => {
                        self.on_datagram(stream as usize, true, from, data, now, wall_ns);
                    }
                    _ => self.report.foreign += 1,
                }
            }
            datagrams += n;
            if n < BATCH {
                break;
            }
        }
        self.received.fetch_add(datagrams as u64, Ordering::Relaxed);
        datagrams
    }

    fn on_datagram(
        &mut self,
        stream: usize,
        media: bool,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        wall_ns: u64,
    ) {
        let state = &mut self.states[stream];
        // Reports start with the stream (a sink started before its relay
        // and generator would else report into the void), staggered over
        // the interval.
        state.next_report.get_or_insert_with(|| {
            now + SR_INTERVAL + SR_INTERVAL.mul_f64((stream % 101) as f64 / 101.0)
        });
        if media {
            state.peer_media = Some(from);
            self.report.packets += 1;
            self.report.bytes += data.len() as u64;
            if let Some(ns) = state.rx.on_rtp(data, now, wall_ns) {
                let _ = self.latency.record(ns.max(1_000));
            }
        } else {
            state.peer_control = Some(from);
            self.report.rtcp_packets += 1;
            state.rx.on_rtcp(data, now);
        }
    }

    /// The report: every stream's figures and the latency percentiles.
    fn finish(mut self, media_ports: &[u16]) -> Report {
        let report = &mut self.report;
        for (state, &port) in self.states.iter().zip(media_ports) {
            let s = state.rx.snapshot();
            report.lost += s.lost;
            report.duplicates += s.duplicates;
            report.reordered += s.reordered;
            report.corrupt += state.rx.corrupt;
            report.foreign += state.rx.foreign;
            report.receiver_reports += state.rx.reports;
            report.malformed += state.rx.malformed;
            report.parameter_set_packets += state.rx.parameter_set_packets;
            report.streams.push(StreamReport {
                port,
                packets: s.packets,
                lost: s.lost,
                duplicates: s.duplicates,
                reordered: s.reordered,
                corrupt: state.rx.corrupt,
                receiver_reports: state.rx.reports,
                malformed: state.rx.malformed,
                sprop_parameter_sets: state.rx.parameter_sets().and_then(|(sps, pps)| {
                    crate::sdp::ParameterSets::new(sps, pps)
                        .ok()
                        .map(|p| p.sprop_parameter_sets())
                }),
            });
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        if !self.latency.is_empty() {
            report.latency_ms = Latency {
                p50: ms(self.latency.value_at_quantile(0.5)),
                p99: ms(self.latency.value_at_quantile(0.99)),
                p999: ms(self.latency.value_at_quantile(0.999)),
                max: ms(self.latency.max()),
            };
        }
        self.report
    }
}

/// Both clocks, read once per batch: the monotonic one for RFC 3550 jitter,
/// the wall clock for one-way latency (the generator stamps it).
fn clocks() -> (Instant, u64) {
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (Instant::now(), wall_ns)
}

/// Blocking wait when nothing arrives.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// Interrupt moderation: under load, pause briefly and poll without blocking
/// instead of sleeping in `epoll_wait`. A sleeping reader costs every sender a
/// wake-up per datagram (the largest single cost in the profile); a reader that
/// is not waiting costs nothing. The pause adds at most [`COALESCE`] of latency,
/// and only while traffic flows.
fn pace(datagrams: usize) -> Duration {
    match datagrams {
        0 => IDLE_WAIT,
        n if n < 4 * BATCH => {
            std::thread::sleep(COALESCE);
            Duration::ZERO
        }
        _ => Duration::ZERO,
    }
}

/// The pause between polls under moderate load.
const COALESCE: Duration = Duration::from_micros(200);

/// Sends the receiver reports that are due, from each stream's control socket
/// (`controls`, by stream) to where its RTCP comes from (or, before any, the
/// media sender's port + 1).
fn send_reports(controls: &[&Port], states: &mut [State], now: Instant) {
    for (i, state) in states.iter_mut().enumerate() {
        let Some(due) = state.next_report.as_mut().filter(|due| now >= **due) else {
            continue;
        };
        *due += SR_INTERVAL;
        let to = state.peer_control.or_else(|| {
            state
                .peer_media
                .map(|m| SocketAddr::new(m.ip(), m.port().wrapping_add(1)))
        });
        let (Some(to), Some(rr)) = (to, state.rx.receiver_report(now)) else {
            continue;
        };
        let _ = controls[i].socket.send_to(&rr, to);
    }
}
