//! The `rtp-relay` command.

use rtp_relay::cli::{self, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Run(args) => rtp_relay::service::run(&args.config),
        Command::CheckConfig(args) => cli::check_config(&args.config),
        Command::Ports {
            group,
            layout,
            json,
        } => cli::ports(group, layout, json),
        Command::Gen(args) => cli::generate(args),
        Command::Sink(args) => cli::sink(args),
        Command::Loadtest(args) => cli::loadtest(args),
        Command::Sdp(args) => cli::sdp(args),
        Command::Status(args) => cli::status(args),
    }
}
