//! The load test's yardstick for the relay's fast path (docs/traffic-tools.md,
//! "Comparing with a bare rewrite"): the I/O around `bare.bpf.c`, a TC program
//! that swaps ports and nothing else, attached at TCX ingress of `lo` for as
//! long as the [`BareRewrite`] lives. What the relay's program costs beyond
//! it — checks, policy, statistics — is the relay's own.

use crate::dataplane::ebpf::ProgramTime;
use aya::maps::Array;
use aya::programs::links::LinkOrder;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{SchedClassifier, TcAttachType};

/// The compiled program, when this build has one.
#[cfg(ebpf_program)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/bare.bpf.o"
)));
#[cfg(not(ebpf_program))]
const OBJECT: Option<&[u8]> = None;

const PROGRAM: &str = "rtp_relay_bare_rewrite";

/// `ports[port]` of the program (network order).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
struct Hop {
    to: u16,
    back: u16,
}

// SAFETY: two plain integers, no padding.
unsafe impl aya::Pod for Hop {}

/// The bare rewrite, attached; dropping it detaches it.
pub struct BareRewrite {
    /// Owns the program and its link.
    ebpf: aya::Ebpf,
}

impl BareRewrite {
    /// Forwards each `(port, to)` on loopback: packets to `port` go on to
    /// `to` from `port`; packets from `to` go back to the latest sender.
    pub fn attach(hops: &[(u16, u16)]) -> Result<BareRewrite, String> {
        let object = OBJECT.ok_or_else(|| {
            option_env!("RTP_RELAY_EBPF_MISSING")
                .unwrap_or("this build has no eBPF programs")
                .to_string()
        })?;
        let mut ebpf = aya::EbpfLoader::new()
            .load(object)
            .map_err(|e| format!("the kernel refused the bare rewrite: {e}"))?;
        let mut ports: Array<_, Hop> = Array::try_from(
            ebpf.map_mut("ports")
                .ok_or("the bare rewrite has no ports map")?,
        )
        .map_err(|e| format!("ports map: {e}"))?;
        for &(port, to) in hops {
            let hop = Hop {
                to: to.to_be(),
                back: 0,
            };
            ports
                .set(u32::from(port), hop, 0)
                .map_err(|e| format!("ports map: {e}"))?;
        }
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or("the bare rewrite object has no program")?
            .try_into()
            .map_err(|e| format!("{PROGRAM} is not a TC program: {e}"))?;
        program
            .load()
            .map_err(|e| format!("the kernel refused the bare rewrite: {e}"))?;
        program
            .attach_with_options(
                "lo",
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| format!("cannot attach the bare rewrite to lo: {e}"))?;
        Ok(BareRewrite { ebpf })
    }

    /// The kernel's time in the program so far (counted while
    /// [`crate::dataplane::ebpf::count_program_time`] is held).
    pub fn program_time(&self) -> Option<ProgramTime> {
        let program: &SchedClassifier = self.ebpf.program(PROGRAM)?.try_into().ok()?;
        let info = program.info().ok()?;
        Some(ProgramTime {
            run_time: info.run_time(),
            runs: info.run_count(),
        })
    }
}
