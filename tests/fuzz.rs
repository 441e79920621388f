//! Fuzzing of every parser that faces the outside, on stable Rust: proptest
//! feeds arbitrary bytes and arbitrary structured values (headers, compounds,
//! JSON bodies, TOML files, journals near the valid shape, so the deep paths
//! are reached) to the same functions the relay runs, and checks that each
//! answers — a value or an error naming what is wrong — and never panics,
//! and that what it accepts is consistent.
//!
//! The test command runs a brief pass (`FUZZ_CASES`, default 2000 per
//! target). The long run, 10 million inputs per target:
//!
//! ```sh
//! FUZZ_CASES=10000000 cargo test --release --test fuzz -- --test-threads 2
//! ```

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use rtp_relay::config::Config;
use rtp_relay::control::body::parse;
use rtp_relay::control::coordinator::vet_loaded;
use rtp_relay::group::GroupId;
use rtp_relay::packet::rtcp;
use rtp_relay::packet::rtp::RtpHeader;
use rtp_relay::reservation::schedule::{Limits, Schedule, Timing};
use rtp_relay::reservation::{Change, Reservation, Rules};
use rtp_relay::stats::rtcp::RtcpStream;
use rtp_relay::stats::rtp::RtpStream;
use rtp_relay::store::Store;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Cases per target: `FUZZ_CASES`, else a brief pass.
fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `test` on `cases()` values of `strategy`, with a fixed seed per
/// target unless `FUZZ_SEED` is set (so a brief run is reproducible and a
/// long one can explore anew). Failures are shrunk and reported.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 10_000,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let started = Instant::now();
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!("{name}: {} inputs in {:.1?}", cases(), started.elapsed());
}

/// Counts inputs that got past the outer checks into the deep paths, so a
/// generator that only ever produced rejects would be noticed.
#[derive(Default)]
struct Reach(std::sync::atomic::AtomicU64);

impl Reach {
    fn hit(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// At least 2 % of the inputs got there.
    fn check(self, what: &str) {
        let n = self.0.into_inner();
        assert!(n > u64::from(cases()) / 50, "only {n} inputs {what}");
    }
}

// ---------------------------------------------------------------- RTP

/// Datagrams near the RTP shape: a version-2 header with random flags, CSRC
/// count, extension and padding fields, then a payload; or plain noise.
fn rtp_like() -> impl Strategy<Value = Vec<u8>> {
    let shaped = (
        any::<u8>(),
        any::<u8>(),
        any::<[u8; 10]>(),
        proptest::collection::vec(any::<u8>(), 0..80),
        any::<u8>(),
    )
        .prop_map(|(flags, second, rest, mut tail, last)| {
            let mut p = vec![0x80 | (flags & 0x3f), second];
            p.extend_from_slice(&rest);
            p.append(&mut tail);
            p.push(last);
            p
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..1600), shaped]
}

#[test]
fn rtp_header_check() {
    let valid = Reach::default();
    fuzz("rtp", rtp_like(), |p| {
        if let Ok(h) = RtpHeader::parse(&p) {
            valid.hit();
            prop_assert!(h.payload_len + 12 <= p.len(), "{h:?}");
            prop_assert_eq!(p[0] >> 6, 2);
            // RTCP's packet types never pass as media (RFC 5761 §4).
            prop_assert!(!(192..=223).contains(&p[1]) && !(72..=76).contains(&h.payload_type));
            // The webrtc-rs rtp crate reads the same fields.
            let mut b = bytes::Bytes::copy_from_slice(&p);
            let theirs =
                <rtp::packet::Packet as webrtc_util::marshal::Unmarshal>::unmarshal(&mut b);
            if let Ok(theirs) = theirs {
                prop_assert_eq!(theirs.header.sequence_number, h.sequence);
                prop_assert_eq!(theirs.header.ssrc, h.ssrc);
                prop_assert_eq!(theirs.header.timestamp, h.timestamp);
            }
        }
        Ok(())
    });
    valid.check("were valid RTP");
}

// ---------------------------------------------------------------- H.264

/// Sequences of RTP payloads near RFC 6184's shapes: single NAL units of any
/// type, STAP-A aggregates with random sizes, FU-A fragments with random S/E
/// bits and inner types (mostly SPS/PPS), with random sequence numbers and
/// timestamps around a run; or plain noise.
fn h264_payloads() -> impl Strategy<Value = Vec<(u16, u32, Vec<u8>)>> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(t, body)| [
            vec![0x60 | (t % 24)],
            body
        ]
        .concat()),
        proptest::collection::vec(
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20)),
            0..4
        )
        .prop_map(|units| {
            let mut p = vec![0x78];
            for (t, body) in units {
                let len = (body.len() + 1) as u16;
                p.extend_from_slice(&len.to_be_bytes());
                p.push(0x60 | (t % 9));
                p.extend_from_slice(&body);
            }
            p
        }),
        (
            any::<bool>(),
            any::<bool>(),
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(s, e, t, body)| {
                let inner = [7u8, 8, 5][usize::from(t)];
                [
                    vec![0x7c, u8::from(s) << 7 | u8::from(e) << 6 | inner],
                    body,
                ]
                .concat()
            }),
    ];
    proptest::collection::vec((0u16..6, 0u32..3, payload), 1..30).prop_map(|steps| {
        let (mut seq, mut ts) = (65530u16, 1000u32);
        steps
            .into_iter()
            .map(|(ds, dt, p)| {
                seq = seq.wrapping_add(ds);
                ts = ts.wrapping_add(dt * 3000);
                (seq, ts, p)
            })
            .collect()
    })
}

