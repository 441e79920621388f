//! Wowza's SDP (temporary module file; merged with the learner's).
pub mod files;
pub mod render;
