//! The kernel's copies of parameter-set packets into the ports' learners
//! (docs/forwarding.md, "Kernel fast path"): on the fast path a video packet
//! never reaches a socket, so the program copies the few that may carry an
//! H.264 SPS or PPS into a ring, and this thread hands each to its port's
//! learner, as the worker does for the packets it forwards itself.

use super::counters::PortCounters;
use super::ebpf::LearnRing;
use crate::packet::rtp::RtpHeader;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The video ports whose learners the kernel's copies feed, by port.
pub type Learners = Arc<DashMap<u16, Arc<PortCounters>>>;

/// The running reader.
pub struct Learning {
    learners: Learners,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the ring is read. The program does not wake the reader (a
/// wake-up per copy cost more than the copies), so this is how late a new
/// parameter set can reach the SDP. The program copies a parameter set only
/// when it changes (docs/forwarding.md), so a read most often finds nothing
/// and the wake-up is the cost: at 10 ms, 1.5 ms of CPU a second. At 2048
/// webcasts starting at once, the first sets of 4096 videos (two copies each
/// in a keyframe interval of 2 s) fill about 200 of the ring's 500 records
/// in 50 ms when their keyframes are spread over the interval. A copy the
/// full ring refuses comes again with the next keyframe, and finds more room
/// then: sets already copied are not copied again.
const READ_EVERY: Duration = Duration::from_millis(50);

impl Learning {
    /// Reads `ring` on a thread of its own until dropped.
    pub fn start(mut ring: LearnRing) -> std::io::Result<Learning> {
        let learners: Learners = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (map, flag) = (learners.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("learn".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(READ_EVERY);
                    let now = Instant::now();
                    ring.drain(|copy| {
                        let Some(counters) = map.get(&copy.port) else {
                            return;
                        };
                        if let Ok(h) = RtpHeader::parse(copy.packet) {
                            counters.learn(&h, copy.packet, now);
                        }
                    });
                }
            })?;
        Ok(Learning {
            learners,
            stop,
            thread: Some(thread),
        })
    }

    /// Feeds `port`'s copies to `counters`' learner.
    pub fn add(&self, port: u16, counters: Arc<PortCounters>) {
        self.learners.insert(port, counters);
    }

    /// Stops feeding `port`.
    pub fn remove(&self, port: u16) {
        self.learners.remove(&port);
    }
}

impl Drop for Learning {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
