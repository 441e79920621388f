//! `rtp-relay loadtest`: creates reservations on a relay (one it spawns, or a
//! running one), drives `gen` through it into a `sink`, and reports
//! throughput, loss, latency percentiles and the relay's CPU per forwarded
//! packet. `--direct` runs gen → sink with no relay: the ceiling every relay
//! figure is compared with.

use super::generator::{self, Target};
use super::profile::Profile;
use super::sink::{self, Sink};
use crate::group::{GroupId, Layout, Plane, Role};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Port offset of the sink from the relay's group ports (the shipped config's).
pub const SINK_OFFSET: i32 = -16384;

/// Which relay to measure.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Start `rtp-relay run` with a temporary configuration and stop it after.
    Spawn {
        /// Its `fast_path` setting.
        fast_path: crate::config::FastPath,
    },
    /// A running relay's control plane URL (its PID, if given, for CPU).
    Relay {
        /// e.g. `http://127.0.0.1:9870`.
        url: String,
        /// The relay's process ID; without it CPU comes from `/metrics`.
        pid: Option<u32>,
    },
    /// No relay: gen sends straight to the sink.
    Direct,
    /// A forwarder with no control plane (a benchmark baseline) already
    /// listening on the group ports and sending 16384 ports lower.
    External {
        /// Its process ID, for its CPU time.
        pid: u32,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which relay.
    pub mode: Mode,
    /// Webcasts.
    pub groups: u16,
    /// First group number.
    pub first_group: u16,
    /// Their layout.
    pub layout: Layout,
    /// What they send.
    pub profile: Profile,
    /// How long.
    pub duration: Duration,
    /// Bearer token for the control plane.
    pub token: Option<String>,
    /// Generator source sockets.
    pub sockets: usize,
    /// Generator threads.
    pub generator_threads: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Scrape the relay's `/metrics` this often during the run (as Prometheus would).
    pub scrape_every: Option<Duration>,
}

/// The result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `spawn`, `relay` or `direct`.
    pub mode: String,
    /// Webcasts.
    pub groups: u16,
    /// Streams (pairs).
    pub streams: usize,
    /// Layout.
    pub layout: Layout,
    /// Seconds of sending.
    pub seconds: f64,
    /// The profile's packet rate.
    pub target_packets_per_second: f64,
    /// RTP packets per second the generator sent.
    pub offered_packets_per_second: f64,
    /// … bits per second.
    pub offered_bits_per_second: f64,
    /// RTP packets per second the sink received.
    pub delivered_packets_per_second: f64,
    /// … bits per second.
    pub delivered_bits_per_second: f64,
    /// RTP packets sent.
    pub sent: u64,
    /// RTP packets received.
    pub received: u64,
    /// (sent − received) / sent.
    pub loss_ratio: f64,
    /// Duplicates at the sink.
    pub duplicates: u64,
    /// Late packets at the sink.
    pub reordered: u64,
    /// Corrupt payloads at the sink.
    pub corrupt: u64,
    /// One-way latency.
    pub latency_ms: sink::Latency,
    /// Receiver reports that made it back to the generator.
    pub receiver_reports_returned: u64,
    /// Relay CPU seconds (user + system) during the run.
    pub relay_cpu_seconds: Option<f64>,
    /// Relay CPU per forwarded packet, microseconds.
    pub relay_cpu_us_per_packet: Option<f64>,
    /// The whole machine's busy CPU (generator, sink, relay, kernel) from the
    /// generator's start until the sink settled, per RTP packet sent, microseconds.
    pub box_cpu_us_per_packet: Option<f64>,
    /// The generator missed its rate or its schedule drifted.
    pub generator_fell_behind: bool,
    /// `/metrics` scrapes made during the run.
    pub scrapes: u64,
    /// The slowest scrape, milliseconds.
    pub slowest_scrape_ms: f64,
    /// What makes the figures doubtful (empty when they are sound).
    pub warnings: Vec<String>,
}

impl Report {
    /// Under 0.01 % lost, and the offered load was the profile's.
    pub fn loss_free(&self) -> bool {
        self.loss_ratio < 1e-4 && !self.generator_fell_behind
    }
}

