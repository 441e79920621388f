//! `rtp-relay gen`: paces every stream's frames and sender reports on one
//! thread and sends them in batches (`sendmmsg`) from a few sockets. Each
//! stream always sends from the same socket, so a relay can latch it.

use super::probe;
use super::profile::Profile;
use super::scheduling::Placement;
use super::source::StreamSource;
use super::wheel::Wheel;
use crate::group::Role;
use crate::packet::rtp::FIXED_HEADER;
use crate::udp::{BATCH, Batch};
use serde::Serialize;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A frame later than this counts as late (pacing jitter).
const LATE: Duration = Duration::from_millis(20);
/// A schedule this far behind has fallen behind, not jittered.
const BEHIND: f64 = 250.0;

/// Where one stream goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its role (which profile it follows).
    pub role: Role,
    /// Where its RTP goes.
    pub media: SocketAddr,
    /// Where its RTCP goes.
    pub control: SocketAddr,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Every stream.
    pub targets: Vec<Target>,
    /// What the roles send.
    pub profile: Profile,
    /// How long.
    pub duration: Duration,
    /// Source sockets (streams are spread over them).
    pub sockets: usize,
    /// Address the source sockets bind.
    pub bind: IpAddr,
    /// Sending threads (streams are split between them).
    pub threads: usize,
    /// CPUs to pin the threads to, round robin (none: not pinned).
    pub cpus: Vec<usize>,
    /// Run the threads at a real-time priority.
    pub realtime: bool,
}

/// What was generated.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Streams.
    pub streams: usize,
    /// RTP packets sent.
    pub packets: u64,
    /// RTP bytes sent (whole datagrams).
    pub bytes: u64,
    /// RTCP sender reports sent.
    pub sender_reports: u64,
    /// Datagrams the kernel refused.
    pub send_errors: u64,
    /// RTCP packets received back (receiver reports through the relay).
    pub received_reports: u64,
    /// Seconds of sending.
    pub seconds: f64,
    /// The profile's packet rate for these streams.
    pub target_packets_per_second: f64,
    /// What was achieved.
    pub packets_per_second: f64,
    /// Frames sent.
    pub frames: u64,
    /// Frames sent more than 20 ms after they were due.
    pub late_frames: u64,
    /// The latest a frame was sent, in milliseconds.
    pub max_lag_ms: f64,
}

impl Report {
    /// True when the generator did not keep up: it missed the profile's rate by
    /// more than 2 %, or some frame went out more than 250 ms late.
    pub fn fell_behind(&self) -> bool {
        self.packets_per_second < 0.98 * self.target_packets_per_second || self.max_lag_ms > BEHIND
    }

    /// Share of frames more than 20 ms late.
    pub fn late_share(&self) -> f64 {
        self.late_frames as f64 / self.frames.max(1) as f64
    }
}

/// The profile's packet rate for `targets`.
pub fn target_rate(profile: &Profile, targets: &[Target]) -> f64 {
    targets
        .iter()
        .map(|t| profile.role(t.role).packets_per_second())
        .sum()
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Event {
    Frame,
    Report,
}

/// Runs until `duration` passes or `stop` is set; `progress` counts packets sent.
/// Streams are split between `threads` threads, each pacing and sending its own.
pub fn run(o: &Options, stop: &AtomicBool, progress: &AtomicU64) -> io::Result<Report> {
    let threads = o.threads.clamp(1, o.targets.len().max(1));
    let placement = |t: usize| Placement {
        cpu: (!o.cpus.is_empty()).then(|| o.cpus[t % o.cpus.len()]),
        realtime: o.realtime,
    };
    for t in 0..threads.max(o.cpus.len()) {
        placement(t).check()?;
    }
    let counts: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let reports: Vec<io::Result<Report>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = (t..o.targets.len()).step_by(threads).collect();
                let count = &counts[t];
                let placement = placement(t);
                scope.spawn(move || {
                    placement.apply()?;
                    run_thread(o, &mine, (o.sockets / threads).max(1), stop, count)
                })
            })
            .collect();
        // Sum the threads' progress while they run: every 10 ms, as the load
        // test reads it to split a run's CPU measurement (within 0.1 % at
        // full load).
        while !handles.iter().all(|h| h.is_finished()) {
            progress.store(
                counts.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
                Ordering::Relaxed,
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("generator thread panicked")))
            })
            .collect()
    });
    let mut total = Report {
        streams: o.targets.len(),
        target_packets_per_second: target_rate(&o.profile, &o.targets),
        ..Report::default()
    };
    for r in reports {
        let r = r?;
        total.packets += r.packets;
        total.bytes += r.bytes;
        total.sender_reports += r.sender_reports;
        total.send_errors += r.send_errors;
        total.received_reports += r.received_reports;
        total.frames += r.frames;
        total.late_frames += r.late_frames;
        total.max_lag_ms = total.max_lag_ms.max(r.max_lag_ms);
        total.seconds = total.seconds.max(r.seconds);
    }
    total.packets_per_second = total.packets as f64 / total.seconds.max(1e-9);
    progress.store(total.packets, Ordering::Relaxed);
    Ok(total)
}

