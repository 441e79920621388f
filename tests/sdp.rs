//! A reservation's SDP for Wowza (docs/api.md, docs/configuration.md), end to
//! end: the real relay, `rtp-relay gen` sending real RFC 6184 H.264 whose
//! parameter sets differ per stream, the route, the files of `[wowza] sdp_dir`,
//! `rtp-relay sdp` and `check-config`; on the userspace data path over
//! loopback, and on the kernel fast path in network namespaces of the test's
//! own ([`common::netns`]; root; `RTP_RELAY_SKIP_EBPF=1` skips it).
//!
//! Groups 520–529 are this file's (ports above 61000, outside the ephemeral range).

mod common;
use common::netns::*;
use common::wowza::*;
use common::*;
use nix::sys::signal::Signal;
use rtp_relay::traffic::h264::parameter_sets;
use rtp_relay::traffic::profile::Profile;
use sdp::SessionDescription;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LECTURE: u16 = 520;
const SEMINAR: u16 = 521;
const BLOCKED: u16 = 522;
const KERNEL: u16 = 523;

/// `[sdp]`'s audio parameters here (not the relay's defaults, so that they show).
const CONFIG_RTPMAP: &str = "MPEG4-GENERIC/44100/1";
const CONFIG_FMTP: &str = "streamtype=5;profile-level-id=15;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1208";
/// A reservation's own (its `media`).
const MEDIA_RTPMAP: &str = "MPEG4-GENERIC/48000/2";
const MEDIA_FMTP: &str = "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190";

/// A relay configuration with `[wowza] sdp_dir = dir` and the `[sdp]` above.
fn setup_with(setup: &mut Setup, dir: &Path) {
    setup
        .wowza
        .push_str(&format!("sdp_dir = \"{}\"\n", dir.display()));
    setup.extra =
        format!("[sdp]\naudio_rtpmap = \"{CONFIG_RTPMAP}\"\naudio_fmtp = \"{CONFIG_FMTP}\"\n");
}

/// `body` (a create body) with `"media": media`.
fn with_media(body: &str, media: &str) -> String {
    format!(
        "{}, \"media\": {media}}}",
        body.trim_end().strip_suffix('}').unwrap()
    )
}