#[test]
fn h264_parameter_set_learning() {
    let learned = Reach::default();
    fuzz("h264", h264_payloads(), |packets| {
        let mut learner = rtp_relay::sdp::H264Learner::new();
        let t0 = Instant::now();
        for (i, (seq, ts, p)) in packets.iter().enumerate() {
            let before = learner.version();
            learner.on_packet(
                *seq,
                *ts,
                p,
                t0 + std::time::Duration::from_millis(i as u64 * 40),
            );
            // Whatever a payload did, the version never goes back nor jumps.
            prop_assert!(learner.version() - before <= 1);
            // wants() and the learner agree: an unwanted payload changes nothing.
            if !rtp_relay::sdp::wants(p) {
                prop_assert_eq!(learner.version(), before);
            }
        }
        match learner.parameter_sets() {
            Some(sets) => {
                learned.hit();
                prop_assert_eq!(sets.profile_level_id().len(), 6);
                // A learned set always makes a description a parser reads.
                let text = format!(
                    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\na=fmtp:96 packetization-mode=1;profile-level-id={};sprop-parameter-sets={}\r\n",
                    sets.profile_level_id(),
                    sets.sprop_parameter_sets()
                );
                prop_assert!(
                    sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(text)).is_ok()
                );
            }
            None => prop_assert!(learner.missing().is_some()),
        }
        Ok(())
    });
    learned.check("taught the learner a parameter set pair");
}

// ---------------------------------------------------------------- RTCP

/// Compounds of 1–4 packets of RTCP types with random counts and lengths
/// (mostly consistent, sometimes not), or plain noise.
fn rtcp_like() -> impl Strategy<Value = Vec<u8>> {
    let packet = (0u8..32, 192u8..=223, 0usize..8, any::<bool>(), any::<u8>()).prop_map(
        |(count, pt, words, honest, fill)| {
            let count = count & 0x1f;
            let words = if honest && (pt == 200 || pt == 201) {
                usize::from(count) * 6 + if pt == 200 { 6 } else { 1 }
            } else {
                words
            };
            let mut p = vec![0x80 | count, pt];
            p.extend_from_slice(&(words as u16).to_be_bytes());
            p.extend(std::iter::repeat_n(fill, words * 4));
            p
        },
    );
    let compound = proptest::collection::vec(packet, 1..4).prop_map(|ps| ps.concat());
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), compound]
}

#[test]
fn rtcp_compound_check_and_report_reading() {
    let valid = Reach::default();
    fuzz("rtcp", rtcp_like(), |p| {
        let mut stream = RtcpStream::default();
        if let Ok(summary) = rtcp::check(&p) {
            valid.hit();
            stream.on_compound(summary);
            let blocks = rtcp::report_blocks(&p).count();
            prop_assert!(blocks <= p.len() / 24);
        }
        // Wowza's reports go through the same reader, checked or not.
        stream.on_destination_report(&p, None);
        stream.on_destination_report(&p, Some(7));
        Ok(())
    });
    valid.check("were valid RTCP compounds");
}

