//! High availability (docs/cluster.md): relays that share their reservations
//! in etcd and elect the one that forwards.
//!
//! - [`role`]: the election's state on one node, sans-IO — when to become
//!   active, when to step down (the fence);
//! - [`etcd`]: the shared state and the election key in etcd.
//!
//! `crate::service::cluster` is the task that runs them beside the coordinator.

pub mod etcd;
pub mod role;