/// The lecture's `media`: its audio parameters.
fn lecture_media() -> String {
    format!(r#"{{"primary_audio": {{"rtpmap": "{MEDIA_RTPMAP}", "fmtp": "{MEDIA_FMTP}"}}}}"#)
}

/// The destination port of `stream`'s `plane` in reservation view `view`.
fn destination(view: &Value, stream: &str, plane: &str) -> u16 {
    view["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["stream"] == stream && p["plane"] == plane)
        .and_then(|p| p["destination_port"].as_u64())
        .unwrap_or_else(|| panic!("no {stream} {plane} port in {view}")) as u16
}

/// The relay's RTP ports and destination RTP ports of `view`, by stream.
fn media_ports(view: &Value) -> Vec<(String, u16, u16)> {
    view["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["plane"] == "rtp")
        .map(|p| {
            (
                p["stream"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap() as u16,
                p["destination_port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

/// An `a=` attribute of a media section: its value after `<pt> ` where the
/// attribute names a payload type.
fn attribute<'a>(m: &'a sdp::MediaDescription, key: &str) -> &'a str {
    m.attribute(key)
        .flatten()
        .unwrap_or_else(|| panic!("no a={key} in {m:?}"))
}

/// What an SDP should say: for reservation `id` (its view `view`), Wowza at
/// `address`, the audio with `audio` (rtpmap, fmtp), the video `role` with
/// the parameter sets `sets` (SPS, PPS).
struct Expected<'a> {
    id: &'a str,
    view: &'a Value,
    address: &'a str,
    audio: (&'a str, &'a str),
    role: &'a str,
    sets: (Vec<u8>, Vec<u8>),
}

/// Parses `text` with the `sdp` crate and checks every value against `e`.
fn assert_describes(text: &str, e: &Expected) {
    assert!(
        text.ends_with("\r\n") && !text.replace("\r\n", "").contains(['\r', '\n']),
        "CRLF lines only: {text:?}"
    );
    let sdp = SessionDescription::unmarshal(&mut std::io::Cursor::new(text.as_bytes()))
        .unwrap_or_else(|err| panic!("{err}: {text}"));
    let profile = Profile::echo360_live();
    assert_eq!(sdp.origin.username, "rtp-relay", "{text}");
    assert_eq!(sdp.session_name, e.id, "{text}");
    let c = sdp.connection_information.as_ref().expect("c=");
    assert_eq!(
        (
            c.network_type.as_str(),
            c.address_type.as_str(),
            c.address.as_ref().map(|a| a.address.as_str())
        ),
        ("IN", "IP4", Some(e.address)),
        "{text}"
    );
    let times: Vec<_> = sdp
        .time_descriptions
        .iter()
        .map(|t| (t.timing.start_time, t.timing.stop_time))
        .collect();
    assert_eq!(times, [(0, 0)], "{text}");
    assert_eq!(sdp.media_descriptions.len(), 2, "{text}");
    let (audio, video) = (&sdp.media_descriptions[0], &sdp.media_descriptions[1]);

    let line = |m: &sdp::MediaDescription| {
        (
            m.media_name.media.clone(),
            m.media_name.port.value,
            m.media_name.protos.join("/"),
            m.media_name.formats.clone(),
        )
    };
    let apt = profile.audio.payload_type.to_string();
    assert_eq!(
        line(audio),
        (
            "audio".to_string(),
            destination(e.view, "primary_audio", "rtp") as isize,
            "RTP/AVP".to_string(),
            vec![apt.clone()]
        ),
        "{text}"
    );
    assert_eq!(
        attribute(audio, "rtpmap"),
        format!("{apt} {}", e.audio.0),
        "{text}"
    );
    assert_eq!(attribute(audio, "fmtp"), format!("{apt} {}", e.audio.1));
    assert_eq!(
        attribute(audio, "rtcp"),
        destination(e.view, "primary_audio", "rtcp").to_string()
    );

    let vpt = profile.video.payload_type.to_string();
    assert_eq!(
        line(video),
        (
            "video".to_string(),
            destination(e.view, e.role, "rtp") as isize,
            "RTP/AVP".to_string(),
            vec![vpt.clone()]
        ),
        "{text}"
    );
    assert_eq!(attribute(video, "rtpmap"), format!("{vpt} H264/90000"));
    assert_eq!(
        attribute(video, "rtcp"),
        destination(e.view, e.role, "rtcp").to_string()
    );
    let fmtp = attribute(video, "fmtp")
        .strip_prefix(&format!("{vpt} "))
        .unwrap_or_else(|| panic!("fmtp of another payload type: {text}"));
    let params: BTreeMap<&str, &str> = fmtp
        .split(';')
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let (sps, pps) = &e.sets;
    let keys: Vec<&str> = params.keys().copied().collect();
    assert_eq!(
        keys,
        [
            "packetization-mode",
            "profile-level-id",
            "sprop-parameter-sets"
        ],
        "{fmtp}"
    );
    assert_eq!(params["packetization-mode"], "1");
    assert!(
        params["profile-level-id"]
            .eq_ignore_ascii_case(&format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3])),
        "profile-level-id is not SPS bytes 1–3 ({:02x?}): {fmtp}",
        &sps[1..4]
    );
    assert_eq!(
        params["sprop-parameter-sets"],
        format!("{},{}", base64(sps), base64(pps)),
        "{}: not the parameter sets gen sent",
        e.role
    );
}

/// `rtp-relay sdp ARGS`: status, stdout, stderr.
fn sdp_command(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("timeout")
        .args(["20", BIN, "sdp"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An SDP another writer (an operator, another tool) keeps in Wowza's folder.
const MANUAL: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=manual\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n";

#[test]
fn base64_is_rfc_4648s() {
    // RFC 4648 §10's test vectors, and the last two alphabet characters.
    for (text, encoded) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
        (&[0xfb, 0xff, 0xfe], "+//+"),
    ] {
        assert_eq!(base64(text), encoded);
    }
}

#[test]
fn the_sdp_of_what_gen_sends_from_the_route_the_folder_and_the_command() {
    let mut setup = Setup::new();
    let dir = setup.dir.path().join("wowza");
    std::fs::create_dir(&dir).unwrap();
    setup_with(&mut setup, &dir);
    std::fs::write(dir.join("manual.sdp"), MANUAL).unwrap();
    let relay = setup.start();
    let url = relay.url.clone();
    let window = (at(0), at(600));

    // The media parameters are checked when the reservation is made.
    let lecture = reservation(
        "lecture",
        Some(LECTURE),
        "audio-display-video",
        &window.0,
        &window.1,
    );
    for (media, why) in [
        (
            r#"{"secondary_video": {"rtpmap": "H264/90000"}}"#,
            "media.secondary_video: layout audio-display-video has no such stream",
        ),
        (
            r#"{"primary_audio": {"rtpmap": "AAC"}}"#,
            "media.primary_audio.rtpmap: \"AAC\" is not an rtpmap",
        ),
        (
            r#"{"primary_audio": {"rtpmap": "L16/48000", "fmtp": "a=1\r\nb=2"}}"#,
            "media.primary_audio.fmtp: contains '\\r'",
        ),
    ] {
        let a = relay.post("/v1/reservations", &with_media(&lecture, media));
        assert_eq!(a.status, 400, "{media}: {}", a.text);
        assert!(
            a.body["message"].as_str().unwrap_or("").contains(why),
            "{media}: {}",
            a.text
        );
    }
    relay.create(&with_media(&lecture, &lecture_media()), "active");
    let seminar = reservation(
        "seminar",
        Some(SEMINAR),
        "audio-display-video",
        &window.0,
        &window.1,
    );
    relay.create(&seminar, "active");
    let created = std::time::Instant::now();

    // Before any packet: not ready, naming the first stream missing and its port.
    for query in ["", "?video=primary_display"] {
        let a = sdp(&relay, "lecture", query);
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (503, Some("not_ready"))
        );
        let message = a.body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "primary_audio (relay port {}): no RTP packet seen yet",
                base(LECTURE)
            )),
            "{message}"
        );
    }
    let (status, out, err) = sdp_command(&["lecture", "--relay", &url]);
    assert_eq!(status, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("not ready")
            && err.contains(&format!("primary_audio (relay port {})", base(LECTURE))),
        "{err}"
    );
    // What no layout, role or reservation can answer.
    let not_found = sdp(&relay, "lecture", "?video=secondary_video");
    assert_eq!(not_found.status, 404, "{}", not_found.text);
    assert!(
        not_found.body["message"]
            .as_str()
            .unwrap()
            .contains("no video stream secondary_video"),
        "{}",
        not_found.text
    );
    assert_eq!(sdp(&relay, "lecture", "?video=primary_audio").status, 404);
    for query in ["?video=bogus", "?audio=primary_audio"] {
        let a = sdp(&relay, "lecture", query);
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (400, Some("invalid_request")),
            "{query}: {}",
            a.text
        );
    }
    let a = sdp(&relay, "nobody", "");
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("not_found"))
    );
    // The folder keeper has run meanwhile: nothing of the relay's yet.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(created.elapsed()));
    assert_eq!(
        folder(&dir).into_keys().collect::<Vec<_>>(),
        ["manual.sdp"],
        "no file before the SDP is ready"
    );

    // Stream i of gen's list: the lecture's audio, display and video are 0–2,
    // the seminar's 3–5.
    let groups = format!("{LECTURE},{SEMINAR}");
    let report = run_gen(
        None,
        &[
            "--groups",
            &groups,
            "--layout",
            "audio-display-video",
            "--duration",
            "3s",
        ],
    );
    assert_eq!(report["streams"], 6, "{report}");
    let profile = Profile::echo360_live();
    let lecture_view = relay.get("/v1/reservations/lecture").body;
    let seminar_view = relay.get("/v1/reservations/seminar").body;
    let expected = [
        Expected {
            id: "lecture",
            view: &lecture_view,
            address: "127.0.0.1",
            audio: (MEDIA_RTPMAP, MEDIA_FMTP),
            role: "primary_video",
            sets: parameter_sets(&profile.video, 2),
        },
        Expected {
            id: "lecture",
            view: &lecture_view,
            address: "127.0.0.1",
            audio: (MEDIA_RTPMAP, MEDIA_FMTP),
            role: "primary_display",
            sets: parameter_sets(&profile.display, 1),
        },
        Expected {
            id: "seminar",
            view: &seminar_view,
            address: "127.0.0.1",
            audio: (CONFIG_RTPMAP, CONFIG_FMTP),
            role: "primary_video",
            sets: parameter_sets(&profile.video, 5),
        },
        Expected {
            id: "seminar",
            view: &seminar_view,
            address: "127.0.0.1",
            audio: (CONFIG_RTPMAP, CONFIG_FMTP),
            role: "primary_display",
            sets: parameter_sets(&profile.display, 4),
        },
    ];
    let mut texts = BTreeMap::new();
    for e in &expected {
        let default = e.role == "primary_video";
        let query = if default {
            String::new()
        } else {
            format!("?video={}", e.role)
        };
        let text = sdp_when_ready(&relay, e.id, &query, Duration::from_secs(5));
        assert_describes(&text, e);
        if default {
            // Naming the default changes nothing.
            assert_eq!(
                sdp(&relay, e.id, "?video=primary_video").text,
                text,
                "{}",
                e.id
            );
        }
        // The command prints the route's text as it is.
        let mut args = vec![e.id, "--relay", &url];
        if !default {
            args.extend(["--video", e.role]);
        }
        let (status, out, err) = sdp_command(&args);
        assert_eq!((status, out.as_str()), (Some(0), text.as_str()), "{err}");
        let file = if default {
            format!("{}.sdp", e.id)
        } else {
            format!("{}_{}.sdp", e.id, e.role)
        };
        texts.insert(file, text);
    }
    // Every stream's parameter sets are its own.
    let sprops: BTreeSet<_> = expected.iter().map(|e| base64(&e.sets.0)).collect();
    assert_eq!(sprops.len(), 4);
    let response = ureq::get(format!("{url}/v1/reservations/lecture/sdp"))
        .call()
        .unwrap();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/sdp"
    );

    // The folder holds exactly the route's texts, beside the other writer's file.
    let mut wanted: BTreeMap<String, String> = texts.clone();
    wanted.insert("manual.sdp".into(), MANUAL.into());
    let mut seen = BTreeMap::new();
    let written = wait_until(Duration::from_secs(4), || {
        seen = folder(&dir);
        seen == wanted
    });
    assert!(written, "sdp_dir holds {seen:#?}, expected {wanted:#?}");

    // Deleting the lecture removes its files, and only those.
    assert_eq!(relay.delete("/v1/reservations/lecture").status, 200);
    wanted.retain(|name, _| !name.starts_with("lecture"));
    let removed = wait_until(Duration::from_secs(4), || {
        seen = folder(&dir);
        seen == wanted
    });
    assert!(removed, "after DELETE sdp_dir holds {:?}", seen.keys());

    // A file the relay wrote for a reservation that went while it was down
    // is removed when it starts again; the rest stays as it is.
    let mut relay = relay;
    relay.signal(Signal::SIGTERM);
    assert!(
        relay.wait(Duration::from_secs(10)).is_some(),
        "stops on SIGTERM"
    );
    drop(relay);
    let gone = texts["seminar.sdp"].replace("s=seminar\r\n", "s=gone\r\n");
    assert_ne!(gone, texts["seminar.sdp"]);
    std::fs::write(dir.join("gone.sdp"), &gone).unwrap();
    let relay = setup.start();
    let cleaned = wait_until(Duration::from_secs(4), || {
        seen = folder(&dir);
        seen == wanted
    });
    assert!(cleaned, "after the restart sdp_dir holds {:?}", seen.keys());
    let logged = wait_until(Duration::from_secs(2), || {
        relay
            .log()
            .contains("removed the SDP file of a reservation that is gone")
    });
    assert!(logged, "{}", relay.log());
}