// ---------------------------------------------------------------- statistics

/// A stream's packets: (SSRC from a small set, sequence step, timestamp,
/// arrival gap in µs), steps mostly small (to exercise loss, reordering and
/// duplicates), sometimes anything (jumps, restarts, wraparound).
fn packet_sequence() -> impl Strategy<Value = Vec<(u32, u16, u32, u32)>> {
    let step = prop_oneof![8 => -3i32..5, 1 => any::<u16>().prop_map(i32::from)];
    proptest::collection::vec((0u32..3, step, any::<u32>(), 0u32..2_000_000), 0..300).prop_map(
        |steps| {
            let mut seq = 0u16;
            steps
                .into_iter()
                .map(|(ssrc, step, ts, gap)| {
                    seq = seq.wrapping_add(step as u16);
                    (ssrc, seq, ts, gap)
                })
                .collect()
        },
    )
}

#[test]
fn rtp_statistics_update() {
    fuzz(
        "statistics",
        (packet_sequence(), any::<u32>()),
        |(packets, clock)| {
            let mut stream = RtpStream::new(clock);
            let mut now = Instant::now();
            for (i, (ssrc, seq, ts, gap)) in packets.iter().enumerate() {
                now += Duration::from_micros(u64::from(*gap));
                let h = RtpHeader {
                    payload_type: 96,
                    marker: false,
                    sequence: *seq,
                    timestamp: *ts,
                    ssrc: *ssrc,
                    payload_offset: 12,
                    payload_len: 100,
                };
                stream.on_packet(&h, 112, now);
                let s = stream.snapshot();
                prop_assert_eq!(s.packets, i as u64 + 1);
                prop_assert_eq!(s.lost, s.expected as i64 - s.received as i64);
                prop_assert!(s.received + s.duplicates <= s.packets, "{s:?}");
                prop_assert!(s.jitter_seconds.is_finite() && s.jitter_seconds >= 0.0);
                prop_assert_eq!(stream.counts().snapshot(clock), s);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------- API bodies

/// RFC 3339 times, valid and not, the extremes included.
fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            0i32..=9999,
            1u8..=12,
            1u8..=31,
            0u8..=23,
            0u8..=59,
            0u8..=60
        )
            .prop_map(|(y, mo, d, h, mi, s)| format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"
            )),
        Just("9999-12-31T23:59:59Z".to_string()),
        Just("9999-12-31T23:50:00Z".to_string()),
        Just("0000-01-01T00:00:00Z".to_string()),
        Just("2026-11-24T10:00:00+14:00".to_string()),
        ".{0,30}",
    ]
}

/// (start, end) in RFC 3339: mostly a real window (start before end, within
/// the years the relay takes, near the top of that range too), sometimes any
/// two times.
fn window_text() -> impl Strategy<Value = (String, String)> {
    let text = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let valid = (
        prop_oneof![0i64..253_000_000_000, 253_000_000_000i64..253_370_764_800],
        1i64..100_000,
    )
        .prop_map(move |(start, minutes)| {
            let start = OffsetDateTime::from_unix_timestamp(start).unwrap();
            (text(start), text(start + time::Duration::minutes(minutes)))
        });
    prop_oneof![4 => valid, 1 => (time_text(), time_text())]
}

fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("null".to_string()),
        Just("true".to_string()),
        ".{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        time_text().prop_map(|t| serde_json::to_string(&t).unwrap()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

