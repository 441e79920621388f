//! `rtp-relay run`: loads the configuration and state, binds the open windows,
//! serves the control plane, drives the schedule, and handles signals
//! (`SIGTERM`/`SIGINT` stop cleanly, `SIGHUP` reloads the configuration).

use crate::config::Config;
use crate::control::{self, Shared, metrics::Metrics};
use crate::dataplane::{self, DataPlane, Options};
use crate::logging::{self, LogHandle};
use crate::relay::Relay;
use crate::stats::watch::{Event, Sample, Watch};
use crate::store::Store;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Longest the scheduler sleeps: it re-reads the wall clock at least this often,
/// so a clock step never delays a bind or free by more.
const MAX_TICK: Duration = Duration::from_secs(1);

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
        Err(e) => {
            eprintln!("rtp-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, config_path: PathBuf, log: LogHandle) -> Result<(), String> {
    let open_files = crate::udp::raise_open_files_limit();
    let needed = config.data.max_groups as u64 * 6 + 64;
    if open_files < needed {
        warn!(
            open_files,
            needed,
            "the open-files limit allows fewer sockets than max_groups may need; raise LimitNOFILE"
        );
    }
    let (store, stored) = Store::open(&config.state.path).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.control.listen)
        .await
        .map_err(|e| {
            format!(
                "control.listen {}: cannot listen ({e}); stop what holds it or choose another address",
                config.control.listen
            )
        })?;
    // After the listener: a relay that cannot serve leaves the kernel alone.
    let (fast, why) = dataplane::ebpf::start(&config)?;
    let (path, interfaces) = match &fast {
        Some(f) => ("ebpf", f.interfaces().join(",")),
        None => ("userspace", String::new()),
    };
    info!(path, reason = %why, "data path chosen");
    let dataplane = DataPlane::start(
        Options {
            bind_address: config.data.bind_address,
            recv_buffer_bytes: config.data.recv_buffer_bytes,
            send_buffer_bytes: config.data.send_buffer_bytes,
            max_packet_size: config.data.max_packet_size,
            workers: config.effective_workers(),
            audio_clock_rate: config.stream.audio_clock_rate,
            video_clock_rate: config.stream.video_clock_rate,
        },
        open_files,
        fast,
    )
    .map_err(|e| format!("cannot start the data-plane workers: {e}"))?;
    let mut relay = Relay::new(&config, local_addresses(), store, stored, dataplane);
    relay.start(OffsetDateTime::now_utc());
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    info!(%addr, path, "control plane listening");

    let shared = Arc::new(Shared {
        relay: Mutex::new(relay),
        token: RwLock::new(config.control.token.clone()),
        metrics: Metrics::new(path, &interfaces),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let scheduler = tokio::spawn(schedule(shared.clone(), stop_rx.clone()));
    tokio::spawn(watch_streams(
        shared.clone(),
        config.stream.stall_timeout.0,
        stop_rx.clone(),
    ));
    tokio::spawn(signals(shared.clone(), config, config_path, log, stop_tx));

    let mut stop = stop_rx;
    axum::serve(listener, control::router(shared.clone()))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| format!("control plane failed: {e}"))?;
    let _ = scheduler.await;
    shared.relay().shutdown();
    info!("stopped; reservations stay on disk");
    Ok(())
}

/// Wakes at the schedule's next deadline (at least every [`MAX_TICK`]) and ticks it.
async fn schedule(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = shared.relay().schedule().next_wakeup();
        let now = OffsetDateTime::now_utc();
        let delay = next.map_or(MAX_TICK, |t| {
            Duration::try_from(t - now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_TICK)
        });
        tokio::select! {
            _ = tokio::time::sleep(delay.max(Duration::from_millis(5))) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.relay().tick(OffsetDateTime::now_utc()))
            .await;
    }
}

