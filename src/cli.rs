//! The command line (SPEC §8): parsing with one-line errors (exit status 2), and
//! the small commands `ports` and `check-config`.

use crate::config::{self, Config};
use crate::group::{GroupId, Layout, port_table};
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
                eprintln!("rtp-relay: a command is required: run, check-config or ports (see 'rtp-relay --help')");
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
    println!("# data path: userspace (this build has no eBPF fast path)");
    ExitCode::SUCCESS
}
