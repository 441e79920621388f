//! Per-stream measurement (docs/forwarding.md), pure: packets and arrival times in,
//! figures out. The data plane feeds these and publishes their snapshots.

pub mod rtcp;
pub mod rtp;
pub mod watch;
