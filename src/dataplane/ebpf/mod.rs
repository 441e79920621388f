//! The kernel fast path (docs/forwarding.md, "Kernel fast path"): `relay.bpf.c`'s TC
//! program attached at TCX ingress of the relay's interfaces, forwarding the
//! media packets of established streams, with its forwarding table — a mirror
//! of the userspace one — in BPF maps.
//!
//! - [`table`]: the maps' row layouts (plain data);
//! - [`route`]: which interfaces to attach to and how the relay's own socket
//!   would route a destination (read from the kernel);
//! - [`test_run`]: the program attached nowhere, run on crafted frames
//!   (`BPF_PROG_TEST_RUN`) by tests and benchmarks;
//! - [`kfunc`]: the program's calls to kernel functions, linked before load;
//! - this module: loading, attaching, pinning and the table's writes.
//!
//! Maps and links are pinned under bpffs per relay instance, so the kernel
//! keeps forwarding open windows while the process is gone, and a restarted
//! relay adopts them: the same maps, each link switched atomically to the new
//! program. [`FastPath::shutdown`] (SIGTERM) detaches and removes everything.

mod kfunc;
pub mod route;
pub mod table;
pub mod test_run;

use crate::dataplane::rule::PortRule;
use aya::maps::{Array, Map, MapData};
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use table::{Glance, Locals, Rule, Stream, Unsupported};

/// Where every relay instance pins its state.
pub const PIN_ROOT: &str = "/sys/fs/bpf/rtp-relay";
pub(crate) const PROGRAM: &str = "rtp_relay_ingress";
/// Reads of a stream before one that no update tore is given up on (the
/// last is taken: an update takes nanoseconds, so this is never reached but
/// under a flood of packets on that very port).
const STREAM_READS: usize = 4;
/// `BPF_F_MMAPABLE`: an array map whose values can be mapped into memory.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The compiled program, when this build has one.
#[cfg(ebpf_program)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/relay.bpf.o"
)));
#[cfg(not(ebpf_program))]
const OBJECT: Option<&[u8]> = None;

/// The pin directory of the relay whose state file is `state_path`: one per
/// instance, named after the state file so that an operator can tell whose it
/// is (bpffs refuses dots in names: they become dashes like the slashes).
pub fn pin_dir(state_path: &Path) -> PathBuf {
    let absolute = std::path::absolute(state_path).unwrap_or_else(|_| state_path.to_path_buf());
    let name: String = absolute
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Path::new(PIN_ROOT).join(name)
}

/// Whether the fast path runs (`[data] fast_path`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// eBPF when the kernel and privileges allow, else userspace.
    Auto,
    /// eBPF or refuse to start.
    Ebpf,
    /// Userspace only.
    Off,
}

/// What the fast path takes from the configuration (`[data]` and `[state]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `fast_path`: auto, ebpf or off.
    pub mode: Mode,
    /// `fast_path_interfaces`; empty: those carrying `bind_address`.
    pub interfaces: Vec<String>,
    /// `bind_address`.
    pub bind_address: IpAddr,
    /// `[state] path`: names this instance's pin directory.
    pub state_path: PathBuf,
    /// `fast_path_private_pins`: `ebpf` runs even when the pins would not
    /// outlive the process ([`route::private_pins`]).
    pub private_pins: bool,
}

/// Decides whether the fast path runs: `Ok(Some(_))` loaded and attached,
/// `Ok(None)` userspace only (with the reason, for `auto`), `Err` when `ebpf`
/// was required and cannot be had — or would not survive a crash, unless
/// `private_pins` accepts that. Pins that would not outlive the process are
/// logged as a warning whenever the fast path runs.
pub fn start(options: &Options) -> Result<(Option<FastPath>, String), String> {
    let mode = options.mode;
    if mode == Mode::Off {
        return Ok((None, "fast_path = \"off\"".into()));
    }
    let private = private_pins();
    if let (Some(why), Mode::Ebpf, false) = (&private, mode, options.private_pins) {
        return Err(refusal(why));
    }
    match FastPath::load(options) {
        Ok(fp) => {
            if let Some(why) = &private {
                tracing::warn!("{why}");
            }
            let why = format!("eBPF attached to {}", fp.interfaces.join(","));
            Ok((Some(fp), why))
        }
        Err(why) if mode == Mode::Ebpf => Err(format!(
            "data.fast_path = \"ebpf\" but the fast path cannot run: {why}; fix that or use \"auto\""
        )),
        Err(why) => Ok((None, why)),
    }
}

