//! The command line (docs/cli.md): parsing with one-line errors (exit status 2),
//! and one module per command besides `run` (which is [`crate::service::run`]):
//!
//! - `ports`, `check_config`, `sdp` and `status`: the small commands;
//! - `generate` (`gen`), `sink` and `loadtest` (with its ramp): the traffic
//!   tools, over [`crate::traffic`];
//! - `traffic` and `groups`: what `gen` and `sink` share — their arguments,
//!   and the streams they address;
//! - `report`: how a command prints its result or its failure.

mod check_config;
mod generate;
mod groups;
mod loadtest;
mod ports;
mod report;
mod sdp;
mod sink;
mod status;
mod traffic;

pub use check_config::check_config;
pub use generate::{GenArgs, generate};
pub use groups::Groups;
pub use loadtest::{LoadtestArgs, loadtest};
pub use ports::ports;
pub use sdp::{SdpArgs, sdp};
pub use sink::{SinkArgs, sink};
pub use status::{StatusArgs, status};
pub use traffic::{RateArgs, TrafficArgs};

use crate::config;
use crate::group::Layout;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
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
    /// Print a reservation's SDP (Wowza's RTP ingest) from a running relay.
    Sdp(SdpArgs),
    /// One line per open window of a running relay: rates, loss, jitter, last packet.
    Status(StatusArgs),
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
                eprintln!("rtp-relay: a command is required: run, check-config, ports, gen, sink, loadtest, sdp or status (see 'rtp-relay --help')");
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
