//! The control plane over HTTP against the real binary (docs/api.md). Windows in
//! these tests lie a day ahead unless a test is about binding, so nothing binds.
//! Tests that bind use their own groups above port 61000 (outside the usual
//! ephemeral range) so parallel tests never collide.

mod common;
use common::*;
use std::time::Duration;

const DAY: i64 = 86_400;

fn tomorrow(id: &str, group: Option<u16>) -> String {
    reservation(id, group, "audio-dual-video", &at(DAY), &at(DAY + 3600))
}

#[test]
fn bad_input_gets_400_with_a_reason() {
    let setup = Setup::new();
    let relay = setup.start();
    let (s, e) = (at(DAY), at(DAY + 3600));
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "invalid JSON"),
        ("[]".into(), "invalid JSON"),
        (
            tomorrow("a", None).replace("\"source\"", "\"colour\": 1, \"source\""),
            "unknown field `colour`",
        ),
        (
            reservation("a", None, "audio-triple", &s, &e),
            "unknown variant `audio-triple`",
        ),
        (
            reservation("a", None, "audio-only", &e, &s),
            "must be after start",
        ),
        (
            reservation("a", None, "audio-only", &s, &s),
            "must be after start",
        ),
        (
            reservation("a", Some(8064), "audio-only", &s, &e),
            "out of range",
        ),
        (
            reservation("a", Some(2048), "audio-only", &s, &e),
            "allow_below_dynamic_range",
        ),
        (
            reservation("a", None, "audio-only", "yesterday", &e),
            "start",
        ),
        (tomorrow("bad id", None), "event_id"),
        (
            tomorrow("a", None).replace("\"127.0.0.1\"", "\"not-an-ip\""),
            "source",
        ),
        (
            tomorrow("a", None).replace(", \"source\": \"127.0.0.1\"", ""),
            "source is required",
        ),
        (
            tomorrow("a", None).replace(
                "}",
                ", \"destination\": {\"address\": \"127.0.0.1\", \"base_port\": 65000}}",
            ),
            "loop back into the relay",
        ),
    ];
    for (body, expect) in cases {
        let a = relay.post("/v1/reservations", &body);
        assert_eq!(a.status, 400, "{body} -> {}", a.text);
        assert_eq!(a.body["error"], "invalid_request", "{}", a.text);
        let msg = a.body["message"].as_str().unwrap();
        assert!(
            msg.contains(expect),
            "{body}: message {msg:?} lacks {expect:?}"
        );
    }
    // Oversized bodies are refused before parsing.
    let big = format!("{{\"event_id\": \"{}\"}}", "x".repeat(100_000));
    assert_eq!(relay.post("/v1/reservations", &big).status, 413);
    // Nothing was created by any of it.
    assert_eq!(
        relay.get("/v1/reservations").body["reservations"],
        serde_json::json!([])
    );
    let a = relay.get("/v1/groups/8064");
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let a = relay.get("/v1/nowhere");
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("not_found"))
    );
}

#[test]
fn groups_below_the_dynamic_range_need_the_option() {
    let mut setup = Setup::new();
    setup.data = "allow_below_dynamic_range = true\nmax_groups = 4096\n".into();
    // With groups down to port 1024 in use, Wowza must be another host.
    setup.wowza = "address = \"198.51.100.5\"\nport_offset = 0\n".into();
    let relay = setup.start();
    let a = relay.create(
        &reservation("low", Some(2048), "audio-only", &at(DAY), &at(DAY + 60)),
        "scheduled",
    );
    assert_eq!(a.body["ports"][0]["port"], 49144);
}

