#!/usr/bin/env bash
# End-to-end relay benchmark on loopback, one run: for each number of webcasts
# (echo360-live, audio-display-video), the load test direct (no relay: the
# ceiling), through the baseline relay (examples/baseline_relay.rs: one tokio
# task per socket, recv_from then send_to), and through rtp-relay.
#
#   benches/relay_e2e.sh            # 64 256 1024 2048 webcasts, 10 s each
#   GROUPS_LIST="256" DURATION=20s benches/relay_e2e.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin rtp-relay --example baseline_relay
BIN=target/release/rtp-relay
DURATION=${DURATION:-10s}
OUT=$(mktemp -d)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
for n in ${GROUPS_LIST:-64 256 1024 2048}; do
    "$BIN" loadtest --direct --groups "$n" --duration "$DURATION" --json > "$OUT/direct-$n.json"
    target/release/examples/baseline_relay "$n" > /dev/null &
    pid=$!
    sleep 1
    "$BIN" loadtest --external-pid "$pid" --groups "$n" --duration "$DURATION" --json > "$OUT/baseline-$n.json"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    "$BIN" loadtest --fast-path off --groups "$n" --duration "$DURATION" --json > "$OUT/rtp-relay-$n.json"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for f in sorted(os.listdir(out)):
    kind, n = f[:-5].rsplit("-", 1)
    rows.setdefault(int(n), {})[kind] = json.load(open(os.path.join(out, f)))
print(f"{'webcasts':>8} {'path':<10} {'offered pkt/s':>13} {'loss %':>8} {'p50 ms':>8} {'p99 ms':>8} {'relay µs/pkt':>12} {'gen behind':>10}")
for n in sorted(rows):
    for kind in ("direct", "baseline", "rtp-relay"):
        r = rows[n].get(kind)
        if not r:
            continue
        cpu = r["relay_cpu_us_per_packet"]
        print(f"{n:>8} {kind:<10} {r['offered_packets_per_second']:>13.0f} {r['loss_ratio']*100:>8.4f} "
              f"{r['latency_ms']['p50']:>8.3f} {r['latency_ms']['p99']:>8.3f} "
              f"{(f'{cpu:.2f}' if cpu else '-'):>12} {('yes' if r['warnings'] else 'no'):>10}")
    b, o = rows[n].get("baseline"), rows[n].get("rtp-relay")
    if b and o and b["relay_cpu_us_per_packet"] and o["relay_cpu_us_per_packet"]:
        print(f"{'':>8} baseline / rtp-relay CPU per packet: {b['relay_cpu_us_per_packet'] / o['relay_cpu_us_per_packet']:.2f}x")
PY
rm -rf "$OUT"
