//! Wowza's RTP ingest played by a real decoder. ffmpeg (Debian's `ffmpeg`) is
//! the appliance: a libx264 test pattern (baseline, 15 frames/s, a keyframe
//! every second with its SPS and PPS before it) and AAC audio as RTP into a
//! reservation whose audio parameters are the ones ffmpeg's own SDP gives, as
//! an operator would copy them. A second ffmpeg then reads the SDP the relay
//! wrote into `[wowza] sdp_dir` and decodes what the relay forwards, as Wowza
//! does; nearly every frame sent while it listens must come out decoded.
//!
//! On the userspace data path over loopback, and on the kernel fast path in
//! network namespaces of the test's own ([`common::netns`]; root), where the
//! relay process is stopped while the decoder counts: the kernel alone
//! forwards what it decodes.
//!
//! Where ffmpeg is missing these tests fail; `RTP_RELAY_SKIP_FFMPEG=1` skips
//! them, `RTP_RELAY_SKIP_EBPF=1` the fast-path one. Groups 530–534 are this
//! file's.

mod common;
use common::netns::*;
use common::wowza::*;
use common::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERSPACE: u16 = 530;
const KERNEL: u16 = 531;

/// The appliance's frame rate.
const FPS: u32 = 15;
/// How long the appliance sends, in seconds.
const SENDING: u32 = 9;
/// The measured interval: four seconds of frames from the first one decoded.
const WINDOW_SECONDS: u32 = 4;
/// The share of the frames sent in the interval that must come out decoded.
const DECODED: f64 = 0.9;

/// True (and says so) when `RTP_RELAY_SKIP_FFMPEG=1` asks to skip these tests.
fn skip() -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_FFMPEG").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_FFMPEG=1: ffmpeg test skipped");
    }
    skip
}

/// Starts ffmpeg with `args` in namespace `ns`; fails naming the package when
/// there is no ffmpeg.
fn ffmpeg(ns: Option<&Path>, args: &[String]) -> Spawned {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-nostdin"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Spawned::start(&mut command, ns).unwrap_or_else(|e| {
        panic!(
            "cannot run ffmpeg ({e}): install Debian's ffmpeg package \
             (apt-get install ffmpeg); RTP_RELAY_SKIP_FFMPEG=1 skips this test"
        )
    })
}

