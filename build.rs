//! Compiles the eBPF programs with clang for the BPF target: the kernel fast
//! path (`src/dataplane/ebpf/relay.bpf.c`) and the sink's receive steering
//! (`src/traffic/steer.bpf.c`), and the load test's yardstick, a bare
//! rewrite (`src/traffic/bare.bpf.c`). Without clang (or libbpf's headers) the relay
//! still builds; it then runs the userspace data plane only (and the sink one
//! socket per port) and says why.

use std::path::PathBuf;
use std::process::Command;

/// Each program's source and the object it becomes in `OUT_DIR`.
const PROGRAMS: [(&str, &str); 3] = [
    ("src/dataplane/ebpf/relay.bpf.c", "relay.bpf.o"),
    ("src/traffic/steer.bpf.c", "steer.bpf.o"),
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
        Err(why) => {
            println!("cargo::warning=the eBPF fast path is left out of this build: {why}");
            println!("cargo::rustc-env=RTP_RELAY_EBPF_MISSING={why}");
        }
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

fn compile(source: &str, out: &std::path::Path) -> Result<(), String> {
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        Ok(other) => return Err(format!("no BPF build set up for target arch {other}")),
        Err(_) => return Err("CARGO_CFG_TARGET_ARCH is not set".into()),
    };
    let candidates: Vec<String> = match std::env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => [
            "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut last = String::from("clang was not found (install Debian's clang and libbpf-dev)");
    for clang in candidates {
        let result = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{arch}"))
            .args(["-c", source, "-o"])
            .arg(out)
            .output();
        match result {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                let first = stderr.lines().next().unwrap_or("").to_string();
                last = format!("{clang} failed: {first} (libbpf-dev provides bpf/bpf_helpers.h)");
            }
            Err(_) => {}
        }
    }
    Err(last)
}
