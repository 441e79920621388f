//! Compiles the kernel fast path (`src/dataplane/ebpf/relay.bpf.c`) with
//! clang for the BPF target. Without clang (or libbpf's headers) the relay
//! still builds; it then runs the userspace data plane only and says why.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/dataplane/ebpf/relay.bpf.c";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rustc-check-cfg=cfg(ebpf_program)");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("relay.bpf.o");
    match compile(&out) {
        Ok(()) => println!("cargo::rustc-cfg=ebpf_program"),
        Err(why) => {
            println!("cargo::warning=the eBPF fast path is left out of this build: {why}");
            println!("cargo::rustc-env=RTP_RELAY_EBPF_MISSING={why}");
        }
    }
}

fn compile(out: &std::path::Path) -> Result<(), String> {
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
            .args(["-c", SOURCE, "-o"])
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
