//! Telling the service manager how the relay is doing (systemd's
//! `Type=notify` protocol, docs/install.md): `READY=1` once the state is
//! loaded, the open windows are bound and the API listens; `RELOADING=1` and
//! `READY=1` around a `SIGHUP` reload; `STOPPING=1` when a stop begins;
//! `WATCHDOG=1` from the runtime while it runs. Without `NOTIFY_SOCKET`
//! (started by hand, or by a manager that does not ask) every call is a no-op.
//!
//! A failed send is logged at debug level and otherwise ignored: the
//! manager's view is advisory, forwarding never depends on it.

use super::shutdown::Shutdown;
use sd_notify::NotifyState;
use std::time::Duration;

/// The service is up: `READY=1`, with `status` as its one-line `STATUS=`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration reload begins: `RELOADING=1` with the `MONOTONIC_USEC=`
/// systemd wants beside it (it tells a reload that began after the manager's
/// request from an older one). [`ready`] ends it.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A stop begins: `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to send `WATCHDOG=1`: half the manager's `WATCHDOG_USEC` (as
/// `sd_watchdog_enabled(3)` advises, so that one late ping is not yet a
/// timeout); `None` when no watchdog was asked for.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(half)
}

/// Half of `timeout`, at least 1 ms (a zero interval would spin).
fn half(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(1))
}

/// Sends `WATCHDOG=1` every `interval` until `stop`. A task on the control
/// runtime: when the runtime is stuck the pings stop, and the manager, after
/// its `WatchdogSec=`, kills and restarts the relay.
pub async fn watchdog(interval: Duration, mut stop: Shutdown) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => send(&[NotifyState::Watchdog]),
            _ = stop.wait() => return,
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_the_managers_timeout() {
        assert_eq!(half(Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(half(Duration::from_micros(3)), Duration::from_millis(1));
    }
}
