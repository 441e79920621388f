//! Pinning the traffic tools' threads to CPUs, so a benchmark can keep the
//! generator, the sink and the relay from taking turns on one core.

use std::io;

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
}
