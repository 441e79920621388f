//! The command line (SPEC §8): parsing with one-line errors (exit status 2), and
//! the small commands `ports` and `check-config`.

use crate::config::{self, Config};
use crate::group::{GroupId, Layout, Plane, Role, port_table};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `rtp-relay`: relays live-webcast RTP/RTCP from capture appliances to Wowza.
#[derive(Debug, Parser)]
#[command(name = "rtp-relay", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay service.
    Run(ConfigArg),
    /// Validate the configuration and print it with its defaults filled in.
    CheckConfig(ConfigArg),
    /// Print a port group's table (role, plane, port).
    Ports {
        /// Port-group number: 0–2047 (49152–65535), up to 8063 below the dynamic range.
        group: u32,
        /// Name the streams of this layout (audio-only, audio-display, audio-video,
        /// audio-display-video, audio-dual-video, audio-dual-display).
        #[arg(long)]
        layout: Option<Layout>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Generate synthetic webcasts (RTP + RTCP sender reports) toward port groups.
    Gen(GenArgs),
    /// Stand in for Wowza: receive, verify, answer with receiver reports.
    Sink(SinkArgs),
    /// Drive gen and sink through a relay and report throughput, loss, latency, CPU.
    Loadtest(LoadtestArgs),
}

/// What the traffic tools send or expect.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    /// Port groups: a number, a range or a list, e.g. 14, 0-9, 0,3,10-19.
    #[arg(long, value_parser = parse_groups, required_unless_present = "relay")]
    pub groups: Option<Groups>,
    /// Layout of every group.
    #[arg(long, default_value = "audio-display-video")]
    pub layout: Layout,
    /// Traffic profile.
    #[arg(long, default_value = "echo360-live", value_parser = crate::traffic::profile::Profile::named)]
    pub profile: crate::traffic::profile::Profile,
    /// How long to run, e.g. 30s, 5m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Groups, layout, profile, duration, output.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Send to the groups of this relay's reservations, e.g. http://127.0.0.1:9870.
    #[arg(long)]
    pub relay: Option<String>,
    /// Address to send to (the relay's).
    #[arg(long, default_value = "127.0.0.1")]
    pub target: std::net::IpAddr,
    /// Destination port = group port + this offset.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub port_offset: i32,
    /// Address the source sockets bind (the appliance's address).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Source sockets; each stream always sends from the same one.
    #[arg(long, default_value_t = 32)]
    pub sockets: usize,
    /// Sending threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Bitrate and frame-rate overrides of the profile.
    #[command(flatten)]
    pub rates: RateArgs,
}

/// Overrides of a profile's bitrates and frame rates.
#[derive(Debug, Args)]
pub struct RateArgs {
    /// Audio bitrate override (kbit/s).
    #[arg(long)]
    pub audio_kbps: Option<u32>,
    /// Display bitrate override (kbit/s).
    #[arg(long)]
    pub display_kbps: Option<u32>,
    /// Display frame rate override.
    #[arg(long)]
    pub display_fps: Option<f64>,
    /// Video bitrate override (kbit/s).
    #[arg(long)]
    pub video_kbps: Option<u32>,
    /// Video frame rate override.
    #[arg(long)]
    pub video_fps: Option<f64>,
}

impl RateArgs {
    /// `profile` with these overrides.
    pub fn apply(
        &self,
        profile: crate::traffic::profile::Profile,
    ) -> crate::traffic::profile::Profile {
        profile.with(
            self.audio_kbps,
            (self.display_kbps, self.display_fps),
            (self.video_kbps, self.video_fps),
        )
    }
}

/// `sink`.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Groups, layout, profile, duration, output.
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Bind the destination ports of this relay's reservations instead of --groups,
    /// e.g. http://127.0.0.1:9870.
    #[arg(long)]
    pub relay: Option<String>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Bound port = group port + this offset (the relay's wowza.port_offset).
    #[arg(long, default_value_t = -16384, allow_hyphen_values = true)]
    pub port_offset: i32,
}