#[test]
fn create_is_idempotent_and_conflicts_are_409() {
    let setup = Setup::new();
    let relay = setup.start();
    let body = tomorrow("bio101", Some(14));
    let a = relay.create(&body, "scheduled");
    assert_eq!(a.body["group"], 14);
    assert_eq!(a.body["ports"][0]["port"], 65416);
    assert_eq!(a.body["ports"][2]["stream"], "secondary_video");
    assert_eq!(a.body["destination"]["base_port"], 65416 - 16384);

    // The same request again: 200 with the same reservation.
    let again = relay.post("/v1/reservations", &body);
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body, a.body);

    // Same event_id, different content.
    let other = reservation("bio101", Some(14), "audio-only", &at(DAY), &at(DAY + 3600));
    let c = relay.post("/v1/reservations", &other);
    assert_eq!(
        (c.status, c.body["error"].as_str()),
        (409, Some("conflict")),
        "{}",
        c.text
    );
    assert!(
        c.body["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );

    // Another event on group 14 whose window overlaps (40 min after: trail + lead).
    let overlap = reservation(
        "chem",
        Some(14),
        "audio-only",
        &at(DAY + 3600 + 2400),
        &at(DAY + 9000),
    );
    let c = relay.post("/v1/reservations", &overlap);
    assert_eq!(
        (c.status, c.body["error"].as_str()),
        (409, Some("conflict")),
        "{}",
        c.text
    );
    assert!(c.body["message"].as_str().unwrap().contains("bio101"));

    // Omitting the group allocates the lowest free one.
    let auto = relay.post("/v1/reservations", &tomorrow("auto0", None));
    assert_eq!(
        (auto.status, auto.body["group"].as_u64()),
        (201, Some(0)),
        "{}",
        auto.text
    );

    // A later event on group 14 fits; extending bio101 into it conflicts.
    let later = reservation(
        "chem",
        Some(14),
        "audio-only",
        &at(DAY + 3 * 3600),
        &at(DAY + 4 * 3600),
    );
    assert_eq!(relay.post("/v1/reservations", &later).status, 201);
    let p = relay.patch(
        "/v1/reservations/bio101",
        &format!(r#"{{"end": "{}"}}"#, at(DAY + 3 * 3600)),
    );
    assert_eq!(p.status, 409, "{}", p.text);
    // A smaller overrun fits; the source can change too.
    let p = relay.patch(
        "/v1/reservations/bio101",
        &format!(r#"{{"end": "{}", "source": "192.0.2.77"}}"#, at(DAY + 4000)),
    );
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["source"], "192.0.2.77");
    let bad = relay.patch("/v1/reservations/bio101", r#"{"layout": "audio-only"}"#);
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad = relay.patch(
        "/v1/reservations/bio101",
        &format!(r#"{{"end": "{}"}}"#, at(DAY - 60)),
    );
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .contains("after start"),
        "{}",
        bad.text
    );
    assert_eq!(
        relay
            .patch("/v1/reservations/nope", r#"{"source": "192.0.2.1"}"#)
            .status,
        404
    );

    let list = relay.get("/v1/reservations");
    let ids: Vec<_> = list.body["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["auto0", "bio101", "chem"]);
    assert_eq!(
        relay.get("/v1/reservations/bio101").body["source"],
        "192.0.2.77"
    );

    let d = relay.delete("/v1/reservations/bio101");
    assert_eq!(
        (d.status, d.body["state"].as_str()),
        (200, Some("ended")),
        "{}",
        d.text
    );
    assert_eq!(relay.delete("/v1/reservations/bio101").status, 404);
    assert_eq!(relay.get("/v1/reservations/bio101").status, 404);
}

#[test]
fn exhaustion_with_a_small_max_groups_is_503() {
    let mut setup = Setup::new();
    setup.data = "max_groups = 2\n".into();
    let relay = setup.start();
    assert_eq!(
        relay.post("/v1/reservations", &tomorrow("a", None)).status,
        201
    );
    assert_eq!(
        relay.post("/v1/reservations", &tomorrow("b", None)).status,
        201
    );
    let c = relay.post("/v1/reservations", &tomorrow("c", None));
    assert_eq!(
        (c.status, c.body["error"].as_str()),
        (503, Some("exhausted")),
        "{}",
        c.text
    );
    assert!(c.body["message"].as_str().unwrap().contains("max_groups"));
    // A webcast the day after fits.
    let d = reservation("d", None, "audio-only", &at(2 * DAY), &at(2 * DAY + 60));
    assert_eq!(relay.post("/v1/reservations", &d).status, 201);
}

#[test]
fn mutating_routes_need_the_token() {
    let mut setup = Setup::new();
    let token_file = setup.dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    setup.control = format!("token_file = \"{}\"\n", token_file.display());
    let relay = setup.start();
    let body = tomorrow("t", None);
    for token in [None, Some("wrong"), Some("s3cret2"), Some("")] {
        let a = relay.post_as("/v1/reservations", &body, token);
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}"
        );
    }
    assert_eq!(
        relay
            .post_as("/v1/reservations", &body, Some("s3cret"))
            .status,
        201
    );
    assert_eq!(relay.delete("/v1/reservations/t").status, 401);
    // Reads need no token.
    assert_eq!(relay.get("/v1/reservations/t").status, 200);

    // SIGHUP re-reads the token file. Polled on a reservation that does not
    // exist (404 until the reload, then 401): a poll that beat the reload on
    // "t" would delete it.
    let absent = || relay.delete_as("/v1/reservations/absent", Some("s3cret"));
    assert_eq!(absent().status, 404);
    std::fs::write(&token_file, "rotated").unwrap();
    relay.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || absent().status == 401));
    assert_eq!(
        relay.delete_as("/v1/reservations/t", Some("s3cret")).status,
        401
    );
    assert_eq!(
        relay
            .delete_as("/v1/reservations/t", Some("rotated"))
            .status,
        200
    );
}

#[test]
fn a_port_held_by_another_process_degrades_and_is_retried() {
    let group = 500;
    let squatter = std::net::UdpSocket::bind(("127.0.0.1", base(group) + 1)).unwrap();
    let relay = Setup::new().start();
    let a = relay.create(
        &reservation("held", Some(group), "audio-only", &at(60), &at(3600)),
        "degraded",
    );
    assert_eq!(a.body["errors"][0]["port"], base(group) + 1);
    let why = a.body["errors"][0]["error"].as_str().unwrap();
    assert!(why.contains("Address already in use"), "{why}");
    assert!(
        port_taken(base(group)),
        "the free port of the group is bound"
    );
    let metrics = relay.get("/metrics").text;
    assert!(
        metrics.contains("rtp_relay_reservations{state=\"degraded\"} 1"),
        "{metrics}"
    );

    drop(squatter);
    assert!(
        wait_until(Duration::from_secs(6), || relay
            .get("/v1/reservations/held")
            .body["state"]
            == "active"),
        "binding is retried"
    );
    assert!(port_taken(base(group) + 1));
    assert!(relay.log().contains("group degraded"));
}

#[test]
fn a_window_opening_seconds_after_creation_binds_then_frees() {
    let group = 501;
    let mut setup = Setup::new();
    setup.schedule = "lead = \"2s\"\ntrail = \"1s\"\n".into();
    let relay = setup.start();
    // Window: [start - 2s, end + 1s) = [now + 2s, now + 6s).
    relay.create(
        &reservation("soon", Some(group), "audio-display", &at(4), &at(5)),
        "scheduled",
    );
    assert!(!port_taken(base(group)));
    assert!(
        wait_until(Duration::from_secs(5), || port_taken(base(group))),
        "bound when the window opens"
    );
    assert_eq!(relay.get("/v1/reservations/soon").body["state"], "active");
    assert_eq!(
        relay.get(&format!("/v1/groups/{group}")).body["event_id"],
        "soon"
    );
    for port in [
        base(group),
        base(group) + 1,
        base(group) + 2,
        base(group) + 3,
    ] {
        assert!(port_taken(port), "{port}");
    }
    assert!(
        !port_taken(base(group) + 4),
        "pair 2 is unused in audio-display"
    );
    assert!(
        wait_until(Duration::from_secs(6), || !port_taken(base(group))),
        "freed at end + trail"
    );
    // The API's copy is published just after the sockets close.
    assert!(
        wait_until(Duration::from_secs(2), || relay
            .get("/v1/reservations/soon")
            .status
            == 404
            && relay.get(&format!("/v1/groups/{group}")).status == 404),
        "gone from the API once freed"
    );
}

#[test]
fn delete_frees_ports_at_once_and_metrics_follow() {
    let group = 502;
    let relay = Setup::new().start();
    relay.create(
        &reservation("now", Some(group), "audio-dual-display", &at(0), &at(600)),
        "active",
    );
    assert!(port_taken(base(group) + 5));
    let m = relay.get("/metrics").text;
    assert!(m.contains("rtp_relay_bound_sockets 6"), "{m}");
    assert!(
        m.contains(&format!(
            "rtp_relay_group_info{{destination=\"127.0.0.1:{}\",event_id=\"now\",group=\"{group}\"",
            base(group) - 16384
        )),
        "{m}"
    );
    assert!(m.contains("rtp_relay_control_requests_total{method=\"POST\",route=\"/v1/reservations\",status=\"201\"} 1"), "{m}");
    assert!(m.contains("process_cpu_seconds_total"));
    assert_eq!(relay.get("/readyz").status, 200);
    assert_eq!(relay.get("/healthz").status, 200);
    assert_eq!(relay.delete("/v1/reservations/now").status, 200);
    // Freed before the DELETE answered.
    for port in base(group)..base(group) + 6 {
        assert!(!port_taken(port), "{port}");
    }
    let m = relay.get("/metrics").text;
    assert!(
        m.contains("rtp_relay_bound_sockets 0") && !m.contains("event_id=\"now\""),
        "{m}"
    );
}

/// `rtp_relay_build_info` names the build: its version, the git revision it
/// was built from, and whether the kernel fast path is in it.
#[test]
fn build_info_names_the_running_build() {
    let relay = Setup::new().start();
    let m = relay.get("/metrics").text;
    let line = m
        .lines()
        .find(|l| l.starts_with("rtp_relay_build_info{"))
        .unwrap_or_else(|| panic!("no build info in\n{m}"));
    assert!(line.ends_with("} 1"), "{line}");
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    // Built in a clone (the test command's case): the revision git names.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert!(
            line.contains(&format!("revision=\"{head}\"")),
            "{line} (HEAD {head})"
        );
    }
    let built = std::env::var("RTP_RELAY_SKIP_EBPF").is_err();
    if built {
        assert!(
            line.contains("fast_path_built=\"true\""),
            "{line}: the test command installs clang"
        );
    }
}
