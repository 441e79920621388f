//! RTP and RTCP header checks for the hot path (SPEC §3): zero-copy views over
//! a datagram, no allocation. Pure.

pub mod rtcp;
pub mod rtp;
