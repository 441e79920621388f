//! The control plane's edge under hostile or careless use, against the real
//! binary: metric labels an anonymous client cannot multiply, connections that
//! cannot starve the API or the data plane of file descriptors, a warning for
//! an API open beyond loopback without a token, and the fast path's pins that
//! would not outlive the process (docs/configuration.md).

mod common;
use common::netns::{Net, skip_netns};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// The relay's control address, `host:port`.
fn control_addr(relay: &Relay) -> String {
    relay.url.trim_start_matches("http://").to_string()
}

/// Sends `request` raw on a new connection and returns the answer's status
/// line (empty when the connection closed without one).
fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_string()
}

#[test]
fn arbitrary_methods_add_no_metric_series() {
    let relay = Setup::new().start();
    let addr = control_addr(&relay);
    for i in 0..200u32 {
        let method = format!("M{i}X{:08X}", fastrand::u32(..));
        let path = ["/v1/reservations", "/healthz", "/nowhere"][i as usize % 3];
        let status = raw(
            &addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            status.starts_with("HTTP/1.1 4"),
            "{method} {path}: {status}"
        );
    }
    let metrics = relay.get("/metrics").text;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("rtp_relay_control_requests_total{"))
        .collect();
    assert!(
        series.len() <= 4,
        "{} series after 200 methods:\n{}",
        series.len(),
        series.join("\n")
    );
    let others: f64 = series
        .iter()
        .filter(|l| l.contains("method=\"other\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(others, 200.0, "{}", series.join("\n"));
}

/// The warning `run` and `check-config` give for an API open beyond loopback
/// without a token.
const OPEN_API: &str = "without a token_file";

/// `check-config` on `listen`, with a token file or not.
fn check_config(setup: &Setup, listen: &str, token: bool) -> String {
    let path = config_listening_on(setup, listen, token);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `setup`'s configuration with the control plane on `listen`, and a
/// token file when `token`.
fn config_listening_on(setup: &Setup, listen: &str, token: bool) -> std::path::PathBuf {
    let path = setup.write_config();
    let mut text = std::fs::read_to_string(&path).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
    );
    if token {
        let file = setup.dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        text = text.replace(
            "[control]\n",
            &format!("[control]\ntoken_file = \"{}\"\n", file.display()),
        );
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_warns_of_an_open_api_without_a_token() {
    let setup = Setup::new();
    for (listen, token, warned) in [
        ("0.0.0.0:9870", false, true),
        ("[::]:9870", false, true),
        ("0.0.0.0:9870", true, false),
        ("127.0.0.1:9870", false, false),
        ("[::1]:9870", false, false),
    ] {
        let out = check_config(&setup, listen, token);
        let line = out
            .lines()
            .find(|l| l.starts_with("# bearer token:"))
            .unwrap_or_else(|| panic!("no bearer token line:\n{out}"));
        assert_eq!(
            line.contains(OPEN_API) && line.contains("WARNING"),
            warned,
            "{listen} token={token}: {line}"
        );
    }
}

#[test]
fn run_warns_of_an_open_api_without_a_token() {
    if skip_netns() {
        return;
    }
    // In a namespace of its own: 0.0.0.0 there is that namespace's loopback.
    let net = Net::new();
    for (token, warned) in [(false, true), (true, false)] {
        let path = config_listening_on(&net.setup, "0.0.0.0:0", token);
        let relay = Relay::start_in(&path, Some(&net.relay_ns()))
            .unwrap_or_else(|log| panic!("relay did not start:\n{log}"));
        let log = relay.log();
        let warning = log
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains(OPEN_API));
        assert_eq!(warning, warned, "token={token}:\n{log}");
    }
}

/// What a relay whose fast-path pins go away with it says (log and `check-config`).
const PRIVATE_PINS: &str = "would not outlive";

fn skip_ebpf() -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_EBPF").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_EBPF=1: fast-path test skipped");
    }
    skip || skip_netns()
}

/// `ip netns exec <the relay's namespace> rtp-relay <args> --config …`, as an
/// operator would start it: a mount namespace of its own, `/sys` remounted
/// without the host's bpffs. Runs until it prints `until` on stderr or exits
/// (at most 20 s); returns its exit status if it exited, and its stderr.
fn via_ip_netns_exec(net: &Net, args: &[&str], until: &str) -> (Option<i32>, String) {
    let config = net.setup.write_config();
    let ns = net.relay_ns();
    let name = ns.file_name().unwrap().to_str().unwrap();
    let log = net.setup.dir.path().join("stderr");
    let mut child = Command::new("ip")
        .args(["netns", "exec", name, BIN])
        .args(args)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(20);
    let mut status = None;
    while Instant::now() < end && !text().contains(until) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s.code().unwrap_or(-1));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let mut stdout = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.wait();
    (status, format!("{}{stdout}", text()))
}

fn fast_path_net(data: &str) -> Net {
    let mut net = Net::new();
    net.setup.data = data.into();
    net
}

const LISTENING: &str = "control plane listening";

