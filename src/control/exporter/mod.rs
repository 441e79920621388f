//! The Prometheus exporter: the control plane's own series (requests,
//! reservations, bound sockets, group and data-path info, `process_*`) in a
//! registry, refreshed from the published copy at scrape time, followed by
//! the per-stream series of [`streams`]. Nothing is counted on the data path.
//!
//! No client can grow the exposition by sending requests: request labels are
//! a closed set (see `count_request`); `rtp_relay_group_info`'s come from
//! reservations, created by authenticated clients (the bearer token, README
//! "The API"), validated (`event_id`: a short URL-safe name), and number one
//! series per bound group, at most `max_groups`; the data path's come from
//! the configuration; the per-stream series are labelled with numbers and
//! fixed names.

pub mod streams;

use super::published::Published;
use crate::clock::Now;
use crate::cluster::role::Role;
use crate::reservation::schedule::State;
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// The registry and the series the control plane owns.
pub struct Exporter {
    registry: Registry,
    requests: IntCounterVec,
    reservations: IntGaugeVec,
    bound_sockets: IntGauge,
    group_info: IntGaugeVec,
    role: IntGaugeVec,
}

impl Exporter {
    /// Registers every series (and the `process_*` collector); `path` and
    /// `interfaces` label `rtp_relay_data_path_info`.
    pub fn new(path: &str, interfaces: &str) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "rtp_relay_control_requests_total",
                "HTTP requests to the control plane, by method, route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let reservations = IntGaugeVec::new(
            Opts::new(
                "rtp_relay_reservations",
                "Reservations by state (scheduled, active, degraded).",
            ),
            &["state"],
        )
        .expect("valid metric");
        let bound_sockets = IntGauge::new(
            "rtp_relay_bound_sockets",
            "UDP sockets bound for active groups.",
        )
        .expect("valid metric");
        let group_info = IntGaugeVec::new(
            Opts::new(
                "rtp_relay_group_info",
                "Reservation occupying a bound group (value 1).",
            ),
            &["group", "event_id", "layout", "source", "destination"],
        )
        .expect("valid metric");
        let data_path = IntGaugeVec::new(
            Opts::new(
                "rtp_relay_data_path_info",
                "The forwarding path in use (value 1).",
            ),
            &["path", "interfaces"],
        )
        .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new(
                "rtp_relay_build_info",
                "The running build (value 1): version, git revision, whether the kernel fast path is in it.",
            ),
            &["version", "revision", "fast_path_built"],
        )
        .expect("valid metric");
        let role = IntGaugeVec::new(
            Opts::new(
                "rtp_relay_cluster_role",
                "A cluster node's role: 1 for the one it has (active or standby), 0 for the other; absent for a single relay.",
            ),
            &["role"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(role.clone()),
            Box::new(build.clone()),
            Box::new(reservations.clone()),
            Box::new(bound_sockets.clone()),
            Box::new(group_info.clone()),
            Box::new(data_path.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        data_path.with_label_values(&[path, interfaces]).set(1);
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("RTP_RELAY_REVISION").unwrap_or("unknown"),
                if crate::dataplane::ebpf::built() {
                    "true"
                } else {
                    "false"
                },
            ])
            .set(1);
        Exporter {
            registry,
            requests,
            reservations,
            bound_sockets,
            group_info,
            role,
        }
    }

    /// Counts one control-plane request. Every label must come from a closed
    /// set (a standard method or `other`, a route template or `unmatched`, a
    /// status this server sent): each new value is a series kept forever.
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
    }

    /// Reads the published state into the gauges and encodes the exposition.
    pub fn render(&self, published: &Published, now: &Now) -> Result<String, String> {
        let mut counts = [0i64; 3];
        self.group_info.reset();
        for e in published.entries() {
            let state = e.state();
            match state {
                State::Scheduled => counts[0] += 1,
                State::Active => counts[1] += 1,
                State::Degraded => counts[2] += 1,
                State::Ended => {}
            }
            if matches!(state, State::Active | State::Degraded) {
                let r = &e.reservation;
                let source = r.source.map(|s| s.to_string()).unwrap_or_default();
                let destination = r.destination(published.rules(), e.group).to_string();
                self.group_info
                    .with_label_values(&[
                        &e.group.to_string(),
                        &r.event_id,
                        r.layout.as_str(),
                        &source,
                        &destination,
                    ])
                    .set(1);
            }
        }
        for (state, n) in ["scheduled", "active", "degraded"].iter().zip(counts) {
            self.reservations.with_label_values(&[state]).set(n);
        }
        self.bound_sockets
            .set(published.bound().bound_sockets() as i64);
        if let Some(role) = published.role() {
            for r in [Role::Active, Role::Standby] {
                self.role
                    .with_label_values(&[r.as_str()])
                    .set(i64::from(r == role));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| format!("cannot encode the metrics: {e}"))?;
        let mut text =
            String::from_utf8(out).map_err(|e| format!("the metrics are not UTF-8: {e}"))?;
        streams::write_stream_families(published.bound(), now, &mut text);
        Ok(text)
    }
}

impl Default for Exporter {
    /// The userspace data path.
    fn default() -> Self {
        Self::new("userspace", "")
    }
}

/// The `path` and `interfaces` labels of the `rtp_relay_data_path_info` series
/// in a relay's `/metrics` text, for its clients (`status`, `loadtest`).
pub fn data_path_of(metrics: &str) -> Option<(String, String)> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("rtp_relay_data_path_info{"))?;
    let label = |name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_string())
    };
    Some((label("path")?, label("interfaces").unwrap_or_default()))
}
