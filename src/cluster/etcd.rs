//! The cluster's shared state in etcd (docs/cluster.md, "What etcd holds"):
//! the thin I/O layer. Every call has a deadline, so an unreachable etcd is an
//! error in seconds, never a hung API request; and a call that fails moves
//! the next ones to the next member, so a dead member is left at once (the
//! client's own balancing keeps sending to it: etcd-client issue 39).
//!
//! Keys, all under `/rtp-relay/`:
//! - `reservations/<event_id>`: a reservation and its group, as JSON;
//! - `guard`: rewritten by every change of a reservation, in the same
//!   transaction. A change commits only if the guard is as the writer last saw
//!   it, so checks made on the writer's copy (conflicts, allocation) hold
//!   against everything committed: concurrent writers on two nodes are
//!   serialized, and the loser re-reads and checks again;
//! - `active`: the active node's name, attached to its lease (the election).

use crate::store::Stored;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Longest any one request to etcd may take.
const TIMEOUT: Duration = Duration::from_secs(2);

const RESERVATIONS: &str = "/rtp-relay/reservations/";
const GUARD: &str = "/rtp-relay/guard";
const ACTIVE: &str = "/rtp-relay/active";
const ALL: &str = "/rtp-relay/";

/// A connection to the cluster's etcd (cheap to clone; clones share the
/// member in use).
#[derive(Clone)]
pub struct Etcd {
    /// A client per member, in the order configured.
    clients: Arc<Vec<Client>>,
    /// The member requests go to now.
    current: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Etcd")
    }
}

/// Everything stored, as of one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every reservation.
    pub reservations: Vec<Stored>,
    /// The guard's revision: the last change to any reservation.
    pub guard: i64,
    /// The store's revision when read: watch from the next one.
    pub revision: i64,
    /// The active node's name, if any.
    pub active: Option<String>,
}

/// A change to commit.
#[derive(Debug, Clone)]
pub enum Op<'a> {
    /// Create or replace a reservation.
    Put(&'a Stored),
    /// Delete one.
    Delete(&'a str),
}

/// The outcome of a guarded commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Committed at this revision.
    Done(i64),
    /// Another node changed a reservation since the guard was read: re-read
    /// and check again.
    Stale,
}

/// A change another node (or this one) committed, as the watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A reservation was created or changed, at `revision`.
    Put {
        /// Its revision.
        revision: i64,
        /// The reservation.
        stored: Stored,
    },
    /// A reservation was deleted.
    Delete {
        /// Its revision.
        revision: i64,
        /// Whose.
        event_id: String,
    },
    /// The election key was deleted (its holder resigned or its lease expired).
    Vacant,
    /// The election key was written by `node`.
    Active(String),
}

