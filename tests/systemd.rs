//! The relay under systemd: the shipped unit passes `systemd-analyze verify`,
//! the real binary speaks the notify protocol to a test `NOTIFY_SOCKET`
//! (ready once its open windows are bound, the watchdog, reload, stop), and
//! its text logs suit the journal when stderr is the journal's stream.

mod common;

use common::{BIN, Relay, Setup, at, base, port_taken, reservation};
use nix::sys::signal::Signal;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dist/systemd/rtp-relay.service"
);

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "systemd-analyze is not installed (scripts/test installs Debian's systemd): unit check skipped"
        );
        return;
    }
    // verify insists that ExecStart's program exists: the built one stands in
    // for /usr/bin/rtp-relay, in a copy under the unit's own name.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/rtp-relay run --config /etc/rtp-relay/relay.toml"));
    let copy = dir.path().join("rtp-relay.service");
    std::fs::write(&copy, unit.replace("/usr/bin/rtp-relay", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown or misspelt key is only a warning with status 0: none may appear.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status
    );
}

/// The datagrams a relay sends to its `NOTIFY_SOCKET`, as they arrive.
struct Manager {
    messages: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        Manager {
            messages,
            _dir: dir,
            path,
        }
    }

    /// The next message other than a watchdog ping; the pings passed over
    /// are counted into `pings`.
    fn next_state(&self, pings: &mut usize, relay: &Relay) -> String {
        loop {
            let message = self
                .messages
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no notification in 20 s; log:\n{}", relay.log()));
            if message == "WATCHDOG=1\n" {
                *pings += 1;
            } else {
                return message;
            }
        }
    }
}

fn lines(message: &str) -> Vec<&str> {
    message.lines().collect()
}

#[test]
fn the_relay_tells_systemd_ready_after_binding_then_reloading_upgrading_stopping_and_that_it_lives()
{
    let group = 1811;
    let setup = Setup::new();
    // A state holding a reservation whose window is open.
    {
        let mut relay = setup.start();
        let body = reservation("open", Some(group), "audio-only", &at(-60), &at(3600));
        relay.create(&body, "active");
        relay.signal(Signal::SIGTERM);
        assert_eq!(relay.wait(Duration::from_secs(10)).unwrap().code(), Some(0));
        assert!(!port_taken(base(group)));
    }

    let manager = Manager::new();
    let mut relay = Relay::start_with(&setup.write_config(), None, |c| {
        c.env("NOTIFY_SOCKET", &manager.path)
            .env("WATCHDOG_USEC", "400000");
    })
    .unwrap_or_else(|log| panic!("relay did not start:\n{log}"));
    let mut pings = 0;

    let ready = manager.next_state(&mut pings, &relay);
    // Checked the moment READY=1 arrives: the open window's ports are held.
    let bound = port_taken(base(group)) && port_taken(base(group) + 1);
    assert_eq!(lines(&ready)[0], "READY=1", "{ready}");
    assert!(bound, "READY=1 before the open window's ports were bound");
    assert!(
        ready.contains("STATUS=reservations: 1, groups bound: 1,"),
        "{ready}"
    );

    // WATCHDOG_USEC = 400 ms: a ping about every 200 ms.
    let started = Instant::now();
    let mut quiet = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        match manager.messages.recv_timeout(Duration::from_millis(100)) {
            Ok(m) if m == "WATCHDOG=1\n" => pings += 1,
            Ok(m) => panic!("unexpected notification while idle: {m:?}"),
            Err(_) => quiet += 1,
        }
    }
    assert!(
        (4..=12).contains(&pings),
        "{pings} watchdog pings in 1.5 s at 200 ms"
    );
    assert!(quiet > 0);

    relay.signal(Signal::SIGHUP);
    let reloading = manager.next_state(&mut pings, &relay);
    let reloading = lines(&reloading);
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    let usec: u64 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .unwrap();
    assert!(usec > 0);
    let again = manager.next_state(&mut pings, &relay);
    assert_eq!(lines(&again)[0], "READY=1", "{again}");
    assert!(port_taken(base(group)), "a reload leaves the group bound");

    // An upgrade in place: reloading, then the new binary's own READY=1.
    relay.signal(Signal::SIGUSR2);
    let upgrading = manager.next_state(&mut pings, &relay);
    assert_eq!(lines(&upgrading)[0], "RELOADING=1", "{upgrading}");
    let upgraded = manager.next_state(&mut pings, &relay);
    assert_eq!(lines(&upgraded)[0], "READY=1", "{upgraded}");
    // The new process's own READY (a refused upgrade's would say so).
    assert!(
        upgraded.contains("STATUS=reservations: 1, groups bound: 1,"),
        "{upgraded}"
    );
    assert!(port_taken(base(group)), "an upgrade leaves the group bound");

    relay.signal(Signal::SIGTERM);
    let stopping = manager.next_state(&mut pings, &relay);
    assert_eq!(lines(&stopping)[0], "STOPPING=1", "{stopping}");
    let status = relay
        .wait(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// Runs the relay with stderr into a file and `JOURNAL_STREAM` set to that
/// file's `device:inode` when `journal` (else to another file's); stops it
/// once it listens. Its log.
fn logs_with_journal_stream(journal: bool) -> String {
    let setup = Setup::new();
    let config = setup.write_config();
    let log_path = setup.dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let named = if journal {
        log_path.clone()
    } else {
        config.clone()
    };
    let meta = std::fs::metadata(&named).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let listening = common::wait_until(Duration::from_secs(20), || {
        read(&log_path).contains("control plane listening")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let text = read(&log_path);
    assert!(listening && status.success(), "{status:?}\n{text}");
    text
}

#[test]
fn on_the_journal_text_logs_carry_priorities_and_leave_the_time_to_it() {
    let text = logs_with_journal_stream(true);
    let line = text
        .lines()
        .find(|l| l.contains("control plane listening"))
        .unwrap();
    assert!(line.starts_with("<6> INFO "), "{line}");
    for line in text.lines().filter(|l| l.contains("DEBUG")) {
        assert!(line.starts_with("<7>"), "{line}");
    }
    assert!(
        !text.contains("\x1b["),
        "no colours in the journal:\n{text}"
    );

    // A JOURNAL_STREAM that is not stderr (inherited, stderr redirected since):
    // the usual lines, each with its own timestamp.
    let text = logs_with_journal_stream(false);
    let line = text
        .lines()
        .find(|l| l.contains("control plane listening"))
        .unwrap();
    let year = time::OffsetDateTime::now_utc().year().to_string();
    assert!(line.starts_with(&year), "{line}");
}
