//! The SDP Wowza ingests for a webcast, from what the relay forwards. Pure.
//!
//! - [`h264`]: H.264 over RTP (RFC 6184): NAL unit headers, single NAL unit
//!   packets, STAP-A and FU-A, and the SPS and PPS with the SDP parameters
//!   made of them (`profile-level-id`, `sprop-parameter-sets`);
//! - [`learn`]: the per-stream [`H264Learner`], which keeps a video stream's
//!   current parameter sets from the payloads [`wants`] picks.

pub mod h264;
pub mod learn;

pub use h264::ParameterSets;
pub use learn::{H264Learner, Missing, Outcome, wants};
