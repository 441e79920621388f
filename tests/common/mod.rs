//! Test harness: runs the real `rtp-relay` binary on loopback with its own
//! configuration and state in a temporary directory, and talks HTTP to it;
//! builds the RTP and RTCP packets the tests send. [`netns`] runs it in
//! network namespaces of the test's own instead.
#![allow(dead_code)]

pub mod etcd;
pub mod netns;
pub mod wowza;

use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use webrtc_util::marshal::Marshal;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rtp-relay");

/// Base port of group `g`.
pub fn base(g: u16) -> u16 {
    65528 - 8 * g
}

/// RFC 3339 text of now + `secs`.
pub fn at(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&Rfc3339)
        .unwrap()
}

/// True when a UDP port on 127.0.0.1 is held by someone (the relay).
pub fn port_taken(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// True (and says so) when `RTP_RELAY_SKIP_ROOT=1` asks to skip the tests that
/// need root for loop disks and mounts (`what` names the test).
pub fn skip_root(what: &str) -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_ROOT").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_ROOT=1: {what} test skipped");
    }
    skip
}

/// Makes `command` start in the network namespace at `ns` (the test's own
/// when `None`); the namespace's file, which must stay open until the spawn.
pub fn in_netns_when_spawned(
    command: &mut Command,
    ns: Option<&Path>,
) -> std::io::Result<Option<std::fs::File>> {
    // Opened before the fork: the child only calls setns (async-signal-safe).
    let file = ns.map(std::fs::File::open).transpose()?;
    if let Some(file) = &file {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = file.as_raw_fd();
        // SAFETY: setns on an fd that stays open until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Ok(file)
}

/// Runs a command that needs root (`ip`, `losetup`, `mount`, …) and returns
/// its output; panics with its error and the variable that skips such tests.
pub fn root_command(program: &str, args: &[&str], skip_variable: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); {skip_variable}=1 skips this test")
        });
    assert!(
        out.status.success(),
        "{program} {}: {} (this test needs root; {skip_variable}=1 skips it)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asserts that the stream watch of `relay` (run with a 1 s `stall_timeout`)
/// logs a stream's life — started, drops, stalled — then, while `send(seq)`
/// sends a restarted encoder's packets (until the watch has seen them: it
/// looks at each port once a second), resumed and SSRC changed. The log.
pub fn assert_stream_life_logged(relay: &Relay, mut send: impl FnMut(u16)) -> String {
    let logged = |what: &str| wait_until(Duration::from_secs(5), || relay.log().contains(what));
    for what in ["stream started", "packets dropped", "stream stalled"] {
        assert!(logged(what), "{what}: {}", relay.log());
    }
    let mut seq = 1000;
    let resumed = wait_until(Duration::from_secs(5), || {
        send(seq);
        seq += 1;
        relay.log().contains("stream resumed")
    });
    assert!(resumed, "{}", relay.log());
    assert!(logged("SSRC changed"), "{}", relay.log());
    relay.log()
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// An RTP packet (version 2, payload type 96, 48 kHz timestamps) of
/// `payload_len` bytes of payload that differ with the position and `seq`.
pub fn rtp(ssrc: u32, seq: u16, payload_len: usize) -> Vec<u8> {
    let p = rtp::packet::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq) * 960,
            ssrc,
            ..Default::default()
        },
        payload: (0..payload_len)
            .map(|i| (i as u8) ^ (seq as u8))
            .collect::<Vec<u8>>()
            .into(),
    };
    p.marshal().unwrap().to_vec()
}

/// Sends `rtp(ssrc, seq, payload_len(seq))` for every `seq` from `from` to
/// `to`; returns the packets sent.
pub fn send_rtp(
    from: &UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    seqs: Range<u16>,
    payload_len: impl Fn(u16) -> usize,
) -> Vec<Vec<u8>> {
    seqs.map(|seq| {
        let p = rtp(ssrc, seq, payload_len(seq));
        from.send_to(&p, to).unwrap();
        p
    })
    .collect()
}

/// An RTCP sender report (28 bytes: no reception report blocks).
pub fn sender_report(ssrc: u32) -> Vec<u8> {
    SenderReport {
        ssrc,
        ntp_time: 0x1234_5678_9abc_def0,
        rtp_time: 3000,
        packet_count: 8,
        octet_count: 800,
        ..Default::default()
    }
    .marshal()
    .unwrap()
    .to_vec()
}

