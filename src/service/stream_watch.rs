//! The stream watch task: once a second it samples every bound port from the
//! published copy (never the coordinator's lock), feeds the sans-IO
//! [`Watch`], and logs what it reports — stream starts, stalls, resumes, SSRC
//! changes and drops, never a line per packet.
//!
//! The second's samples are read a twentieth at a time, every 50 ms: a
//! port's sample is a few cold cache lines (and without a mapped stream map
//! a `bpf(2)` read), and 12,288 of them at once took a core for
//! milliseconds, a stall the packets of the machine's other busy processes
//! (a Wowza beside the relay) waited out at the tail of their latency. A
//! twentieth (≈ 0.1 ms at 2048 webcasts) is short enough; a hundredth woke
//! the relay 100 times a second, and the wake-ups cost more than the reads
//! (BENCHMARKS.md, stop 29).

use super::shutdown::Shutdown;
use crate::clock::Now;
use crate::control::published::{Published, Reader};
use crate::dataplane::rule::PortRule;
use crate::group::GroupId;
use crate::stats::watch::{Event, Watch};
use std::ops::Bound;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tracing::{info, warn};

/// Reads per second, each of a run of consecutive groups.
const PARTS: usize = 20;

/// The groups read `part` reads: the second's groups were split at `starts`
/// (`PARTS - 1` group numbers, none when there was none), part `p` from the
/// `p`-th split on. Ranges of numbers, not positions: a group bound or freed
/// during the second is read at most once.
fn share(starts: &[GroupId], part: usize) -> Option<(Bound<GroupId>, Bound<GroupId>)> {
    let from = match part {
        0 => Bound::Unbounded,
        p => Bound::Included(*starts.get(p - 1)?),
    };
    let to = starts
        .get(part)
        .map_or(Bound::Unbounded, |g| Bound::Excluded(*g));
    Some((from, to))
}

/// Where the second's parts start, for [`share`]: even runs of the groups
/// bound now.
fn split(groups: &[GroupId]) -> Vec<GroupId> {
    if groups.is_empty() {
        return Vec::new();
    }
    (1..PARTS)
        .map(|p| groups[p * groups.len() / PARTS])
        .collect()
}

/// Runs until `stop`.
pub async fn run(reader: Reader, stall_timeout: Duration, mut stop: Shutdown) {
    let mut watch = Watch::new(stall_timeout);
    // A part's samples: 615 at 2048 webcasts.
    let mut sampled = Vec::new();
    let mut starts = Vec::new();
    // The copy `starts` was split from: a second later it is most often the
    // same (nothing bound or freed), and walking 2048 groups to split them
    // again held a CPU for a millisecond.
    let mut split_from: Weak<Published> = Weak::new();
    let mut part = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1) / PARTS as u32) => {}
            _ = stop.wait() => return,
        }
        let now = Now::read();
        let view = reader.load();
        if part == 0 && !Weak::ptr_eq(&split_from, &Arc::downgrade(&view)) {
            let groups: Vec<GroupId> = view.bound().groups().map(|(g, _)| g).collect();
            starts = split(&groups);
            split_from = Arc::downgrade(&view);
        }
        if let Some(groups) = share(&starts, part) {
            view.bound().samples(&now, groups, &mut sampled);
        }
        // Observed part by part as sampled: the whole second's at once held
        // a CPU for 1.5–2.8 ms (BENCHMARKS.md, stop 23).
        // In one write: at the top of an hour thousands of streams start
        // within a second (BENCHMARKS.md, stop 29).
        crate::logging::batched(|| {
            for event in watch.observe_part(&sampled, now.mono) {
                if let Some(port) = view.bound().port(event.port()) {
                    log(&event, &port.rule);
                }
            }
        });
        sampled.clear();
        part += 1;
        if part == PARTS {
            part = 0;
            watch.end_pass();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u32) -> GroupId {
        GroupId::try_from(n).unwrap()
    }

    /// Which parts of a second split at `starts` read group `g`.
    fn readers(starts: &[GroupId], g: GroupId) -> Vec<usize> {
        (0..PARTS)
            .filter(|&p| share(starts, p).is_some_and(|r| std::ops::RangeBounds::contains(&r, &g)))
            .collect()
    }

    #[test]
    fn every_group_is_read_once_a_second_in_even_shares() {
        let all = u32::from(crate::group::LAST_GROUP) + 1;
        for bound in [0, 1, 7, 99, 100, 101, 2048, all] {
            let groups: Vec<GroupId> = (0..bound).map(|n| group(n * all / bound.max(1))).collect();
            let starts = split(&groups);
            // Those bound at the second's start, and any bound during it.
            for n in (0..all)
                .step_by(37)
                .chain(groups.iter().map(|g| u32::from(g.get())))
            {
                assert_eq!(
                    readers(&starts, group(n)).len(),
                    1,
                    "{bound} groups: group {n}"
                );
            }
            if bound >= PARTS as u32 {
                for p in 0..PARTS {
                    let n = groups
                        .iter()
                        .filter(|g| readers(&starts, **g) == [p])
                        .count();
                    let even = bound as usize / PARTS;
                    assert!(
                        (even..=even + 1).contains(&n),
                        "{bound} groups: part {p} reads {n}"
                    );
                }
            }
        }
    }
}
