//! High availability (docs/cluster.md): several relays share their
//! reservations and elect one active node, which holds the service address
//! the appliances send to. [`address`] takes that address on the active node,
//! announces it with gratuitous ARP, and gives it up on a node that steps down.

pub mod address;
