//! The H.264 learner against a real encoder: ffmpeg (Debian's `ffmpeg`)
//! encodes a test pattern with libx264 and sends it as RTP to a socket of the
//! test, writing its own SDP; what the learner learns from the packets must be
//! what that SDP says. Where ffmpeg is missing these tests fail;
//! `RTP_RELAY_SKIP_FFMPEG=1` skips them explicitly.
//!
//! ffmpeg writes `sprop-parameter-sets` only when the encoder has global
//! headers (`-flags:v +global_header`); x264 then leaves the parameter sets
//! out of the stream unless told to repeat them (`repeat-headers=1`), which is
//! what a camera or an appliance does at every keyframe.

use rtp_relay::packet::rtp::RtpHeader;
use rtp_relay::sdp::h264::{self, Payload};
use rtp_relay::sdp::{H264Learner, Outcome, wants};
use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// True (and says so) when `RTP_RELAY_SKIP_FFMPEG=1` asks to skip these tests.
fn skip() -> bool {
    let skip = std::env::var("RTP_RELAY_SKIP_FFMPEG").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("RTP_RELAY_SKIP_FFMPEG=1: ffmpeg test skipped");
    }
    skip
}

/// What ffmpeg sent and wrote.
struct Run {
    /// RTP packets, with when each arrived.
    packets: Vec<(Instant, Vec<u8>)>,
    /// The parameters of its `a=fmtp:96` line.
    fmtp: HashMap<String, String>,
}

/// Two seconds of a 640×360 test pattern at 15 frames/s, a keyframe every
/// second (so the parameter sets are sent twice), through libx264 with
/// `x264_params`, as RTP of payload type 96 with `extra` options.
fn ffmpeg(profile: &str, x264_params: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sdp = dir.path().join("out.sdp");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // ffmpeg sends as fast as it encodes: room for a burst.
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let url = format!("rtp://{}", socket.local_addr().unwrap());
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=15",
            "-t",
            "2",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264", "-threads", "1"])
        .args([
            "-profile:v",
            profile,
            "-g",
            "15",
            "-flags:v",
            "+global_header",
        ])
        .args(["-x264-params", x264_params])
        .args(extra)
        .args(["-f", "rtp", "-payload_type", "96", "-sdp_file"])
        .arg(&sdp)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run ffmpeg ({e}): install Debian's ffmpeg package \
                 (apt-get install ffmpeg); RTP_RELAY_SKIP_FFMPEG=1 skips this test"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut packets = Vec::new();
    let mut buf = [0u8; 65536];
    let mut exited = false;
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => packets.push((Instant::now(), buf[..n].to_vec())),
            // Quiet for 100 ms after ffmpeg exited: everything is in.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if exited {
                    break;
                }
            }
            Err(e) => panic!("receiving ffmpeg's packets: {e}"),
        }
        if !exited && child.try_wait().unwrap().is_some() {
            exited = true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ffmpeg still running after 60 s");
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = std::fs::read_to_string(&sdp).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("a=fmtp:96 "))
        .unwrap_or_else(|| panic!("no a=fmtp:96 line in ffmpeg's SDP:\n{text}"));
    let fmtp = line
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Run { packets, fmtp }
}

/// How a parameter set travelled: ("SPS" or "PPS", "single", "STAP-A",
/// "FU-A" or "FU-A middle" for a fragment with neither S nor E).
type Carriage = (&'static str, &'static str);

