//! `relay.toml` (docs/configuration.md): sections and keys are fixed; every error names the key.

use crate::group::GroupId;
use crate::reservation::schedule::{Limits, MAX_LEAD_TRAIL, Timing};
use crate::reservation::{DefaultDestination, LoopGuard, Rules, SourcePolicy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where `run` and `check-config` look without `--config`.
pub const DEFAULT_PATH: &str = "config/relay.toml";

/// How long a degraded reservation waits before its ports are bound again.
pub const BIND_RETRY: time::Duration = time::Duration::seconds(2);

/// A configuration error: one line naming the key and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration. Missing keys take the defaults below; unknown keys are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[control]`
    pub control: Control,
    /// `[data]`
    pub data: Data,
    /// `[schedule]`
    pub schedule: Schedule,
    /// `[wowza]`
    pub wowza: Wowza,
    /// `[source]`
    pub source: Source,
    /// `[stream]`
    pub stream: Stream,
    /// `[sdp]`
    pub sdp: Sdp,
    /// `[state]`
    pub state: State,
    /// `[log]`
    pub log: Log,
    /// `[cluster]`: absent, one relay on its own journal (docs/cluster.md).
    pub cluster: Option<Cluster>,
}

/// `[control]`: the HTTP control plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// Listener of the API, `/metrics` and health.
    pub listen: SocketAddr,
    /// When set, mutating routes need `Authorization: Bearer <token>`.
    pub token_file: PathBuf,
    /// The token read from `token_file` (never printed).
    #[serde(skip)]
    pub token: Option<String>,
}

/// `[data]`: the data plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Data {
    /// Address the group ports are bound on.
    pub bind_address: IpAddr,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// `SO_RCVBUF` of every group socket.
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF` of every group socket.
    pub send_buffer_bytes: usize,
    /// Larger datagrams are dropped as `oversize`.
    pub max_packet_size: usize,
    /// Reservations whose windows may be open at once.
    pub max_groups: usize,
    /// Allow groups 2048–8063 (ports below 49152).
    pub allow_below_dynamic_range: bool,
    /// `auto` | `ebpf` | `off`.
    pub fast_path: FastPath,
    /// Interfaces the fast path attaches to; empty = those carrying `bind_address`.
    pub fast_path_interfaces: Vec<String>,
    /// `fast_path = "ebpf"` starts even when its pins would not outlive the
    /// process (a bpffs private to the relay's mount namespace).
    pub fast_path_private_pins: bool,
}

/// `[data] fast_path`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FastPath {
    /// eBPF when the kernel and privileges allow.
    Auto,
    /// eBPF or refuse to start.
    Ebpf,
    /// Userspace only.
    Off,
}

impl FastPath {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            FastPath::Auto => "auto",
            FastPath::Ebpf => "ebpf",
            FastPath::Off => "off",
        }
    }
}

/// `[schedule]`: the reservation window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Bound this long before the event starts.
    pub lead: Dur,
    /// Freed this long after it ends.
    pub trail: Dur,
}

/// `[wowza]`: the default destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Wowza {
    /// Wowza's address.
    pub address: IpAddr,
    /// Destination base port = `base(g) + port_offset`.
    pub port_offset: i32,
    /// Wowza's content folder, where every reservation's SDP is kept once
    /// ready; empty: none written.
    pub sdp_dir: PathBuf,
}

/// `[sdp]`: the audio codec parameters, which RTP does not carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sdp {
    /// `a=rtpmap` of every audio stream, after the payload type.
    pub audio_rtpmap: String,
    /// `a=fmtp` of every audio stream, after the payload type (empty: none).
    pub audio_fmtp: String,
}

impl Default for Sdp {
    fn default() -> Self {
        // AAC-LC, 48 kHz stereo, as RFC 3640 carries it (what Echo360
        // captures send); `config` is the AudioSpecificConfig.
        Sdp {
            audio_rtpmap: "MPEG4-GENERIC/48000/2".into(),
            audio_fmtp: "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190".into(),
        }
    }
}

/// `[source]`: the default source policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Source {
    /// `strict` | `latch` | `any`.
    pub policy: SourcePolicy,
}

/// `[stream]`: measurement settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stream {
    /// RTP clock of audio streams (Hz).
    pub audio_clock_rate: u32,
    /// RTP clock of video and display streams (Hz).
    pub video_clock_rate: u32,
    /// A stream with no packet for this long in an active window is stalled.
    pub stall_timeout: Dur,
}

/// `[state]`: durable state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// The reservation journal file.
    pub path: PathBuf,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `error` | `warn` | `info` | `debug` | `trace`.
    pub level: String,
    /// `text` | `json`.
    pub format: LogFormat,
}

/// `[cluster]`: relays that share their reservations in etcd and elect the
/// one that forwards (docs/cluster.md). No defaults but `lease_ttl`: a node
/// must be told where etcd is and who it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// etcd's client URLs, e.g. `http://10.0.0.5:2379`.
    pub etcd_endpoints: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// `address/prefix` the active node holds (where appliances send); empty:
    /// the address is managed elsewhere.
    #[serde(default)]
    pub service_address: String,
    /// The interface that carries `service_address`.
    #[serde(default)]
    pub service_interface: String,
    /// The active node's lease: failover happens within this + 1 s.
    #[serde(default = "Cluster::default_lease_ttl")]
    pub lease_ttl: Dur,
}

