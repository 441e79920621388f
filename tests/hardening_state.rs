//! The state and its times under hostile input and an unlucky disk, against
//! the real binary: times whose window cannot be computed are a 400 (never a
//! panic), a reload never ends the relay, a panic never ends it with status 0,
//! a full disk never costs an acknowledged reservation, and journal records
//! (and, on a reload, the reservations held) get the API's checks. The
//! full-disk test mounts a small tmpfs (root; `RTP_RELAY_SKIP_ROOT=1` skips
//! it). Groups 1700–1719 are this file's.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One journal line as the relay writes it: `<crc32 hex> <json>`.
fn journal_line(json: &str) -> String {
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
}

/// A put record of `reservation` (a JSON object) held on `group`.
fn put(group: u16, reservation: &str) -> String {
    journal_line(&format!(
        r#"{{"op":"put","group":{group},"reservation":{reservation}}}"#
    ))
}

/// A reservation object as stored (no group requested).
fn stored(id: &str, start: &str, end: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","layout":"audio-only","start":"{start}","end":"{end}","source":"127.0.0.1"}}"#
    )
}

fn write_journal(setup: &Setup, lines: &[String]) {
    let path = setup.state_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, lines.concat()).unwrap();
}

/// Asserts a refusal to start with exit status 2, a message naming `line` and
/// containing `words`, and no panic; the journal left as it was.
fn assert_refused(setup: &Setup, line: usize, words: &[&str]) {
    let before = std::fs::read(setup.state_path()).unwrap();
    let (status, err) = setup.start_refused();
    assert_eq!(status, Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&format!("line {line}")), "line {line}: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?}: {err}");
    }
    assert!(err.contains("delete that line"), "how to repair: {err}");
    assert_eq!(std::fs::read(setup.state_path()).unwrap(), before);
}

/// Writes `setup`'s configuration, sends SIGHUP, waits until `logged` is logged.
fn reload(setup: &Setup, relay: &Relay, logged: &str) {
    setup.write_config();
    relay.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || relay.log().contains(logged)),
        "{}",
        relay.log()
    );
}

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
    reload(&setup, &relay, "SIGHUP: configuration reloaded");
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

#[test]
fn a_journal_time_whose_window_cannot_be_computed_is_refused_at_start() {
    let mut setup = Setup::new();
    setup.schedule = "lead = \"30m\"\ntrail = \"7days\"\n".into();
    write_journal(
        &setup,
        &[
            put(1704, &stored("ok", &at(86400), &at(90000))),
            put(
                1705,
                &stored("edge", "9998-12-31T23:00:00Z", "9999-12-31T23:40:00Z"),
            ),
        ],
    );
    assert_refused(&setup, 2, &["edge", "end 9999-12-31T23:40:00Z"]);
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

/// A tmpfs of `size` mounted at `at`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let at_text = at.to_string_lossy();
        let options = format!("size={size}");
        root_command(
            "mount",
            &["-t", "tmpfs", "-o", &options, "tmpfs", &at_text],
            "RTP_RELAY_SKIP_ROOT",
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes into `path` until the disk is full; the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let (mut written, chunk) = (0u64, [0u8; 512]);
    // Bounded: the disk is a few pages.
    for _ in 0..100_000 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => return written,
            Ok(n) => written += n as u64,
        }
    }
    panic!("the disk never filled ({written} bytes written)");
}

