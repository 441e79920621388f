//! Which role this node plays (docs/cluster.md, "Election and fencing"),
//! sans-IO: the etcd task reports what etcd answered and when it asked; this
//! says when to become active and when to step down. No clock is read here.
//!
//! The node's lease lasts at least `lease_ttl` from the moment a keepalive that
//! etcd acknowledged was *sent* (etcd renews on receipt, later). An active node
//! steps down a margin before that, so it has stopped forwarding before etcd
//! can expire the lease and let another node take over: two nodes never
//! forward at once, whatever the network does between them and etcd.

use std::time::{Duration, Instant};

/// A node's role.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows the state, binds nothing, ready to take over.
    Standby,
    /// Holds the election key: binds the open windows and forwards.
    Active,
}

impl Role {
    /// As the API, metrics and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

/// A change of role for the caller to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Bind the open windows and forward until `deadline` (the fence).
    BecomeActive {
        /// Forward nothing past this unless renewed.
        deadline: Instant,
    },
    /// Stop forwarding and free every port now.
    StepDown {
        /// Why, for the log.
        why: String,
    },
}

/// The election's state on this node.
#[derive(Debug, Clone)]
pub struct Election {
    ttl: Duration,
    margin: Duration,
    role: Role,
    /// When the latest acknowledged keepalive (or grant) was sent.
    renewed: Option<Instant>,
}