/// Create and PATCH bodies: the known fields (and some unknown ones) with
/// values of every JSON kind, times near the representable limits.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let fields = [
        "event_id",
        "group",
        "layout",
        "start",
        "end",
        "source",
        "source_policy",
        "destination",
        "extra",
    ];
    let field = (0..fields.len(), json_text()).prop_map(move |(i, v)| (fields[i], v));
    let sensible = (
        "[a-z0-9-]{1,20}",
        prop_oneof![4 => 0u32..2048, 1 => 0u32..9000],
        prop_oneof![
            Just("audio-only"),
            Just("audio-dual-video"),
            Just("audio-display-video")
        ],
        window_text(),
        prop_oneof![Just("strict"), Just("latch"), Just("any")],
        prop_oneof![4 => 1024u16..49000, 1 => any::<u16>()],
    )
        .prop_map(|(id, g, layout, (start, end), policy, port)| {
            format!(
                r#"{{"event_id":"{id}","group":{g},"layout":"{layout}","start":"{start}","end":"{end}","source":"192.0.2.10","source_policy":"{policy}","destination":{{"address":"198.51.100.5","base_port":{port}}}}}"#
            )
            .into_bytes()
        });
    let fieldwise = proptest::collection::vec(field, 0..10).prop_map(|fs| {
        let inner: Vec<String> = fs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", inner.join(",")).into_bytes()
    });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        fieldwise,
        sensible
    ]
}

fn rules() -> Rules {
    Config::parse("[wowza]\nport_offset = -16384\n")
        .unwrap()
        .rules(vec!["127.0.0.1".parse().unwrap()])
}

#[test]
fn api_bodies_through_validation_and_the_schedule() {
    let rules = rules();
    let admitted = Reach::default();
    fuzz("api bodies", (body(), any::<i64>()), |(bytes, offset)| {
        if let Err(e) = parse::<Change>(&bytes) {
            prop_assert_eq!(e.status().as_u16(), 400);
        }
        let request = match parse::<Reservation>(&bytes) {
            Ok(r) => r,
            Err(e) => {
                prop_assert_eq!(e.status().as_u16(), 400);
                prop_assert!(!e.message().is_empty());
                return Ok(());
            }
        };
        if request.validate(&rules).is_err() {
            return Ok(());
        }
        // What validation lets through, the schedule must take or refuse:
        // admitted at an arbitrary "now", then polled to its end.
        let mut schedule = Schedule::new(
            Timing {
                lead: time::Duration::minutes(30),
                trail: time::Duration::minutes(15),
            },
            Limits {
                last_group: GroupId::try_from(2047).unwrap(),
                max_concurrent: 2048,
                retry: time::Duration::seconds(5),
            },
        );
        let now = OffsetDateTime::UNIX_EPOCH
            .checked_add(time::Duration::seconds(offset % 253_402_300_799))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        if let Ok(group) = schedule.admit(&request, request.group, None, now) {
            admitted.hit();
            schedule.insert(request, group);
            let _ = rtp_relay::reservation::schedule::next_wakeup(schedule.entries());
            let _ = schedule.poll(now);
        }
        Ok(())
    });
    admitted.check("reached the schedule");
}

// ---------------------------------------------------------------- config

/// Configuration files: the known sections and keys with values of every
/// TOML kind (durations and numbers at their extremes), duplicates and
/// unknown keys included; or text that is not TOML at all.
fn config_text() -> impl Strategy<Value = String> {
    // Every key with a value it takes; an entry uses it, or any value of
    // any kind (numbers and durations at their extremes included).
    let keys: &[(&str, &str, &str)] = &[
        ("control", "listen", "\"127.0.0.1:0\""),
        ("control", "token_file", "\"\""),
        ("data", "bind_address", "\"::\""),
        ("data", "workers", "3"),
        ("data", "recv_buffer_bytes", "65536"),
        ("data", "max_packet_size", "1500"),
        ("data", "max_groups", "10"),
        ("data", "allow_below_dynamic_range", "true"),
        ("data", "fast_path", "\"off\""),
        ("data", "fast_path_interfaces", "[\"lo\"]"),
        ("schedule", "lead", "\"1h\""),
        ("schedule", "trail", "\"0s\""),
        ("wowza", "address", "\"198.51.100.5\""),
        ("wowza", "port_offset", "-16384"),
        ("source", "policy", "\"latch\""),
        ("stream", "audio_clock_rate", "44100"),
        ("stream", "stall_timeout", "\"2s\""),
        ("state", "path", "\"x/y\""),
        ("log", "level", "\"debug\""),
        ("log", "format", "\"json\""),
        ("nonsense", "key", "1"),
    ];
    let any_value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (
            any::<u64>(),
            prop_oneof![
                Just("ms"),
                Just("s"),
                Just("m"),
                Just("h"),
                Just("d"),
                Just("y")
            ]
        )
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        Just("\"0.0.0.0:0\"".to_string()),
        Just("\"ebpf\"".to_string()),
        Just("true".to_string()),
        Just("[\"lo\", \"\"]".to_string()),
        ".{0,20}".prop_map(|s| format!("{s:?}")),
    ];
    let entry = (
        0..keys.len(),
        prop_oneof![3 => Just(None), 1 => any_value.prop_map(Some)],
    )
        .prop_map(move |(i, v)| {
            let (section, key, good) = keys[i];
            (section, key, v.unwrap_or_else(|| good.to_string()))
        });
    let structured = proptest::collection::vec(entry, 0..6).prop_map(|entries| {
        // A file as an operator writes it: one header per section, the
        // shipped offset unless an entry sets its own.
        let mut sections: std::collections::BTreeMap<
            &str,
            std::collections::BTreeMap<&str, String>,
        > = Default::default();
        sections
            .entry("wowza")
            .or_default()
            .insert("port_offset", "-16384".into());
        for (section, key, v) in entries {
            sections.entry(section).or_default().insert(key, v);
        }
        sections
            .iter()
            .map(|(section, keys)| {
                let lines: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                format!("[{section}]\n{lines}")
            })
            .collect::<String>()
    });
    prop_oneof![1 => ".{0,200}", 4 => structured]
}