impl Cluster {
    fn default_lease_ttl() -> Dur {
        Dur(std::time::Duration::from_secs(3))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError(format!("cluster.{key}: {msg}")));
        if self.etcd_endpoints.is_empty() {
            return err(
                "etcd_endpoints",
                "name at least one etcd client URL, e.g. [\"http://127.0.0.1:2379\"]".into(),
            );
        }
        for e in &self.etcd_endpoints {
            if e.starts_with("https://") {
                return err(
                    "etcd_endpoints",
                    format!(
                        "{e:?}: TLS to etcd is not supported yet; reach etcd over http:// on a trusted network (docs/cluster.md)"
                    ),
                );
            }
            let rest = e.strip_prefix("http://").unwrap_or("");
            if rest.is_empty() || rest.contains('/') {
                return err(
                    "etcd_endpoints",
                    format!(
                        "{e:?} is not a client URL: write http://host:port, e.g. \"http://127.0.0.1:2379\""
                    ),
                );
            }
        }
        let name_ok = !self.node_name.is_empty()
            && self.node_name.len() <= 64
            && self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return err(
                "node_name",
                format!(
                    "{:?}: use 1–64 letters, digits, '-', '_' or '.', unique per node",
                    self.node_name
                ),
            );
        }
        if !self.service_address.is_empty() {
            // The same check as at start: an address and prefix, an interface name.
            crate::cluster::address::ServiceAddress::new(
                &self.service_address,
                &self.service_interface,
            )
            .map_err(|e| ConfigError(format!("cluster.{e}")))?;
        }
        let ttl = self.lease_ttl.0;
        if ttl < std::time::Duration::from_secs(2) || ttl.subsec_nanos() != 0 || ttl.as_secs() > 60
        {
            return err(
                "lease_ttl",
                format!(
                    "{}: use whole seconds from \"2s\" to \"60s\" (etcd leases count in seconds)",
                    humantime::format_duration(ttl)
                ),
            );
        }
        Ok(())
    }
}

/// `[log] format`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration written as text such as `"30m"` or `"5s"`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

impl Dur {
    /// As a `time::Duration` for schedule arithmetic.
    pub fn to_time(self) -> time::Duration {
        time::Duration::try_from(self.0).unwrap_or(time::Duration::MAX)
    }

    fn minutes(m: u64) -> Self {
        Dur(std::time::Duration::from_secs(60 * m))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}): write a number and a unit, such as \"30m\" or \"5s\""
            ))
        })
    }
}

