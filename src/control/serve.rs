//! Serving the control plane's HTTP (docs/configuration.md): hyper's HTTP/1
//! server on the listener, with what `axum::serve` lacks, so that no client —
//! silent, slow or numerous — makes the API unreachable or takes the file
//! descriptors the data plane's sockets need:
//!
//! - a request's head must arrive within [`HEADER_TIMEOUT`] of the connection
//!   (or of the previous answer on a kept-alive one), its body within
//!   [`BODY_TIMEOUT`];
//! - at most `cap` connections are open, each a file descriptor set aside
//!   for the control plane ([`connection_cap`]); a connection arriving at the
//!   cap asks the oldest to close — at once when it is idle, after its answer
//!   when busy, and in any case within [`CLOSE_GRACE`] — and takes its place,
//!   so a flood of idle connections cannot shut a client out.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tracing::{debug, warn};

/// Time for a request's head to arrive: a client that connects and sends
/// nothing, or half a head, or stays idle after an answer, is closed then.
/// Every client of this API sends a request at once.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a request's body (at most [`super::MAX_BODY_BYTES`]) to arrive
/// once its head has: a 408 after it.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection asked to close (at the cap, or at a stop) has to finish
/// its answer before it is dropped: a client that does not read its answer
/// holds its slot no longer.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Most connections open at once: a handful of schedulers, Prometheus and an
/// operator need far fewer; each costs a file descriptor and some memory.
pub const MAX_CONNECTIONS: u64 = 64;
/// Fewest: the API stays reachable even when the open-files limit is too low
/// for `max_groups` (warned at start).
pub const MIN_CONNECTIONS: u64 = 8;

/// How many connections to serve at once when `socket_budget` file
/// descriptors are free for sockets and `max_groups` may need `group_sockets`
/// of them: what the groups leave, within [`MIN_CONNECTIONS`]–[`MAX_CONNECTIONS`].
pub fn connection_cap(socket_budget: u64, group_sockets: u64) -> u64 {
    socket_budget
        .saturating_sub(group_sockets)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The open connections, oldest first, each with the way to ask it to close.
#[derive(Default)]
struct Open(Mutex<BTreeMap<u64, oneshot::Sender<()>>>);

impl Open {
    fn insert(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks the oldest connection not yet asked to close.
    fn close_oldest(&self) {
        if let Some((_, tx)) = self.lock().pop_first() {
            let _ = tx.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `router` on `listener`, at most `cap` connections at once, until
/// `stop`; then waits for the open connections to finish their answers.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cap: u64,
    stop: impl Future<Output = ()>,
) {
    let cap = u32::try_from(cap).unwrap_or(u32::MAX).max(1);
    let permits = Arc::new(Semaphore::new(cap as usize));
    let open = Arc::new(Open::default());
    let (closing, closing_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    for id in 0u64.. {
        let stream = tokio::select! {
            s = accept(&listener) => s,
            () = &mut stop => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                open.close_oldest();
                tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut stop => break,
                }
            }
        };
        let asked = open.insert(id);
        let (router, open, closing) = (router.clone(), open.clone(), closing_rx.clone());
        tokio::spawn(async move {
            connection(stream, router, asked, closing, permit).await;
            open.remove(id);
        });
    }
    let _ = closing.send(true);
    // Every permit back: every connection is gone.
    let _ = permits.acquire_many(cap).await;
}

/// The next connection. The open-files limit can still be reached by what
/// the reservation does not cover: wait a little then rather than spin.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            // The client gave up before it was accepted.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                warn!(error = %e, "control plane: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection until the client closes it, a timeout does, or it
/// is asked to close (`asked`, or `closing` at a stop). `_permit` is its slot.
async fn connection(
    stream: TcpStream,
    router: Router,
    asked: oneshot::Receiver<()>,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let finished = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = asked => None,
        _ = closing.wait_for(|c| *c) => None,
    };
    let result = match finished {
        Some(r) => r.map_err(|e| e.to_string()),
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("dropped: its answer was not taken in time".into()),
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "control plane connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_what_the_groups_leave_within_bounds() {
        assert_eq!(connection_cap(100_000, 12_288), MAX_CONNECTIONS);
        assert_eq!(connection_cap(12_288 + 20, 12_288), 20);
        assert_eq!(connection_cap(180, 12_288), MIN_CONNECTIONS);
        assert_eq!(connection_cap(0, 0), MIN_CONNECTIONS);
    }
}
