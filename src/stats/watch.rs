//! Stream lifecycle events for the logs, sans-IO: samples of a port's counters
//! taken over time go in (with the time), events come out — a stream started,
//! stalled (silent for the stall timeout), resumed, changed SSRC, or dropped
//! packets (reported at most once per [`DROP_REPORT_INTERVAL`] per port).

use std::time::{Duration, Instant};

/// The least time between two drop reports for one port.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// What was read from one port's counters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The port.
    pub port: u16,
    /// Is it a media (RTP) port? Only media ports stall.
    pub media: bool,
    /// Time since the last packet from the appliance, if any arrived.
    pub silent_for: Option<Duration>,
    /// Current SSRC (media ports).
    pub ssrc: Option<u32>,
    /// Drops so far, by reason (in `DropReason::ALL` order).
    pub dropped: [u64; 5],
}

/// Something worth one log line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first packet arrived.
    Started {
        /// The port.
        port: u16,
        /// Its SSRC (media).
        ssrc: Option<u32>,
    },
    /// No packet for the stall timeout.
    Stalled {
        /// The port.
        port: u16,
        /// How long it has been silent.
        silent_for: Duration,
    },
    /// Packets again after a stall.
    Resumed {
        /// The port.
        port: u16,
    },
    /// The SSRC changed (an encoder restart).
    SsrcChanged {
        /// The port.
        port: u16,
        /// The old SSRC.
        from: u32,
        /// The new SSRC.
        to: u32,
    },
    /// Packets were dropped since the last report.
    Dropped {
        /// The port.
        port: u16,
        /// How many, by reason, since the last report.
        counts: [u64; 5],
    },
}