/// Logs stream starts, stalls, resumes, SSRC changes and drops, from a look at
/// every bound port's counters once a second (never a line per packet).
async fn watch_streams(
    shared: Arc<Shared>,
    stall_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = Watch::new(stall_timeout);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = std::time::Instant::now();
        let sampled = shared.relay().dataplane().samples(now);
        let samples: Vec<Sample> = sampled.iter().map(|(s, _)| *s).collect();
        // By port: a whole group's streams start in the same pass.
        let rules: std::collections::HashMap<u16, _> =
            sampled.iter().map(|(s, rule)| (s.port, rule)).collect();
        for event in watch.observe(&samples, now) {
            let port = match event {
                Event::Started { port, .. }
                | Event::Stalled { port, .. }
                | Event::Resumed { port }
                | Event::SsrcChanged { port, .. }
                | Event::Dropped { port, .. } => port,
            };
            let Some(rule) = rules.get(&port) else {
                continue;
            };
            let (group, stream, plane) =
                (rule.group.get(), rule.role.as_str(), rule.plane.as_str());
            match event {
                Event::Started { ssrc, .. } => {
                    info!(group, stream, plane, port, ssrc = ?ssrc, "stream started")
                }
                Event::Stalled { silent_for, .. } => warn!(
                    group,
                    stream,
                    plane,
                    port,
                    silent_s = silent_for.as_secs_f64(),
                    "stream stalled: no packet for the stall timeout during an active window"
                ),
                Event::Resumed { .. } => info!(group, stream, plane, port, "stream resumed"),
                Event::SsrcChanged { from, to, .. } => warn!(
                    group,
                    stream, plane, port, from, to, "SSRC changed: the encoder restarted"
                ),
                Event::Dropped { counts, .. } => warn!(
                    group,
                    stream,
                    plane,
                    port,
                    unknown_source = counts[0],
                    malformed = counts[1],
                    oversize = counts[2],
                    send_error = counts[3],
                    no_return_address = counts[4],
                    "packets dropped (reported at most every 10 s per port)"
                ),
            }
        }
    }
}

async fn signals(
    shared: Arc<Shared>,
    mut running: Config,
    path: PathBuf,
    log: LogHandle,
    stop: watch::Sender<bool>,
) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop the relay with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => running = reload(&shared, running, &path, &log),
        }
    }
    let _ = stop.send(true);
}

/// Applies what can change at run time; keys that need a restart keep their
/// running values and are named in a warning.
fn reload(shared: &Shared, running: Config, path: &Path, log: &LogHandle) -> Config {
    let mut new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("SIGHUP: configuration not reloaded, the running one stays: {e}");
            return running;
        }
    };
    for key in keep_restart_only(&running, &mut new) {
        warn!(key, "SIGHUP: this key only takes effect after a restart");
    }

    *shared
        .token
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = new.control.token.clone();
    log.set_level(&new.log.level);
    let mut relay = shared.relay();
    relay.reconfigure(&new, local_addresses());
    relay.tick(OffsetDateTime::now_utc());
    info!("SIGHUP: configuration reloaded");
    new
}

/// Keys fixed when the process starts (listeners, sockets, workers, state,
/// the data plane's settings): each keeps its running value. Returns the ones
/// the new file changed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($key:literal => $($field:ident).+;)*) => {$(
            if running.$($field).+ != new.$($field).+ {
                changed.push($key);
                new.$($field).+ = running.$($field).+.clone();
            }
        )*};
    }
    keep! {
        "control.listen" => control.listen;
        "data.bind_address" => data.bind_address;
        "data.workers" => data.workers;
        "data.recv_buffer_bytes" => data.recv_buffer_bytes;
        "data.send_buffer_bytes" => data.send_buffer_bytes;
        "data.max_packet_size" => data.max_packet_size;
        "data.fast_path" => data.fast_path;
        "stream.audio_clock_rate" => stream.audio_clock_rate;
        "stream.video_clock_rate" => stream.video_clock_rate;
        "stream.stall_timeout" => stream.stall_timeout;
        "state.path" => state.path;
        "log.format" => log.format;
    }
    changed
}

/// The host's interface addresses, for the forwarding-loop check.
fn local_addresses() -> Vec<IpAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_restart_only_keys_and_takes_the_rest() {
        let base = "[wowza]\nport_offset = -16384\n";
        let running = Config::parse(base).unwrap();
        let mut new = Config::parse(&format!(
            "{base}[control]\nlisten = \"127.0.0.1:1\"\n[schedule]\nlead = \"5m\"\n[stream]\nstall_timeout = \"9s\"\n"
        ))
        .unwrap();
        assert_eq!(
            keep_restart_only(&running, &mut new),
            ["control.listen", "stream.stall_timeout"]
        );
        assert_eq!(new.control.listen, running.control.listen);
        assert_eq!(new.stream, running.stream);
        assert_eq!(
            new.schedule.lead.0,
            Duration::from_secs(300),
            "lead applies at once"
        );
    }
}