/// The pacing timer's period: every stream's frames and reports due within one
/// tick go out together, a few `sendmmsg` calls per socket, and the thread
/// sleeps in between. A frame leaves at most one tick after it is due (the
/// probe carries the time it actually left, so latency figures are not
/// affected).
const TICK: Duration = Duration::from_millis(1);
/// Slots of the timer wheel: one sender-report interval and some, so that no
/// event waits through a round.
const WHEEL_SLOTS: usize = 8192;
/// How often receiver reports coming back are read.
const DRAIN_EVERY: u64 = 50;

/// The first tick at or after `at`: when an event due at `at` goes out.
fn tick_of(start: Instant, at: Instant) -> u64 {
    let ns = at.saturating_duration_since(start).as_nanos();
    ns.div_ceil(TICK.as_nanos()) as u64
}

/// The last tick at or before `now`: every event of this tick and earlier is due.
fn ticks_passed(start: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(start).as_nanos() / TICK.as_nanos()) as u64
}

/// One sending thread: the streams `mine` (indices into `o.targets`).
fn run_thread(
    o: &Options,
    mine: &[usize],
    sockets: usize,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Report> {
    let sockets: Vec<UdpSocket> = (0..sockets.clamp(1, mine.len().max(1)))
        .map(|_| {
            let s = crate::udp::udp_socket(SocketAddr::new(o.bind, 0), 1 << 20, 4 << 20)?;
            set_dont_fragment(&s);
            Ok(s)
        })
        .collect::<io::Result<_>>()?;
    let made = Instant::now();
    let sources: Vec<(StreamSource, Duration)> = mine
        .iter()
        .map(|&i| {
            let p = o.profile.role(o.targets[i].role);
            let (ssrc, seq, ts) = (fastrand::u32(..), fastrand::u16(..), fastrand::u32(..));
            let source = StreamSource::new(i as u32, p, ssrc, seq, ts, made);
            let gop = source.frames_per_keyframe();
            // Spread first frames over one frame interval.
            let offset = Duration::from_secs_f64(fastrand::f64() / p.frame_rate);
            (source.keyframe_phase(fastrand::u64(..gop)), offset)
        })
        .collect();
    // The schedule starts once the sockets are open and the streams made
    // (thousands of each take a while).
    let start = Instant::now();
    let mut sources: Vec<StreamSource> = sources
        .into_iter()
        .map(|(s, offset)| s.starting_at(start + offset))
        .collect();
    let mut wheel = Wheel::new(WHEEL_SLOTS);
    for (i, s) in sources.iter().enumerate() {
        wheel.schedule(tick_of(start, s.next_frame_at()), (i as u32, Event::Frame));
        wheel.schedule(
            tick_of(start, s.next_report_at()),
            (i as u32, Event::Report),
        );
    }
    let mut due = Vec::with_capacity(sources.len());
    let mut senders: Vec<Sender> = sockets
        .iter()
        .map(|s| Sender {
            socket: s,
            batch: Batch::new(super::profile::MAX_PACKET),
        })
        .collect();
    let mut inbound = Batch::new(1500);
    let mut report = Report::default();
    let end = start + o.duration;
    let mut max_lag = Duration::ZERO;
    let mut next_drain = 0;

    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let tick = ticks_passed(start, now);
        due.clear();
        wheel.expire(tick, &mut due);
        for &(_, (i, event)) in &due {
            let source = &mut sources[i as usize];
            let target = &o.targets[mine[i as usize]];
            let sender = &mut senders[i as usize % sockets.len()];
            match event {
                Event::Frame => {
                    let lag = now.saturating_duration_since(source.next_frame_at());
                    max_lag = max_lag.max(lag);
                    report.frames += 1;
                    if lag > LATE {
                        report.late_frames += 1;
                    }
                    source.frame(0, |p| {
                        sender.push(target.media, p, &mut report);
                        report.packets += 1;
                        report.bytes += p.len() as u64;
                    });
                    wheel.schedule(tick_of(start, source.next_frame_at()), (i, Event::Frame));
                }
                Event::Report => {
                    let sr = source.sender_report(now, wall_clock_ns());
                    sender.push(target.control, &sr, &mut report);
                    report.sender_reports += 1;
                    wheel.schedule(tick_of(start, source.next_report_at()), (i, Event::Report));
                }
            }
        }
        for sender in &mut senders {
            sender.flush(&mut report);
        }
        progress.store(report.packets, Ordering::Relaxed);
        if tick >= next_drain {
            next_drain = tick + DRAIN_EVERY;
            // Receiver reports come back through the relay: read and count them.
            for s in &sockets {
                while let Ok(n) = inbound.recv(s.as_raw_fd()) {
                    report.received_reports += n as u64;
                    if n < BATCH {
                        break;
                    }
                }
            }
        }
        // One timer for every stream: sleep to the next tick.
        let next = start + TICK * (ticks_passed(start, Instant::now()) as u32 + 1);
        std::thread::sleep(next.min(end).saturating_duration_since(Instant::now()));
    }
    report.seconds = start.elapsed().as_secs_f64().min(o.duration.as_secs_f64());
    report.max_lag_ms = max_lag.as_secs_f64() * 1e3;
    progress.store(report.packets, Ordering::Relaxed);
    Ok(report)
}