/// What `run` would do about the fast path with `options`, in one line (for
/// `check-config`; nothing is loaded).
pub fn plan(options: &Options) -> String {
    let mode = options.mode;
    if mode == Mode::Off {
        return "userspace (fast_path = \"off\")".into();
    }
    let attach = unavailable().map_or_else(
        || route::interfaces(&options.interfaces, options.bind_address),
        Err,
    );
    match (attach, mode) {
        (Ok(names), _) => {
            let at = format!("eBPF at TCX ingress of {}", names.join(", "));
            match (private_pins(), mode, options.private_pins) {
                (None, ..) => at,
                (Some(why), Mode::Ebpf, false) => {
                    format!(
                        "none: fast_path = \"ebpf\" would refuse to start: {}",
                        refusal(&why)
                    )
                }
                (Some(why), ..) => format!("{at} — WARNING: {why}"),
            }
        }
        (Err(why), Mode::Ebpf) => {
            format!("none: fast_path = \"ebpf\" would refuse to start: {why}")
        }
        (Err(why), _) => format!("userspace ({why})"),
    }
}

/// Why the pins would not outlive the process, once the fast path could run
/// at all (a missing capability or kernel is the reason to name first).
fn private_pins() -> Option<String> {
    unavailable().is_none().then(route::private_pins).flatten()
}

/// `ebpf`'s one-line refusal of pins that would not outlive the process.
fn refusal(why: &str) -> String {
    format!(
        "data.fast_path = \"ebpf\" but {why}; or set data.fast_path_private_pins = true to run so anyway"
    )
}

/// Whether this build carries the kernel fast path's program.
pub fn built() -> bool {
    OBJECT.is_some()
}

/// Why the kernel fast path cannot run here, checked before loading so that
/// the error names the missing piece rather than a syscall.
pub fn unavailable() -> Option<String> {
    if OBJECT.is_none() {
        return Some(
            option_env!("RTP_RELAY_EBPF_MISSING")
                .unwrap_or("this build has no eBPF program")
                .to_string(),
        );
    }
    if let Some(why) = route::kernel_too_old() {
        return Some(why);
    }
    if !Path::new(kfunc::KERNEL_BTF).exists() {
        // The program's layout of the kernel's packet is relocated by it.
        return Some(format!(
            "the kernel describes no types ({} is missing: a kernel built without CONFIG_DEBUG_INFO_BTF)",
            kfunc::KERNEL_BTF
        ));
    }
    route::missing_capability()
}

/// Why a port stays in userspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The kernel does not carry such ports (by design: RTCP, IPv6).
    Unsupported(Unsupported),
    /// It could not be installed (no route, a failed map write).
    Error(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unsupported(Unsupported::Ipv6) => {
                f.write_str("IPv6 is forwarded in userspace")
            }
            Refused::Error(e) => f.write_str(e),
        }
    }
}

/// The kernel's time in the relay's program (every loaded instance of it on
/// the machine, so every relay's) and how often it ran: the forwarding work a
/// relay process's own CPU time leaves out, as the kernel runs the program in
/// the sender's context. Counted only while [`count_program_time`] is held.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProgramTime {
    /// Time spent in the program.
    pub run_time: Duration,
    /// Runs (packets it looked at).
    pub runs: u64,
}

/// Turns the kernel's run-time statistics of BPF programs on for as long as
/// the descriptor is open (off by default: they cost two clock reads a run).
/// Needs CAP_SYS_ADMIN; `None` without.
pub fn count_program_time() -> Option<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()
}

