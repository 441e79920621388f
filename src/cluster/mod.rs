//! High availability (docs/cluster.md): relays that share their reservations
//! in etcd and elect the one that forwards, which holds the service address
//! the appliances send to.
//!
//! - [`role`]: the election's state on one node, sans-IO — when to become
//!   active, when to step down (the fence);
//! - [`etcd`]: the shared state and the election key in etcd;
//! - [`address`]: the service address — taken and announced with gratuitous
//!   ARP by the active node, given up by a node that steps down.
//!
//! `crate::service::cluster` is the task that runs them beside the coordinator.

pub mod address;
pub mod etcd;
pub mod role;
