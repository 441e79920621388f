//! `rtp-relay ports`: a port group's table.

use crate::group::{GroupId, Layout, port_table};
use std::process::ExitCode;

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
