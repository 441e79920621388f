//! docs/metrics.md against a real Prometheus (Debian's `prometheus` package, installed
//! by the test command): it scrapes the relay every second while known traffic
//! (with known loss) flows, and its query API must show exactly that traffic.
//! `promtool` checks the exposition, the alert rules, and their unit tests.
//! Group 314 is this file's.

mod common;
use common::*;
use serde_json::Value;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GROUP: u16 = 314;

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: run the README's test command (scripts/test), which installs Debian's prometheus package"
    );
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

struct Prometheus {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

impl Prometheus {
    fn start(dir: &std::path::Path, target: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rtp-relay\n    static_configs:\n      - targets: [\"{target}\"]\n"),
        )
        .unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build(),
            ),
        };
        assert!(
            wait_until(Duration::from_secs(20), || p
                .agent
                .get(format!("{}/-/ready", p.url))
                .call()
                .is_ok_and(|r| r.status() == 200)),
            "prometheus did not become ready"
        );
        p
    }

    /// Prometheus's answer to an instant `query` (Null when there is none).
    fn answer(&self, query: &str) -> Value {
        let Ok(mut r) = self
            .agent
            .get(format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
        else {
            return Value::Null;
        };
        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null)
    }

    /// The instant vector of `query`.
    fn query(&self, query: &str) -> Vec<Value> {
        let v = self.answer(query);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Does Prometheus evaluate `query` without error?
    fn accepts(&self, query: &str) -> bool {
        self.answer(query)["status"] == "success"
    }

    /// The value of a single-series query, if there is one.
    fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query);
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_sees_the_traffic_that_was_sent() {
    let setup = Setup::new();
    let relay = setup.start();
    relay.create(
        &reservation("prom", Some(GROUP), "audio-only", &at(0), &at(600)),
        "active",
    );
    let prometheus = Prometheus::start(setup.dir.path(), relay.url.trim_start_matches("http://"));
    let _wowza = UdpSocket::bind(("127.0.0.1", base(GROUP) - 16384)).unwrap();
    // Prometheus throttles target discovery to 5 s: wait for its first scrape.
    assert!(
        wait_until(Duration::from_secs(20), || prometheus
            .value("up{job=\"rtp-relay\"}")
            == Some(1.0)),
        "prometheus never scraped the relay"
    );

    // 1000 sequence numbers at 100 per second; every 20th is never sent:
    // 950 packets forwarded, 49 lost (the last gap, 999, follows the last packet
    // sent, so RFC 3550 does not expect it).
    let sender = std::thread::spawn(move || {
        let appliance = UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in 0..1000u16 {
            if seq % 20 != 19 {
                appliance
                    .send_to(&rtp(0x314, seq, 100), ("127.0.0.1", base(GROUP)))
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let series = format!(
        "rtp_relay_packets_total{{group=\"{GROUP}\",stream=\"primary_audio\",plane=\"rtp\",direction=\"to_wowza\"}}"
    );
    // While it flows, the rate is ~95 packets/s (sleeps make it a little less).
    std::thread::sleep(Duration::from_secs(7));
    let mut rate = None;
    assert!(wait_until(Duration::from_secs(2), || {
        rate = prometheus.value(&format!("rate({series}[4s])"));
        rate.is_some()
    }));
    let rate = rate.unwrap();
    let raw = prometheus.query(&format!("{series}[5s]"));
    assert!((60.0..=110.0).contains(&rate), "rate {rate}: raw {raw:?}");
    sender.join().unwrap();

    assert!(
        wait_until(Duration::from_secs(10), || prometheus.value(&series)
            == Some(950.0)),
        "packets: {:?}",
        prometheus.query(&series)
    );
    let lost =
        format!("rtp_relay_rtp_lost_packets_total{{group=\"{GROUP}\",stream=\"primary_audio\"}}");
    assert_eq!(prometheus.value(&lost), Some(49.0));
    let info = prometheus.query(&format!("rtp_relay_group_info{{group=\"{GROUP}\"}}"));
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["event_id"], "prom");
    assert_eq!(info[0]["metric"]["layout"], "audio-only");
    assert_eq!(info[0]["metric"]["source"], "127.0.0.1");
    assert_eq!(info[0]["value"][1], "1");
    assert_eq!(
        prometheus.value("rtp_relay_reservations{state=\"active\"}"),
        Some(1.0)
    );

    // The exposition passes promtool's lint.
    let exposition = relay.get("/metrics").text;
    let mut check = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), exposition.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every query of the shipped Grafana dashboard is valid PromQL over our
    // series, filters by the relay picked ($instance), and the per-group panels
    // find this group on this relay and nothing on another.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let instance = relay.url.trim_start_matches("http://");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))["query"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The variables' label_values(series, label) find this relay and group.
    for (name, series, label, value) in [
        (
            "instance",
            "rtp_relay_build_info".to_string(),
            "instance",
            instance.to_string(),
        ),
        (
            "group",
            format!("rtp_relay_group_info{{instance=~\"{instance}\"}}"),
            "group",
            GROUP.to_string(),
        ),
    ] {
        let query = variable(name).replace("$instance", instance);
        assert_eq!(query, format!("label_values({series}, {label})"));
        let found = prometheus.query(&series);
        assert!(
            found.iter().any(|s| s["metric"][label] == value.as_str()),
            "{name}: {query} misses {value}: {found:?}"
        );
    }
    let mut exprs = 0;
    let mut found = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let title = &panel["title"];
            // Every selector of the query, not just one of them.
            assert_eq!(
                expr.matches('{').count(),
                expr.matches("instance=~\"$instance\"").count(),
                "dashboard panel {title}: a selector without instance=~\"$instance\": {expr}"
            );
            assert!(
                target["legendFormat"]
                    .as_str()
                    .unwrap()
                    .contains("{{instance}}"),
                "dashboard panel {title}: the legend does not name the relay"
            );
            let on = |instance: &str| {
                expr.replace("$instance", instance)
                    .replace("$group", &GROUP.to_string())
            };
            assert!(
                prometheus.accepts(&on(instance)),
                "dashboard panel {title}: {}",
                on(instance)
            );
            assert!(
                prometheus.query(&on("192.0.2.1:9870")).is_empty(),
                "dashboard panel {title} shows another relay's series: {}",
                on("192.0.2.1:9870")
            );
            if !prometheus.query(&on(instance)).is_empty() {
                found += 1;
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 8);
    // Those that need no rate over minutes: jitter, last-packet age, Wowza's
    // loss (none reported: no series), reservations, and more once rates fill.
    assert!(found >= 3, "{found} of {exprs} panels show this relay");
    assert!(
        !prometheus
            .query(&format!(
                "rtp_relay_rtp_jitter_seconds{{group=~\"{GROUP}\"}}"
            ))
            .is_empty()
    );

    // A freed group's series are gone from the next scrape on.
    assert_eq!(relay.delete("/v1/reservations/prom").status, 200);
    assert!(wait_until(Duration::from_secs(10), || prometheus
        .query(&series)
        .is_empty()));
}

#[test]
fn the_shipped_alert_rules_are_valid_and_behave() {
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        vec!["check", "rules", "config/alerts.yml"],
        vec!["check", "config", "config/prometheus.yml"],
        vec!["test", "rules", "tests/prometheus/alerts_test.yml"],
    ] {
        let out = Command::new(tool("promtool"))
            .args(&args)
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_grafana_provisioning_files_load_the_shipped_dashboard_from_prometheus() {
    let root = env!("CARGO_MANIFEST_DIR");
    let yaml = |path: &str| -> serde_yaml::Value {
        let text = std::fs::read_to_string(format!("{root}/{path}")).unwrap();
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let sources = yaml("config/grafana/provisioning/datasources/rtp-relay.yml");
    assert_eq!(sources["apiVersion"], 1);
    let source = &sources["datasources"][0];
    assert_eq!(source["type"], "prometheus");
    assert_eq!(source["isDefault"], true);
    assert!(source["url"].as_str().unwrap().starts_with("http"));

    let providers = yaml("config/grafana/provisioning/dashboards/rtp-relay.yml");
    assert_eq!(providers["apiVersion"], 1);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], "file");
    let path = provider["options"]["path"].as_str().unwrap();
    assert!(path.starts_with('/'), "{path}");

    // The dashboard picks its data source by type: the provisioned one.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/config/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let datasource = &dashboard["templating"]["list"][0];
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"].as_str(), source["type"].as_str());

    // docs/metrics.md mounts both where these files say.
    let docs = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap();
    assert!(
        docs.contains(&format!("config/grafana-dashboard.json:{path}/")),
        "docs/metrics.md does not mount the dashboard in {path}"
    );
    assert!(docs.contains("config/grafana/provisioning:/etc/grafana/provisioning"));
}
