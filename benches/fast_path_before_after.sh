#!/usr/bin/env bash
# The kernel fast path's cost per packet, this build's program against an
# earlier revision's, in one run of the criterion benchmark (benches/fast_path.rs):
# the earlier relay.bpf.c is compiled here with the same flags as build.rs and
# run on the same frames. Needs root (BPF_PROG_TEST_RUN), clang and libbpf-dev.
#
#   benches/fast_path_before_after.sh            # against b3bb3f1 (before the SDP learning)
#   benches/fast_path_before_after.sh REV
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REV=${1:-b3bb3f1}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
git show "$REV:src/dataplane/ebpf/relay.bpf.c" > "$OUT/relay.bpf.c"
arch=$(uname -m)-linux-gnu
clang -O2 -g -target bpf -Wall -Werror "-I/usr/include/$arch" -c "$OUT/relay.bpf.c" -o "$OUT/relay.bpf.o"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "baseline: relay.bpf.c at $REV; current: this checkout"
RTP_RELAY_BASELINE_OBJECT="$OUT/relay.bpf.o" cargo bench --bench fast_path -- --noplot 2>&1 |
    grep -E '^(baseline_)?ebpf_program|time:'
