//! The traffic tools (docs/cli.md): a synthetic webcast generator (`gen`), a Wowza
//! stand-in (`sink`) and the load test that drives both through a relay.
//!
//! - [`profile`]: bitrates and frame rates per stream role;
//! - [`source`]: one stream's encoder model, sans-IO: frames and packets due at
//!   a given time, and its RTCP sender reports;
//! - [`h264`]: H.264 over RTP (RFC 6184) as the tools speak it: parameter
//!   sets, packet headers, and the structure checks of the sink;
//! - [`probe`]: what each payload carries for the sink to check (send time,
//!   stream, checksum);
//! - [`receiver`]: one stream as the sink sees it, sans-IO: continuity,
//!   integrity, latency, and its RTCP receiver reports;
//! - [`wheel`]: the timer wheel that paces every stream on one timer;
//! - [`generator`] (`gen`), [`sink`], [`loadtest`]: the I/O around them.

pub mod bare;
pub mod generator;
pub mod h264;
pub mod loadtest;
pub mod probe;
pub mod profile;
pub mod receiver;
pub mod scheduling;
pub mod sink;
pub mod source;
pub mod wheel;
