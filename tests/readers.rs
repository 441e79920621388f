//! Readers never wait on a mutation: with the state file on a filesystem
//! frozen by `fsfreeze` (a real ext4 on a loop device, as a stalled disk
//! behaves), a create hangs in its journal write while `/metrics`, the
//! reservation views and `/readyz` keep answering. Needs root (losetup,
//! mount, fsfreeze); `RTP_RELAY_SKIP_ROOT=1` skips it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn run(program: &str, args: &[&str]) -> String {
    root_command(program, args, "RTP_RELAY_SKIP_ROOT")
}

/// A small ext4 on a loop device mounted at `at`; thawed, unmounted and
/// detached on drop, whatever the test did to it.
struct Disk {
    at: PathBuf,
    device: String,
    frozen: bool,
}

impl Disk {
    fn mount(image: &Path, at: &Path) -> Disk {
        std::fs::File::create(image)
            .and_then(|f| f.set_len(16 << 20))
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()]);
        let device = run("losetup", &["--find", "--show", &image.to_string_lossy()]);
        std::fs::create_dir_all(at).unwrap();
        let disk = Disk {
            at: at.to_path_buf(),
            device,
            frozen: false,
        };
        run("mount", &[&disk.device, &at.to_string_lossy()]);
        disk
    }

    fn freeze(&mut self) {
        run("fsfreeze", &["--freeze", &self.at.to_string_lossy()]);
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if std::mem::take(&mut self.frozen) {
            run("fsfreeze", &["--unfreeze", &self.at.to_string_lossy()]);
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let at = self.at.to_string_lossy().into_owned();
        if self.frozen {
            let _ = Command::new("fsfreeze").args(["--unfreeze", &at]).status();
        }
        let _ = Command::new("umount").args(["-l", &at]).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn readers_answer_while_a_create_waits_on_a_frozen_disk() {
    if skip_root("frozen-disk") {
        return;
    }
    let setup = Setup::new();
    // The state file lives in <dir>/state: that directory is the frozen disk.
    let state_dir = setup.state_path().parent().unwrap().to_path_buf();
    let disk = Disk::mount(&setup.dir.path().join("state.img"), &state_dir);
    let relay = setup.start();
    // Bound after the relay, so dropped before it: a failing test thaws the
    // disk before it waits for the relay to exit (a write to a frozen disk
    // cannot be interrupted, not even by SIGKILL).
    let mut disk = disk;
    let first = relay.post(
        "/v1/reservations",
        &reservation("before", Some(700), "audio-only", &at(0), &at(600)),
    );
    assert_eq!(first.status, 201, "{}", first.text);

    disk.freeze();
    let url = relay.url.clone();
    let create = std::thread::spawn(move || {
        let started = Instant::now();
        let body = reservation("stuck", Some(701), "audio-only", &at(0), &at(600));
        let answer = ureq::post(&format!("{url}/v1/reservations"))
            .config()
            .http_status_as_error(false)
            .build()
            .send(body.as_bytes());
        (answer.map(|r| r.status().as_u16()), started.elapsed())
    });
    // The create is now inside its journal write, holding the coordinator.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !create.is_finished(),
        "the create should wait on the frozen disk"
    );

    for path in [
        "/metrics",
        "/v1/reservations",
        "/v1/reservations/before",
        "/v1/groups/700",
        "/readyz",
        "/healthz",
    ] {
        let started = Instant::now();
        let answer = relay.get(path);
        let took = started.elapsed();
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        assert!(
            took < Duration::from_millis(500),
            "{path} took {took:?} while a create waited on the disk"
        );
    }
    let metrics = relay.get("/metrics").text;
    let info = |id: &str| {
        metrics.lines().any(|l| {
            l.starts_with("rtp_relay_group_info{") && l.contains(&format!("event_id=\"{id}\""))
        })
    };
    assert!(
        info("before") && !info("stuck"),
        "the scrape shows the state published before the create:\n{metrics}"
    );
    assert!(!create.is_finished(), "the disk is still frozen");

    disk.thaw();
    let (status, took) = create.join().unwrap();
    assert_eq!(
        status.unwrap(),
        201,
        "the create completes once the disk thaws"
    );
    assert!(took >= Duration::from_millis(500), "{took:?}");
    let listed = relay.get("/v1/reservations/stuck");
    assert_eq!(listed.status, 200, "{}", listed.text);
}
