//! The cluster task (docs/cluster.md): keeps this node's etcd lease alive,
//! follows the shared state through a watch, campaigns for the election key,
//! and carries out the role changes [`Election`] decides — binding the open
//! windows when active, freeing every port when it steps down. On a stop it
//! resigns, so that another node takes over at once; an active node with a
//! service address forwards on until its successor has taken over.
//!
//! The deadline is kept by a task of its own ([`fence`]), never behind a
//! request to etcd: an active node steps down on time however long etcd
//! takes to answer.

use super::shutdown::Shutdown;
use crate::clock::Now;
use crate::cluster::address::ServiceAddress;
use crate::cluster::etcd::{self, Etcd};
use crate::cluster::role::{Change, Election, Role};
use crate::config::Cluster;
use crate::control::Shared;
use crate::control::coordinator::Coordinator;
use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long to wait before trying etcd again after it failed: short, as
/// the next try goes to the next member and may save the election.
const RETRY: Duration = Duration::from_millis(250);

/// At most one warning about etcd trouble this often (the rest are debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The longest the fence sleeps without looking at the deadline.
const FENCE_TICK: Duration = Duration::from_millis(50);

/// The election, shared by the session and the fence.
type SharedElection = Arc<Mutex<Election>>;

/// What a role change acts on: the coordinator, and the service address.
#[derive(Clone)]
struct Node {
    shared: Arc<Shared>,
    address: Option<Arc<ServiceAddress>>,
}

fn lock(election: &SharedElection) -> std::sync::MutexGuard<'_, Election> {
    election.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs until the stop signal. `address`: the service address this node
/// holds while active (checked at start: `ServiceAddress::new`).
pub async fn run(
    config: Cluster,
    etcd: Etcd,
    address: Option<ServiceAddress>,
    shared: Arc<Shared>,
    mut stop: Shutdown,
) {
    let node = Node {
        shared,
        address: address.map(Arc::new),
    };
    if let Some(address) = node.address.clone() {
        // A node starts standby: an address left from a crash is not its own.
        let _ = tokio::task::spawn_blocking(move || address.release()).await;
    }
    let election: SharedElection = Arc::new(Mutex::new(Election::new(config.lease_ttl.0)));
    // The fence outlives the stop signal: it keeps the deadline through a hand-over.
    let (fence_stop, fence_stopped) = super::shutdown::channel();
    let fencing = tokio::spawn(fence(election.clone(), node.clone(), fence_stopped));
    let mut lease = None;
    let mut warned: Option<Instant> = None;
    loop {
        match session(&config, &etcd, &node, &election, &mut lease, &mut stop).await {
            Ok(()) => break,
            Err(why) if warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) => {
                warn!(error = %why, "cluster: etcd trouble; retrying on the next member (an active node keeps forwarding until its lease would expire)");
                warned = Some(Instant::now());
            }
            Err(why) => debug!(error = %why, "cluster: etcd trouble; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.wait() => break,
        }
    }
    let change = lock(&election).lost("stopping: the election key is handed over");
    if let Some(change) = change {
        carry_out(&node, change).await;
    }
    if let Some(lease) = lease {
        // Without the key and the lease nobody need wait for them to expire.
        let _ = etcd.resign(lease).await;
        let _ = etcd.revoke(lease).await;
    }
    fence_stop.stop();
    let _ = fencing.await;
}

/// Steps the node down when its deadline passes without a renewal.
async fn fence(election: SharedElection, node: Node, mut stop: Shutdown) {
    loop {
        let wake = lock(&election)
            .deadline()
            .map_or(FENCE_TICK, |d| d.saturating_duration_since(Instant::now()))
            .min(FENCE_TICK);
        tokio::select! {
            _ = tokio::time::sleep(wake) => {}
            _ = stop.wait() => return,
        }
        let change = lock(&election).poll(Instant::now());
        if let Some(change) = change {
            carry_out(&node, change).await;
        }
    }
}

/// How long a stopping active node waits for a successor to win the key.
const SUCCESSOR_WAIT: Duration = Duration::from_secs(3);

/// How long it keeps forwarding once a successor won: the successor takes the
/// address, binds and announces meanwhile (its announcements last half a
/// second), so every packet reaches one of the two — a planned hand-over
/// loses nothing. Each packet reaches one node only: nothing is doubled.
const HANDOVER_OVERLAP: Duration = Duration::from_secs(1);

