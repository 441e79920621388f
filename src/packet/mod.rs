//! RTP and RTCP header checks for the hot path (docs/forwarding.md): zero-copy views over
//! a datagram, no allocation. Pure.

pub mod rtcp;
pub mod rtp;