/// The [`ProgramTime`] so far of the relay program whose links are pinned in
/// `pins` (a relay's [`pin_dir`]), or with `None` of every relay's program on
/// the machine; `None` when there is none (or the loaded programs cannot be
/// listed: CAP_SYS_ADMIN).
pub fn program_time(pins: Option<&Path>) -> Option<ProgramTime> {
    let attached: Option<Vec<u32>> = pins.map(|dir| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("link-"))
            .filter_map(|e| PinnedLink::from_pin(e.path()).ok())
            .filter_map(|l| FdLink::from(l).info().ok())
            .map(|i| i.program_id())
            .collect()
    });
    let mut total: Option<ProgramTime> = None;
    for info in aya::programs::loaded_programs().flatten() {
        // The kernel keeps the first 15 bytes of a program's name.
        let name = info.name_as_str().unwrap_or("");
        let ours = match &attached {
            Some(ids) => ids.contains(&info.id()),
            None => name.len() >= 8 && PROGRAM.starts_with(name),
        };
        if ours {
            let t = total.get_or_insert_with(ProgramTime::default);
            t.run_time += info.run_time();
            t.runs += info.run_count();
        }
    }
    total
}

/// The loaded and attached fast path.
pub struct FastPath {
    // Holds the program's file descriptor while links switch to it.
    _ebpf: aya::Ebpf,
    rules: Array<MapData, Rule>,
    streams: Arc<Streams>,
    dir: PathBuf,
    interfaces: Vec<String>,
    loopback_ifindex: u32,
    bind: IpAddr,
    warned_local: bool,
    _locals: LocalsWatch,
    learn: Option<LearnRing>,
    fence: Array<MapData, u64>,
}

/// The `learn` ring: copies of the forwarded packets that may carry H.264
/// parameter sets ([`table::LearnCopy`]), for whoever keeps the learners.
pub struct LearnRing(aya::maps::RingBuf<MapData>);

impl LearnRing {
    /// The loaded object's ring (`None` if it has none).
    fn take(ebpf: &mut aya::Ebpf) -> Option<LearnRing> {
        ebpf.take_map("learn")
            .and_then(|m| aya::maps::RingBuf::try_from(m).ok())
            .map(LearnRing)
    }

    /// Hands every record waiting to `each`; how many there were.
    pub fn drain(&mut self, mut each: impl FnMut(table::LearnCopy)) -> usize {
        let mut n = 0;
        while let Some(item) = self.0.next() {
            if let Some(copy) = table::LearnCopy::parse(&item) {
                each(copy);
            }
            n += 1;
        }
        n
    }
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("dir", &self.dir)
            .field("interfaces", &self.interfaces)
            .finish()
    }
}

/// Read access to the kernel's per-port stream state (shared with readers
/// and workers): the map's values mapped into this process's memory, so a
/// read is a copy, no system call — or, where the kernel would not map them,
/// one `bpf(2)` lookup each.
pub struct Streams {
    map: Array<MapData, Stream>,
    mapped: Option<Mapped>,
}

/// The `streams` map's values, mapped read-only (`BPF_F_MMAPABLE`).
struct Mapped {
    values: std::ptr::NonNull<Stream>,
    bytes: usize,
}

// SAFETY: a read-only shared mapping that lives as long as the value; the
// program writes it, this process only copies out of it.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `fd`'s values: 65536 of them, as `relay.bpf.c` declares.
    fn new(fd: std::os::fd::BorrowedFd) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        let bytes = 65536 * size_of::<Stream>();
        // SAFETY: a new read-only mapping of the map's values; no memory of
        // this process is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Mapped {
            values: std::ptr::NonNull::new(p.cast())?,
            bytes,
        })
    }

    /// The [`Glance`] of `port`'s value.
    fn glance(&self, port: u16) -> Glance {
        // SAFETY: `port` < 65536 entries, each a `Stream`, mapped while `self` lives.
        unsafe { Glance::read(self.values.as_ptr().add(usize::from(port))) }
    }

    /// A copy of `port`'s value.
    fn read(&self, port: u16) -> Stream {
        // SAFETY: `port` < 65536 entries, each a `Stream` (size asserted to
        // match the program's); a volatile copy, as the program writes it
        // meanwhile (a torn copy is caught by the caller).
        unsafe { std::ptr::read_volatile(self.values.as_ptr().add(usize::from(port))) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.values.as_ptr().cast(), self.bytes) };
    }
}