/// A stopping active node's hand-over.
enum Handover {
    /// Resigned; waiting for a successor until then.
    Waiting(Instant),
    /// A successor won; forwarding on until then.
    Overlap(Instant),
}

impl Handover {
    fn until(&self) -> Instant {
        match self {
            Handover::Waiting(t) | Handover::Overlap(t) => *t,
        }
    }
}

/// One lease's life: grant, read, watch, keep alive, campaign — until the
/// stop (after a hand-over when active; `Ok`) or until etcd fails (the error
/// says how).
async fn session(
    config: &Cluster,
    etcd: &Etcd,
    node: &Node,
    election: &SharedElection,
    current: &mut Option<i64>,
    stop: &mut Shutdown,
) -> Result<(), String> {
    let shared = &node.shared;
    let (lease, mut keeper, mut answers, lease_member) = tokio::select! {
        l = lease(config, etcd, node, election, current) => l?,
        _ = stop.wait() => return Ok(()),
    };
    let snapshot = etcd.load().await?;
    let revision = snapshot.revision;
    let vacant = snapshot.active.is_none();
    on_coordinator(shared, move |c, now| c.take_snapshot(snapshot, now)).await;
    let (mut watch, watch_member) = etcd.watch(revision + 1).await?;
    info!(node = %config.node_name, lease = format_args!("{lease:x}"), "cluster: joined (state read from etcd)");

    let interval = lock(election).keepalive_interval();
    let mut next_keepalive = Instant::now() + interval;
    // Answers to the keepalives sent on this stream (its opening one was read
    // when it opened), in order.
    let mut pending: VecDeque<Instant> = VecDeque::new();
    // Campaign now if nobody holds the key; a standby node tries again every
    // interval (the watch also says when the key is let go).
    let mut next_campaign = Instant::now() + if vacant { Duration::ZERO } else { interval };
    let mut handover: Option<Handover> = None;
    loop {
        let mut wake = next_keepalive.min(next_campaign);
        if let Some(h) = &handover {
            wake = wake.min(h.until());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.wait(), if handover.is_none() => {
                // Only an active node with a service address hands over with an
                // overlap: on one host the successor cannot bind until this
                // node frees the ports.
                if lock(election).role() != Role::Active || node.address.is_none() {
                    return Ok(());
                }
                info!("cluster: stopping: resigning; forwarding on until a successor has taken over");
                etcd.resign(lease).await?;
                handover = Some(Handover::Waiting(Instant::now() + SUCCESSOR_WAIT));
                continue;
            }
            answer = answers.message() => {
                let answer = etcd.message("lease keepalive", lease_member, answer)?;
                let Some(sent) = pending.pop_front() else {
                    continue; // an answer to nothing sent: renews nothing
                };
                if answer.ttl() <= 0 {
                    return Err("the node's lease expired in etcd".into());
                }
                renewed(node, election, sent).await;
                continue;
            }
            response = watch.message() => {
                let response = etcd.message("watch", watch_member, response)?;
                if response.canceled() {
                    return Err(format!("etcd cancelled the watch (compacted at revision {})", response.compact_revision()));
                }
                let events = etcd::events(&response)?;
                let vacant = events.contains(&etcd::Event::Vacant);
                let other = events.iter().find_map(|e| match e {
                    etcd::Event::Active(name) if *name != config.node_name => Some(name.clone()),
                    _ => None,
                });
                on_coordinator(shared, move |c, now| c.apply(events, now)).await;
                if let Some(name) = other {
                    if let Some(Handover::Waiting(_)) = handover {
                        info!(successor = %name, "cluster: a successor won; forwarding on while it takes over");
                        handover = Some(Handover::Overlap(Instant::now() + HANDOVER_OVERLAP));
                    } else if handover.is_none() {
                        let change = lock(election).lost(&format!("node {name} holds the election key"));
                        if let Some(change) = change {
                            carry_out(node, change).await;
                        }
                    }
                }
                if vacant {
                    next_campaign = Instant::now();
                }
                continue;
            }
        }
        let now = Instant::now();
        if handover.as_ref().is_some_and(|h| now >= h.until()) {
            return Ok(());
        }
        if now >= next_keepalive {
            if pending.len() >= 2 {
                // Two intervals without an answer: this member is dead or has
                // lost its leader; the next may answer before the deadline.
                etcd.failed(lease_member);
                return Err("etcd did not answer two lease keepalives".into());
            }
            keeper
                .keep_alive()
                .await
                .map_err(|e| format!("etcd lease keepalive: {e}"))?;
            pending.push_back(now);
            next_keepalive = now + interval;
        }
        if now >= next_campaign && handover.is_none() {
            next_campaign = now + interval;
            if lock(election).role() == Role::Standby {
                let change = match etcd.campaign(&config.node_name, lease).await? {
                    None => lock(election).won(Instant::now()),
                    Some(holder) => {
                        lock(election).lost(&format!("node {holder} holds the election key"))
                    }
                };
                if let Some(change) = change {
                    carry_out(node, change).await;
                }
            }
        }
    }
}