/// An RTCP receiver report (32 bytes) with one block about `media_ssrc`:
/// `lost` packets lost, a fraction lost of 51/256.
pub fn receiver_report(media_ssrc: u32, lost: u32) -> Vec<u8> {
    ReceiverReport {
        ssrc: 0xfeed,
        reports: vec![ReceptionReport {
            ssrc: media_ssrc,
            fraction_lost: 51,
            total_lost: lost,
            last_sequence_number: 9,
            jitter: 90,
            ..Default::default()
        }],
        ..Default::default()
    }
    .marshal()
    .unwrap()
    .to_vec()
}

/// Everything `s` receives until it is quiet for its read timeout.
pub fn drain(s: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        out.push((buf[..n].to_vec(), from));
    }
    out
}

/// A temporary directory with a relay configuration in it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    /// `[data] bind_address`.
    pub bind_address: String,
    /// `[data] recv_buffer_bytes` and `send_buffer_bytes`; None: the relay's default.
    pub socket_buffers: Option<usize>,
    /// Extra TOML appended to the base configuration (sections may repeat keys
    /// only if the base does not set them).
    pub extra: String,
    /// `[schedule]` section.
    pub schedule: String,
    /// `[data]` keys beyond `bind_address` and the buffers.
    pub data: String,
    /// `[control]` keys beyond `listen`.
    pub control: String,
    /// `[wowza]` section.
    pub wowza: String,
}

impl Setup {
    pub fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            bind_address: "127.0.0.1".into(),
            socket_buffers: Some(65536),
            extra: String::new(),
            schedule: "lead = \"30m\"\ntrail = \"15m\"\n".into(),
            data: String::new(),
            control: String::new(),
            wowza: "address = \"127.0.0.1\"\nport_offset = -16384\n".into(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("relay.toml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state/reservations")
    }