impl Election {
    /// A standby node whose lease lasts `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Election {
            ttl,
            margin: Self::margin_for(ttl),
            role: Role::Standby,
            renewed: None,
        }
    }

    /// How long before the lease could expire an active node steps down: a
    /// sixth of the TTL, at least 250 ms — room to free the ports and for
    /// clocks that tick at slightly different rates.
    pub fn margin_for(ttl: Duration) -> Duration {
        (ttl / 6).max(Duration::from_millis(250))
    }

    /// How often to renew the lease: a sixth of the TTL, so that several
    /// tries fit before the deadline — an etcd member lost, or its leader
    /// re-elected (a second or two), need not cost the election.
    pub fn keepalive_interval(&self) -> Duration {
        self.ttl / 6
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// While active: when forwarding must stop unless the lease is renewed.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.role, self.renewed) {
            (Role::Active, Some(r)) => Some(self.lease_safe_until(r)),
            _ => None,
        }
    }

    fn lease_safe_until(&self, renewed: Instant) -> Instant {
        renewed + self.ttl.saturating_sub(self.margin)
    }

    /// Whether etcd may still hold the lease at `now` (a TTL since the last
    /// acknowledged renewal was sent): worth renewing rather than replacing,
    /// which would give up the election.
    pub fn lease_may_live(&self, now: Instant) -> bool {
        self.renewed.is_some_and(|r| now < r + self.ttl)
    }

    /// etcd granted the lease, or acknowledged a keepalive, that was sent at
    /// `sent`. An answer to an older request never moves the lease back.
    /// Returns the new deadline while active (for the kernel's fence).
    pub fn renewed(&mut self, sent: Instant) -> Option<Instant> {
        if self.renewed.is_none_or(|r| sent > r) {
            self.renewed = Some(sent);
        }
        self.deadline()
    }

    /// The lease is gone (etcd says it expired, or a new one was granted).
    pub fn lease_lost(&mut self) -> Option<Change> {
        self.renewed = None;
        self.step_down("the node's etcd lease expired")
    }

    /// The campaign, sent at `sent` with this node's lease, won the election
    /// key. Active only if the lease is still safely alive at `now`.
    pub fn won(&mut self, now: Instant) -> Option<Change> {
        if self.role == Role::Active {
            return None;
        }
        let deadline = self.renewed.map(|r| self.lease_safe_until(r))?;
        if now >= deadline {
            return None;
        }
        self.role = Role::Active;
        Some(Change::BecomeActive { deadline })
    }

    /// Another node holds the election key, or this node resigned.
    pub fn lost(&mut self, why: &str) -> Option<Change> {
        self.step_down(why)
    }

    /// Steps down when the lease was not renewed in time.
    pub fn poll(&mut self, now: Instant) -> Option<Change> {
        match self.deadline() {
            Some(d) if now >= d => self.step_down(
                "the lease was not renewed in time (etcd unreachable?): forwarding stops before another node may take over",
            ),
            _ => None,
        }
    }

    fn step_down(&mut self, why: &str) -> Option<Change> {
        if self.role == Role::Standby {
            return None;
        }
        self.role = Role::Standby;
        Some(Change::StepDown { why: why.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn a_node_without_a_renewed_lease_never_becomes_active() {
        let t0 = Instant::now();
        let mut e = Election::new(TTL);
        assert_eq!(e.won(t0), None);
        assert_eq!(e.role(), Role::Standby);
        e.renewed(t0);
        // Won too late: the lease may already be expiring.
        assert_eq!(e.won(t0 + TTL), None);
        assert_eq!(
            e.won(t0 + Duration::from_secs(1)),
            Some(Change::BecomeActive {
                deadline: t0 + Duration::from_millis(2500)
            })
        );
        assert_eq!(e.role(), Role::Active);
    }

    #[test]
    fn the_active_node_steps_down_before_its_lease_can_expire() {
        let t0 = Instant::now();
        let mut e = Election::new(TTL);
        e.renewed(t0);
        e.won(t0);
        // Renewals move the deadline; an old answer does not move it back.
        assert_eq!(
            e.renewed(t0 + Duration::from_secs(1)),
            Some(t0 + Duration::from_millis(3500))
        );
        assert_eq!(
            e.renewed(t0 + Duration::from_millis(500)),
            Some(t0 + Duration::from_millis(3500))
        );
        assert_eq!(e.poll(t0 + Duration::from_millis(3499)), None);
        let down = e.poll(t0 + Duration::from_millis(3500));
        assert!(matches!(down, Some(Change::StepDown { .. })), "{down:?}");
        assert_eq!(e.role(), Role::Standby);
        assert_eq!(e.deadline(), None);
        // Stepping down happens once.
        assert_eq!(e.poll(t0 + Duration::from_secs(9)), None);
    }

    #[test]
    fn losing_the_lease_or_the_key_steps_down_once() {
        let t0 = Instant::now();
        let mut e = Election::new(TTL);
        e.renewed(t0);
        e.won(t0);
        assert!(e.lease_lost().is_some());
        assert!(e.lease_lost().is_none());
        // Without a lease it cannot win again until renewed.
        assert_eq!(e.won(t0), None);
        e.renewed(t0 + Duration::from_secs(2));
        assert!(e.won(t0 + Duration::from_secs(2)).is_some());
        assert!(e.lost("resigned").is_some());
        assert!(e.lost("resigned").is_none());
    }

    proptest::proptest! {
        /// Whatever the delays and losses between a node and etcd, the node
        /// is active only while etcd still holds its lease (so no other node
        /// can have won): etcd renews on receipt, after the send the node
        /// counts from, and answers may be lost or reordered.
        #[test]
        fn active_only_while_etcd_holds_the_lease(
            ttl_s in 2u64..10,
            keepalives in proptest::collection::vec((0u64..800, 0u64..3000, proptest::option::of(0u64..3000)), 1..40),
        ) {
            let ttl = Duration::from_secs(ttl_s);
            let t0 = Instant::now();
            let mut e = Election::new(ttl);
            // The grant, answered at once: etcd's lease runs from t0.
            e.renewed(t0);
            let mut expiry = t0 + ttl;
            proptest::prop_assert!(e.won(t0).is_some());
            // (answer time, send time) of every keepalive etcd answered.
            let mut answers = Vec::new();
            let mut sent = t0;
            for (gap, to_etcd, back) in keepalives {
                sent += Duration::from_millis(gap);
                let received = sent + Duration::from_millis(to_etcd);
                // A keepalive reaching etcd after the lease expired renews nothing.
                if received < expiry {
                    expiry = expiry.max(received + ttl);
                    if let Some(back) = back {
                        answers.push((received + Duration::from_millis(back), sent));
                    }
                }
            }
            answers.sort();
            for (at, sent) in answers {
                // Polled as the fence does before each event.
                e.poll(at);
                if let Some(deadline) = e.renewed(sent) {
                    proptest::prop_assert!(deadline + Election::margin_for(ttl) <= expiry,
                        "deadline {:?} past etcd's expiry {:?}", deadline - t0, expiry - t0);
                }
            }
        }
    }

    #[test]
    fn the_margin_leaves_room_at_every_ttl() {
        for secs in 2..=60 {
            let ttl = Duration::from_secs(secs);
            let m = Election::margin_for(ttl);
            assert!(
                m >= Duration::from_millis(250) && m < ttl / 2,
                "{secs}: {m:?}"
            );
            // Several keepalives fit between a renewal and the deadline.
            assert!(Election::new(ttl).keepalive_interval() * 4 <= ttl - m);
        }
    }
}
