//! How a command ends: its result as JSON or as text, or a one-line failure
//! with an exit status.

use std::process::ExitCode;

/// Prints `report` as JSON when `json`, else the text `text` makes.
pub(super) fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce() -> String,
) {
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("JSON"));
    } else {
        print!("{}", text());
    }
}

/// Prints `rtp-relay: {e}` to stderr; exit status `code`.
pub(super) fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("rtp-relay: {e}");
    ExitCode::from(code)
}
