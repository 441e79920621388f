#!/usr/bin/env bash
# End-to-end relay benchmark on loopback, one run, in a network namespace of
# its own (so the fast path attaches to its lo, not the machine's): for each
# number of webcasts (echo360-live, audio-display-video), the load test direct
# (no relay: the ceiling), through the baseline relay (examples/baseline_relay.rs:
# one tokio task per socket, recv_from then send_to), through rtp-relay's
# userspace data plane (fast_path = off) and through rtp-relay on the eBPF fast
# path (fast_path = ebpf).
#
#   benches/relay_e2e.sh            # 1 64 256 1024 2048 webcasts, 10 s each
#   GROUPS_LIST="256" DURATION=20s benches/relay_e2e.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin rtp-relay --example baseline_relay
BIN=target/release/rtp-relay
DURATION=${DURATION:-10s}
OUT=$(mktemp -d)
NS=rtp-relay-e2e-$$
ip netns add "$NS"
trap 'ip netns del "$NS"; rm -rf "$OUT"' EXIT
ip -n "$NS" link set lo up
IN_NS=(nsenter --net="/run/netns/$NS")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
for n in ${GROUPS_LIST:-1 64 256 1024 2048}; do
    "${IN_NS[@]}" "$BIN" loadtest --direct --groups "$n" --duration "$DURATION" --json > "$OUT/direct-$n.json"
    # nsenter execs: $! is the baseline relay itself.
    "${IN_NS[@]}" target/release/examples/baseline_relay "$n" > /dev/null &
    pid=$!
    sleep 1
    "${IN_NS[@]}" "$BIN" loadtest --external-pid "$pid" --groups "$n" --duration "$DURATION" --json > "$OUT/baseline-$n.json"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    "${IN_NS[@]}" "$BIN" loadtest --fast-path off --groups "$n" --duration "$DURATION" --json > "$OUT/userspace-$n.json"
    "${IN_NS[@]}" "$BIN" loadtest --fast-path ebpf --groups "$n" --duration "$DURATION" --json > "$OUT/ebpf-$n.json"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for f in sorted(os.listdir(out)):
    kind, n = f[:-5].rsplit("-", 1)
    rows.setdefault(int(n), {})[kind] = json.load(open(os.path.join(out, f)))
print(f"{'webcasts':>8} {'path':<10} {'offered pkt/s':>13} {'loss %':>8} {'p50 ms':>8} {'p99 ms':>8} {'relay µs/pkt':>12} {'box µs/pkt':>10} {'gen behind':>10}")
for n in sorted(rows):
    for kind in ("direct", "baseline", "userspace", "ebpf"):
        r = rows[n].get(kind)
        if not r:
            continue
        cpu = r["relay_cpu_us_per_packet"]
        print(f"{n:>8} {kind:<10} {r['offered_packets_per_second']:>13.0f} {r['loss_ratio']*100:>8.4f} "
              f"{r['latency_ms']['p50']:>8.3f} {r['latency_ms']['p99']:>8.3f} "
              f"{(f'{cpu:.2f}' if cpu else '-'):>12} {r['box_cpu_us_per_packet']:>10.2f} {('yes' if r['warnings'] else 'no'):>10}")
    b = rows[n].get("baseline")
    for kind in ("userspace", "ebpf"):
        o = rows[n].get(kind)
        if b and o and b["relay_cpu_us_per_packet"] and o["relay_cpu_us_per_packet"]:
            print(f"{'':>8} baseline / rtp-relay {kind}, relay CPU per packet: {b['relay_cpu_us_per_packet'] / o['relay_cpu_us_per_packet']:.2f}x")
PY
