//! The state and its times under hostile input, against the real binary:
//! times whose window cannot be computed are a 400 (never a panic), a reload
//! never ends the relay, a panic never ends it with status 0. Groups 1700–1719
//! are this file's.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_time_whose_window_cannot_be_computed_is_a_400_naming_the_field() {
    let setup = Setup::new();
    let mut relay = setup.start();
    for (start, end, field) in [
        ("9998-12-31T23:00:00Z", "9999-12-31T23:50:00Z", "end"),
        ("9998-12-31T23:00:00Z", "9999-12-31T23:50:00-05:00", "end"),
        ("9998-12-31T23:00:00Z", "9999-12-31T23:40:00Z", "end"),
        ("0000-01-01T00:00:00+23:59", &at(3600), "start"),
    ] {
        let a = relay.post(
            "/v1/reservations",
            &reservation("far", Some(1700), "audio-only", start, end),
        );
        assert_eq!(a.status, 400, "{start}–{end}: {}", a.text);
        let message = a.body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(field)
                && message.contains("1970-01-01T00:00:00Z")
                && message.contains("9999-01-01T00:00:00Z"),
            "{message}"
        );
    }
    // A PATCH moving the end out of range is refused the same way.
    relay.create(
        &reservation("near", Some(1701), "audio-only", &at(86400), &at(90000)),
        "scheduled",
    );
    let a = relay.patch(
        "/v1/reservations/near",
        r#"{"end": "9999-12-31T23:59:00Z"}"#,
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.body["message"].as_str().unwrap().starts_with("end"));
    assert_eq!(relay.get("/healthz").status, 200);
    assert_eq!(relay.wait(Duration::ZERO), None, "the relay is up");
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
}

#[test]
fn a_reload_with_the_longest_lead_and_trail_keeps_every_reservation() {
    let mut setup = Setup::new();
    let mut relay = setup.start();
    // Old enough to have been accepted before: ends 20 min before the end of time.
    let edge = relay.post(
        "/v1/reservations",
        &reservation(
            "edge",
            Some(1702),
            "audio-only",
            "9998-12-31T23:00:00Z",
            "9999-12-31T23:40:00Z",
        ),
    );
    // The latest time accepted, with room for the longest lead and trail.
    relay.create(
        &reservation(
            "last",
            Some(1703),
            "audio-only",
            "9998-12-31T23:00:00Z",
            "9998-12-31T23:59:59Z",
        ),
        "scheduled",
    );
    setup.schedule = "lead = \"7days\"\ntrail = \"7days\"\n".into();
    setup.write_config();
    relay.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .log()
            .contains("SIGHUP: configuration reloaded")),
        "{}",
        relay.log()
    );
    assert_eq!(
        relay.wait(Duration::from_millis(300)),
        None,
        "{}",
        relay.log()
    );
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
    let last = relay.get("/v1/reservations/last");
    assert_eq!(last.body["window"]["free_at"], "9999-01-07T23:59:59Z");
    assert_eq!(last.body["window"]["bind_at"], "9998-12-24T23:00:00Z");
    assert_eq!(edge.status, 400, "{}", edge.text);
}

/// Set in the child process of the panic test: where to panic.
const PANIC_IN: &str = "RTP_RELAY_TEST_PANIC_IN";

#[test]
fn a_panic_on_any_thread_ends_the_process_with_status_101() {
    if let Ok(place) = std::env::var(PANIC_IN) {
        // The child: the relay's hook, then a panic where `place` says.
        rtp_relay::logging::init(&rtp_relay::config::Log::default());
        rtp_relay::service::exit_on_panic();
        let rt = tokio::runtime::Runtime::new().unwrap();
        match place.as_str() {
            "task" => drop(rt.spawn(async { panic!("test panic in a task") })),
            "blocking" => drop(rt.spawn_blocking(|| panic!("test panic in a blocking task"))),
            _ => drop(std::thread::spawn(|| panic!("test panic in a thread"))),
        }
        // Without the hook the runtime or the thread keeps the panic to itself
        // and this test passes: the parent sees status 0.
        std::thread::sleep(Duration::from_secs(3));
        return;
    }
    for place in ["task", "blocking", "thread"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "a_panic_on_any_thread_ends_the_process_with_status_101",
                "--exact",
                "--nocapture",
            ])
            .env(PANIC_IN, place)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(101), "{place}: {err}");
        assert!(
            err.contains("test panic in a") && err.contains("exits with status 101"),
            "{place}: {err}"
        );
    }
}
