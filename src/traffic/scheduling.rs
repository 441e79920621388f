//! Where and how the traffic tools' threads run: pinned to chosen CPUs, and
//! at a real-time priority, so that a benchmark measures the path and not the
//! turns the scheduler gives the tools among everything else on the machine
//! (BENCHMARKS.md, "The load tools": at 2048 webcasts most of the direct
//! path's tail was the tools waiting for a CPU).

use std::io;

/// The `SCHED_FIFO` priority of a real-time tool thread: above every
/// ordinary task, far below the kernel's own real-time threads.
pub const REALTIME_PRIORITY: i32 = 10;

/// How a tool's thread runs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Pinned to this CPU.
    pub cpu: Option<usize>,
    /// At [`REALTIME_PRIORITY`] (`SCHED_FIFO`).
    pub realtime: bool,
}

impl Placement {
    /// Checks, before any thread starts, that this placement is allowed: the
    /// CPU is one this process may use, real-time scheduling is permitted.
    pub fn check(self) -> io::Result<()> {
        if let Some(cpu) = self.cpu {
            check(cpu)?;
        }
        if self.realtime {
            // Tried on a thread of its own, which then ends.
            std::thread::spawn(set_realtime)
                .join()
                .map_err(|_| io::Error::other("the real-time check panicked"))??;
        }
        Ok(())
    }

    /// Applies it to the calling thread.
    pub fn apply(self) -> io::Result<()> {
        if let Some(cpu) = self.cpu {
            pin_current_thread(cpu)?;
        }
        if self.realtime {
            set_realtime()?;
        }
        Ok(())
    }
}

/// Runs the calling thread at [`REALTIME_PRIORITY`] under `SCHED_FIFO`.
fn set_realtime() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: REALTIME_PRIORITY,
    };
    // SAFETY: 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(
        e.kind(),
        format!(
            "cannot run at real-time priority ({e}): run as root or with CAP_SYS_NICE (or an RLIMIT_RTPRIO of at least {REALTIME_PRIORITY}), or leave out --realtime"
        ),
    ))
}

/// Pins the calling thread to `cpu`; an error names the CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| io::Error::other(format!("CPU {cpu}: {e}")))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| io::Error::other(format!("cannot pin a thread to CPU {cpu}: {e}")))
}

/// Checks that `cpu` is one this process may run on; the error lists those.
pub fn check(cpu: usize) -> io::Result<()> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| io::Error::other(format!("cannot read this process's CPUs: {e}")))?;
    if cpu < CpuSet::count() && allowed.is_set(cpu).unwrap_or(false) {
        return Ok(());
    }
    let list: Vec<String> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "CPU {cpu} is not one this process may run on (it may use {})",
            list.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_on_that_cpu_alone() {
        use nix::sched::sched_getaffinity;
        use nix::unistd::Pid;
        let allowed = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let cpu = (0..nix::sched::CpuSet::count())
            .rev()
            .find(|&c| allowed.is_set(c).unwrap())
            .unwrap();
        check(cpu).unwrap();
        let after = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            sched_getaffinity(Pid::from_raw(0)).unwrap()
        })
        .join()
        .unwrap();
        for c in 0..nix::sched::CpuSet::count() {
            assert_eq!(after.is_set(c).unwrap(), c == cpu, "CPU {c}");
        }
        let refused = check(nix::sched::CpuSet::count()).unwrap_err();
        assert!(refused.to_string().contains("may use"), "{refused}");
    }

    #[test]
    fn a_realtime_thread_runs_under_sched_fifo_or_is_refused_with_the_way_out() {
        let realtime = Placement {
            cpu: None,
            realtime: true,
        };
        // SAFETY: no arguments, no memory.
        let root = unsafe { libc::geteuid() } == 0;
        match realtime.check() {
            Ok(()) => {
                let (policy, priority) = std::thread::spawn(move || {
                    realtime.apply().unwrap();
                    let mut param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: the calling thread and a valid sched_param.
                    unsafe { libc::sched_getparam(0, &mut param) };
                    // SAFETY: as above.
                    (unsafe { libc::sched_getscheduler(0) }, param.sched_priority)
                })
                .join()
                .unwrap();
                assert_eq!((policy, priority), (libc::SCHED_FIFO, REALTIME_PRIORITY));
                // SAFETY: as above, on this (the test's) thread.
                assert_eq!(
                    unsafe { libc::sched_getscheduler(0) },
                    libc::SCHED_OTHER,
                    "checking changes nothing here"
                );
            }
            Err(e) => {
                assert!(!root, "root may always: {e}");
                assert!(e.to_string().contains("CAP_SYS_NICE"), "{e}");
            }
        }
    }
}