/// A source socket and the batch filling up for it.
struct Sender<'a> {
    socket: &'a UdpSocket,
    batch: Batch,
}

impl Sender<'_> {
    /// Queues `p` for `to`, sending the batch when it is full.
    fn push(&mut self, to: SocketAddr, p: &[u8], report: &mut Report) {
        if !self.batch.push(to, p) {
            self.flush(report);
            self.batch.push(to, p);
        }
        if self.batch.queued() == BATCH {
            self.flush(report);
        }
    }

    /// Sends what is queued, its probes stamped with the time they leave.
    fn flush(&mut self, report: &mut Report) {
        if self.batch.queued() > 0 {
            let now = wall_clock_ns();
            for datagram in self.batch.pushed_mut() {
                probe::restamp(datagram, FIXED_HEADER, now);
            }
            flush(self.socket, &mut self.batch, report);
        }
    }
}

/// Sets Don't Fragment on an IPv4 socket's datagrams (no packet of the
/// generator needs fragmenting). Besides being what an encoder on a real
/// network does, it spares the kernel picking an IP ID for every datagram: an
/// unconnected socket without DF hashes one per packet. Best effort.
fn set_dont_fragment(socket: &UdpSocket) {
    if socket.local_addr().is_ok_and(|a| a.is_ipv4()) {
        let _ = crate::udp::set_int_option(
            socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        );
    }
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn flush(socket: &UdpSocket, batch: &mut Batch, report: &mut Report) {
    batch.send(socket.as_raw_fd(), |_, _, ok| {
        if !ok {
            report.send_errors += 1;
        }
    });
}