#[test]
fn a_full_disk_never_loses_an_acknowledged_reservation() {
    if skip_root("full-disk") {
        return;
    }
    let setup = Setup::new();
    let state_dir = setup.state_path().parent().unwrap().to_path_buf();
    let _disk = SmallDisk::mount(&state_dir, "64k");
    let relay = setup.start();
    let body = |id: &str, g: Option<u16>| reservation(id, g, "audio-only", &at(86400), &at(90000));
    relay.create(&body("before", Some(1706)), "scheduled");
    let filler = state_dir.join("filler");
    assert!(fill(&filler) > 0);

    // The journal's last page has room for a few records: create (each on a
    // group of its own, allocated) until one does not fit (a record is about
    // 200 bytes, a page 4096).
    let mut acknowledged = vec!["before".to_string()];
    let mut failed = None;
    for i in 0..64 {
        let id = format!("full-{i}");
        let a = relay.post("/v1/reservations", &body(&id, None));
        match a.status {
            201 => acknowledged.push(id),
            500 => {
                assert_eq!(a.body["error"], "storage", "{}", a.text);
                failed = Some(id);
                break;
            }
            s => panic!("{s}: {}", a.text),
        }
    }
    let failed = failed.expect("a create failed on the full disk");
    let journal = std::fs::read(setup.state_path()).unwrap();
    assert_eq!(
        journal.last(),
        Some(&b'\n'),
        "the failed append left part of a record"
    );

    std::fs::remove_file(&filler).unwrap();
    relay.create(&body("after", Some(1709)), "scheduled");
    relay.crash();

    let relay = setup.start();
    let listed: Vec<String> = relay.get("/v1/reservations").body["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    acknowledged.push("after".into());
    acknowledged.sort();
    assert_eq!(
        listed, acknowledged,
        "{failed} failed; the rest were acknowledged"
    );
}

#[test]
fn journal_records_get_the_api_checks_when_loaded() {
    let (day, later) = (at(86400), at(90000));
    let ok = put(1710, &stored("ok", &day, &later));
    let cases: Vec<(&str, Vec<String>, usize, Vec<&str>)> = vec![
        (
            "bad event_id",
            vec![ok.clone(), put(1711, &stored("has space", &day, &later))],
            2,
            vec!["event_id \"has space\" is invalid"],
        ),
        (
            "two events on one group at once",
            vec![
                ok.clone(),
                put(1712, &stored("a", &day, &later)),
                put(1712, &stored("b", &at(88000), &at(92000))),
            ],
            3,
            vec!["group 1712", "\"b\"", "\"a\" (line 2)"],
        ),
        (
            "a group outside the allowed range",
            vec![put(3000, &stored("low", &day, &later))],
            1,
            vec!["group", "allow_below_dynamic_range"],
        ),
        (
            "held on another group than requested",
            vec![put(
                1713,
                &format!(
                    r#"{{"event_id":"moved","group":1714,"layout":"audio-only","start":"{day}","end":"{later}","source":"127.0.0.1"}}"#
                ),
            )],
            1,
            vec!["group 1713", "requested group 1714"],
        ),
        (
            "end before start",
            vec![ok.clone(), put(1715, &stored("back", &later, &day))],
            2,
            vec!["must be after start"],
        ),
        (
            "strict without a source",
            vec![put(
                1716,
                &format!(
                    r#"{{"event_id":"nosource","layout":"audio-only","start":"{day}","end":"{later}"}}"#
                ),
            )],
            1,
            vec!["source is required"],
        ),
    ];
    for (what, lines, line, words) in cases {
        let setup = Setup::new();
        write_journal(&setup, &lines);
        eprintln!("case: {what}");
        assert_refused(&setup, line, &words);
    }

    // Windows that overlap only through lead and trail (the configuration
    // changed since) are not refused: the later one waits, as after a reload.
    let setup = Setup::new();
    write_journal(
        &setup,
        &[
            put(1717, &stored("first", &day, &later)),
            put(1717, &stored("second", &at(90000 + 600), &at(94000))),
        ],
    );
    let relay = setup.start();
    assert_eq!(relay.get("/v1/reservations/second").status, 200);
    assert!(relay.log().contains("windows overlap on one group"));
}

#[test]
fn a_reload_that_held_reservations_would_not_pass_is_refused() {
    let mut setup = Setup::new();
    setup.extra = "[source]\npolicy = \"latch\"\n".into();
    let relay = setup.start();
    let body = format!(
        r#"{{"event_id": "nosource", "group": 1718, "layout": "audio-only", "start": "{}", "end": "{}"}}"#,
        at(86400),
        at(90000)
    );
    let created = relay.create(&body, "scheduled");
    // Strict needs a source this reservation lacks; the trail changes too.
    setup.extra = "[source]\npolicy = \"strict\"\n".into();
    setup.schedule = "lead = \"30m\"\ntrail = \"20m\"\n".into();
    reload(&setup, &relay, "configuration not reloaded");
    let log = relay.log();
    assert!(
        log.contains("\"nosource\"") && log.contains("source is required"),
        "{log}"
    );
    let now = relay.get("/v1/reservations/nosource");
    assert_eq!(
        now.body["window"], created.body["window"],
        "the running timing stays"
    );
}