impl Streams {
    fn new(map: Map) -> Result<Streams, String> {
        let mapped = match &map {
            Map::Array(data) => {
                use std::os::fd::AsFd;
                Mapped::new(data.fd().as_fd())
            }
            _ => None,
        };
        let map = Array::try_from(map).map_err(|e| format!("map streams: {e}"))?;
        Ok(Streams { map, mapped })
    }

    /// The kernel's state of `port`, whole: the program updates it under a
    /// lock that userspace cannot take (an exchange, cheaper than
    /// bpf_spin_lock), so it is read until two reads agree.
    pub fn get(&self, port: u16) -> Option<Stream> {
        let read = || match &self.mapped {
            Some(m) => Some(m.read(port)),
            None => self.map.get(&u32::from(port), 0).ok(),
        };
        let mut last = read()?;
        for _ in 1..STREAM_READS {
            let again = read()?;
            if again == last && !again.locked() {
                break;
            }
            last = again;
        }
        Some(last)
    }

    /// A few fields of `port`'s state, for the stream watch: read in place
    /// from the mapped values (no copy of the whole, no second read).
    pub fn glance(&self, port: u16) -> Option<Glance> {
        match &self.mapped {
            Some(m) => Some(m.glance(port)),
            None => self.get(port).as_ref().map(Glance::of),
        }
    }

    /// Whether reads are copies from memory (else system calls).
    pub fn mapped(&self) -> bool {
        self.mapped.is_some()
    }
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streams")
    }
}