/// `loadtest`.
#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// A running relay's control plane, e.g. http://127.0.0.1:9870 (default: spawn one).
    #[arg(long, conflicts_with = "direct")]
    pub relay: Option<String>,
    /// The running relay's process ID, for its CPU time (else read from /metrics).
    #[arg(long, requires = "relay")]
    pub relay_pid: Option<u32>,
    /// Start a relay for the run (the default).
    #[arg(long, conflicts_with_all = ["relay", "direct"])]
    pub spawn: bool,
    /// The spawned relay's `fast_path` (auto attaches eBPF to lo when it can).
    #[arg(long, value_enum, default_value = "auto", conflicts_with_all = ["relay", "direct", "external_pid"])]
    pub fast_path: crate::config::FastPath,
    /// No relay: gen sends straight to sink (the ceiling to compare with).
    #[arg(long)]
    pub direct: bool,
    /// A forwarder without a control plane (a benchmark baseline) that listens
    /// on the group ports and forwards 16384 ports lower: its process ID.
    #[arg(long, conflicts_with_all = ["relay", "direct", "spawn"])]
    pub external_pid: Option<u32>,
    /// Number of webcasts.
    #[arg(long, default_value_t = 64)]
    pub groups: u16,
    /// First group number.
    #[arg(long, default_value_t = 0)]
    pub first_group: u16,
    /// Layout of every webcast.
    #[arg(long, default_value = "audio-display-video")]
    pub layout: Layout,
    /// Traffic profile.
    #[arg(long, default_value = "echo360-live", value_parser = crate::traffic::profile::Profile::named)]
    pub profile: crate::traffic::profile::Profile,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Bearer token for a relay that requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// Generator source sockets.
    #[arg(long, default_value_t = 32)]
    pub sockets: usize,
    /// Generator threads.
    #[arg(long, default_value_t = 2)]
    pub generator_threads: usize,
    /// Bitrate and frame-rate overrides of the profile.
    #[command(flatten)]
    pub rates: RateArgs,
    /// Scrape the relay's /metrics this often during the run, e.g. 1s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub scrape_every: Option<std::time::Duration>,
    /// Find the most webcasts (up to --groups) carried loss-free (< 0.01 %), by
    /// bisection: one run of --duration per step.
    #[arg(long)]
    pub ramp: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A list of port groups.
#[derive(Clone, Debug)]
pub struct Groups(pub Vec<GroupId>);

fn parse_groups(text: &str) -> Result<Groups, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{t:?} is not a group number"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("range {part} runs backwards"));
        }
        for n in a..=b {
            out.push(GroupId::try_from(n).map_err(|e| e.to_string())?);
        }
    }
    Ok(Groups(out))
}

/// `--config PATH`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
}

/// Parses the arguments; on error prints one line and gives exit status 2.
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = e.print();
                ExitCode::SUCCESS
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
                eprintln!("rtp-relay: a command is required: run, check-config, ports, gen, sink or loadtest (see 'rtp-relay --help')");
                ExitCode::from(2)
            }
            _ => {
                // clap spreads one error over several lines; fold it into one.
                let text = e.render().to_string();
                let line: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:") && !l.trim_start().starts_with("tip:"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let line = line.join(" ");
                eprintln!("rtp-relay: {} (see 'rtp-relay --help')", line.trim_start_matches("error: "));
                ExitCode::from(2)
            }
        }
    })
}

