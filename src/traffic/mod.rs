//! The traffic tools (docs/cli.md): a synthetic webcast generator (`gen`), a Wowza
//! stand-in (`sink`) and the load test that drives both through a relay.
//!
//! - [`profile`]: bitrates and frame rates per stream role;
//! - [`source`]: one stream's encoder model, sans-IO: frames and packets due at
//!   a given time, and its RTCP sender reports;
//! - [`probe`]: what each payload carries for the sink to check (send time,
//!   stream, checksum);
//! - [`receiver`]: one stream as the sink sees it, sans-IO: continuity,
//!   integrity, latency, and its RTCP receiver reports;
//! - [`wheel`]: the timer wheel that paces every stream on one timer;
//! - [`generator`] (`gen`), [`sink`], [`loadtest`]: the I/O around them.

pub mod affinity;
pub mod generator;
pub mod loadtest;
pub mod probe;
pub mod profile;
pub mod receiver;
pub mod sink;
pub mod source;
pub mod steer;
pub mod wheel;