/// The appliance's command line: `seconds` of 640×360 test pattern as H.264
/// to `video` and of a sine as AAC to `audio` (RTCP to the ports above
/// each), from `local`, paced in real time. The parameter sets go in-band
/// before every keyframe (`repeat-headers`) and, with the global header, into
/// ffmpeg's own SDP as well.
fn appliance_args(seconds: f64, local: &str, video: SocketAddr, audio: SocketAddr) -> Vec<String> {
    let t = format!("{seconds}");
    let video_source = format!("testsrc=size=640x360:rate={FPS}");
    let args = [
        "-loglevel",
        "error",
        "-re",
        "-t",
        &t,
        "-f",
        "lavfi",
        "-i",
        &video_source,
        "-re",
        "-t",
        &t,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-map",
        "0:v",
        "-c:v",
        "libx264",
        "-threads",
        "1",
        "-pix_fmt",
        "yuv420p",
        "-profile:v",
        "baseline",
        "-g",
        "15",
        "-flags:v",
        "+global_header",
        "-x264-params",
        "repeat-headers=1",
        "-f",
        "rtp",
        "-payload_type",
        "96",
        &format!("rtp://{video}?localaddr={local}"),
        "-map",
        "1:a",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-f",
        "rtp",
        "-payload_type",
        "97",
        &format!("rtp://{audio}?localaddr={local}"),
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// What the encoder's own SDP says.
struct EncoderSdp {
    /// `a=rtpmap:97` and `a=fmtp:97`, after the payload type.
    audio_rtpmap: String,
    audio_fmtp: String,
    /// The video's fmtp parameters.
    sprop_parameter_sets: String,
    profile_level_id: String,
}

/// Runs the appliance briefly toward sockets of the test's to read the SDP
/// ffmpeg writes for its streams.
fn encoder_sdp() -> EncoderSdp {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("encoder.sdp");
    let video = UdpSocket::bind("127.0.0.1:0").unwrap();
    let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut args = appliance_args(
        0.3,
        "127.0.0.1",
        video.local_addr().unwrap(),
        audio.local_addr().unwrap(),
    );
    args.extend(["-sdp_file".to_string(), file.display().to_string()]);
    let mut encoder = ffmpeg(None, &args);
    let err = read_all(encoder.child.stderr.take().unwrap());
    let status = encoder
        .wait(Duration::from_secs(20))
        .expect("ffmpeg still running after 20 s");
    let err = err.join().unwrap();
    assert!(status.success(), "ffmpeg failed ({status}): {err}");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in ffmpeg's SDP:\n{text}"))
            .to_string()
    };
    let video_fmtp = line("a=fmtp:96 ");
    let param = |key: &str| {
        video_fmtp
            .split(';')
            .find_map(|p| p.trim().strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key} in ffmpeg's fmtp {video_fmtp}"))
            .to_string()
    };
    EncoderSdp {
        audio_rtpmap: line("a=rtpmap:97 "),
        audio_fmtp: line("a=fmtp:97 "),
        sprop_parameter_sets: param("sprop-parameter-sets"),
        profile_level_id: param("profile-level-id"),
    }
}

/// Where the three parties run.
struct Parties<'a> {
    relay: &'a Relay,
    /// The appliance's namespace and address.
    appliance_ns: Option<PathBuf>,
    appliance: &'a str,
    /// Where the appliance sends (the relay's bind address).
    relay_address: &'a str,
    /// Wowza's namespace and address (the SDP's `c=`).
    wowza_ns: Option<PathBuf>,
    wowza: &'a str,
    /// `[wowza] sdp_dir`.
    sdp_dir: PathBuf,
    /// Stop the relay process while the decoder counts (the fast path).
    freeze: bool,
}

/// One line of the decoder's framecrc output: stream, timestamp.
fn frame(line: &str) -> Option<(u32, i64)> {
    let mut fields = line.split(',').map(str::trim);
    let stream = fields.next()?.parse().ok()?;
    let pts = fields.next()?.parse().ok()?;
    Some((stream, pts))
}

/// The time base of `stream` from framecrc's `#tb N: NUM/DEN` header.
fn time_base(lines: &[String], stream: u32) -> (i64, i64) {
    let prefix = format!("#tb {stream}: ");
    let tb = lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in the decoder's output"));
    let (num, den) = tb.trim().split_once('/').unwrap();
    (num.parse().unwrap(), den.parse().unwrap())
}

