//! The SDP Wowza ingests for a webcast, from what the relay forwards
//! (docs/api.md, "The SDP of a reservation").
//!
//! - [`h264`]: H.264 over RTP (RFC 6184): NAL unit headers, single NAL unit
//!   packets, STAP-A and FU-A, and the SPS and PPS with the SDP parameters
//!   made of them (`profile-level-id`, `sprop-parameter-sets`); pure;
//! - [`learn`]: the per-stream [`H264Learner`], which keeps a video stream's
//!   current parameter sets from the payloads [`wants`] picks; pure;
//! - [`render`]: the description of a reservation from what is known of its
//!   streams, or what is still missing; pure;
//! - [`files`]: the descriptions kept in Wowza's content folder (I/O).

pub mod files;
pub mod h264;
pub mod learn;
pub mod render;

pub use h264::ParameterSets;
pub use learn::{H264Learner, Missing, Outcome, wants};