/// The steps of a ramp and the highest loss-free one.
#[derive(Clone, Debug, Serialize)]
pub struct Ramp {
    /// Every step, in the order run.
    pub steps: Vec<Report>,
    /// The most webcasts carried loss-free.
    pub highest_loss_free: Option<Report>,
}

/// Finds the most webcasts (up to `o.groups`) carried loss-free, by bisection;
/// `step` is told about each step as it ends.
pub fn ramp(o: &Options, mut step: impl FnMut(&Report)) -> Result<Ramp, String> {
    let max = o.groups;
    let resolution = (max / 16).max(1);
    let (mut lo, mut hi) = (0u16, max.saturating_add(1));
    let mut n = max;
    let mut ramp = Ramp {
        steps: Vec::new(),
        highest_loss_free: None,
    };
    loop {
        let r = run(&Options {
            groups: n,
            progress: false,
            ..o.clone()
        })?;
        step(&r);
        if r.loss_free() {
            lo = n;
            ramp.highest_loss_free = Some(r.clone());
        } else {
            hi = n;
        }
        ramp.steps.push(r);
        if hi - lo <= resolution {
            return Ok(ramp);
        }
        n = lo + (hi - lo) / 2;
        if n == lo {
            return Ok(ramp);
        }
    }
}

/// Runs the load test.
pub fn run(o: &Options) -> Result<Report, String> {
    let groups: Vec<GroupId> = (0..o.groups)
        .map(|i| {
            GroupId::try_from(u32::from(o.first_group) + u32::from(i)).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut relay = match &o.mode {
        Mode::Spawn { fast_path } => Some(Spawned::start(o.groups, *fast_path)?),
        _ => None,
    };
    let url = match (&o.mode, &relay) {
        (Mode::Relay { url, .. }, _) => Some(url.trim_end_matches('/').to_string()),
        (_, Some(r)) => Some(r.url.clone()),
        _ => None,
    };
    let pid = match (&o.mode, &relay) {
        (Mode::Relay { pid, .. }, _) => *pid,
        (Mode::External { pid }, _) => Some(*pid),
        (_, Some(r)) => Some(r.child.id()),
        _ => None,
    };
    let client = url.as_ref().map(|u| Client::new(u, o.token.clone()));

    // Streams: (role, relay-side media port or None, sink media port).
    let mut streams: Vec<(Role, u16, u16)> = Vec::new();
    let result = (|| {
        for &g in &groups {
            let ports: Vec<(Role, u16, u16)> = match (&client, &o.mode) {
                (Some(c), _) => c.reserve(g, o.layout, o.duration)?,
                (None, mode) => local_ports(g, o.layout, matches!(mode, Mode::External { .. })),
            };
            streams.extend(ports);
        }
        let through_relay = !matches!(o.mode, Mode::Direct);
        measure(o, &streams, through_relay, pid, url.as_deref())
    })();
    if let Some(c) = &client {
        for &g in &groups {
            c.release(g);
        }
    }
    if let Some(r) = relay.as_mut() {
        r.stop();
    }
    result
}

/// Each stream of group `g`: (role, port gen sends to, sink port). With a
/// forwarder in between gen sends to the group port, else straight to the sink.
fn local_ports(g: GroupId, layout: Layout, forwarder: bool) -> Vec<(Role, u16, u16)> {
    layout
        .pairs()
        .map(|(pair, role)| {
            let port = g.port(pair, Plane::Rtp);
            let sink = (i32::from(port) + SINK_OFFSET) as u16;
            (role, if forwarder { port } else { sink }, sink)
        })
        .collect()
}

fn measure(
    o: &Options,
    streams: &[(Role, u16, u16)],
    through_relay: bool,
    pid: Option<u32>,
    url: Option<&str>,
) -> Result<Report, String> {
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let sink_streams: Vec<sink::Stream> = streams
        .iter()
        .map(|&(role, _, sink)| sink::Stream {
            role,
            media_port: sink,
            control_port: sink + 1,
        })
        .collect();
    let sink = Sink::start(localhost, &sink_streams, &o.profile).map_err(|e| e.to_string())?;
    let targets: Vec<Target> = streams
        .iter()
        .map(|&(role, relay, _)| Target {
            role,
            media: SocketAddr::new(localhost, relay),
            control: SocketAddr::new(localhost, relay + 1),
        })
        .collect();
    let generator_options = generator::Options {
        targets,
        profile: o.profile,
        duration: o.duration,
        sockets: o.sockets,
        bind: localhost,
        threads: o.generator_threads,
    };
    let cpu_before = relay_cpu(pid, url);
    let box_before = box_busy_seconds();
    let stop = AtomicBool::new(false);
    let progress = AtomicU64::new(0);
    let scrapes = Scrapes::default();
    let target = generator::target_rate(&o.profile, &generator_options.targets);
    let generating = AtomicBool::new(true);
    let offered = std::thread::scope(|scope| {
        let handle = scope.spawn(|| generator::run(&generator_options, &stop, &progress));
        if let (Some(every), Some(url)) = (o.scrape_every, url) {
            let (scrapes, generating) = (&scrapes, &generating);
            scope
                .spawn(move || scrape(url, every, || !generating.load(Ordering::Relaxed), scrapes));
        }
        if o.progress && o.duration > Duration::from_secs(3) {
            show_progress(o.duration, target, &progress, || handle.is_finished());
        }
        let result = handle.join();
        generating.store(false, Ordering::Relaxed);
        result
    })
    .map_err(|_| "the generator thread failed".to_string())?
    .map_err(|e| format!("generator: {e}"))?;
    // Let what is in flight arrive: until the sink's count stops moving.
    let mut last = sink.received();
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = sink.received();
        if now == last || settle.elapsed() > Duration::from_secs(3) {
            break;
        }
        last = now;
    }
    let cpu_after = relay_cpu(pid, url);
    let box_after = box_busy_seconds();
    let s = sink.finish();

    let seconds = offered.seconds.max(1e-9);
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if through_relay => Some(b - a),
        _ => None,
    };
    // What the relay forwarded: RTP and RTCP to the sink, reports back.
    let forwarded = s.packets + s.rtcp_packets + offered.received_reports;
    let mut warnings = Vec::new();
    if offered.fell_behind() {
        warnings.push(format!(
            "THE GENERATOR DID NOT REACH ITS OFFERED RATE: {:.0} of {:.0} packets/s, {} frames late (max {:.1} ms). Loss and latency figures understate the load; use fewer groups or a quieter machine",
            offered.packets_per_second, offered.target_packets_per_second, offered.late_frames, offered.max_lag_ms
        ));
    }
    if !offered.fell_behind() && offered.late_share() > 0.01 {
        warnings.push(format!(
            "pacing jitter: {:.1} % of frames went out more than 20 ms late (max {:.1} ms); the machine is near saturation",
            offered.late_share() * 100.0,
            offered.max_lag_ms
        ));
    }
    if offered.send_errors > 0 {
        warnings.push(format!(
            "the generator could not send {} datagrams",
            offered.send_errors
        ));
    }
    if through_relay && cpu.is_none() {
        warnings
            .push("relay CPU unknown: give --relay-pid, or let the relay serve /metrics".into());
    }
    Ok(Report {
        mode: match o.mode {
            Mode::Spawn { .. } => "spawn",
            Mode::Relay { .. } => "relay",
            Mode::Direct => "direct",
            Mode::External { .. } => "external",
        }
        .into(),
        groups: o.groups,
        streams: streams.len(),
        layout: o.layout,
        seconds,
        target_packets_per_second: target,
        offered_packets_per_second: offered.packets as f64 / seconds,
        offered_bits_per_second: offered.bytes as f64 * 8.0 / seconds,
        delivered_packets_per_second: s.packets as f64 / seconds,
        delivered_bits_per_second: s.bytes as f64 * 8.0 / seconds,
        sent: offered.packets,
        received: s.packets,
        loss_ratio: if offered.packets == 0 {
            0.0
        } else {
            offered.packets.saturating_sub(s.packets) as f64 / offered.packets as f64
        },
        duplicates: s.duplicates,
        reordered: s.reordered,
        corrupt: s.corrupt,
        latency_ms: s.latency_ms,
        receiver_reports_returned: offered.received_reports,
        relay_cpu_seconds: cpu,
        relay_cpu_us_per_packet: cpu
            .filter(|_| forwarded > 0)
            .map(|c| c * 1e6 / forwarded as f64),
        box_cpu_us_per_packet: box_before
            .zip(box_after)
            .filter(|_| offered.packets > 0)
            .map(|(a, b)| (b - a) * 1e6 / offered.packets as f64),
        generator_fell_behind: offered.fell_behind(),
        scrapes: scrapes.count.load(Ordering::Relaxed),
        slowest_scrape_ms: scrapes.slowest_us.load(Ordering::Relaxed) as f64 / 1e3,
        warnings,
    })
}

