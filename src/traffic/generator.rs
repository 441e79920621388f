//! `rtp-relay gen`: paces every stream's frames and sender reports on one
//! thread and sends them in batches (`sendmmsg`) from a few sockets. Each
//! stream always sends from the same socket, so a relay can latch it.

use super::profile::Profile;
use super::source::StreamSource;
use crate::group::Role;
use crate::udp::{BATCH, Batch};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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

#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Frame,
    Report,
}

/// Runs until `duration` passes or `stop` is set; `progress` counts packets sent.
/// Streams are split between `threads` threads, each pacing and sending its own.
pub fn run(o: &Options, stop: &AtomicBool, progress: &AtomicU64) -> io::Result<Report> {
    let threads = o.threads.clamp(1, o.targets.len().max(1));
    let start = Instant::now();
    let counts: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let reports: Vec<io::Result<Report>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = (t..o.targets.len()).step_by(threads).collect();
                let count = &counts[t];
                scope.spawn(move || {
                    run_thread(o, &mine, (o.sockets / threads).max(1), start, stop, count)
                })
            })
            .collect();
        // Sum the threads' progress while they run.
        while !handles.iter().all(|h| h.is_finished()) {
            progress.store(
                counts.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
                Ordering::Relaxed,
            );
            std::thread::sleep(Duration::from_millis(50));
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

/// One sending thread: the streams `mine` (indices into `o.targets`).
fn run_thread(
    o: &Options,
    mine: &[usize],
    sockets: usize,
    start: Instant,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Report> {
    let sockets: Vec<UdpSocket> = (0..sockets.clamp(1, mine.len().max(1)))
        .map(|_| crate::udp::udp_socket(SocketAddr::new(o.bind, 0), 1 << 20, 4 << 20))
        .collect::<io::Result<_>>()?;
    let mut sources: Vec<StreamSource> = mine
        .iter()
        .map(|&i| {
            // Spread first frames over one frame interval.
            let p = o.profile.role(o.targets[i].role);
            let offset = Duration::from_secs_f64(fastrand::f64() / p.frame_rate);
            let (ssrc, seq, ts) = (fastrand::u32(..), fastrand::u16(..), fastrand::u32(..));
            StreamSource::new(i as u32, p, ssrc, seq, ts, start + offset)
        })
        .collect();
    let mut heap: BinaryHeap<Reverse<(Instant, Event, usize)>> =
        BinaryHeap::with_capacity(2 * sources.len());
    for (i, s) in sources.iter().enumerate() {
        heap.push(Reverse((s.next_frame_at(), Event::Frame, i)));
        heap.push(Reverse((s.next_report_at(), Event::Report, i)));
    }
    let mut batches: Vec<Batch> = sockets
        .iter()
        .map(|_| Batch::new(super::profile::MAX_PACKET))
        .collect();
    let mut inbound = Batch::new(1500);
    let mut report = Report::default();
    let end = start + o.duration;
    let mut next_drain = start;
    let mut max_lag = Duration::ZERO;

    loop {
        let now = Instant::now();
        if now >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        while let Some(&Reverse((due, event, i))) = heap.peek() {
            if due > now || due >= end {
                break;
            }
            heap.pop();
            let lag = now - due;
            let k = i % sockets.len();
            let (socket, batch) = (&sockets[k], &mut batches[k]);
            match event {
                Event::Frame => {
                    max_lag = max_lag.max(lag);
                    report.frames += 1;
                    if lag > LATE {
                        report.late_frames += 1;
                    }
                    let to = o.targets[mine[i]].media;
                    sources[i].frame(wall_ns, |p| {
                        if !batch.push(to, p) {
                            flush(socket, batch, &mut report);
                            batch.push(to, p);
                        }
                        report.packets += 1;
                        report.bytes += p.len() as u64;
                    });
                    heap.push(Reverse((sources[i].next_frame_at(), Event::Frame, i)));
                }
                Event::Report => {
                    let sr = sources[i].sender_report(now, wall_ns);
                    let to = o.targets[mine[i]].control;
                    if !batch.push(to, &sr) {
                        flush(socket, batch, &mut report);
                        batch.push(to, &sr);
                    }
                    report.sender_reports += 1;
                    heap.push(Reverse((sources[i].next_report_at(), Event::Report, i)));
                }
            }
            if batch.queued() == BATCH {
                flush(socket, batch, &mut report);
            }
        }
        for (socket, batch) in sockets.iter().zip(batches.iter_mut()) {
            if batch.queued() > 0 {
                flush(socket, batch, &mut report);
            }
        }
        progress.store(report.packets, Ordering::Relaxed);
        if now >= next_drain {
            // Receiver reports come back through the relay: read and count them.
            for s in &sockets {
                while let Ok(n) = inbound.recv(s.as_raw_fd()) {
                    report.received_reports += n as u64;
                    if n < BATCH {
                        break;
                    }
                }
            }
            next_drain = now + Duration::from_millis(50);
        }
        if let Some(&Reverse((due, _, _))) = heap.peek() {
            let wait = due.saturating_duration_since(Instant::now());
            if wait > Duration::from_micros(50) {
                std::thread::sleep(wait.min(end.saturating_duration_since(Instant::now())));
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64().min(o.duration.as_secs_f64());
    report.max_lag_ms = max_lag.as_secs_f64() * 1e3;
    progress.store(report.packets, Ordering::Relaxed);
    Ok(report)
}

fn flush(socket: &UdpSocket, batch: &mut Batch, report: &mut Report) {
    batch.send(socket.as_raw_fd(), |_, _, ok| {
        if !ok {
            report.send_errors += 1;
        }
    });
}