impl Etcd {
    /// A client for `endpoints`; it connects on first use (an etcd down at
    /// start is an error of the first request, not of this).
    pub async fn connect(endpoints: &[String]) -> Result<Etcd, String> {
        let options = ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_timeout(TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), TIMEOUT)
            .with_keep_alive_while_idle(true)
            // A member cut off from its quorum refuses at once, not after the timeout.
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let client = Client::connect([e], Some(options.clone()))
                .await
                .map_err(|err| format!("etcd endpoint {e}: {err}"))?;
            clients.push(client);
        }
        if clients.is_empty() {
            return Err("no etcd endpoint".into());
        }
        Ok(Etcd {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The member to ask, and its index (for [`Etcd::failed`]).
    fn pick(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Member `i` failed (a call, or a stream on it): the next calls go to
    /// the next member (unless another failure moved on already).
    pub fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `call` on the member in use, within [`TIMEOUT`]; a failure moves
    /// on to the next member and names the one that failed.
    async fn call<T, F>(&self, what: &str, call: impl FnOnce(Client) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(what, call).await.map(|(v, _)| v)
    }

    /// As [`Etcd::call`], with the member that answered.
    async fn call_on<T, F>(
        &self,
        what: &str,
        call: impl FnOnce(Client) -> F,
    ) -> Result<(T, usize), String>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let (i, client) = self.pick();
        let outcome = match tokio::time::timeout(TIMEOUT, call(client)).await {
            Ok(Ok(v)) => return Ok((v, i)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", TIMEOUT.as_secs()),
        };
        self.failed(i);
        Err(format!("etcd {what} (member {}): {outcome}", i + 1))
    }

    /// A message read from a stream (`what`: "lease keepalive", "watch") that
    /// runs on `member`: an error or the stream's end fails that member.
    pub fn message<T>(
        &self,
        what: &str,
        member: usize,
        read: Result<Option<T>, etcd_client::Error>,
    ) -> Result<T, String> {
        let outcome = match read {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => format!("etcd closed the {what} stream"),
            Err(e) => format!("etcd {what}: {e}"),
        };
        self.failed(member);
        Err(outcome)
    }

    /// Reads everything: reservations, guard and election key, at one revision.
    pub async fn load(&self) -> Result<Snapshot, String> {
        let resp = self
            .call("read", |c| async move {
                c.kv_client()
                    .get(ALL, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        let mut snapshot = Snapshot {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..Snapshot::default()
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if key == GUARD {
                snapshot.guard = kv.mod_revision();
            } else if key == ACTIVE {
                snapshot.active = Some(String::from_utf8_lossy(kv.value()).into_owned());
            } else if key.starts_with(RESERVATIONS) {
                snapshot.reservations.push(decode(&key, kv.value())?);
            }
        }
        Ok(snapshot)
    }

    /// Commits `op` if the guard's revision is still `guard`.
    pub async fn commit(&self, op: Op<'_>, guard: i64) -> Result<Commit, String> {
        let change = match op {
            Op::Put(stored) => TxnOp::put(
                key(&stored.reservation.event_id),
                serde_json::to_vec(stored).map_err(|e| e.to_string())?,
                None,
            ),
            Op::Delete(event_id) => TxnOp::delete(key(event_id), None),
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(GUARD, CompareOp::Equal, guard)])
            .and_then([change, TxnOp::put(GUARD, "", None)]);
        let resp = self
            .call("write", |c| async move { c.kv_client().txn(txn).await })
            .await?;
        Ok(if resp.succeeded() {
            Commit::Done(resp.header().map_or(0, |h| h.revision()))
        } else {
            Commit::Stale
        })
    }

    /// A lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, String> {
        let secs = ttl.as_secs() as i64;
        let resp = self
            .call("lease grant", |c| async move {
                c.lease_client().grant(secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// The stream that renews `lease`: send with the keeper, read answers
    /// from the stream; and the member it runs on (for [`Etcd::failed`]).
    pub async fn keep_alive(
        &self,
        lease: i64,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream, usize), String> {
        self.call_on("lease keepalive", |c| async move {
            c.lease_client().keep_alive(lease).await
        })
        .await
        .map(|((k, s), i)| (k, s, i))
    }

    /// Tries to take the election key for `node` with its `lease`: `Ok(None)`
    /// when won (or already held), else the holder's name.
    pub async fn campaign(&self, node: &str, lease: i64) -> Result<Option<String>, String> {
        let txn = Txn::new()
            .when([Compare::create_revision(ACTIVE, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                ACTIVE,
                node,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(ACTIVE, None)]);
        let resp = self
            .call("campaign", |c| async move { c.kv_client().txn(txn).await })
            .await?;
        if resp.succeeded() {
            return Ok(None);
        }
        let holder = resp.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
            _ => None,
        });
        match holder {
            Some((name, held_by)) if name == node && held_by == lease => Ok(None),
            Some((name, _)) => Ok(Some(name)),
            None => Ok(Some(String::new())),
        }
    }

    /// Gives the election key up, if this node's `lease` holds it.
    pub async fn resign(&self, lease: i64) -> Result<(), String> {
        let txn = Txn::new()
            .when([Compare::lease(ACTIVE, CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(ACTIVE, None)]);
        self.call("resign", |c| async move { c.kv_client().txn(txn).await })
            .await?;
        Ok(())
    }

    /// Revokes a lease (a clean stop: the election key goes at once).
    pub async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.call("lease revoke", |c| async move {
            c.lease_client().revoke(lease).await
        })
        .await?;
        Ok(())
    }

    /// Watches every key from `revision` on; and the member the watch runs
    /// on (for [`Etcd::failed`]).
    pub async fn watch(&self, revision: i64) -> Result<(WatchStream, usize), String> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        self.call_on("watch", |c| async move {
            c.watch_client().watch(ALL, Some(options)).await
        })
        .await
    }
}

/// The events of one watch response; an error when a value cannot be read
/// (then the caller re-reads everything).
pub fn events(resp: &etcd_client::WatchResponse) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    for e in resp.events() {
        let Some(kv) = e.kv() else { continue };
        let key = String::from_utf8_lossy(kv.key());
        let put = e.event_type() == EventType::Put;
        if key == ACTIVE {
            out.push(if put {
                Event::Active(String::from_utf8_lossy(kv.value()).into_owned())
            } else {
                Event::Vacant
            });
        } else if let Some(event_id) = key.strip_prefix(RESERVATIONS) {
            out.push(if put {
                Event::Put {
                    revision: kv.mod_revision(),
                    stored: decode(&key, kv.value())?,
                }
            } else {
                Event::Delete {
                    revision: kv.mod_revision(),
                    event_id: event_id.to_string(),
                }
            });
        }
    }
    Ok(out)
}

fn key(event_id: &str) -> String {
    format!("{RESERVATIONS}{event_id}")
}

fn decode(key: &str, value: &[u8]) -> Result<Stored, String> {
    serde_json::from_slice(value)
        .map_err(|e| format!("etcd key {key} does not hold a reservation rtp-relay wrote: {e}"))
}
