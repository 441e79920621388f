#!/usr/bin/env python3
"""Where a JIT-compiled BPF program spends its time, by source line.

`perf annotate` cannot annotate BPF programs without libopcodes' BPF support,
and `bpftool prog dump jited` needs libbfd; Debian's builds have neither. The
kernel tells the JIT address of every source line itself (BPF_OBJ_GET_INFO_BY_FD:
line_info and jited_line_info), so perf's sample offsets map to lines without
a disassembler. Needs root. Usage (BENCHMARKS.md, "Where the program's time
went"):

    perf record -a -o perf.data -- sleep 8        # during a load test
    perf script -i perf.data -F ip,sym,symoff | awk '$2 ~ /rtp_relay_ingress/ {print $2}' \\
        | sort | uniq -c > offsets.txt
    benches/prog_lines.py PROG_ID offsets.txt src/dataplane/ebpf/relay.bpf.c

PROG_ID is the loaded program's id (`bpftool prog show`), which must still be
the one perf sampled (the same load: offsets are of its JIT image).
"""
import ctypes
import os
import re
import struct
import sys
from collections import Counter

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
# struct bpf_prog_info offsets (include/uapi/linux/bpf.h)
NR_JITED_KSYMS, JITED_KSYMS = 104, 112
NR_LINE_INFO, LINE_INFO, JITED_LINE_INFO = 148, 152, 160
NR_JITED_LINE_INFO, LINE_INFO_REC_SIZE, JITED_LINE_INFO_REC_SIZE = 168, 172, 176
U64_FIELDS = {JITED_KSYMS, LINE_INFO, JITED_LINE_INFO}

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    fd = libc.syscall(SYS_BPF, cmd, buf, 128)
    if fd < 0:
        err = ctypes.get_errno()
        sys.exit(f"bpf({cmd}): {os.strerror(err)} (root? a loaded program's id?)")
    return fd


def prog_info(fd, fields):
    info = ctypes.create_string_buffer(256)
    for offset, value in fields.items():
        struct.pack_into("<Q" if offset in U64_FIELDS else "<I", info, offset, value)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, 256, ctypes.addressof(info)))
    return info


def line_addresses(prog_id):
    """(offset in the JIT image, source line) for every line_info record, sorted."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id))
    sizes = prog_info(fd, {})
    n, jn = (struct.unpack_from("<I", sizes, o)[0] for o in (NR_LINE_INFO, NR_JITED_LINE_INFO))
    rec, jrec = (struct.unpack_from("<I", sizes, o)[0] for o in (LINE_INFO_REC_SIZE, JITED_LINE_INFO_REC_SIZE))
    lines, jited, start = (ctypes.create_string_buffer(x) for x in (n * rec, jn * jrec, 8))
    prog_info(fd, {
        NR_LINE_INFO: n, LINE_INFO: ctypes.addressof(lines), LINE_INFO_REC_SIZE: rec,
        NR_JITED_LINE_INFO: jn, JITED_LINE_INFO: ctypes.addressof(jited), JITED_LINE_INFO_REC_SIZE: jrec,
        NR_JITED_KSYMS: 1, JITED_KSYMS: ctypes.addressof(start),
    })
    (base,) = struct.unpack("<Q", start.raw)
    out = []
    for i in range(min(n, jn)):
        line_col = struct.unpack_from("<I", lines, i * rec + 12)[0]
        (address,) = struct.unpack_from("<Q", jited, i * jrec)
        out.append((address - base, line_col >> 10))
    return sorted(out)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    table = line_addresses(int(sys.argv[1]))
    counts = Counter()
    for entry in open(sys.argv[2]):
        m = re.match(r"\s*(\d+)\s+\S+\+0x([0-9a-f]+)", entry)
        if not m:
            continue
        samples, offset = int(m.group(1)), int(m.group(2), 16)
        line = 0
        for o, l in table:  # the last record at or before the offset
            if o > offset:
                break
            line = l
        counts[line] += samples
    source = open(sys.argv[3]).read().split("\n")
    total = sum(counts.values()) or 1
    for line, n in counts.most_common(20):
        text = source[line - 1].strip() if 0 < line <= len(source) else "?"
        print(f"{n:7d} {100 * n / total:5.1f}%  {line:4d}: {text}")


if __name__ == "__main__":
    main()