impl FastPath {
    /// Loads the program (reusing this instance's pinned maps), attaches it to
    /// the configured interfaces or switches their pinned links to it.
    pub fn load(options: &Options) -> Result<FastPath, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let interfaces = route::interfaces(&options.interfaces, options.bind_address)?;
        let loopback_ifindex = route::ifindex("lo")?;
        let dir = pin_dir(&options.state_path);
        let Loaded {
            mut ebpf,
            rules,
            streams,
            mut locals,
            fence,
        } = load_pinned(&dir)?;
        let fence = fence.ok_or("the eBPF object has no fence map")?;
        let learn = LearnRing::take(&mut ebpf);
        // Before the program sees a packet: it matches destinations against them.
        write_locals(&mut locals, &mut None);
        let program = classifier(&mut ebpf)?;
        for name in &interfaces {
            if let Err(e) = attach(program, &dir, name) {
                // All or nothing: userspace then forwards every port.
                remove_pins(&dir);
                return Err(e);
            }
        }
        Ok(FastPath {
            _ebpf: ebpf,
            rules,
            streams: Arc::new(streams),
            dir,
            interfaces,
            loopback_ifindex,
            bind: options.bind_address,
            warned_local: false,
            _locals: LocalsWatch::start(locals),
            learn,
            fence,
        })
    }

    /// Sets the fence (docs/cluster.md, "Fencing"): past `deadline_ns`
    /// (CLOCK_BOOTTIME) the program forwards nothing and drops every packet
    /// of a relay port, counting it in the port's [`Stream::fenced`]; `None`
    /// lifts it. Pinned: it holds after the process is gone, and a restarted
    /// or upgraded relay finds it ([`FastPath::fence_deadline`]).
    pub fn fence(&mut self, deadline_ns: Option<u64>) -> Result<(), String> {
        write_fence(&mut self.fence, deadline_ns)
    }

    /// The fence in force (CLOCK_BOOTTIME ns), perhaps set by an earlier
    /// process of this instance; `None`: no fence.
    pub fn fence_deadline(&self) -> Option<u64> {
        self.fence.get(&0, 0).ok().filter(|&d| d != 0)
    }

    /// The `learn` ring, once (its reader owns it).
    pub fn take_learn_ring(&mut self) -> Option<LearnRing> {
        self.learn.take()
    }

    /// The interfaces the program is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// The kernel's stream state, for readers.
    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// Mirrors one port's rule into the kernel, forwarding until `window_end_ns`
    /// (CLOCK_BOOTTIME). A port still held by the same
    /// owner (a restart, a changed destination) keeps its stream; `relatch`,
    /// or a changed source or policy, makes the kernel forget its appliance.
    /// Returns the rule installed, or why the port stays in userspace.
    pub fn install(
        &mut self,
        rule: &PortRule,
        owner: u32,
        window_end_ns: u64,
        clock_rate: u32,
        relatch: bool,
    ) -> Result<Rule, Refused> {
        let addresses = table::eligible(rule, self.bind).map_err(Refused::Unsupported)?;
        let route = route::route(rule.destination, self.bind).map_err(Refused::Error)?;
        let old = self.rules.get(&u32::from(rule.port), 0).unwrap_or_default();
        let mut new = Rule::new(
            rule,
            addresses,
            route,
            self.loopback_ifindex,
            clock_rate,
            window_end_ns,
            owner,
        );
        new.carry_over(&old, relatch);
        if route.egress_ifindex.is_none() && !route.local_ok && !self.warned_local {
            self.warned_local = true;
            tracing::warn!(
                destination = %rule.destination,
                "packets for a local destination arriving from other interfaces are forwarded in userspace: set net.ipv4.conf.lo.accept_local=1 (and net.ipv4.conf.lo.route_localnet=1 for 127.0.0.0/8) to forward them in the kernel"
            );
        }
        self.rules.set(u32::from(rule.port), new, 0).map_err(|e| {
            Refused::Error(format!(
                "cannot write the kernel rule of port {}: {e}",
                rule.port
            ))
        })?;
        Ok(new)
    }

    /// Takes `port` off the fast path (before its socket closes).
    pub fn remove(&mut self, port: u16) {
        let _ = self.rules.set(u32::from(port), Rule::default(), 0);
    }

    /// Takes every port not in `keep` off the fast path (after a restart: the
    /// groups that closed while the relay was gone).
    pub fn prune(&mut self, keep: impl Fn(u16) -> bool) {
        for port in 0..=u16::MAX {
            let active = self
                .rules
                .get(&u32::from(port), 0)
                .is_ok_and(|r| r.active != 0);
            if active && !keep(port) {
                self.remove(port);
            }
        }
    }

    /// Detaches the program and removes every pin (a clean stop).
    pub fn shutdown(self) {
        remove_pins(&self.dir);
    }
}

/// Attaches `program` at TCX ingress of `interface`, or — when this instance's
/// link is pinned there from before — switches that link to it atomically.
fn attach(program: &mut SchedClassifier, dir: &Path, interface: &str) -> Result<(), String> {
    let pin = dir.join(format!("link-{interface}"));
    if pin.exists() {
        let adopted = PinnedLink::from_pin(&pin)
            .map_err(|e| e.to_string())
            .and_then(|l| SchedClassifierLink::try_from(FdLink::from(l)).map_err(|e| e.to_string()))
            .and_then(|l| program.attach_to_link(l).map_err(|e| chain(&e)));
        match adopted {
            // The pin keeps the link alive; the program's handle only closes its fd.
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(interface, error = %e, "cannot adopt the pinned fast-path link; attaching anew");
                let _ = std::fs::remove_file(&pin);
            }
        }
    }
    let id = program
        .attach_with_options(
            interface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| format!("cannot attach to {interface} (TCX ingress): {}", chain(&e)))?;
    let link = program.take_link(id).map_err(|e| chain(&e))?;
    let link = FdLink::try_from(link).map_err(|e| e.to_string())?;
    link.pin(&pin)
        .map_err(|e| format!("cannot pin {}: {e}", pin.display()))?;
    Ok(())
}

