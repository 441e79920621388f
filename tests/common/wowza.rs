//! What the SDP tests share: child processes (`rtp-relay gen`, ffmpeg) run in
//! the test's network namespace or in one of [`super::netns`]'s, killed when
//! dropped (also when the test fails); a reservation's SDP once the relay has
//! it; and base64 as RFC 6184's `sprop-parameter-sets` writes it.

use super::*;
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

/// A child process, killed and reaped when dropped: no test leaves one behind.
pub struct Spawned {
    pub child: Child,
}

impl Spawned {
    /// Spawns `command` inside the network namespace at `ns` (the test's own
    /// when None).
    pub fn start(command: &mut Command, ns: Option<&Path>) -> std::io::Result<Spawned> {
        let _file = super::in_netns_when_spawned(command, ns)?;
        Ok(Spawned {
            child: command.spawn()?,
        })
    }

    /// Sends `sig` unless the process has exited and been reaped.
    pub fn signal(&mut self, sig: Signal) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
        }
    }

    /// Its exit status, waiting at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` to its end on a thread of its own (so the child never blocks
/// on a full pipe); join for the text.
pub fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `rtp-relay gen ARGS --json` in namespace `ns` and returns its report;
/// fails the test when gen fails or is still running after 30 s.
pub fn run_gen(ns: Option<&Path>, args: &[&str]) -> Value {
    let mut command = Command::new(BIN);
    command
        .arg("gen")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Spawned::start(&mut command, ns).expect("gen starts");
    let out = read_all(child.child.stdout.take().unwrap());
    let err = read_all(child.child.stderr.take().unwrap());
    let status = child
        .wait(Duration::from_secs(30))
        .expect("gen still running after 30 s");
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "gen {args:?} failed ({status}): {err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["send_errors"], 0, "{report}");
    report
}

/// `GET /v1/reservations/{id}/sdp{query}`.
pub fn sdp(relay: &Relay, id: &str, query: &str) -> Answer {
    relay.get(&format!("/v1/reservations/{id}/sdp{query}"))
}

/// The SDP text once the relay serves it (polled for at most `limit`).
pub fn sdp_when_ready(relay: &Relay, id: &str, query: &str, limit: Duration) -> String {
    let mut last = None;
    let ready = wait_until(limit, || {
        let a = sdp(relay, id, query);
        let ok = a.status == 200;
        last = Some(a);
        ok
    });
    let last = last.unwrap();
    assert!(ready, "no SDP for {id}{query} within {limit:?}: {last:?}");
    last.text
}

/// The files of `dir` (none of the relay's temporary ones: those start with
/// a dot), by name.
pub fn folder(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .map(|name| {
                    let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
                    (name, text)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Base64 (RFC 4648, padded), as `sprop-parameter-sets` carries a parameter set.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Everything `socket` receives until `stop` is set and it has been quiet
/// for 300 ms (at most 60 s in all), on a thread of its own.
pub fn receive_until(
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            match socket.recv(&mut buf) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(_) if stop.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        got
    })
}