/// What scraping during the run cost.
#[derive(Debug, Default)]
struct Scrapes {
    count: AtomicU64,
    slowest_us: AtomicU64,
}

/// Fetches `/metrics` every `every` until `done`.
fn scrape(url: &str, every: Duration, done: impl Fn() -> bool, scrapes: &Scrapes) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(every * 10))
            .build(),
    );
    while !done() {
        let t = Instant::now();
        if let Ok(mut r) = agent.get(format!("{url}/metrics")).call() {
            let _ = r.body_mut().read_to_vec();
            scrapes.count.fetch_add(1, Ordering::Relaxed);
            scrapes
                .slowest_us
                .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        std::thread::sleep(every.saturating_sub(t.elapsed()));
    }
}

fn show_progress(duration: Duration, target: f64, sent: &AtomicU64, done: impl Fn() -> bool) {
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    while !done() {
        std::thread::sleep(Duration::from_millis(250));
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(start.elapsed().as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "{:.0} packets/s offered (profile: {target:.0})",
            sent.load(Ordering::Relaxed) as f64 / secs
        ));
    }
    bar.finish_and_clear();
}

/// Relay CPU seconds: from `/proc/<pid>/stat` when the PID is known, else
/// from the relay's `process_cpu_seconds_total`.
/// Busy CPU seconds of the whole machine so far (`/proc/stat`: user, nice,
/// system, irq, softirq, steal).
fn box_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0.0))
        .sum::<f64>();
    Some(busy / clock_ticks())
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as f64
}