/// The appliance sends into reservation `id` on `group`; once the relay's SDP
/// is ready the decoder starts from the file in `sdp_dir` and decodes until
/// the appliance stops. Every frame slot of the first four seconds after the
/// first decoded frame is a frame the appliance sent while the decoder
/// listened: at least 90 % of them must come out decoded, and as much audio.
fn decode_through_the_relay(p: &Parties, id: &str, group: u16) {
    let encoder = encoder_sdp();
    let body = format!(
        r#"{{"event_id": "{id}", "group": {group}, "layout": "audio-video", "start": "{}", "end": "{}", "source": "{}", "media": {{"primary_audio": {{"rtpmap": "{}", "fmtp": "{}"}}}}}}"#,
        at(0),
        at(600),
        p.appliance,
        encoder.audio_rtpmap,
        encoder.audio_fmtp
    );
    p.relay.create(&body, "active");
    let relay_port = |pair: u16| -> SocketAddr {
        SocketAddr::new(p.relay_address.parse().unwrap(), base(group) + 2 * pair)
    };

    let started = Instant::now();
    let args = appliance_args(
        f64::from(SENDING),
        p.appliance,
        relay_port(2),
        relay_port(0),
    );
    let mut appliance = ffmpeg(p.appliance_ns.as_deref(), &args);
    let appliance_err = read_all(appliance.child.stderr.take().unwrap());

    // Ready after the first keyframe's parameter sets passed; what the relay
    // learned is what the encoder says.
    let text = sdp_when_ready(p.relay, id, "", Duration::from_secs(8));
    for line in [
        format!("c=IN IP4 {}\r\n", p.wowza),
        format!("a=rtpmap:97 {}\r\n", encoder.audio_rtpmap),
        format!("a=fmtp:97 {}\r\n", encoder.audio_fmtp),
        "a=rtpmap:96 H264/90000\r\n".to_string(),
        format!("sprop-parameter-sets={}\r\n", encoder.sprop_parameter_sets),
    ] {
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }
    assert!(
        text.to_ascii_lowercase().contains(&format!(
            "profile-level-id={};",
            encoder.profile_level_id.to_ascii_lowercase()
        )),
        "{text}"
    );
    // Wowza reads the file the relay keeps.
    let file = p.sdp_dir.join(format!("{id}.sdp"));
    assert!(
        wait_until(Duration::from_secs(3), || std::fs::read_to_string(&file)
            .is_ok_and(|f| f == text)),
        "{} is not the route's SDP",
        file.display()
    );
    if p.freeze {
        freeze(p.relay);
    }

    let decoder_args: Vec<String> = [
        "-loglevel",
        "warning",
        "-protocol_whitelist",
        "file,udp,rtp",
        "-analyzeduration",
        "1000000",
        "-i",
        &file.display().to_string(),
        "-map",
        "0:v",
        "-map",
        "0:a",
        "-threads",
        "1",
        // Every decoded frame once, with its own timestamp: none made up.
        "-fps_mode",
        "passthrough",
        "-flush_packets",
        "1",
        "-f",
        "framecrc",
        "-",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let listening = Instant::now();
    let mut decoder = ffmpeg(p.wowza_ns.as_deref(), &decoder_args);
    let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let reader = {
        let (lines, out) = (lines.clone(), decoder.child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((Instant::now(), line));
            }
        })
    };
    let decoder_err = read_all(decoder.child.stderr.take().unwrap());

    // Until the appliance stops (bounded), noting when the first frame came out.
    let mut first_frame = None;
    let deadline = started + Duration::from_secs(u64::from(SENDING) + 15);
    let stopped = loop {
        if first_frame.is_none() {
            first_frame = lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.starts_with("0,"))
                .map(|(at, _)| *at);
        }
        if appliance.child.try_wait().unwrap().is_some() {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the appliance still runs after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // What is still on its way, then the decoder stops as on Ctrl-C twice:
    // the first ends its loop, the second its wait for packets that no
    // longer come.
    std::thread::sleep(Duration::from_millis(500));
    decoder.signal(Signal::SIGINT);
    let mut decoder_status = decoder.wait(Duration::from_millis(300));
    if decoder_status.is_none() {
        decoder.signal(Signal::SIGINT);
        decoder_status = decoder.wait(Duration::from_secs(5));
    }
    decoder.signal(Signal::SIGKILL);
    if p.freeze {
        p.relay.signal(Signal::SIGCONT);
    }
    reader.join().unwrap();
    let decoder_err = decoder_err.join().unwrap();
    let appliance_status = appliance.wait(Duration::from_secs(1)).unwrap();
    let appliance_err = appliance_err.join().unwrap();
    assert!(
        appliance_status.success(),
        "the appliance failed ({appliance_status}): {appliance_err}"
    );
    assert!(
        decoder_status.is_some(),
        "the decoder did not stop on SIGINT: {decoder_err}"
    );

    let lines: Vec<String> = std::mem::take(&mut *lines.lock().unwrap())
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let first_frame = first_frame.unwrap_or_else(|| {
        panic!(
            "nothing decoded in {:?} of listening: {decoder_err}",
            stopped - listening
        )
    });
    // The interval must lie within what the appliance sent while the decoder
    // listened, else the count below says nothing about the relay.
    let sent_after = stopped.saturating_duration_since(first_frame);
    assert!(
        sent_after >= Duration::from_millis(u64::from(WINDOW_SECONDS) * 1000 + 300),
        "the appliance stopped {sent_after:?} after the first decoded frame \
         ({:?} after the decoder started): too late to measure {WINDOW_SECONDS} s",
        first_frame - listening
    );

    // Frames are numbered by their timestamps (15 a second): a frame lost
    // leaves its number out, none is counted twice.
    let counted = |stream: u32, per_second: f64| {
        let (num, den) = time_base(&lines, stream);
        let numbers: Vec<i64> = lines
            .iter()
            .filter_map(|l| frame(l))
            .filter(|(s, _)| *s == stream)
            .map(|(_, pts)| (pts as f64 * num as f64 / den as f64 * per_second).round() as i64)
            .collect();
        let first = *numbers
            .first()
            .unwrap_or_else(|| panic!("no frame of stream {stream}: {decoder_err}"));
        let slots = (f64::from(WINDOW_SECONDS) * per_second).floor() as i64;
        let decoded: std::collections::BTreeSet<i64> = numbers
            .into_iter()
            .filter(|n| (first..first + slots).contains(n))
            .collect();
        (decoded.len(), slots as usize)
    };
    let (video, slots) = counted(0, f64::from(FPS));
    let (audio, audio_slots) = counted(1, 48_000.0 / 1024.0);
    eprintln!(
        "{id}: first frame {:?} after the decoder started, {sent_after:?} before the appliance stopped; \
         decoded {video} of {slots} frames, {audio} of {audio_slots} audio frames",
        first_frame - listening
    );
    assert!(
        video as f64 >= DECODED * slots as f64,
        "{video} of the {slots} frames sent in {WINDOW_SECONDS} s decoded: {decoder_err}"
    );
    // AAC frames of 1024 samples at 48 kHz.
    assert!(
        audio as f64 >= DECODED * audio_slots as f64,
        "{audio} of the {audio_slots} audio frames sent in {WINDOW_SECONDS} s decoded: {decoder_err}"
    );
}

