//! `SIGUSR2`: upgrade or restart in place (docs/configuration.md, "Signals").
//!
//! The relay executes the binary at the path it was started from again, in
//! the same process (a service manager keeps tracking the PID), and hands it
//! the bound sockets: the workers stop reading, packets wait in the sockets'
//! buffers, and the next process reads them. The kernel fast path needs
//! nothing handed over: its maps and links are pinned and adopted at start,
//! as after a crash. What is handed over ([`super::handover`]) is written to a
//! file beside the state journal, named by an environment variable.

use super::handover::{self, ENV, Handover, Inherited, InheritedPort, Kind};
use crate::control::Shared;
use crate::dataplane::forwarder::PortState;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tracing::{info, warn};

/// How this process re-executes itself.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The binary's path when this process started: a file replaced there
    /// since is the new version.
    exe: Result<PathBuf, String>,
    /// The arguments after the program name.
    args: Vec<OsString>,
    /// The configuration, for the new binary's check.
    config: PathBuf,
    /// Where the handover is written.
    handover: PathBuf,
    /// The control plane's listener.
    listener: Inherited,
}

impl Upgrade {
    /// Reads how this process was started; `state` is `[state] path`.
    pub fn new(config: &Path, state: &Path, listener: Inherited) -> Upgrade {
        Upgrade {
            exe: std::env::current_exe().map_err(|e| format!("the binary's path is unknown ({e})")),
            args: std::env::args_os().skip(1).collect(),
            config: config.to_path_buf(),
            handover: state.with_extension("handover"),
            listener,
        }
    }

    /// Checks the binary, pauses the data plane, writes the handover and
    /// executes the binary. Returns only if the upgrade did not happen: why
    /// (the relay then goes on as before).
    pub fn run(&self, shared: &Shared) -> String {
        let exe = match &self.exe {
            Ok(exe) => exe,
            Err(e) => return e.clone(),
        };
        let started = Instant::now();
        if let Err(e) = self.check(exe) {
            return e;
        }
        let checked_ms = started.elapsed().as_millis();
        // The coordinator's lock, until the exec: no change is half made.
        let mut coordinator = shared.coordinator();
        let paused = coordinator.data_plane().pause();
        let paused_at_ns = crate::clock::boot_nanos();
        let ports: Vec<InheritedPort> = paused
            .into_iter()
            .filter_map(|p| {
                Some(InheritedPort {
                    socket: Inherited {
                        fd: p.fd,
                        address: p.address.ok()?,
                    },
                    state: p.state,
                })
            })
            .collect();
        let h = Handover {
            version: handover::VERSION,
            pid: std::process::id(),
            paused_at_ns,
            listener: Some(self.listener),
            ports,
        };
        let fds: Vec<RawFd> = std::iter::once(self.listener.fd)
            .chain(h.ports.iter().map(|p| p.socket.fd))
            .collect();
        if let Err(e) = std::fs::write(&self.handover, h.encode()) {
            coordinator.data_plane().resume();
            return format!("cannot write {}: {e}", self.handover.display());
        }
        info!(
            exe = %exe.display(),
            sockets = h.ports.len(),
            checked_ms,
            "SIGUSR2: the new binary passed check-config; handing the sockets over"
        );
        for &fd in &fds {
            set_cloexec(fd, false);
        }
        // Ignored signals stay ignored across the exec: a second SIGUSR2 or a
        // SIGHUP before the new process handles them must not end it (their
        // default action).
        let kept = ignore(&[Signal::SIGUSR2, Signal::SIGHUP]);
        let e = Command::new(exe)
            .args(&self.args)
            .env(ENV, &self.handover)
            .exec();
        // Still here: the exec failed and this process goes on.
        restore(kept);
        for &fd in &fds {
            set_cloexec(fd, true);
        }
        let _ = std::fs::remove_file(&self.handover);
        coordinator.data_plane().resume();
        format!("cannot execute {}: {e}", exe.display())
    }

    /// Runs `<exe> check-config --config <config>`: the new binary starts
    /// and takes the configuration.
    fn check(&self, exe: &Path) -> Result<(), String> {
        let out = Command::new(exe)
            .arg("check-config")
            .arg("--config")
            .arg(&self.config)
            .env_remove(ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} check-config --config {} failed ({}): {}",
            exe.display(),
            self.config.display(),
            out.status,
            stderr.trim()
        ))
    }
}