#[test]
fn an_unwritable_sdp_dir_is_reported_while_forwarding_goes_on() {
    let mut setup = Setup::new();
    // A regular file where Wowza's folder should be.
    let share = setup.dir.path().join("share");
    std::fs::write(&share, "not a folder").unwrap();
    let dir = share.join("content");
    setup_with(&mut setup, &dir);
    let relay = setup.start();
    relay.create(
        &reservation("blocked", Some(BLOCKED), "audio-video", &at(0), &at(600)),
        "active",
    );
    let view = relay.get("/v1/reservations/blocked").body;
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = media_ports(&view)
        .into_iter()
        .map(|(_, _, to)| {
            let wowza = UdpSocket::bind(("127.0.0.1", to)).unwrap();
            receive_until(wowza, stop.clone())
        })
        .collect();
    let group = BLOCKED.to_string();
    let report = run_gen(
        None,
        &[
            "--groups",
            &group,
            "--layout",
            "audio-video",
            "--duration",
            "3s",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let received: usize = receivers.into_iter().map(|r| r.join().unwrap().len()).sum();
    assert_eq!(
        received as u64,
        report["packets"].as_u64().unwrap(),
        "every packet reaches Wowza although no SDP file can be written"
    );

    // The SDP itself is ready; the view says why the file is not there.
    let text = sdp_when_ready(&relay, "blocked", "", Duration::from_secs(2));
    let error = |relay: &Relay| {
        relay.get("/v1/reservations/blocked").body["sdp_file_error"]
            .as_str()
            .map(str::to_string)
    };
    assert!(
        wait_until(Duration::from_secs(4), || error(&relay).is_some()),
        "no sdp_file_error"
    );
    let why = error(&relay).unwrap();
    assert!(why.contains(&dir.display().to_string()), "{why}");
    let list = relay.get("/v1/reservations").body;
    assert_eq!(list["reservations"][0]["sdp_file_error"], why.as_str());
    let by_group = relay.get(&format!("/v1/groups/{BLOCKED}")).body;
    assert_eq!(by_group["sdp_file_error"], why.as_str());
    // Tried every second, logged once.
    std::thread::sleep(Duration::from_millis(2200));
    let warnings = relay
        .log()
        .lines()
        .filter(|l| l.contains("cannot keep the SDP file"))
        .count();
    assert_eq!(warnings, 1, "{}", relay.log());

    // Once the folder exists the file appears and the error goes.
    std::fs::remove_file(&share).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let wanted = BTreeMap::from([("blocked.sdp".to_string(), text)]);
    let mut seen = BTreeMap::new();
    let written = wait_until(Duration::from_secs(4), || {
        seen = folder(&dir);
        seen == wanted
    });
    assert!(written, "{seen:#?}");
    assert!(
        wait_until(Duration::from_secs(3), || error(&relay).is_none()),
        "the error stays: {:?}",
        error(&relay)
    );
}

#[test]
fn check_config_says_whether_sdp_dir_is_writable() {
    let base = tempfile::tempdir().unwrap();
    let writable = base.path().join("content");
    std::fs::create_dir(&writable).unwrap();
    let share = base.path().join("share");
    std::fs::write(&share, "not a folder").unwrap();
    let cases = [
        (
            writable.clone(),
            format!("# sdp_dir: {} is writable", writable.display()),
        ),
        (
            base.path().join("missing"),
            "# sdp_dir: WARNING: cannot write".to_string(),
        ),
        (
            share.join("content"),
            "# sdp_dir: WARNING: cannot write".to_string(),
        ),
    ];
    for (dir, line) in cases {
        let mut setup = Setup::new();
        setup_with(&mut setup, &dir);
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(setup.write_config())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        let found = text
            .lines()
            .find(|l| l.starts_with("# sdp_dir:"))
            .unwrap_or_else(|| panic!("no sdp_dir line: {text}"));
        assert!(
            found.starts_with(&line) && found.contains(&dir.display().to_string()),
            "{found}"
        );
    }
    // The check leaves nothing behind in Wowza's folder.
    assert_eq!(std::fs::read_dir(&writable).unwrap().count(), 0);
    let setup = Setup::new();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(setup.write_config())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("# sdp_dir: not set"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn ready_on_the_fast_path_from_the_kernels_copies() {
    if skip_fast_path() {
        return;
    }
    let mut net = Net::new();
    // gen's packets reach 1200 bytes: the default max_packet_size.
    net.setup.data = "fast_path = \"ebpf\"\n".into();
    let dir = net.setup.dir.path().join("wowza");
    std::fs::create_dir(&dir).unwrap();
    setup_with(&mut net.setup, &dir);
    let relay = net.start();
    let metrics = relay.get("/metrics").text;
    assert!(
        metrics.contains("rtp_relay_data_path_info{interfaces=\"vra\",path=\"ebpf\"} 1"),
        "{metrics}"
    );
    let body = format!(
        r#"{{"event_id": "kernel", "group": {KERNEL}, "layout": "audio-display-video", "start": "{}", "end": "{}", "source": "{APPLIANCE}"}}"#,
        at(0),
        at(600)
    );
    relay.create(&body, "active");
    let a = sdp(&relay, "kernel", "");
    assert_eq!(a.status, 503, "{}", a.text);
    assert!(
        a.text.contains(&format!(
            "primary_audio (relay port {}): no RTP packet seen yet",
            base(KERNEL)
        )),
        "{}",
        a.text
    );
    let view = relay.get("/v1/reservations/kernel").body;
    let ports = media_ports(&view);
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = ports
        .iter()
        .map(|(_, _, to)| receive_until(net.wowza(*to), stop.clone()))
        .collect();

    // Everything is sent while the relay process is stopped: only the kernel
    // forwards, and only the kernel's copies can teach the learners.
    freeze(&relay);
    let group = KERNEL.to_string();
    // 3 s of the webcast, from the appliance.
    let send = || {
        run_gen(
            Some(&net.appliance_ns()),
            &[
                "--groups",
                &group,
                "--layout",
                "audio-display-video",
                "--target",
                RELAY_A,
                "--bind",
                APPLIANCE,
                "--duration",
                "3s",
            ],
        )
    };
    let report = send();
    stop.store(true, Ordering::Relaxed);
    let received: usize = receivers.into_iter().map(|r| r.join().unwrap().len()).sum();
    // Nothing waits in the relay's sockets for its userspace path.
    let queued = userspace_queue(&relay);
    relay.signal(Signal::SIGCONT);
    assert_eq!(
        received as u64,
        report["packets"].as_u64().unwrap(),
        "the kernel forwards every packet"
    );
    assert_eq!(queued, 0, "bytes left to userspace");

    let profile = Profile::echo360_live();
    // The SDP of `role` (asked with `query`), once ready, describes it with `sets`.
    let ready = |relay: &Relay, query: &str, role: &str, sets| {
        let text = sdp_when_ready(relay, "kernel", query, Duration::from_secs(5));
        assert_describes(
            &text,
            &Expected {
                id: "kernel",
                view: &view,
                address: WOWZA,
                audio: (CONFIG_RTPMAP, CONFIG_FMTP),
                role,
                sets,
            },
        );
        text
    };
    for (role, sets) in [
        ("primary_video", parameter_sets(&profile.video, 2)),
        ("primary_display", parameter_sets(&profile.display, 1)),
    ] {
        let query = if role == "primary_video" {
            String::new()
        } else {
            format!("?video={role}")
        };
        let text = ready(&relay, &query, role, sets);
        let file = if query.is_empty() {
            "kernel.sdp".to_string()
        } else {
            format!("kernel_{role}.sdp")
        };
        let mut on_disk = None;
        let written = wait_until(Duration::from_secs(4), || {
            on_disk = std::fs::read_to_string(dir.join(&file)).ok();
            on_disk.as_deref() == Some(text.as_str())
        });
        assert!(written, "{file}: {on_disk:?}");
    }

    // The kernel copies a parameter set only when it changes; a restarted
    // relay's learners start empty while the kernel's streams carry on (the
    // maps are pinned), so its install must make the kernel copy the same
    // sets again.
    relay.crash();
    let relay = net.start();
    let a = sdp(&relay, "kernel", "");
    assert_eq!(a.status, 503, "a new process knows no sets: {}", a.text);
    freeze(&relay);
    send();
    relay.signal(Signal::SIGCONT);
    ready(
        &relay,
        "",
        "primary_video",
        parameter_sets(&profile.video, 2),
    );
}