impl Event {
    /// The port it happened on.
    pub fn port(&self) -> u16 {
        match *self {
            Event::Started { port, .. }
            | Event::Stalled { port, .. }
            | Event::Resumed { port }
            | Event::SsrcChanged { port, .. }
            | Event::Dropped { port, .. } => port,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct PortWatch {
    /// The pass that last saw the port (0: none).
    pass: u64,
    started: bool,
    stalled: bool,
    ssrc: Option<u32>,
    reported_drops: [u64; 5],
    last_drop_report: Option<Instant>,
}

/// The watcher of every port.
#[derive(Clone, Debug)]
pub struct Watch {
    stall_timeout: Duration,
    /// By `u16::MAX - port`: the relay's port groups count down from 65535,
    /// so the table reaches only as far as the lowest port watched, and a
    /// pass, group by group, walks it in order, with no hashing and no sweep.
    ports: Vec<PortWatch>,
    pass: u64,
}

impl Watch {
    /// A watcher that calls a stream stalled after `stall_timeout` of silence.
    pub fn new(stall_timeout: Duration) -> Self {
        Watch {
            stall_timeout,
            ports: Vec::new(),
            pass: 0,
        }
    }

    /// Takes one pass over every bound port; ports not in `samples` are
    /// forgotten (their group was freed). The same as [`Watch::observe_part`]
    /// of them all, then [`Watch::end_pass`].
    pub fn observe(&mut self, samples: &[Sample], now: Instant) -> Vec<Event> {
        let events = self.observe_part(samples, now);
        self.end_pass();
        events
    }

    /// Takes part of a pass: the events of these ports, each sampled once in
    /// the pass. A pass over thousands of ports at once holds a CPU for
    /// milliseconds; in parts, for a share of that each.
    pub fn observe_part(&mut self, samples: &[Sample], now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let pass = self.pass + 1;
        for s in samples {
            let i = usize::from(u16::MAX - s.port);
            if i >= self.ports.len() {
                self.ports.resize_with(i + 1, PortWatch::default);
            }
            let w = &mut self.ports[i];
            if w.pass + 1 < pass {
                // Not in the last pass: its group was freed since, and this
                // is another stream.
                *w = PortWatch::default();
            }
            w.pass = pass;
            if let Some(silent_for) = s.silent_for {
                if !w.started {
                    w.started = true;
                    events.push(Event::Started {
                        port: s.port,
                        ssrc: s.ssrc,
                    });
                } else if s.media && !w.stalled && silent_for >= self.stall_timeout {
                    w.stalled = true;
                    events.push(Event::Stalled {
                        port: s.port,
                        silent_for,
                    });
                } else if w.stalled && silent_for < self.stall_timeout {
                    w.stalled = false;
                    events.push(Event::Resumed { port: s.port });
                }
            }
            if let (Some(from), Some(to)) = (w.ssrc, s.ssrc)
                && from != to
            {
                events.push(Event::SsrcChanged {
                    port: s.port,
                    from,
                    to,
                });
            }
            w.ssrc = s.ssrc.or(w.ssrc);
            let due = w
                .last_drop_report
                .is_none_or(|t| now.duration_since(t) >= DROP_REPORT_INTERVAL);
            if due && s.dropped != w.reported_drops {
                let mut counts = [0; 5];
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = s.dropped[i].saturating_sub(w.reported_drops[i]);
                }
                w.reported_drops = s.dropped;
                w.last_drop_report = Some(now);
                events.push(Event::Dropped {
                    port: s.port,
                    counts,
                });
            }
        }
        events
    }

    /// Ends the pass: ports no part of it sampled are forgotten (their group
    /// was freed) — lazily, when a later pass samples them again.
    pub fn end_pass(&mut self) {
        self.pass += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(silent_ms: Option<u64>, ssrc: Option<u32>, dropped: u64) -> Sample {
        Sample {
            port: 65416,
            media: true,
            silent_for: silent_ms.map(Duration::from_millis),
            ssrc,
            dropped: [dropped, 0, 0, 0, 0],
        }
    }

    #[test]
    fn start_stall_resume_and_ssrc_change() {
        let t0 = Instant::now();
        let mut w = Watch::new(Duration::from_secs(5));
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(w.observe(&[sample(None, None, 0)], at(0)), vec![]);
        assert_eq!(
            w.observe(&[sample(Some(10), Some(1), 0)], at(1)),
            vec![Event::Started {
                port: 65416,
                ssrc: Some(1)
            }]
        );
        assert_eq!(w.observe(&[sample(Some(4900), Some(1), 0)], at(6)), vec![]);
        assert_eq!(
            w.observe(&[sample(Some(5000), Some(1), 0)], at(7)),
            vec![Event::Stalled {
                port: 65416,
                silent_for: Duration::from_secs(5)
            }]
        );
        assert_eq!(
            w.observe(&[sample(Some(6000), Some(1), 0)], at(8)),
            vec![],
            "reported once"
        );
        assert_eq!(
            w.observe(&[sample(Some(20), Some(2), 0)], at(9)),
            vec![
                Event::Resumed { port: 65416 },
                Event::SsrcChanged {
                    port: 65416,
                    from: 1,
                    to: 2
                }
            ]
        );
    }

    #[test]
    fn drops_are_reported_at_most_every_ten_seconds() {
        let t0 = Instant::now();
        let mut w = Watch::new(Duration::from_secs(5));
        let at = |s| t0 + Duration::from_secs(s);
        let first = w.observe(&[sample(Some(1), Some(1), 3)], at(0));
        assert!(first.contains(&Event::Dropped {
            port: 65416,
            counts: [3, 0, 0, 0, 0]
        }));
        assert_eq!(
            w.observe(&[sample(Some(1), Some(1), 50)], at(5)),
            vec![],
            "too soon"
        );
        assert_eq!(
            w.observe(&[sample(Some(1), Some(1), 80)], at(10)),
            vec![Event::Dropped {
                port: 65416,
                counts: [77, 0, 0, 0, 0]
            }]
        );
        assert_eq!(
            w.observe(&[sample(Some(1), Some(1), 80)], at(30)),
            vec![],
            "nothing new"
        );
    }

    #[test]
    fn control_ports_do_not_stall_and_freed_ports_are_forgotten() {
        let t0 = Instant::now();
        let mut w = Watch::new(Duration::from_secs(5));
        let mut s = sample(Some(1), None, 0);
        s.media = false;
        w.observe(&[s], t0);
        s.silent_for = Some(Duration::from_secs(60));
        assert_eq!(w.observe(&[s], t0 + Duration::from_secs(60)), vec![]);
        assert_eq!(w.observe(&[], t0 + Duration::from_secs(61)), vec![]);
        assert!(matches!(
            w.observe(&[s], t0 + Duration::from_secs(62))[0],
            Event::Started { .. }
        ));
    }

    #[test]
    fn a_pass_in_parts_keeps_every_port_it_sampled_and_forgets_the_rest() {
        let t0 = Instant::now();
        let mut w = Watch::new(Duration::from_secs(5));
        let on = |port| Sample {
            port,
            ..sample(Some(1), Some(1), 0)
        };
        let (a, b, c) = (on(65416), on(65418), on(65420));
        // Three ports started, over two parts of one pass.
        assert_eq!(w.observe_part(&[a, b], t0).len(), 2);
        assert_eq!(w.observe_part(&[c], t0).len(), 1);
        w.end_pass();
        // The next pass samples a and c in parts, not b (freed): b is
        // forgotten, a and c are not, so only b starts again afterwards.
        assert_eq!(w.observe_part(&[a], t0), vec![]);
        assert_eq!(w.observe_part(&[c], t0), vec![]);
        w.end_pass();
        let again = w.observe(&[a, b, c], t0);
        assert_eq!(
            again,
            vec![Event::Started {
                port: 65418,
                ssrc: Some(1)
            }]
        );
    }
}
