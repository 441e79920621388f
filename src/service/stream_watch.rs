//! The stream watch task: once a second it samples every bound port from the
//! published copy (never the coordinator's lock), feeds the sans-IO
//! [`Watch`], and logs what it reports — stream starts, stalls, resumes, SSRC
//! changes and drops, never a line per packet.
//!
//! The second's samples are read a tenth at a time, every 100 ms: on the
//! fast path each port's figures are a `bpf(2)` read, and 12,288 of them at
//! once would take a core for milliseconds, a stall the packets of the
//! machine's other busy processes (a Wowza beside the relay) would wait out.

use super::shutdown::Shutdown;
use crate::clock::Now;
use crate::control::published::Reader;
use crate::dataplane::rule::PortRule;
use crate::stats::watch::{Event, Watch};
use std::collections::HashMap;
use std::time::Duration;
use tracing::{info, warn};

/// Reads per second: each reads the groups whose number is its own modulo this.
const PARTS: u32 = 10;

/// Runs until `stop`.
pub async fn run(reader: Reader, stall_timeout: Duration, mut stop: Shutdown) {
    let mut watch = Watch::new(stall_timeout);
    // Kept from second to second: 12,288 entries at 2048 webcasts.
    let mut sampled = Vec::new();
    let mut samples = Vec::new();
    let mut part = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1) / PARTS) => {}
            _ = stop.wait() => return,
        }
        let now = Now::read();
        reader
            .load()
            .bound()
            .samples(&now, part, PARTS, &mut sampled);
        part += 1;
        if part < PARTS {
            continue;
        }
        part = 0;
        samples.clear();
        samples.extend(sampled.iter().map(|(s, _)| *s));
        let events = watch.observe(&samples, now.mono);
        if !events.is_empty() {
            // By port, only when there is something to log (a whole group's
            // streams start in the same pass).
            let rules: HashMap<u16, &PortRule> =
                sampled.iter().map(|(s, rule)| (s.port, rule)).collect();
            for event in events {
                if let Some(rule) = rules.get(&event.port()) {
                    log(&event, rule);
                }
            }
        }
        sampled.clear();
    }
}

/// One log line for `event` on the port of `rule`.
fn log(event: &Event, rule: &PortRule) {
    let (group, stream, plane, port) = (
        rule.group.get(),
        rule.role.as_str(),
        rule.plane.as_str(),
        rule.port,
    );
    match *event {
        Event::Started { ssrc, .. } => {
            // A plain number (none for RTCP), not `Some(…)`.
            info!(group, stream, plane, port, ssrc, "stream started")
        }
        Event::Stalled { silent_for, .. } => warn!(
            group,
            stream,
            plane,
            port,
            silent_s = silent_for.as_secs_f64(),
            "stream stalled: no packet for the stall timeout during an active window"
        ),
        Event::Resumed { .. } => info!(group, stream, plane, port, "stream resumed"),
        Event::SsrcChanged { from, to, .. } => warn!(
            group,
            stream, plane, port, from, to, "SSRC changed: the encoder restarted"
        ),
        Event::Dropped { counts, .. } => warn!(
            group,
            stream,
            plane,
            port,
            unknown_source = counts[0],
            malformed = counts[1],
            oversize = counts[2],
            send_error = counts[3],
            no_return_address = counts[4],
            "packets dropped (reported at most every 10 s per port)"
        ),
    }
}
