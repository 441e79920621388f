//! Signals: `SIGTERM`/`SIGINT` stop cleanly, `SIGHUP` reloads the
//! configuration (what can change at run time; the rest is named in a
//! warning), `SIGUSR2` upgrades or restarts in place ([`super::upgrade`]).

use super::shutdown::Trigger;
use super::upgrade::Upgrade;
use crate::clock::Now;
use crate::config::Config;
use crate::control::Shared;
use crate::logging::LogHandle;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

/// The signals the relay handles, caught from the moment this exists: made
/// before the service manager hears `READY=1`, which may send any of them at
/// once (a `SIGTERM` that came before would end the process unhandled).
pub struct Handlers {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Handlers {
    /// Installs the handlers (within the runtime).
    pub fn install() -> std::io::Result<Handlers> {
        Ok(Handlers {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Handles signals until a stop signal, then triggers `stop`.
pub async fn run(
    handlers: Handlers,
    shared: Arc<Shared>,
    mut running: Config,
    path: PathBuf,
    log: LogHandle,
    upgrade: Upgrade,
    stop: Trigger,
) {
    let Handlers {
        mut term,
        mut int,
        mut hup,
        mut usr2,
    } = handlers;
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                super::notify::reloading();
                // The reload waits for the coordinator's lock: off the async threads.
                let (shared, path, log) = (shared.clone(), path.clone(), log.clone());
                let previous = running.clone();
                running = tokio::task::spawn_blocking(move || reload(&shared, running, &path, &log))
                    .await
                    .unwrap_or(previous);
                super::notify::ready("serving; the last reload's outcome is in the log");
            }
            _ = usr2.recv() => {
                if running.cluster.is_some() {
                    // The lease cannot be handed to the new binary: its key
                    // would have to expire first, a gap of a lease_ttl.
                    error!("SIGUSR2: no upgrade in place on a cluster node; stop it (SIGTERM: a standby takes over at once) and start the new version, which joins as standby (docs/cluster.md)");
                    continue;
                }
                info!("SIGUSR2: upgrading in place");
                // The service manager waits for the new binary's READY=1.
                super::notify::reloading();
                // The check runs a process and the handover takes the
                // coordinator's lock: off the async threads. Returns only
                // when there was no upgrade.
                let (shared, upgrade) = (shared.clone(), upgrade.clone());
                let why = tokio::task::spawn_blocking(move || upgrade.run(&shared))
                    .await
                    .unwrap_or_else(|e| e.to_string());
                error!("SIGUSR2: no upgrade, this relay carries on: {why}");
                super::notify::ready("serving; the upgrade was refused (see the log)");
            }
        }
    }
    super::notify::stopping();
    stop.stop();
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
    let restart_only = keep_restart_only(&running, &mut new);
    // First: a configuration the held reservations do not pass changes nothing.
    let applied = shared
        .coordinator()
        .reconfigure(&new, super::local_addresses(), &Now::read());
    if let Err(e) = applied {
        error!("SIGHUP: configuration not reloaded, the running one stays: {e}");
        return running;
    }
    for key in restart_only {
        warn!(key, "SIGHUP: this key only takes effect after a restart");
    }
    // The token can go with a reload while `listen` stays.
    if let Some(warning) = new.open_api_warning() {
        warn!("SIGHUP: {warning}");
    }

    *shared
        .token
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = new.control.token.clone();
    *shared
        .sdp
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = new.sdp.clone();
    log.set_level(&new.log.level);
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
        "data.fast_path_interfaces" => data.fast_path_interfaces;
        "data.fast_path_private_pins" => data.fast_path_private_pins;
        "stream.audio_clock_rate" => stream.audio_clock_rate;
        "stream.video_clock_rate" => stream.video_clock_rate;
        "stream.stall_timeout" => stream.stall_timeout;
        "state.path" => state.path;
        "wowza.sdp_dir" => wowza.sdp_dir;
        "log.format" => log.format;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_reload_keeps_restart_only_keys_and_takes_the_rest() {
        let base = "[wowza]\nport_offset = -16384\n";
        let running = Config::parse(base).unwrap();
        let mut new = Config::parse(&format!(
            "{base}[control]\nlisten = \"127.0.0.1:1\"\n[data]\nfast_path_interfaces = [\"lo\"]\n[schedule]\nlead = \"5m\"\n[stream]\nstall_timeout = \"9s\"\n"
        ))
        .unwrap();
        assert_eq!(
            keep_restart_only(&running, &mut new),
            [
                "control.listen",
                "data.fast_path_interfaces",
                "stream.stall_timeout"
            ]
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
