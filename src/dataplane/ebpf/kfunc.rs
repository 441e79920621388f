//! The program's calls to kernel functions (kfuncs), linked before load: aya
//! loads programs and relocates their CO-RE field accesses, but leaves a
//! kfunc call unresolved. So `relay.bpf.c` writes each call as the one
//! instruction it is (`BPF_CALL` with `src_reg` `BPF_PSEUDO_KFUNC_CALL`)
//! holding a placeholder for the function's id, and [`link`] writes the id
//! the running kernel's BTF gives that function.

use aya_obj::btf::{Btf, BtfKind};

/// The kernel's own BTF, which ids kernel functions and lays out its types.
pub(crate) const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The placeholder call to `bpf_cast_to_kern_ctx` as it lies in the object
/// (little-endian, as every target the fast path builds for): opcode 0x85,
/// `src_reg` 2, `imm` 0x7e5ab1ed (`kern_skb` in relay.bpf.c).
const CAST_TO_KERN_CTX: [u8; 8] = [0x85, 0x20, 0, 0, 0xed, 0xb1, 0x5a, 0x7e];

/// An object's bytes, 8-byte aligned as the ELF parser needs them.
pub(crate) struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    /// The object's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` ≤ 8 × words.len() bytes, initialised, and any bytes
        // are valid u8s.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.len) }
    }
}

/// `object` with its kfunc calls linked to the running kernel's functions;
/// unchanged when it has none (a benchmark's earlier build). An error names
/// a function the kernel does not have (before Linux 6.2) or BTF it cannot
/// read.
pub(crate) fn link(object: &[u8]) -> Result<Object, String> {
    let mut copy = Object {
        words: vec![0; object.len().div_ceil(8)],
        len: object.len(),
    };
    copy.bytes_mut().copy_from_slice(object);
    let calls = placeholders(copy.bytes(), &CAST_TO_KERN_CTX);
    if calls.is_empty() {
        return Ok(copy);
    }
    let id = kernel_function("bpf_cast_to_kern_ctx")?;
    for at in calls {
        copy.bytes_mut()[at + 4..at + 8].copy_from_slice(&id.to_le_bytes());
    }
    Ok(copy)
}

/// Where `call` lies in `object`, at instruction (8-byte) boundaries.
fn placeholders(object: &[u8], call: &[u8; 8]) -> Vec<usize> {
    object
        .chunks_exact(8)
        .enumerate()
        .filter(|(_, insn)| *insn == call)
        .map(|(i, _)| i * 8)
        .collect()
}

/// The BTF id of the kernel function `name`.
fn kernel_function(name: &str) -> Result<u32, String> {
    let btf = Btf::from_sys_fs()
        .map_err(|e| format!("cannot read the kernel's BTF ({KERNEL_BTF}): {e}"))?;
    btf.id_by_type_name_kind(name, BtfKind::Func)
        .map_err(|_| format!("the kernel has no {name} (Linux 6.2 or newer has)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_at_instruction_boundaries_only() {
        let mut object = vec![0u8; 40];
        object[8..16].copy_from_slice(&CAST_TO_KERN_CTX);
        object[28..36].copy_from_slice(&CAST_TO_KERN_CTX); // not on a boundary
        assert_eq!(placeholders(&object, &CAST_TO_KERN_CTX), [8]);
    }

    #[test]
    fn an_object_without_kfunc_calls_is_loaded_as_it_is() {
        let object: Vec<u8> = (0..=255).collect();
        let linked = link(&object).unwrap();
        assert_eq!(linked.bytes(), &object[..]);
        assert_eq!(linked.bytes().as_ptr() as usize % 8, 0);
    }
}