/// Feeds every packet `wants` picks to a learner; the learner and how the
/// parameter sets travelled.
fn learn(run: &Run) -> (H264Learner, BTreeSet<Carriage>) {
    let mut learner = H264Learner::new();
    let mut carried = BTreeSet::new();
    let name = |t: u8| match t {
        h264::SPS => Some("SPS"),
        h264::PPS => Some("PPS"),
        _ => None,
    };
    for (at, packet) in &run.packets {
        let header = RtpHeader::parse(packet).expect("ffmpeg sends valid RTP");
        assert_eq!(header.payload_type, 96);
        // The payload ends before the padding and starts payload_len before.
        let padding = if packet[0] & 0x20 != 0 {
            usize::from(packet[packet.len() - 1])
        } else {
            0
        };
        let end = packet.len() - padding;
        let payload = &packet[end - header.payload_len..end];
        if !wants(payload) {
            continue;
        }
        let outcome = learner.on_packet(header.sequence, header.timestamp, payload, *at);
        // A valid stream over loopback: nothing refused, nothing abandoned.
        assert!(
            !matches!(outcome, Outcome::Malformed(_) | Outcome::Discarded(_)),
            "{outcome:?} for packet {} ({payload:02x?})",
            header.sequence
        );
        match h264::parse_payload(payload) {
            Ok(Payload::Single(nal)) => carried.extend(name(nal[0] & 0x1f).map(|n| (n, "single"))),
            Ok(Payload::StapA(stap)) => carried.extend(
                stap.units()
                    .filter_map(|u| name(u[0] & 0x1f))
                    .map(|n| (n, "STAP-A")),
            ),
            Ok(Payload::FuA(fu)) => carried.extend(name(fu.nal_type()).map(|n| {
                (
                    n,
                    if fu.start || fu.end {
                        "FU-A"
                    } else {
                        "FU-A middle"
                    },
                )
            })),
            other => panic!("ffmpeg sent {other:?}"),
        }
    }
    (learner, carried)
}

/// The learner's parameter sets are ffmpeg's, and hearing them again at the
/// second keyframe changed nothing.
fn assert_learned_what_ffmpeg_wrote(run: &Run, learner: &H264Learner) {
    let sets = learner.parameter_sets().unwrap_or_else(|| {
        panic!(
            "{:?} after {} packets",
            learner.missing(),
            run.packets.len()
        )
    });
    let field = |key: &str| {
        run.fmtp
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in ffmpeg's fmtp {:?}", run.fmtp))
    };
    assert_eq!(&sets.sprop_parameter_sets(), field("sprop-parameter-sets"));
    assert!(
        sets.profile_level_id()
            .eq_ignore_ascii_case(field("profile-level-id")),
        "profile-level-id {} but ffmpeg wrote {}",
        sets.profile_level_id(),
        field("profile-level-id")
    );
    // One step per parameter set at most (SPS, then PPS): the repeats at the
    // second keyframe are the same bytes.
    assert!(learner.version() <= 2, "version {}", learner.version());
}

#[test]
fn learns_parameter_sets_aggregated_in_a_stap_a() {
    if skip() {
        return;
    }
    let run = ffmpeg("baseline", "repeat-headers=1", &[]);
    let (learner, carried) = learn(&run);
    assert_eq!(
        carried,
        BTreeSet::from([("PPS", "STAP-A"), ("SPS", "STAP-A")]),
        "ffmpeg aggregates small units into STAP-A"
    );
    assert_learned_what_ffmpeg_wrote(&run, &learner);
    // Both in one packet: one step.
    assert_eq!(learner.version(), 1);
}

#[test]
fn learns_an_sps_fragmented_into_fu_a() {
    if skip() {
        return;
    }
    // 30-byte packets: 18 bytes of payload, less than the SPS.
    let run = ffmpeg("baseline", "repeat-headers=1", &["-pkt_size", "30"]);
    let (learner, carried) = learn(&run);
    assert!(
        carried.contains(&("SPS", "FU-A")),
        "the SPS should travel in FU-A fragments: {carried:?}"
    );
    assert_learned_what_ffmpeg_wrote(&run, &learner);
}

#[test]
fn learns_a_large_pps_from_many_fragments() {
    if skip() {
        return;
    }
    // Custom scaling matrices (High profile) go into the PPS: some 200 bytes,
    // sent as an FU-A start, middles and an end in 64-byte packets.
    let cqm4: Vec<String> = (0..16).map(|i| (16 + i).to_string()).collect();
    let cqm8: Vec<String> = (0..64).map(|i| (16 + (i * 7) % 40).to_string()).collect();
    let params = format!(
        "repeat-headers=1:cqm4={}:cqm8={}",
        cqm4.join(","),
        cqm8.join(",")
    );
    let run = ffmpeg("high", &params, &["-pkt_size", "64"]);
    let (learner, carried) = learn(&run);
    assert!(
        carried.contains(&("PPS", "FU-A middle")),
        "the PPS should travel in three FU-A fragments or more: {carried:?}"
    );
    assert_learned_what_ffmpeg_wrote(&run, &learner);
    assert!(learner.parameter_sets().unwrap().pps().len() > 100);
}
