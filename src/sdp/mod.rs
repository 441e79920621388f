//! The SDP Wowza ingests for a webcast, from what the relay forwards. Pure.
//!
//! - [`h264`]: H.264 over RTP (RFC 6184): NAL unit headers, single NAL unit
//!   packets, STAP-A and FU-A, and the SPS and PPS with the SDP parameters
//!   made of them (`profile-level-id`, `sprop-parameter-sets`).

pub mod h264;

pub use h264::ParameterSets;