/// The object loaded, its program through the verifier, its maps taken out.
pub(crate) struct Loaded {
    pub(crate) ebpf: aya::Ebpf,
    pub(crate) rules: Array<MapData, Rule>,
    pub(crate) streams: Streams,
    pub(crate) locals: Array<MapData, Locals>,
    /// `None` for an earlier build's object without one (a benchmark's baseline).
    pub(crate) fence: Option<Array<MapData, u64>>,
}

/// Loads the object with its maps pinned in (or adopted from) `dir`, which is
/// created, bpffs being mounted first if need be.
pub(crate) fn load_pinned(dir: &Path) -> Result<Loaded, String> {
    let object = OBJECT.ok_or("this build has no eBPF program")?;
    if let Some(why) = foreign_pins(dir) {
        // Adopted, they would fail this program (the verifier refuses it),
        // while the other build's program, attached through the pinned
        // links, went on forwarding by rules this relay cannot write.
        tracing::warn!(
            dir = %dir.display(),
            why,
            "the pinned fast-path state is another build's (an upgrade that changed its layout): it is replaced, and the kernel's figures of open windows restart"
        );
        remove_pins(dir);
    }
    load_object_pinned(object, dir)
}

/// Why the maps pinned in `dir` cannot be this build's (their values are of
/// another size than `relay.bpf.c` declares); `None` when they can, or there
/// are none.
fn foreign_pins(dir: &Path) -> Option<String> {
    let maps = [
        ("rules", size_of::<Rule>()),
        ("streams", size_of::<Stream>()),
        ("locals", size_of::<Locals>()),
        ("fence", size_of::<u64>()),
    ];
    maps.into_iter().find_map(|(name, size)| {
        let path = dir.join(name);
        if !path.exists() {
            return None;
        }
        // The stream map is mapped into memory: a pin without the flag is older.
        let flags = if name == "streams" { BPF_F_MMAPABLE } else { 0 };
        match aya::maps::MapInfo::from_pin(&path) {
            Ok(info) if info.value_size() as usize == size && info.map_flags() & flags == flags => {
                None
            }
            Ok(info) if info.value_size() as usize == size => {
                Some(format!("its {name} map cannot be mapped into memory"))
            }
            Ok(info) => Some(format!(
                "its {name} map holds values of {} bytes, this build's {size}",
                info.value_size()
            )),
            Err(e) => Some(format!("its {name} map cannot be read: {}", chain(&e))),
        }
    })
}

/// As [`load_pinned`], for a given compiled object (a benchmark's baseline).
pub(crate) fn load_object_pinned(object: &[u8], dir: &Path) -> Result<Loaded, String> {
    route::mount_bpffs()?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the pin directory {}: {e}", dir.display()))?;
    let object = kfunc::link(object)?;
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(dir)
        .load(object.bytes())
        .map_err(|e| format!("the kernel refused the eBPF object: {}", chain(&e)))?;
    classifier(&mut ebpf)?
        .load()
        .map_err(|e| format!("the kernel verifier refused the program: {}", chain(&e)))?;
    let rules = take_array(&mut ebpf, "rules")?;
    let streams = Streams::new(
        ebpf.take_map("streams")
            .ok_or("the eBPF object has no streams map")?,
    )?;
    let locals = take_array(&mut ebpf, "locals")?;
    let fence = match ebpf.map("fence") {
        Some(_) => Some(take_array(&mut ebpf, "fence")?),
        None => None,
    };
    Ok(Loaded {
        ebpf,
        rules,
        streams,
        locals,
        fence,
    })
}

/// Writes the host's IPv4 addresses into the program's `locals` when they
/// differ from `written` (what was written last), and says when there are
/// more than it holds (once).
fn write_locals(map: &mut Array<MapData, Locals>, written: &mut Option<Locals>) {
    let addresses = match route::local_ipv4() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the local addresses for the fast path; it keeps the previous list");
            return;
        }
    };
    let new = Locals::new(&addresses);
    if *written == Some(new) {
        return;
    }
    if new.incomplete() && written.is_none_or(|w| !w.incomplete()) {
        tracing::warn!(
            addresses = addresses.len(),
            max = table::MAX_LOCALS,
            "more local IPv4 addresses than the fast path holds: packets to the others are forwarded in userspace"
        );
    }
    match map.set(0, new, 0) {
        Ok(()) => *written = Some(new),
        Err(e) => {
            tracing::warn!(error = %chain(&e), "cannot write the fast path's local addresses")
        }
    }
}