    pub fn write_config(&self) -> PathBuf {
        // Tests never attach the fast path to this namespace's interfaces;
        // the fast-path tests run the relay in namespaces of their own.
        let fast_path = if self.data.contains("fast_path") {
            ""
        } else {
            "fast_path = \"off\"\n"
        };
        let buffers = self
            .socket_buffers
            .map(|n| format!("recv_buffer_bytes = {n}\nsend_buffer_bytes = {n}\n"))
            .unwrap_or_default();
        let text = format!(
            "[control]\nlisten = \"127.0.0.1:0\"\n{}\n[data]\nbind_address = \"{}\"\n{buffers}{fast_path}{}\n[schedule]\n{}\n[wowza]\n{}\n[state]\npath = \"{}\"\n[log]\nlevel = \"debug\"\n{}",
            self.control,
            self.bind_address,
            self.data,
            self.schedule,
            self.wowza,
            self.state_path().display(),
            self.extra
        );
        let path = self.config_path();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the relay and waits until it listens.
    pub fn start(&self) -> Relay {
        Relay::start(&self.write_config())
            .unwrap_or_else(|log| panic!("relay did not start:\n{log}"))
    }

    /// Runs the relay expecting it to refuse to start: its exit status and
    /// stderr. A relay still running after 20 s is stopped and fails the test.
    pub fn start_refused(&self) -> (Option<i32>, String) {
        let log = self.dir.path().join("refused.log");
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(self.write_config())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap();
                panic!("the relay started where it should have refused to:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, std::fs::read_to_string(&log).unwrap())
    }

    /// As [`Setup::start`], inside the network namespace at `ns`.
    pub fn start_in(&self, ns: &Path) -> Relay {
        Relay::start_in(&self.write_config(), Some(ns))
            .unwrap_or_else(|log| panic!("relay did not start in {}:\n{log}", ns.display()))
    }
}

/// A running relay process.
pub struct Relay {
    child: Child,
    pub url: String,
    log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
    /// The network namespace it runs in (its control plane is reached from there).
    netns: Option<PathBuf>,
}

/// Moves the calling thread into the network namespace at `ns` (a
/// `/run/netns/…` file): the sockets it opens afterwards live there.
pub fn enter_netns(ns: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(ns)?;
    // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `ns` (this thread's own when None).
pub fn in_netns<T: Send>(ns: Option<&Path>, f: impl FnOnce() -> T + Send) -> T {
    let Some(ns) = ns else { return f() };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(ns).unwrap_or_else(|e| panic!("cannot enter {}: {e}", ns.display()));
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Relay {
    /// Spawns `rtp-relay run --config path`; Err(log) when it exits or never listens.
    pub fn start(config: &Path) -> Result<Relay, String> {
        Self::start_in(config, None)
    }

    /// As [`Relay::start`], inside network namespace `netns`.
    pub fn start_in(config: &Path, netns: Option<&Path>) -> Result<Relay, String> {
        Self::start_with(config, netns, |_| {})
    }

    /// As [`Relay::start_in`], with `prepare` applied to the command first
    /// (a resource limit in `pre_exec`, …).
    pub fn start_with(
        config: &Path,
        netns: Option<&Path>,
        prepare: impl FnOnce(&mut Command),
    ) -> Result<Relay, String> {
        Self::start_program(Path::new(BIN), config, netns, prepare)
    }

    /// As [`Relay::start_with`], running the binary at `program` (a copy of
    /// [`BIN`] the test replaces, for an upgrade in place).
    pub fn start_program(
        program: &Path,
        config: &Path,
        netns: Option<&Path>,
        prepare: impl FnOnce(&mut Command),
    ) -> Result<Relay, String> {
        let mut command = Command::new(program);
        command
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        prepare(&mut command);
        let _ns_file =
            in_netns_when_spawned(&mut command, netns).unwrap_or_else(|e| panic!("{netns:?}: {e}"));
        let mut child = spawn_fresh(&mut command);
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(log.lock().unwrap().join("\n"));
            }
        };
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build(),
        );
        Ok(Relay {
            child,
            url: format!("http://{addr}"),
            log,
            agent,
            netns: netns.map(Path::to_path_buf),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the relay logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn answer(
        &self,
        call: impl FnOnce() -> Result<ureq::http::Response<ureq::Body>, ureq::Error> + Send,
    ) -> Answer {
        let mut r = in_netns(self.netns.as_deref(), call).expect("HTTP request failed");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.answer(|| self.agent.get(format!("{}{path}", self.url)).call())
    }

    /// POSTs reservation `body`, which must be created (201) in `state`.
    pub fn create(&self, body: &str, state: &str) -> Answer {
        let a = self.post("/v1/reservations", body);
        assert_eq!(
            (a.status, a.body["state"].as_str()),
            (201, Some(state)),
            "{}",
            a.text
        );
        a
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        self.post_as(path, body, None)
    }

    pub fn post_as(&self, path: &str, body: &str, token: Option<&str>) -> Answer {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.answer(|| req.send(body))
    }

    pub fn patch(&self, path: &str, body: &str) -> Answer {
        self.answer(|| self.agent.patch(format!("{}{path}", self.url)).send(body))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.delete_as(path, None)
    }

    pub fn delete_as(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.agent.delete(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.answer(|| req.call())
    }

    /// Sends a signal to the relay.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL, as a crash.
    pub fn crash(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait(Duration::from_secs(5))
            .expect("killed relay exits");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A create body.
pub fn reservation(id: &str, group: Option<u16>, layout: &str, start: &str, end: &str) -> String {
    let group = group
        .map(|g| format!("\"group\": {g},"))
        .unwrap_or_default();
    format!(
        r#"{{"event_id": "{id}", {group} "layout": "{layout}", "start": "{start}", "end": "{end}", "source": "127.0.0.1"}}"#
    )
}

/// Spawns `command`, retrying while its program file is busy: a binary copied
/// just before (the upgrade tests) can still be open for writing in a child
/// another test thread forked meanwhile, until that child execs (ETXTBSY).
pub fn spawn_fresh(command: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match command.spawn() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

/// gen's targets and the sink's streams for the audio-display-video `groups`
/// on loopback: the sink on the ports 16384 below the groups' (where the
/// shipped configuration forwards), gen sending to the groups' ports
/// (`through_relay`) or straight to the sink's.
pub fn loopback_streams(
    groups: impl IntoIterator<Item = u32>,
    through_relay: bool,
) -> (
    Vec<rtp_relay::traffic::generator::Target>,
    Vec<rtp_relay::traffic::sink::Stream>,
) {
    use rtp_relay::group::{GroupId, Layout, Plane};
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let (mut targets, mut streams) = (Vec::new(), Vec::new());
    for g in groups {
        let g = GroupId::try_from(g).unwrap();
        for (pair, role) in Layout::AudioDisplayVideo.pairs() {
            let sink = g.port(pair, Plane::Rtp) - 16384;
            let to = if through_relay { sink + 16384 } else { sink };
            targets.push(rtp_relay::traffic::generator::Target {
                role,
                media: std::net::SocketAddr::new(localhost, to),
                control: std::net::SocketAddr::new(localhost, to + 1),
            });
            streams.push(rtp_relay::traffic::sink::Stream {
                role,
                media_port: sink,
                control_port: sink + 1,
            });
        }
    }
    (targets, streams)
}
