//! `rtp-relay check-config`: the configuration as the relay would run it.

use crate::config::Config;
use crate::group::GroupId;
use std::path::Path;
use std::process::ExitCode;

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
    match (&config.control.token, config.open_api_warning()) {
        (Some(_), _) => println!("# bearer token: required for mutating routes"),
        (None, None) => println!("# bearer token: not configured"),
        (None, Some(warning)) => println!("# bearer token: not configured — WARNING: {warning}"),
    }
    println!(
        "# data path: {}",
        crate::dataplane::ebpf::plan(&config.fast_path_options())
    );
    let dir = &config.wowza.sdp_dir;
    if dir.as_os_str().is_empty() {
        println!("# sdp_dir: not set (SDP only from GET /v1/reservations/{{event_id}}/sdp)");
    } else {
        match crate::sdp::files::check_writable(dir) {
            Ok(()) => println!("# sdp_dir: {} is writable", dir.display()),
            Err(e) => println!(
                "# sdp_dir: WARNING: {e} — the relay runs, but writes no SDP file until it can"
            ),
        }
    }
    ExitCode::SUCCESS
}