/// Writes the fence's deadline (0 in the map: none; a deadline of 0 would
/// read as none, so it is 1 ns, as long past).
pub(crate) fn write_fence(
    map: &mut Array<MapData, u64>,
    deadline_ns: Option<u64>,
) -> Result<(), String> {
    let value = deadline_ns.map_or(0, |d| d.max(1));
    map.set(0, value, 0)
        .map_err(|e| format!("cannot write the fast path's fence: {}", chain(&e)))
}

/// Keeps the program's `locals` current while the relay runs: rewritten on
/// every IPv4 address change (netlink) and at least every 2 s; stopped (and
/// joined) on drop. While the relay is gone the kernel keeps the last list.
struct LocalsWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalsWatch {
    /// How long a wait lasts: the bound on noticing `stop`.
    const TICK: Duration = Duration::from_millis(500);
    /// Quiet ticks between two refreshes without a netlink notice.
    const TICKS_PER_POLL: u32 = 4;

    fn start(mut map: Array<MapData, Locals>) -> LocalsWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fast-path-addrs".into())
            .spawn(move || {
                let changes = route::address_changes(Self::TICK);
                let mut written = None;
                let mut quiet = 0;
                while !flag.load(Ordering::Relaxed) {
                    if quiet == 0 {
                        write_locals(&mut map, &mut written);
                    }
                    quiet = if route::wait_for_address_change(changes.as_ref(), Self::TICK) {
                        0
                    } else {
                        (quiet + 1) % Self::TICKS_PER_POLL
                    };
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot watch the local addresses for the fast path"))
            .ok();
        LocalsWatch { stop, thread }
    }
}

impl Drop for LocalsWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn classifier(ebpf: &mut aya::Ebpf) -> Result<&mut SchedClassifier, String> {
    ebpf.program_mut(PROGRAM)
        .ok_or("the eBPF object has no rtp_relay_ingress program")?
        .try_into()
        .map_err(|e| format!("rtp_relay_ingress is not a TC program: {e}"))
}

fn take_array<V: aya::Pod>(ebpf: &mut aya::Ebpf, name: &str) -> Result<Array<MapData, V>, String> {
    let map: Map = ebpf
        .take_map(name)
        .ok_or_else(|| format!("the eBPF object has no {name} map"))?;
    Array::try_from(map).map_err(|e| format!("map {name}: {e}"))
}

/// Removes a pin directory: unpinning the links detaches the program (no
/// process holds them), unpinning the maps frees them.
pub fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
    // The root goes with its last instance (a no-op while others remain).
    let _ = std::fs::remove_dir(PIN_ROOT);
}

/// An error with its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A port on the fast path: the rule the kernel holds and where to read the
/// kernel's stream state.
#[derive(Clone, Debug)]
pub struct KernelPort {
    /// The port.
    pub port: u16,
    /// Its rule as installed.
    pub rule: Rule,
    /// The stream map.
    pub streams: Arc<Streams>,
}

impl KernelPort {
    /// The kernel's stream of this rule (none before its first packet, or
    /// while the map still holds an earlier bind's).
    pub fn stream(&self) -> Option<Stream> {
        self.streams
            .get(self.port)
            .filter(|s| s.belongs_to(&self.rule))
    }

    /// The kernel's [`Glance`] of this rule's stream (none as for [`Self::stream`]).
    pub fn glance(&self) -> Option<Glance> {
        self.streams
            .glance(self.port)
            .filter(|g| g.generation == self.rule.generation)
    }

    /// The appliance the kernel latched.
    pub fn latched(&self) -> Option<std::net::SocketAddr> {
        self.stream().and_then(|s| s.latched(&self.rule))
    }
}