impl Default for Control {
    fn default() -> Self {
        Control {
            listen: SocketAddr::from(([127, 0, 0, 1], 9870)),
            token_file: PathBuf::new(),
            token: None,
        }
    }
}

impl Default for Data {
    fn default() -> Self {
        Data {
            // Loopback until told otherwise: nothing is exposed (and the fast
            // path attaches to lo only) before an operator says where
            // appliances send (config/production.toml).
            bind_address: IpAddr::from([127, 0, 0, 1]),
            workers: 0,
            recv_buffer_bytes: 4 << 20,
            send_buffer_bytes: 4 << 20,
            max_packet_size: 4096,
            max_groups: 2048,
            allow_below_dynamic_range: false,
            fast_path: FastPath::Auto,
            fast_path_interfaces: Vec::new(),
            fast_path_private_pins: false,
        }
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            lead: Dur::minutes(30),
            trail: Dur::minutes(15),
        }
    }
}

impl Default for Wowza {
    fn default() -> Self {
        Wowza {
            address: IpAddr::from([127, 0, 0, 1]),
            port_offset: 0,
            sdp_dir: PathBuf::new(),
        }
    }
}

impl Default for Source {
    fn default() -> Self {
        Source {
            policy: SourcePolicy::Strict,
        }
    }
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            audio_clock_rate: 48_000,
            video_clock_rate: 90_000,
            stall_timeout: Dur(std::time::Duration::from_secs(5)),
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            path: PathBuf::from("state/reservations"),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl Config {
    /// Reads, parses and validates a configuration file, and reads its token file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "{}: cannot read the configuration ({e}); pass an existing file with --config",
                path.display()
            ))
        })?;
        let mut config =
            Config::parse(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        config
            .read_token()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Parses and validates configuration text (no file access).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| {
                format!(
                    "line {}: ",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default()
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError(format!("{}{}", line_of(e.span()), e.message().trim())))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.inner();
            let at = line_of(inner.span());
            let msg = inner
                .message()
                .trim()
                .replace("unknown field", "unknown key");
            if key == "." {
                ConfigError(format!("{at}{msg}"))
            } else {
                ConfigError(format!("{at}{key}: {msg}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn read_token(&mut self) -> Result<(), ConfigError> {
        let file = &self.control.token_file;
        if file.as_os_str().is_empty() {
            self.control.token = None;
            return Ok(());
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError(format!(
                "control.token_file: cannot read {} ({e}); create it with the bearer token, or set token_file = \"\"",
                file.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError(format!(
                "control.token_file: {} is empty; write the bearer token into it",
                file.display()
            )));
        }
        self.control.token = Some(token.to_string());
        Ok(())
    }

    /// Checks values serde cannot: ranges, relations between keys, forwarding loops.
    fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError(format!("{key}: {msg}")));
        if let Err(e) = crate::sdp::render::check_rtpmap(&self.sdp.audio_rtpmap) {
            return err("sdp.audio_rtpmap", e);
        }
        if let Err(e) = crate::sdp::render::check_fmtp(&self.sdp.audio_fmtp) {
            return err("sdp.audio_fmtp", e);
        }
        let d = &self.data;
        if d.recv_buffer_bytes == 0 || d.send_buffer_bytes == 0 {
            return err(
                "data.recv_buffer_bytes/send_buffer_bytes",
                "must be greater than 0 (bytes)".into(),
            );
        }
        if !(12..=65535).contains(&d.max_packet_size) {
            return err(
                "data.max_packet_size",
                format!(
                    "{} is out of range: use 12–65535 bytes (Wowza's default is 4096)",
                    d.max_packet_size
                ),
            );
        }
        let groups = usize::from(GroupId::last_allowed(d.allow_below_dynamic_range).get()) + 1;
        if d.max_groups == 0 || d.max_groups > groups {
            return err(
                "data.max_groups",
                format!(
                    "{} is out of range: use 1–{groups}{}",
                    d.max_groups,
                    if d.allow_below_dynamic_range {
                        ""
                    } else {
                        " (or more with allow_below_dynamic_range = true)"
                    }
                ),
            );
        }
        // Reservation times leave room for this much on each side (README
        // "Port groups"), so no lead or trail accepted here, at start or on
        // reload, can put a window out of range.
        for (key, d) in [
            ("schedule.lead", self.schedule.lead),
            ("schedule.trail", self.schedule.trail),
        ] {
            if d.to_time() > MAX_LEAD_TRAIL {
                return err(
                    key,
                    format!(
                        "{} is longer than the 7 days allowed",
                        humantime::format_duration(d.0)
                    ),
                );
            }
        }
        for (key, rate) in [
            ("stream.audio_clock_rate", self.stream.audio_clock_rate),
            ("stream.video_clock_rate", self.stream.video_clock_rate),
        ] {
            if rate == 0 {
                return err(key, "must be greater than 0 (Hz)".into());
            }
        }
        if self.stream.stall_timeout.0.is_zero() {
            return err(
                "stream.stall_timeout",
                "must be longer than 0s, e.g. \"5s\"".into(),
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.state.path.as_os_str().is_empty() {
            return err(
                "state.path",
                "must name the state file, e.g. \"state/reservations\"".into(),
            );
        }
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            return err(
                "log.level",
                format!(
                    "unknown level {:?}: use one of {}",
                    self.log.level,
                    LOG_LEVELS.join(", ")
                ),
            );
        }
        self.check_default_destination()
    }

    /// Every group's default destination must be of a family `bind_address`
    /// reaches, and a valid port range that does not loop back into the
    /// relay's own group ports.
    fn check_default_destination(&self) -> Result<(), ConfigError> {
        let guard = self.loop_guard(Vec::new());
        let last = GroupId::last_allowed(self.data.allow_below_dynamic_range);
        let off = self.wowza.port_offset;
        let lowest = i32::from(last.base()) + off;
        let highest = i32::from(GroupId::FIRST.base()) + off;
        if lowest < 1 || highest > 65528 {
            return Err(ConfigError(format!(
                "wowza.port_offset: {off} moves the default destination of groups 0–{last} to ports {lowest}–{}, outside 1–65535; choose an offset between {} and 0",
                highest + 7,
                1 - i32::from(last.base()),
            )));
        }
        guard
            .reaches(self.wowza.address)
            .map_err(|e| ConfigError(format!("wowza.address: {e}")))?;
        guard
            .check(self.wowza.address, lowest as u16, (highest + 7) as u16)
            .map_err(|e| {
                ConfigError(format!(
                    "wowza.address/port_offset: the default {e} (for example port_offset = -16384)"
                ))
            })
    }

    /// The forwarding-loop guard, given the host's interface addresses.
    pub fn loop_guard(&self, local_addresses: Vec<IpAddr>) -> LoopGuard {
        LoopGuard {
            bind_address: self.data.bind_address,
            local_addresses,
            lowest_port: GroupId::last_allowed(self.data.allow_below_dynamic_range).base(),
        }
    }

    /// The rules requests are checked against.
    pub fn rules(&self, local_addresses: Vec<IpAddr>) -> Rules {
        Rules {
            allow_below_dynamic_range: self.data.allow_below_dynamic_range,
            default_policy: self.source.policy,
            wowza: DefaultDestination {
                address: self.wowza.address,
                port_offset: self.wowza.port_offset,
            },
            loop_guard: self.loop_guard(local_addresses),
        }
    }

    /// Lead and trail.
    pub fn timing(&self) -> Timing {
        Timing {
            lead: self.schedule.lead.to_time(),
            trail: self.schedule.trail.to_time(),
        }
    }

    /// Capacity of the schedule.
    pub fn limits(&self) -> Limits {
        Limits {
            last_group: GroupId::last_allowed(self.data.allow_below_dynamic_range),
            max_concurrent: self.data.max_groups,
            retry: BIND_RETRY,
        }
    }

    /// Why this configuration leaves the API open, if it does: `listen` beyond
    /// loopback without a token lets anyone who reaches it create, change and
    /// delete reservations (docs/api.md).
    pub fn open_api_warning(&self) -> Option<String> {
        let listen = self.control.listen;
        (!listen.ip().to_canonical().is_loopback() && self.control.token.is_none()).then(|| {
            format!(
                "control.listen {listen} is reachable from other hosts, without a token_file: anyone who reaches it can create, change and delete reservations and choose where media goes; set [control] token_file, or listen on 127.0.0.1"
            )
        })
    }

    /// What the kernel fast path takes from this configuration.
    pub fn fast_path_options(&self) -> crate::dataplane::ebpf::Options {
        crate::dataplane::ebpf::Options {
            mode: match self.data.fast_path {
                FastPath::Auto => crate::dataplane::ebpf::Mode::Auto,
                FastPath::Ebpf => crate::dataplane::ebpf::Mode::Ebpf,
                FastPath::Off => crate::dataplane::ebpf::Mode::Off,
            },
            interfaces: self.data.fast_path_interfaces.clone(),
            // Canonical once here (an IPv4-mapped address is the IPv4 one), so
            // the fast path compares plain IPv4 addresses.
            bind_address: self.data.bind_address.to_canonical(),
            state_path: self.state.path.clone(),
            private_pins: self.data.fast_path_private_pins,
        }
    }

    /// What the userspace data plane takes from this configuration.
    pub fn data_plane_options(&self) -> crate::dataplane::Options {
        crate::dataplane::Options {
            bind_address: self.data.bind_address,
            recv_buffer_bytes: self.data.recv_buffer_bytes,
            send_buffer_bytes: self.data.send_buffer_bytes,
            max_packet_size: self.data.max_packet_size,
            workers: self.effective_workers(),
            audio_clock_rate: self.stream.audio_clock_rate,
            video_clock_rate: self.stream.video_clock_rate,
            steering_port: self.control.listen.port(),
        }
    }

    /// Worker threads in effect (`workers = 0` means one per core).
    pub fn effective_workers(&self) -> usize {
        match self.data.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The configuration as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_gets_an_ipv4_mapped_bind_address_as_ipv4() {
        let c = Config::parse(
            "[data]\nbind_address = \"::ffff:127.0.0.1\"\n[wowza]\nport_offset = -16384\n",
        )
        .unwrap();
        assert_eq!(
            c.fast_path_options().bind_address,
            IpAddr::from([127, 0, 0, 1])
        );
    }

    #[test]
    fn the_shipped_files_parse_and_only_the_production_example_leaves_loopback() {
        let shipped = Config::parse(include_str!("../config/relay.toml")).unwrap();
        assert!(shipped.data.bind_address.is_loopback());
        assert!(shipped.control.listen.ip().is_loopback());
        assert_eq!(
            shipped.data.bind_address,
            Config::parse("[wowza]\nport_offset = -16384\n")
                .unwrap()
                .data
                .bind_address,
            "the shipped value is the default"
        );
        let production = Config::parse(include_str!("../config/production.toml")).unwrap();
        assert!(production.data.bind_address.is_unspecified());
        assert!(!production.wowza.address.is_loopback());
        assert_eq!(production.wowza.port_offset, 0);
        assert!(
            !production.control.token_file.as_os_str().is_empty(),
            "the production example sets a token"
        );
    }

    #[test]
    fn sdp_keys_ship_their_defaults_and_are_checked() {
        let shipped = Config::parse(include_str!("../config/relay.toml")).unwrap();
        assert_eq!(shipped.sdp, Sdp::default());
        assert!(shipped.wowza.sdp_dir.as_os_str().is_empty(), "off");
        let e = |t: &str| Config::parse(t).unwrap_err().0;
        assert!(
            e("[sdp]\naudio_rtpmap = \"AAC\"\n")
                .starts_with("sdp.audio_rtpmap: \"AAC\" is not an rtpmap"),
            "{}",
            e("[sdp]\naudio_rtpmap = \"AAC\"\n")
        );
        assert!(e("[sdp]\naudio_fmtp = \"a\\nb\"\n").starts_with("sdp.audio_fmtp: contains"));
        assert!(e("[sdp]\nvideo_fmtp = \"\"\n").contains("unknown key"));
        let c = Config::parse("[wowza]\nport_offset = -16384\nsdp_dir = \"/srv/wowza/content\"\n")
            .unwrap();
        assert_eq!(c.wowza.sdp_dir, PathBuf::from("/srv/wowza/content"));
    }

    #[test]
    fn the_commented_cluster_examples_parse_when_uncommented() {
        for text in [
            include_str!("../config/relay.toml"),
            include_str!("../config/production.toml"),
        ] {
            // Alone but for a destination that does not loop back.
            let section: String = ["[wowza]", "port_offset = -16384"]
                .into_iter()
                .chain(
                    text.lines()
                        .skip_while(|l| !l.starts_with("# [cluster]"))
                        .map(|l| l.strip_prefix("# ").unwrap_or(l)),
                )
                .collect::<Vec<_>>()
                .join("\n");
            let c = Config::parse(&section).unwrap();
            let cluster = c.cluster.expect("a [cluster] section");
            assert_eq!(cluster.lease_ttl.0, std::time::Duration::from_secs(3));
            assert!(!cluster.etcd_endpoints.is_empty());
        }
    }

    #[test]
    fn the_shipped_config_is_valid_and_does_not_loop() {
        let text = include_str!("../config/relay.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.control.listen.port(), 9870);
        assert!(c.wowza.port_offset < 0);
        assert_eq!(c.timing().lead, time::Duration::minutes(30));
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| Config::parse(t).unwrap_err().0;
        let base = "[wowza]\nport_offset = -16384\n";
        assert!(
            e(&format!("{base}[data]\nworkerz = 2\n"))
                .contains("line 4: data.workerz: unknown key `workerz`")
        );
        assert!(e(&format!("{base}[colour]\n")).contains("unknown key `colour`"));
        assert!(
            e(&format!("{base}[schedule]\nlead = \"30x\"\n"))
                .contains("schedule.lead: invalid duration")
        );
        assert!(e(&format!("{base}[source]\npolicy = \"open\"\n")).contains("source.policy"));
        assert!(e(&format!("{base}[data]\nmax_groups = 4000\n")).contains("data.max_groups"));
        assert!(
            e(&format!("{base}[schedule]\ntrail = \"7days 1s\"\n"))
                .contains("schedule.trail: 7days 1s is longer than the 7 days allowed")
        );
        assert!(Config::parse(&format!("{base}[schedule]\nlead = \"7days\"\n")).is_ok());
        assert!(e(&format!("{base}[log]\nlevel = \"loud\"\n")).contains("log.level"));
        assert!(
            e(&format!("{base}[data]\nbind_address = \"nowhere\"\n")).contains("data.bind_address")
        );
        assert!(e("[data\n").contains("line 1"));
        // The defaults alone send group 0 to 127.0.0.1:65528, the relay's own port.
        assert!(e("").contains("wowza.address/port_offset"));
        assert!(e("[wowza]\nport_offset = -60000\n").contains("wowza.port_offset"));
        // A remote Wowza may use the same ports.
        assert!(Config::parse("[wowza]\naddress = \"198.51.100.5\"\n").is_ok());
        // Errors are one line.
        assert!(!e(&format!("{base}[data]\nworkerz = 2\n")).contains('\n'));
    }

    #[test]
    fn check_config_output_parses_back_to_the_same_config() {
        let c = Config::parse(include_str!("../config/relay.toml")).unwrap();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }
}