fn relay_cpu(pid: Option<u32>, url: Option<&str>) -> Option<f64> {
    if let Some(pid) = pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name: utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        return Some(ticks / clock_ticks());
    }
    let text = ureq::get(format!("{}/metrics", url?))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The reservations of a relay (`GET /v1/reservations`).
pub fn reservations(url: &str) -> Result<Vec<Value>, String> {
    let url = url.trim_end_matches('/');
    let mut r = ureq::get(format!("{url}/v1/reservations"))
        .call()
        .map_err(|e| format!("cannot list the reservations of {url}: {e}"))?;
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().map_err(|e| e.to_string())?)
        .map_err(|e| format!("{url} answered something that is not JSON: {e}"))?;
    Ok(v["reservations"].as_array().cloned().unwrap_or_default())
}

/// Talks to the relay's control plane.
struct Client {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(url: &str, token: Option<String>) -> Self {
        Client {
            url: url.to_string(),
            token,
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build(),
            ),
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// Creates the group's reservation (active now); its streams' ports.
    fn reserve(
        &self,
        g: GroupId,
        layout: Layout,
        duration: Duration,
    ) -> Result<Vec<(Role, u16, u16)>, String> {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| crate::reservation::rfc3339(t);
        let body = json!({
            "event_id": format!("loadtest-{g}"),
            "group": g,
            "layout": layout,
            "start": fmt(now),
            "end": fmt(now + duration + Duration::from_secs(120)),
            "source": "127.0.0.1",
            "source_policy": "strict",
        });
        let mut r = self
            .auth(self.agent.post(format!("{}/v1/reservations", self.url)))
            .send(body.to_string())
            .map_err(|e| format!("cannot reach the relay at {}: {e}", self.url))?;
        let status = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(format!(
                "the relay refused group {g} ({status}): {}",
                v["message"]
            ));
        }
        if v["state"] != "active" {
            return Err(format!(
                "group {g} is {} on the relay, not active: {}",
                v["state"], v["errors"]
            ));
        }
        let ports = v["ports"].as_array().cloned().unwrap_or_default();
        Ok(ports
            .iter()
            .filter(|p| p["plane"] == "rtp")
            .filter_map(|p| {
                let role: Role = serde_json::from_value(p["stream"].clone()).ok()?;
                Some((
                    role,
                    p["port"].as_u64()? as u16,
                    p["destination_port"].as_u64()? as u16,
                ))
            })
            .collect())
    }