/// `rtp-relay ports GROUP [--layout L] [--json]`.
pub fn ports(group: u32, layout: Option<Layout>, json: bool) -> ExitCode {
    let group = match GroupId::try_from(group) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("rtp-relay: GROUP: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = port_table(group, layout);
    if json {
        let doc = serde_json::json!({
            "group": group,
            "layout": layout,
            "base": group.base(),
            "in_dynamic_range": group.check_allowed(false).is_ok(),
            "ports": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
    } else {
        let width = rows
            .iter()
            .map(|r| r.label.len())
            .max()
            .unwrap_or(0)
            .max(25);
        for r in &rows {
            println!("{:<width$} {}", r.label, r.port);
        }
    }
    if let Err(e) = group.check_allowed(false) {
        eprintln!("note: {e}");
    }
    ExitCode::SUCCESS
}

/// Ports of `group`'s used pairs moved by `offset`: (role, media port).
fn offset_ports(groups: &Groups, layout: Layout, offset: i32) -> Result<Vec<(Role, u16)>, String> {
    let mut out = Vec::new();
    for g in &groups.0 {
        for (pair, role) in layout.pairs() {
            let port = i32::from(g.port(pair, Plane::Rtp)) + offset;
            if !(1..=65534).contains(&port) {
                return Err(format!(
                    "--port-offset {offset} moves group {g} to port {port}, outside 1–65534"
                ));
            }
            out.push((role, port as u16));
        }
    }
    Ok(out)
}

/// The streams of a traffic command: (role, media port) from `--groups` moved by
/// `offset`, or from a relay's reservations (their group ports, or with
/// `destination` their destination ports).
fn streams(
    t: &TrafficArgs,
    relay: Option<&str>,
    offset: i32,
    destination: bool,
) -> Result<Vec<(Role, u16)>, (String, u8)> {
    let Some(url) = relay else {
        let groups = t
            .groups
            .as_ref()
            .ok_or(("--groups or --relay is required".to_string(), 2))?;
        return offset_ports(groups, t.layout, offset).map_err(|e| (e, 2));
    };
    let list = crate::traffic::loadtest::reservations(url).map_err(|e| (e, 1))?;
    let key = if destination {
        "destination_port"
    } else {
        "port"
    };
    let mut out = Vec::new();
    for r in &list {
        for p in r["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["plane"] == "rtp")
        {
            let role =
                serde_json::from_value(p["stream"].clone()).map_err(|e| (e.to_string(), 1))?;
            let port = p[key]
                .as_u64()
                .ok_or(("a reservation without ports".to_string(), 1))?;
            out.push((role, port as u16));
        }
    }
    if out.is_empty() {
        return Err((
            format!(
                "the relay at {url} has no reservations to {}",
                if destination { "receive" } else { "send" }
            ),
            1,
        ));
    }
    Ok(out)
}

fn print_report<T: serde::Serialize>(json: bool, report: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("JSON"));
    } else {
        print!("{}", text());
    }
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("rtp-relay: {e}");
    ExitCode::from(code)
}

/// `rtp-relay gen …`.
pub fn generate(a: GenArgs) -> ExitCode {
    use crate::traffic::generator;
    let t = &a.traffic;
    let ports = match streams(t, a.relay.as_deref(), a.port_offset, false) {
        Ok(p) => p,
        Err((e, code)) => return fail(e, code),
    };
    let targets: Vec<generator::Target> = ports
        .into_iter()
        .map(|(role, port)| generator::Target {
            role,
            media: std::net::SocketAddr::new(a.target, port),
            control: std::net::SocketAddr::new(a.target, port + 1),
        })
        .collect();
    let profile = a.rates.apply(t.profile);
    let options = generator::Options {
        targets,
        profile,
        duration: t.duration,
        sockets: a.sockets,
        bind: a.bind,
        threads: a.threads,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    match generator::run(&options, &stop, &std::sync::atomic::AtomicU64::new(0)) {
        Ok(r) => {
            print_report(t.json, &r, || {
                let mut s = format!(
                    "sent {} RTP packets ({:.0}/s, profile {:.0}/s, {:.2} Mbit/s) and {} sender reports on {} streams in {:.1} s; {} receiver reports came back\n",
                    r.packets,
                    r.packets_per_second,
                    r.target_packets_per_second,
                    r.bytes as f64 * 8.0 / r.seconds.max(1e-9) / 1e6,
                    r.sender_reports,
                    r.streams,
                    r.seconds,
                    r.received_reports
                );
                if r.fell_behind() {
                    s.push_str(&format!(
                        "WARNING: THE GENERATOR FELL BEHIND its schedule: {:.0} of {:.0} packets/s, max lag {:.1} ms\n",
                        r.packets_per_second, r.target_packets_per_second, r.max_lag_ms
                    ));
                }
                s.push_str(&format!(
                    "pacing: {} frames, {:.2} % more than 20 ms late, max lag {:.1} ms\n",
                    r.frames,
                    r.late_share() * 100.0,
                    r.max_lag_ms
                ));
                s
            });
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("gen: {e}"), 1),
    }
}

/// `rtp-relay sink …`.
pub fn sink(a: SinkArgs) -> ExitCode {
    use crate::traffic::sink;
    let t = &a.traffic;
    let ports = match streams(t, a.relay.as_deref(), a.port_offset, true) {
        Ok(p) => p,
        Err((e, code)) => return fail(e, code),
    };
    let streams: Vec<sink::Stream> = ports
        .into_iter()
        .map(|(role, port)| sink::Stream {
            role,
            media_port: port,
            control_port: port + 1,
        })
        .collect();
    let s = match sink::Sink::start(a.bind, &streams, &t.profile) {
        Ok(s) => s,
        Err(e) => return fail(e, 1),
    };
    std::thread::sleep(t.duration);
    let r = s.finish();
    print_report(t.json, &r, || {
        format!(
            "received {} RTP packets ({} bytes) and {} RTCP packets on {} streams; lost {}, duplicates {}, reordered {}, corrupt {}; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} receiver reports sent\n",
            r.packets,
            r.bytes,
            r.rtcp_packets,
            r.streams.len(),
            r.lost,
            r.duplicates,
            r.reordered,
            r.corrupt,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.receiver_reports
        )
    });
    ExitCode::SUCCESS
}

/// `rtp-relay loadtest …`.
pub fn loadtest(a: LoadtestArgs) -> ExitCode {
    use crate::traffic::loadtest::{self, Mode, Options};
    let mode = match (a.relay, a.direct, a.external_pid) {
        (Some(url), _, _) => Mode::Relay {
            url,
            pid: a.relay_pid,
        },
        (None, true, _) => Mode::Direct,
        (None, false, Some(pid)) => Mode::External { pid },
        (None, false, None) => Mode::Spawn {
            fast_path: a.fast_path,
        },
    };
    if a.groups == 0 {
        return fail("--groups: give at least 1 webcast", 2);
    }
    let options = Options {
        mode,
        groups: a.groups,
        first_group: a.first_group,
        layout: a.layout,
        profile: a.rates.apply(a.profile),
        duration: a.duration,
        token: a.token,
        sockets: a.sockets,
        generator_threads: a.generator_threads,
        progress: !a.json,
        scrape_every: a.scrape_every,
    };
    if a.ramp {
        return ramp(&options, a.json);
    }
    match loadtest::run(&options) {
        Ok(r) => {
            print_report(a.json, &r, || loadtest::table(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("loadtest: {e}"), 1),
    }
}

fn ramp(options: &crate::traffic::loadtest::Options, json: bool) -> ExitCode {
    use crate::traffic::loadtest;
    let result = loadtest::ramp(options, |r| {
        if !json {
            let verdict = if r.loss_free() {
                "loss-free".to_string()
            } else if r.generator_fell_behind {
                format!("{:.4} % lost, generator behind", r.loss_ratio * 100.0)
            } else {
                format!("{:.4} % lost", r.loss_ratio * 100.0)
            };
            eprintln!(
                "ramp: {} webcasts, {:.0} packets/s offered: {verdict} (latency p99 {:.1} ms)",
                r.groups, r.offered_packets_per_second, r.latency_ms.p99
            );
        }
    });
    match result {
        Ok(ramp) => {
            print_report(json, &ramp, || match &ramp.highest_loss_free {
                Some(r) => format!(
                    "highest loss-free load: {} webcasts\n{}",
                    r.groups,
                    loadtest::table(r)
                ),
                None => "no step was loss-free, not even the smallest\n".into(),
            });
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("loadtest: {e}"), 1),
    }
}

/// `rtp-relay check-config [--config PATH]`.
pub fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rtp-relay: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", config.to_toml());
    let last = GroupId::last_allowed(config.data.allow_below_dynamic_range);
    let rules = config.rules(Vec::new());
    let first_dest = rules.wowza.for_group(GroupId::FIRST);
    let last_dest = rules.wowza.for_group(last);
    println!();
    println!("# {} is valid.", path.display());
    println!("# workers in effect: {}", config.effective_workers());
    println!("# groups 0–{last}: ports {}–65535", last.base());
    println!("# default destination: group 0 -> {first_dest}, group {last} -> {last_dest}");
    println!(
        "# bearer token: {}",
        if config.control.token.is_some() {
            "required for mutating routes"
        } else {
            "not configured"
        }
    );
    println!("# data path: {}", crate::dataplane::ebpf::plan(&config));
    ExitCode::SUCCESS
}