#[test]
fn config_files() {
    let parsed = Reach::default();
    fuzz("config", config_text(), |text| {
        match Config::parse(&text) {
            Ok(c) => {
                parsed.hit();
                // What parses is usable: the derived rules and timing.
                let _ = c.rules(Vec::new());
                let _ = (c.timing(), c.limits(), c.effective_workers());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
    parsed.check("parsed as a configuration");
}

// ---------------------------------------------------------------- journal

/// Journals near the real shape: records with right or wrong checksums,
/// valid or mangled JSON, torn last lines; or noise.
fn journal() -> impl Strategy<Value = Vec<u8>> {
    // Mostly records the relay wrote (valid times, a group in range, the
    // checksum right), so the loader's checks are reached; then mangled ones.
    let window = window_text();
    let record = (
        "[a-z0-9-]{1,12}",
        prop_oneof![4 => 0u32..2048, 1 => 0u32..9000],
        window,
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop_oneof![8 => Just(true), 1 => Just(false)],
        proptest::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(id, group, (start, end), delete, honest, noise)| {
            let json = if delete {
                format!(r#"{{"op":"delete","event_id":"{id}"}}"#)
            } else {
                format!(
                    r#"{{"op":"put","group":{group},"reservation":{{"event_id":"{id}","group":{group},"layout":"audio-only","start":"{start}","end":"{end}","source_policy":"any"}}}}"#
                )
            };
            let mut json = json.into_bytes();
            if !honest {
                json.extend_from_slice(&noise);
            }
            let crc = crc32fast::hash(&json);
            let mut line = format!("{crc:08x} ").into_bytes();
            line.extend_from_slice(&json);
            line.push(b'\n');
            line
        });
    let shaped = (proptest::collection::vec(record, 0..6), 0usize..40).prop_map(|(lines, cut)| {
        let mut all = lines.concat();
        // Sometimes torn: the last `cut` bytes never reached the disk.
        if cut < 20 {
            all.truncate(all.len().saturating_sub(cut));
        }
        all
    });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), shaped]
}

#[test]
fn journal_loading() {
    // On tmpfs where there is one: the journal fsyncs, and on a disk that
    // would bound the long run by the disk, not by the loader.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let path = dir.path().join("reservations");
    let rules = rules();
    let vet = |loaded: &[_]| vet_loaded(&rules, loaded);
    let loaded_some = Reach::default();
    fuzz("journal", journal(), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match Store::open(&path, vet) {
            Ok((store, stored)) => {
                if !stored.is_empty() {
                    loaded_some.hit();
                }
                // A journal that loads is rewritten whole: it loads again the same.
                drop(store);
                let (_, again) =
                    Store::open(&path, vet).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, stored);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
    loaded_some.check("loaded a reservation");
}