/// etcd acknowledged a renewal sent at `sent`: an active node's fence moves
/// with its deadline (the data plane would stop at the old one).
async fn renewed(node: &Node, election: &SharedElection, sent: Instant) {
    let deadline = lock(election).renewed(sent);
    if let Some(deadline) = deadline {
        on_coordinator(&node.shared, move |c, now| c.fence(Some(deadline), now)).await;
    }
}

/// This node's lease and its keepalive stream: the one it holds, while etcd
/// may still hold it (an election won stays won across a broken stream or a
/// lost member), else a new one — which gives up an election won with the old.
async fn lease(
    config: &Cluster,
    etcd: &Etcd,
    node: &Node,
    election: &SharedElection,
    current: &mut Option<i64>,
) -> Result<(i64, LeaseKeeper, LeaseKeepAliveStream, usize), String> {
    if let Some(lease) = *current
        && lock(election).lease_may_live(Instant::now())
    {
        let sent = Instant::now();
        // Opening the stream renews once and reads the answer: an error that
        // is not "lease not found" is the member's, and the next one is tried.
        match etcd.keep_alive(lease).await {
            Ok((keeper, answers, member)) => {
                renewed(node, election, sent).await;
                return Ok((lease, keeper, answers, member));
            }
            Err(e) if e.contains("lease not found") => {} // expired: a new one below
            Err(e) => return Err(e),
        }
    }
    let sent = Instant::now();
    let lease = etcd.grant(config.lease_ttl.0).await?;
    *current = Some(lease);
    // A new lease: an election won with the old one is not ours any more.
    let change = {
        let mut e = lock(election);
        let change = e.lease_lost();
        e.renewed(sent);
        change
    };
    if let Some(change) = change {
        carry_out(node, change).await;
    }
    let (keeper, answers, member) = etcd.keep_alive(lease).await?;
    Ok((lease, keeper, answers, member))
}

/// Carries out a role change. Becoming active: the service address first
/// (the ports may be bound on it), the ports, then the announcement — so the
/// appliances' packets are sent here only once they can be received.
/// Stepping down: the ports, then the address.
async fn carry_out(node: &Node, change: Change) {
    match change {
        Change::BecomeActive { deadline } => {
            if let Some(address) = node.address.clone() {
                let added = tokio::task::spawn_blocking(move || address.add()).await;
                if let Ok(Err(e)) = added {
                    warn!(error = %e, "cluster: cannot take the service address; forwarding what reaches this node");
                }
            }
            on_coordinator(&node.shared, move |c, now| {
                c.fence(Some(deadline), now);
                c.set_role(Role::Active, now);
            })
            .await;
            if let Some(address) = node.address.clone() {
                // Not awaited: the announcements are spaced over half a second.
                tokio::task::spawn_blocking(move || match address.announce() {
                    Ok(()) => {
                        info!(address = %address, "cluster: service address taken and announced")
                    }
                    Err(e) => warn!(error = %e, "cluster: the service address was not announced"),
                });
            }
        }
        Change::StepDown { why } => {
            warn!(reason = %why, "cluster: stepping down");
            on_coordinator(&node.shared, |c, now| c.set_role(Role::Standby, now)).await;
            if let Some(address) = node.address.clone() {
                let released = tokio::task::spawn_blocking(move || address.release()).await;
                if let Ok(Err(e)) = released {
                    warn!(error = %e, "cluster: cannot give up the service address");
                }
            }
        }
    }
}

/// Runs `f` on the coordinator, on a blocking thread (it may wait on etcd).
async fn on_coordinator(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Coordinator, &Now) + Send + 'static,
) {
    let shared = shared.clone();
    let _ = tokio::task::spawn_blocking(move || f(&mut shared.coordinator(), &Now::read())).await;
}