/// Runs the relay of `net`, which must start on the fast path and warn that
/// its pins would not outlive it.
fn starts_with_private_pins_warned(net: &Net) {
    let (status, log) = via_ip_netns_exec(net, &["run"], LISTENING);
    assert_eq!(status, None, "the relay starts:\n{log}");
    assert!(log.contains("path=\"ebpf\""), "on the fast path:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains(PRIVATE_PINS)),
        "and says its pins would not outlive it:\n{log}"
    );
}

/// `check-config`'s data-path line for `net`'s relay.
fn data_path_line(net: &Net) -> String {
    let (_, out) = via_ip_netns_exec(net, &["check-config"], "# data path:");
    let line = out.lines().find(|l| l.starts_with("# data path:"));
    line.unwrap_or_else(|| panic!("no data path line:\n{out}"))
        .to_string()
}

#[test]
fn auto_warns_when_its_pins_would_not_outlive_the_process() {
    if skip_ebpf() {
        return;
    }
    let net = fast_path_net("fast_path = \"auto\"\n");
    starts_with_private_pins_warned(&net);
    let line = data_path_line(&net);
    assert!(line.contains(PRIVATE_PINS), "{line}");
}

#[test]
fn ebpf_refuses_pins_that_would_not_outlive_the_process_unless_told() {
    if skip_ebpf() {
        return;
    }
    let net = fast_path_net("fast_path = \"ebpf\"\n");
    let (status, log) = via_ip_netns_exec(&net, &["run"], LISTENING);
    assert_eq!(status, Some(1), "the relay refuses to start:\n{log}");
    let reason = log.trim_end().lines().last().unwrap_or("");
    assert!(
        reason.contains(PRIVATE_PINS) && reason.contains("fast_path_private_pins"),
        "one line naming the reason and the key: {log}"
    );
    let line = data_path_line(&net);
    assert!(
        line.contains("would refuse") && line.contains(PRIVATE_PINS),
        "{line}"
    );

    let net = fast_path_net("fast_path = \"ebpf\"\nfast_path_private_pins = true\n");
    starts_with_private_pins_warned(&net);
}

/// The open-files limit of the relays below: fewer than the idle connections
/// they are sent.
const FEW_FILES: u64 = 256;

/// Starts `setup`'s relay with an open-files limit of [`FEW_FILES`].
fn start_with_few_files(setup: &Setup) -> Relay {
    use std::os::unix::process::CommandExt;
    Relay::start_with(&setup.write_config(), None, |command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: FEW_FILES,
                    rlim_max: FEW_FILES,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .unwrap_or_else(|log| panic!("relay did not start:\n{log}"))
}

/// `GET /healthz` on a new connection: the status line, and how long it took.
fn healthz(addr: &str) -> (String, Duration) {
    let started = Instant::now();
    let status = raw(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    );
    (status, started.elapsed())
}

#[test]
fn idle_connections_starve_neither_the_api_nor_the_data_plane() {
    let setup = Setup::new();
    let relay = start_with_few_files(&setup);
    let addr = control_addr(&relay);
    // The harness's client keeps this connection for the create below, if the
    // relay lets it: the create then reaches the relay whatever the flood does.
    assert_eq!(relay.get("/healthz").status, 200);
    // More idle connections than the relay may open files, all held.
    let idle: Vec<TcpStream> = (0..FEW_FILES + 44)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // A reservation binds every port (no EMFILE) while they are held…
    let a = relay.post(
        "/v1/reservations",
        &reservation("held", Some(470), "audio-dual-video", &at(0), &at(600)),
    );
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (201, Some("active")),
        "{}",
        a.text
    );
    for port in base(470)..base(470) + 6 {
        assert!(port_taken(port), "port {port} is not bound:\n{}", a.text);
    }

    // …and a fresh connection is answered at once.
    let (status, took) = healthz(&addr);
    assert_eq!(
        status,
        "HTTP/1.1 200 OK",
        "after {took:?}:\n{}",
        relay.log()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(idle);
}

/// How long until the server closes `s` (it may answer first), at most 20 s.
fn closed_after(mut s: &TcpStream, started: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    started.elapsed()
}

#[test]
fn silent_and_slow_clients_are_closed_after_a_few_seconds() {
    let relay = Setup::new().start();
    let addr = control_addr(&relay);
    let connect = |sent: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(sent.as_bytes()).unwrap();
        s
    };
    let started = Instant::now();
    let silent = connect("");
    let partial_head = connect("GET /healthz HTTP/1.1\r\nHost: rel");
    let partial_body = connect(
        "POST /v1/reservations HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{\"event_id\"",
    );
    // A kept-alive connection, idle after its answer.
    let mut kept = connect("GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n");
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !answer.ends_with(b"ok\n") {
        let n = kept.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    for (what, s, limit) in [
        ("silent", &silent, 8),
        ("partial head", &partial_head, 8),
        ("kept alive", &kept, 8),
        ("partial body", &partial_body, 13),
    ] {
        let took = closed_after(s, started);
        assert!(
            took < Duration::from_secs(limit),
            "{what}: closed after {took:?}"
        );
    }
    assert_eq!(healthz(&addr).0, "HTTP/1.1 200 OK");
}
