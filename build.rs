//! Compiles the eBPF programs with clang for the BPF target: the kernel fast
//! path (`src/dataplane/ebpf/relay.bpf.c`) and the sink's receive steering
//! (`src/udp/steer.bpf.c`), and the load test's yardstick, a bare
//! rewrite (`src/traffic/bare.bpf.c`). Without clang (or libbpf's headers) the relay
//! still builds; it then runs the userspace data plane only (and the sink one
//! socket per port) and says why.

use std::path::PathBuf;
use std::process::Command;

/// Each program's source and the object it becomes in `OUT_DIR`.
const PROGRAMS: [(&str, &str); 3] = [
    ("src/dataplane/ebpf/relay.bpf.c", "relay.bpf.o"),
    ("src/udp/steer.bpf.c", "steer.bpf.o"),
    ("src/traffic/bare.bpf.c", "bare.bpf.o"),
];

fn main() {
    for (source, _) in PROGRAMS {
        println!("cargo::rerun-if-changed={source}");
    }
    println!("cargo::rerun-if-env-changed=CLANG");
    revision();
    println!("cargo::rustc-check-cfg=cfg(ebpf_program)");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let built = PROGRAMS
        .iter()
        .try_for_each(|(source, object)| compile(source, &out_dir.join(object)));
    match built {
        Ok(()) => println!("cargo::rustc-cfg=ebpf_program"),
        Err(Missing { why, watch }) => {
            println!("cargo::warning=the eBPF fast path is left out of this build: {why}");
            println!("cargo::rustc-env=RTP_RELAY_EBPF_MISSING={why}");
            watch_for(watch);
        }
    }
}

/// Why a program was not built, and where the missing tool would appear.
struct Missing {
    why: String,
    watch: Watch,
}

/// What a build without the fast path must watch to be redone once the
/// missing piece is installed (the `.bpf.c` files do not change then).
enum Watch {
    /// No clang: the directories it is looked up in.
    Clang,
    /// clang ran but failed (libbpf's headers missing): the include folder.
    Headers,
    /// Nothing to install would help (an architecture without a BPF build).
    Nothing,
}

/// Asks cargo to rerun this script when what was missing may have appeared.
///
/// Cargo reruns on a watched path whose mtime is newer than its last run; a
/// directory counts with every entry under it, its own mtime included. The
/// file itself is the wrong signal (tried on cargo 1.95): a missing path
/// (`/usr/bin/clang`) reruns the script, and recompiles the crate, on every
/// build while it is missing, and not once it appears, because dpkg gives
/// installed files the package's old mtime. The folder the file lands in gets a
/// new mtime when dpkg adds the entry, so watching the folders costs a few
/// thousand `stat`s per build while clang is missing and nothing after.
fn watch_for(watch: Watch) {
    match watch {
        Watch::Clang => {
            let named = std::env::var_os("CLANG").map(PathBuf::from);
            match named.as_deref().and_then(|c| c.parent()) {
                // A path (CLANG itself is watched above): the folder it names.
                Some(dir) if !dir.as_os_str().is_empty() => {
                    println!("cargo::rerun-if-changed={}", dir.display());
                }
                // Found through PATH: a changed PATH may find it too. Only
                // watched while clang is missing, so that a build with the fast
                // path is not redone because another shell's PATH differs.
                _ => {
                    println!("cargo::rerun-if-env-changed=PATH");
                    let path = std::env::var_os("PATH").unwrap_or_default();
                    for dir in std::env::split_paths(&path).filter(|d| d.is_dir()) {
                        println!("cargo::rerun-if-changed={}", dir.display());
                    }
                }
            }
        }
        Watch::Headers => {
            // libbpf-dev creates /usr/include/bpf; when a partial one exists,
            // the header lands in it.
            let bpf = PathBuf::from("/usr/include/bpf");
            let dir = if bpf.is_dir() {
                bpf
            } else {
                PathBuf::from("/usr/include")
            };
            println!("cargo::rerun-if-changed={}", dir.display());
        }
        Watch::Nothing => {}
    }
}

/// The git revision built, for `rtp_relay_build_info` (none outside a clone).
fn revision() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo::rustc-env=RTP_RELAY_REVISION={rev}");
    }
    // A new commit or checkout changes HEAD or the branch it names.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo::rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo::rerun-if-changed={dir}/{head}");
        }
    }
}

fn compile(source: &str, out: &std::path::Path) -> Result<(), Missing> {
    let unsupported = |why: String| Missing {
        why,
        watch: Watch::Nothing,
    };
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        Ok(other) => {
            return Err(unsupported(format!(
                "no BPF build set up for target arch {other}"
            )));
        }
        Err(_) => return Err(unsupported("CARGO_CFG_TARGET_ARCH is not set".into())),
    };
    let candidates: Vec<String> = match std::env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => [
            "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut last = Missing {
        why: "clang was not found (install Debian's clang and libbpf-dev)".into(),
        watch: Watch::Clang,
    };
    for clang in candidates {
        let result = Command::new(&clang)
            // v3: atomic exchange (the fast path's stream lock); the kernels
            // the fast path runs on (6.6 and later) all take it.
            .args([
                "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
            ])
            .arg(format!("-I/usr/include/{arch}"))
            .args(["-c", source, "-o"])
            .arg(out)
            .output();
        match result {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                let first = stderr.lines().next().unwrap_or("").to_string();
                last = Missing {
                    why: format!("{clang} failed: {first} (libbpf-dev provides bpf/bpf_helpers.h)"),
                    watch: Watch::Headers,
                };
            }
            Err(_) => {}
        }
    }
    Err(last)
}
