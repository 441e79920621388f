//! `rtp-relay run`: loads the configuration and state, binds the open windows,
//! serves the control plane, and runs its tasks until a stop signal:
//!
//! - the scheduler (below): ticks the coordinator at the schedule's deadlines;
//! - [`stream_watch`]: logs stream starts, stalls, SSRC changes and drops;
//! - [`sdp_files`]: keeps every reservation's SDP in `[wowza] sdp_dir`;
//! - [`signals`]: stop on `SIGTERM`/`SIGINT`, reload on `SIGHUP`, upgrade in
//!   place on `SIGUSR2` ([`upgrade`], [`handover`]);
//! - [`notify`]: tells the service manager (systemd) it is ready, reloading,
//!   stopping, and alive (its watchdog);
//! - [`shutdown`]: the stop signal they all wait on.

pub mod cluster;
pub mod handover;
pub mod notify;
pub mod sdp_files;
pub mod shutdown;
pub mod signals;
pub mod stream_watch;
pub mod upgrade;

use crate::clock::Now;
use crate::cluster::etcd::Etcd;
use crate::config::Config;
use crate::control::coordinator::{self, Coordinator};
use crate::control::{self, Shared, exporter::Exporter};
use crate::dataplane::{self, DataPlane};
use crate::logging::{self, LogHandle};
use crate::store::{Store, StoreError};
use shutdown::Shutdown;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Longest the scheduler sleeps: it re-reads the wall clock at least this often,
/// so a clock step never delays a bind or free by more.
const MAX_TICK: Duration = Duration::from_secs(1);

/// Where the reservations are kept.
enum Durable {
    Journal((Store, Vec<crate::store::Stored>)),
    Etcd(Etcd),
}

/// Runs the service until a stop signal; the process's exit status.
pub fn run(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rtp-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let log = logging::init(&config.log);
    exit_on_panic();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("control")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtp-relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, config_path.to_path_buf(), log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal { message, status }) => {
            eprintln!("rtp-relay: {message}");
            ExitCode::from(status)
        }
    }
}

/// Why the service could not run: the message, and the exit status (2 for
/// input the operator must fix, as a bad configuration; 1 otherwise).
struct Fatal {
    message: String,
    status: u8,
}

impl From<String> for Fatal {
    fn from(message: String) -> Self {
        Fatal { message, status: 1 }
    }
}

impl From<StoreError> for Fatal {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::Damaged(_) => 2,
            StoreError::Unusable(_) => 1,
        };
        Fatal {
            message: e.to_string(),
            status,
        }
    }
}