#[test]
fn a_decoder_plays_what_the_userspace_path_forwards() {
    if skip() {
        return;
    }
    let mut setup = Setup::new();
    let dir = setup.dir.path().join("content");
    std::fs::create_dir(&dir).unwrap();
    setup
        .wowza
        .push_str(&format!("sdp_dir = \"{}\"\n", dir.display()));
    let relay = setup.start();
    decode_through_the_relay(
        &Parties {
            relay: &relay,
            appliance_ns: None,
            appliance: "127.0.0.1",
            relay_address: "127.0.0.1",
            wowza_ns: None,
            wowza: "127.0.0.1",
            sdp_dir: dir,
            freeze: false,
        },
        "userspace",
        USERSPACE,
    );
}

#[test]
fn a_decoder_plays_what_the_kernel_forwards() {
    if skip() || skip_fast_path() {
        return;
    }
    let mut net = Net::new();
    // ffmpeg's packets reach 1472 bytes: the default max_packet_size.
    net.setup.data = "fast_path = \"ebpf\"\n".into();
    let dir = net.setup.dir.path().join("content");
    std::fs::create_dir(&dir).unwrap();
    net.setup
        .wowza
        .push_str(&format!("sdp_dir = \"{}\"\n", dir.display()));
    let relay = net.start();
    let metrics = relay.get("/metrics").text;
    assert!(
        metrics.contains("rtp_relay_data_path_info{interfaces=\"vra\",path=\"ebpf\"} 1"),
        "{metrics}"
    );
    decode_through_the_relay(
        &Parties {
            relay: &relay,
            appliance_ns: Some(net.appliance_ns()),
            appliance: APPLIANCE,
            relay_address: RELAY_A,
            wowza_ns: Some(net.wowza_ns()),
            wowza: WOWZA,
            sdp_dir: dir,
            freeze: true,
        },
        "kernel",
        KERNEL,
    );
}