    fn release(&self, g: GroupId) {
        let _ = self
            .auth(
                self.agent
                    .delete(format!("{}/v1/reservations/loadtest-{g}", self.url)),
            )
            .call();
    }
}

/// A relay started for the run, with its own configuration and state.
struct Spawned {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Spawned {
    fn start(groups: u16, fast_path: crate::config::FastPath) -> Result<Spawned, String> {
        let dir = TempDir::new()?;
        let config = dir.0.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[control]\nlisten = \"127.0.0.1:0\"\n[data]\nbind_address = \"127.0.0.1\"\nmax_groups = {}\nfast_path = \"{}\"\n[wowza]\naddress = \"127.0.0.1\"\nport_offset = {SINK_OFFSET}\n[state]\npath = \"{}\"\n[log]\nlevel = \"info\"\n",
                groups.max(1),
                fast_path.as_str(),
                dir.0.join("state").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let stderr = child.stderr.take().ok_or("no relay stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        break rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err("the spawned relay exited before listening".into());
                }
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Spawned {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        })
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "rtp-relay-loadtest-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The report as a table an operator reads.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<32} {v}\n"));
    line(
        &mut out,
        "mode",
        format!(
            "{} ({} groups of {}, {} streams, {:.1} s)",
            r.mode, r.groups, r.layout, r.streams, r.seconds
        ),
    );
    line(
        &mut out,
        "offered",
        format!(
            "{:.0} packets/s, {:.2} Mbit/s (profile {:.0} packets/s)",
            r.offered_packets_per_second,
            r.offered_bits_per_second / 1e6,
            r.target_packets_per_second
        ),
    );
    line(
        &mut out,
        "delivered",
        format!(
            "{:.0} packets/s, {:.2} Mbit/s",
            r.delivered_packets_per_second,
            r.delivered_bits_per_second / 1e6
        ),
    );
    line(
        &mut out,
        "loss",
        format!(
            "{:.4} % ({} of {} packets)",
            r.loss_ratio * 100.0,
            r.sent.saturating_sub(r.received),
            r.sent
        ),
    );
    line(
        &mut out,
        "duplicates / reordered / corrupt",
        format!("{} / {} / {}", r.duplicates, r.reordered, r.corrupt),
    );
    line(
        &mut out,
        "latency p50 / p99 / p99.9 / max",
        format!(
            "{:.3} / {:.3} / {:.3} / {:.3} ms",
            r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999, r.latency_ms.max
        ),
    );
    line(
        &mut out,
        "receiver reports returned",
        r.receiver_reports_returned.to_string(),
    );
    if r.scrapes > 0 {
        line(
            &mut out,
            "/metrics scrapes",
            format!("{} (slowest {:.1} ms)", r.scrapes, r.slowest_scrape_ms),
        );
    }
    match (r.relay_cpu_seconds, r.relay_cpu_us_per_packet) {
        (Some(s), Some(us)) => line(
            &mut out,
            "relay CPU",
            format!("{s:.2} s, {us:.2} µs per forwarded packet"),
        ),
        _ => line(&mut out, "relay CPU", "n/a".into()),
    }
    if let Some(us) = r.box_cpu_us_per_packet {
        line(
            &mut out,
            "machine CPU",
            format!("{us:.2} µs per RTP packet sent (all processes and the kernel)"),
        );
    }
    for w in &r.warnings {
        out.push_str(&format!("\nWARNING: {w}\n"));
    }
    out
}