async fn serve(config: Config, config_path: PathBuf, log: LogHandle) -> Result<(), Fatal> {
    let open_files = crate::udp::raise_open_files_limit();
    let local = local_addresses();
    let rules = config.rules(local.clone());
    // Started by an upgrade in place: the previous process's sockets.
    let mut taken = upgrade::take(config.control.listen, config.data.bind_address);
    // The listener first: a relay refused its address (another one running)
    // must not create a state folder, lock or journal on its way out; and the
    // state's lock before anything else is touched (docs/cli.md).
    let listener = match taken.listener.take().map(|l| {
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    }) {
        Some(Ok(l)) => l,
        other => {
            if let Some(Err(e)) = other {
                warn!(error = %e, "upgrade: the handed-over listener is not usable; listening afresh");
            }
            tokio::net::TcpListener::bind(config.control.listen)
                .await
                .map_err(|e| {
                    format!(
                        "control.listen {}: cannot listen ({e}); stop what holds it (another rtp-relay?) or choose another address",
                        config.control.listen
                    )
                })?
        }
    };
    // A cluster node's service address, checked before anything starts.
    let service_address = match &config.cluster {
        Some(c) if !c.service_address.is_empty() => Some(
            crate::cluster::address::ServiceAddress::new(&c.service_address, &c.service_interface)
                .map_err(|e| Fatal {
                    message: format!("cluster.{e}"),
                    status: 2,
                })?,
        ),
        _ => None,
    };
    // One relay keeps its reservations in its journal; a cluster node in etcd.
    let durable = match &config.cluster {
        None => Durable::Journal(Store::open(&config.state.path, |loaded| {
            coordinator::vet_loaded(&rules, loaded)
        })?),
        Some(cluster) => Durable::Etcd(
            Etcd::connect(&cluster.etcd_endpoints)
                .await
                .map_err(|e| format!("cluster.etcd_endpoints: {e}"))?,
        ),
    };
    let upgrade = upgrade::Upgrade::new(
        &config_path,
        &config.state.path,
        upgrade::inherited(&listener).map_err(|e| e.to_string())?,
    );
    if let Some(warning) = config.open_api_warning() {
        warn!("{warning}");
    }
    // After the listener: a relay that cannot serve leaves the kernel alone.
    let (fast, why) = dataplane::ebpf::start(&config.fast_path_options())?;
    let (path, interfaces) = match &fast {
        Some(f) => ("ebpf", f.interfaces().join(",")),
        None => ("userspace", String::new()),
    };
    info!(path, reason = %why, "data path chosen");
    let mut options = config.data_plane_options();
    // The port the control plane listens on (`listen` may say 0).
    if let Ok(a) = listener.local_addr() {
        options.steering_port = a.port();
    }
    let mut dataplane = DataPlane::start(options, open_files, fast, &Now::read())
        .map_err(|e| format!("cannot start the data-plane workers: {e}"))?;
    let handed_over = taken.ports.len();
    dataplane.inherit(std::mem::take(&mut taken.ports));
    // The API's connections and the group sockets each get file descriptors
    // of their own: neither can starve the other (docs/configuration.md).
    let group_sockets = config.data.max_groups as u64 * 6;
    let connections = control::serve::connection_cap(dataplane.socket_budget(), group_sockets);
    // One more: a connection accepted at the cap while the oldest closes.
    dataplane.reserve_files(connections + 1);
    if dataplane.socket_budget() < group_sockets {
        warn!(
            open_files,
            sockets = dataplane.socket_budget(),
            needed = group_sockets,
            "the open-files limit leaves fewer sockets than max_groups may need; raise LimitNOFILE"
        );
    }
    let (mut coordinator, etcd) = match durable {
        Durable::Journal((store, stored)) => (
            Coordinator::new(&config, local, store, stored, dataplane),
            None,
        ),
        Durable::Etcd(etcd) => (
            Coordinator::clustered(
                &config,
                local,
                etcd.clone(),
                tokio::runtime::Handle::current(),
                dataplane,
            ),
            Some(etcd),
        ),
    };
    coordinator.start(&Now::read());
    if let Some(paused_ms) = taken.paused_ms() {
        info!(
            sockets = handed_over,
            paused_ms = format_args!("{paused_ms:.1}"),
            "upgrade: forwarding again on the handed-over sockets"
        );
    }
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    info!(%addr, path, "control plane listening");

    let shared = Arc::new(Shared::new(
        coordinator,
        config.control.token.clone(),
        Exporter::new(path, &interfaces),
        config.sdp.clone(),
    ));
    let (trigger, stop) = shutdown::channel();
    let scheduler = tokio::spawn(schedule(shared.clone(), stop.clone()));
    let config_cluster = config.cluster.is_some();
    let cluster_task = match (&config.cluster, etcd, service_address) {
        (Some(c), Some(etcd), address) => Some(tokio::spawn(cluster::run(
            c.clone(),
            etcd,
            address,
            shared.clone(),
            stop.clone(),
        ))),
        _ => None,
    };
    tokio::spawn(stream_watch::run(
        shared.reader.clone(),
        config.stream.stall_timeout.0,
        stop.clone(),
    ));
    if !config.wowza.sdp_dir.as_os_str().is_empty() {
        tokio::spawn(sdp_files::run(
            shared.clone(),
            config.wowza.sdp_dir.clone(),
            stop.clone(),
        ));
    }
    let handlers = signals::Handlers::install()
        .map_err(|e| format!("cannot install the signal handlers: {e}"))?;
    tokio::spawn(signals::run(
        handlers,
        shared.clone(),
        config,
        config_path,
        log,
        upgrade,
        trigger,
    ));
    // Ready: the state is loaded, the open windows are bound, the API listens.
    let published = shared.published();
    notify::ready(&format!(
        "reservations: {}, groups bound: {}, data path: {path}, API: {addr}",
        published.entries().count(),
        published.bound().groups().count(),
    ));
    if let Some(interval) = notify::watchdog_interval() {
        tokio::spawn(notify::watchdog(interval, stop.clone()));
    }

    let mut stop = stop;
    control::serve::serve(
        listener,
        control::router(shared.clone()),
        connections,
        async move { stop.wait().await },
    )
    .await;
    let _ = scheduler.await;
    if let Some(task) = cluster_task {
        // Resigned first: another node takes over while this one stops.
        let _ = task.await;
    }
    let stopping = shared.clone();
    let _ = tokio::task::spawn_blocking(move || stopping.coordinator().shutdown()).await;
    info!(
        "stopped; reservations stay {}",
        if config_cluster { "in etcd" } else { "on disk" }
    );
    Ok(())
}

/// Wakes at the schedule's next deadline (at least every [`MAX_TICK`]) and ticks it.
async fn schedule(shared: Arc<Shared>, mut stop: Shutdown) {
    loop {
        let next = shared.published().next_wakeup();
        let now = Now::read();
        let delay = next.map_or(MAX_TICK, |t| {
            Duration::try_from(t - now.wall)
                .unwrap_or(Duration::ZERO)
                .min(MAX_TICK)
        });
        tokio::select! {
            _ = tokio::time::sleep(delay.max(Duration::from_millis(5))) => {}
            _ = stop.wait() => return,
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.coordinator().tick(&Now::read())).await;
    }
}

/// Makes a panic on any thread (a tokio task's included: the runtime would
/// catch it and carry on, and a panic that took down a task the process waits
/// on would end it with status 0) log what and where, then end the process at
/// once with status 101, so that a service manager restarts the relay.
///
/// `_exit`, not unwinding or `exit`: as after `kill -9`, nothing more runs,
/// whatever the panic left half done. Every acknowledged change is already on
/// disk, a half-written record is dropped at the next start (README
/// "Operating notes"), and the kernel fast path keeps forwarding meanwhile.
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current();
        let trace = std::backtrace::Backtrace::capture();
        let backtrace = match trace.status() {
            std::backtrace::BacktraceStatus::Captured => trace.to_string(),
            _ => "none (RUST_BACKTRACE=1 logs one)".into(),
        };
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %info.location().map_or_else(String::new, ToString::to_string),
            backtrace = %backtrace,
            "panic: {message}; this is a bug: the relay exits with status 101 (reservations are on disk)"
        );
        // Nothing unwinds to a log batch's end: its lines, this one among
        // them, go out now.
        crate::logging::write_held();
        // SAFETY: _exit only ends the process; it touches no Rust state.
        unsafe { libc::_exit(101) }
    }));
}

/// The host's interface addresses, for the forwarding-loop check.
pub(crate) fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}