/// What a previous process of an upgrade handed over, ready to use.
#[derive(Debug, Default)]
pub struct Taken {
    /// The control plane's listener, to serve on instead of binding.
    pub listener: Option<TcpListener>,
    /// Group sockets with their ports' state, for the data plane.
    pub ports: Vec<(u16, UdpSocket, PortState)>,
    /// When the previous process stopped reading (`CLOCK_BOOTTIME`, ns).
    pub paused_at_ns: Option<u64>,
}

impl Taken {
    /// Milliseconds since the previous process stopped reading.
    pub fn paused_ms(&self) -> Option<f64> {
        self.paused_at_ns
            .map(|at| crate::clock::boot_nanos().saturating_sub(at) as f64 / 1e6)
    }
}

/// Takes the sockets a previous process handed over, if this process was
/// started by an upgrade: those bound where the configuration says (its
/// `control.listen` and `data.bind_address`). Anything else is closed and
/// logged, and its port is bound afresh.
pub fn take(listen: SocketAddr, bind_address: IpAddr) -> Taken {
    let Some(path) = std::env::var_os(ENV).map(PathBuf::from) else {
        return Taken::default();
    };
    let bytes = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    let h = match bytes {
        Ok(bytes) => Handover::decode(&bytes, std::process::id()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let h = match h {
        Ok(h) => h,
        Err(e) => {
            warn!(handover = %path.display(), "upgrade: the handover is not used ({e}); binding afresh");
            return Taken::default();
        }
    };
    let paused_at_ns = Some(h.paused_at_ns);
    let sorted = handover::sort(h, listen, bind_address, local_address);
    for (fd, why) in &sorted.refused {
        warn!(
            fd,
            "upgrade: a handed-over socket is not used ({why}); its port is bound afresh"
        );
    }
    for fd in sorted.to_close() {
        // SAFETY: an inherited descriptor of this process that nothing else took.
        unsafe { libc::close(fd) };
    }
    // SAFETY (both): sorted descriptors are open sockets of the kind named,
    // each handed out once; from here on they have one owner.
    let listener = sorted.listener.map(|fd| {
        set_cloexec(fd, true);
        unsafe { TcpListener::from_raw_fd(fd) }
    });
    let ports = sorted
        .ports
        .into_iter()
        .map(|(fd, port, state)| {
            set_cloexec(fd, true);
            (port, unsafe { UdpSocket::from_raw_fd(fd) }, state)
        })
        .collect();
    Taken {
        listener,
        ports,
        paused_at_ns,
    }
}

/// The listener's descriptor and address, for the handover.
pub fn inherited(listener: &tokio::net::TcpListener) -> std::io::Result<Inherited> {
    Ok(Inherited {
        fd: listener.as_raw_fd(),
        address: listener.local_addr()?,
    })
}

/// The local address of `fd` when it is an open socket of `kind`.
fn local_address(fd: RawFd, kind: Kind) -> Option<SocketAddr> {
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: open (above), and only borrowed for the calls below.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    let want = match kind {
        Kind::Tcp => socket2::Type::STREAM,
        Kind::Udp => socket2::Type::DGRAM,
    };
    if socket.r#type().ok()? != want {
        return None;
    }
    socket.local_addr().ok()?.as_socket()
}

/// Sets or clears `FD_CLOEXEC`: cleared, the descriptor stays open across
/// the exec.
fn set_cloexec(fd: RawFd, on: bool) {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a descriptor this process holds.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags) };
}

/// Ignores `signals`; their previous actions, for [`restore`].
fn ignore(signals: &[Signal]) -> Vec<(Signal, SigAction)> {
    let ignored = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    signals
        .iter()
        // SAFETY: SIG_IGN runs no code in this process.
        .filter_map(|&s| Some((s, unsafe { sigaction(s, &ignored) }.ok()?)))
        .collect()
}

/// Puts back the actions [`ignore`] replaced (the runtime's handlers).
fn restore(kept: Vec<(Signal, SigAction)>) {
    for (s, action) in kept {
        // SAFETY: the very action that was installed before.
        let _ = unsafe { sigaction(s, &action) };
    }
}
