//! docs/configuration.md against the real binary: acknowledged changes survive `kill -9`, open
//! windows are bound again after a restart, damaged state stops start-up, a
//! torn last record (a crash mid-write, never acknowledged) is dropped.
//! Groups 400–450 are this file's.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[test]
fn sigkill_after_a_burst_keeps_exactly_the_acknowledged_set() {
    let setup = Setup::new();
    let relay = Arc::new(setup.start());
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let clients: Vec<_> = (0..4u16)
        .map(|t| {
            let (relay, acked) = (relay.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                for i in 0..12u16 {
                    let id = format!("c{t}-{i}");
                    let group = 400 + t * 12 + i;
                    // Every fourth window is open now (bound at once); the rest are next week.
                    let (start, end) = if i % 4 == 0 {
                        (at(0), at(3600))
                    } else {
                        (at(7 * 86400), at(7 * 86400 + 3600))
                    };
                    let a = relay.post(
                        "/v1/reservations",
                        &reservation(&id, Some(group), "audio-display-video", &start, &end),
                    );
                    assert_eq!(a.status, 201, "{}", a.text);
                    acked
                        .lock()
                        .unwrap()
                        .insert(id.clone(), (group, i % 4 == 0));
                    if i % 3 == 2 {
                        assert_eq!(relay.delete(&format!("/v1/reservations/{id}")).status, 200);
                        acked.lock().unwrap().remove(&id);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Right after the last acknowledged request.
    Arc::into_inner(relay).unwrap().crash();

    let relay = setup.start();
    let expected = acknowledged.lock().unwrap().clone();
    let listed = relay.get("/v1/reservations").body["reservations"]
        .as_array()
        .unwrap()
        .clone();
    let found: BTreeMap<String, u16> = listed
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_string(),
                r["group"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let want: BTreeMap<String, u16> = expected
        .iter()
        .map(|(id, (g, _))| (id.clone(), *g))
        .collect();
    assert_eq!(found, want);
    assert_eq!(want.len(), 4 * 8);
    assert_eq!(relay.get("/readyz").status, 200);
    for (id, (group, open)) in &expected {
        let r = relay.get(&format!("/v1/reservations/{id}"));
        let state = if *open { "active" } else { "scheduled" };
        assert_eq!(r.body["state"], state, "{id}");
        assert_eq!(
            port_taken(base(*group)),
            *open,
            "{id}: group {group} bound iff its window is open"
        );
    }
    // Deleted reservations stay deleted, and their groups free.
    for t in 0..4u16 {
        for i in (2..12u16).step_by(3) {
            assert_eq!(relay.get(&format!("/v1/reservations/c{t}-{i}")).status, 404);
            assert!(!port_taken(base(400 + t * 12 + i)));
        }
    }
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_binds_again() {
    let group = 450;
    let setup = Setup::new();
    let mut relay = setup.start();
    assert_eq!(
        relay
            .post(
                "/v1/reservations",
                &reservation("live", Some(group), "audio-only", &at(0), &at(600))
            )
            .status,
        201
    );
    assert!(port_taken(base(group)));
    relay.signal(Signal::SIGTERM);
    let status = relay
        .wait(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(!port_taken(base(group)));
    let relay = setup.start();
    assert_eq!(relay.get("/v1/reservations/live").body["state"], "active");
    assert!(port_taken(base(group)) && port_taken(base(group) + 1));
}

/// Two acknowledged reservations, a day ahead; the journal's two lines.
fn two_reservations(setup: &Setup) -> Vec<Vec<u8>> {
    let relay = setup.start();
    for id in ["a", "b"] {
        let body = reservation(id, None, "audio-only", &at(86400), &at(90000));
        assert_eq!(relay.post("/v1/reservations", &body).status, 201);
    }
    let bytes = std::fs::read(setup.state_path()).unwrap();
    let lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines.len(), 2);
    lines
}

#[test]
fn damaged_state_stops_start_up_naming_the_file_and_line() {
    let setup = Setup::new();
    let mut lines = two_reservations(&setup);
    // A flipped bit in the first record: damage, not a torn write.
    lines[0][20] ^= 0x01;
    let path = setup.state_path();
    let bytes = lines.concat();
    std::fs::write(&path, &bytes).unwrap();

    let (status, err) = setup.start_refused();
    assert_eq!(status, Some(2), "{err}");
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("damaged at line 1")
            && err.contains("restore the file from a backup"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the damaged file is left as it was"
    );
}

#[test]
fn a_torn_last_record_is_dropped_with_a_warning() {
    let setup = Setup::new();
    let mut lines = two_reservations(&setup);
    // A crash in the middle of writing "b": it was never acknowledged.
    let torn = lines[1].len() / 2;
    lines[1].truncate(torn);
    let path = setup.state_path();
    std::fs::write(&path, lines.concat()).unwrap();

    let relay = setup.start();
    assert_eq!(relay.get("/v1/reservations/a").status, 200);
    assert_eq!(relay.get("/v1/reservations/b").status, 404);
    let log = relay.log();
    assert!(
        log.contains("WARN") && log.contains("torn") && log.contains("line=2"),
        "{log}"
    );
    // Gone from the file too: the next record starts on a line of its own.
    assert_eq!(std::fs::read(&path).unwrap(), lines[0]);
    let body = reservation("c", None, "audio-only", &at(86400), &at(90000));
    assert_eq!(relay.post("/v1/reservations", &body).status, 201);
    relay.crash();
    let relay = setup.start();
    assert_eq!(relay.get("/v1/reservations/c").status, 200);
}

/// Every file under `dir`: its path, contents and modification time.
fn footprint(dir: &Path) -> Vec<(PathBuf, Vec<u8>, SystemTime)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(footprint(&path));
        } else {
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            files.push((path.clone(), std::fs::read(&path).unwrap(), modified));
        }
    }
    files.sort();
    files
}

/// Runs `rtp-relay run --config config` expecting it to refuse to start: its
/// exit status and stderr (a relay still running after 20 s fails the test).
fn refused(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "a second relay started: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_relay_that_cannot_start_leaves_nothing_behind() {
    let group = 449;
    let setup = Setup::new();
    let first = setup.start();
    let body = reservation("first", Some(group), "audio-only", &at(0), &at(600));
    assert_eq!(first.post("/v1/reservations", &body).status, 201);
    let wowza = UdpSocket::bind(("127.0.0.1", base(group) - 16384)).unwrap();
    wowza
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let appliance = UdpSocket::bind("127.0.0.1:0").unwrap();
    let state_dir = setup.state_path().parent().unwrap().to_path_buf();
    let before = footprint(&state_dir);
    assert_eq!(before.len(), 2, "journal and lock: {before:?}");

    let listen = first.url.trim_start_matches("http://").to_string();
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let own_listen = "listen = \"127.0.0.1:0\"";
    let own_state = setup.state_path().display().to_string();
    assert!(config.contains(own_listen) && config.contains(&own_state));
    let second = tempfile::tempdir().unwrap();
    let second_state = second.path().join("state/reservations");
    let cases = [
        (
            "the same listen address",
            format!("listen = \"{listen}\""),
            second_state.display().to_string(),
            vec![
                format!("control.listen {listen}: cannot listen"),
                "choose another address".to_string(),
            ],
        ),
        (
            "another listen address, the same state file",
            own_listen.to_string(),
            own_state.clone(),
            vec![
                format!("state file {own_state} is in use by another rtp-relay"),
                "give this one its own [state] path".to_string(),
            ],
        ),
    ];
    for (seq, (case, listen, state, says)) in cases.into_iter().enumerate() {
        let path = second.path().join("relay.toml");
        let text = config
            .replace(own_listen, &listen)
            .replace(&own_state, &state);
        std::fs::write(&path, text).unwrap();
        let (status, err) = refused(&path);
        assert_eq!(status, Some(1), "{case}: {err}");
        for said in says {
            assert!(err.contains(&said), "{case}: {err:?} does not say {said:?}");
        }
        // Nothing of the second relay's is left: only its configuration.
        let left: Vec<_> = std::fs::read_dir(second.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["relay.toml"], "{case}");
        // The first one's state is as it was; it holds its port, forwards, answers.
        assert_eq!(footprint(&state_dir), before, "{case}");
        assert!(port_taken(base(group)), "{case}");
        appliance
            .send_to(&rtp(0x449, seq as u16, 100), ("127.0.0.1", base(group)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = wowza.recv_from(&mut buf).expect(case);
        assert_eq!(&buf[..n], &rtp(0x449, seq as u16, 100)[..], "{case}");
        let view = first.get("/v1/reservations/first");
        assert_eq!(view.status, 200, "{case}");
    }
}
