#!/usr/bin/env bash
# 64 streams of ~1200-byte packets (32 webcasts of audio-video; audio at 445 kbit/s
# is one full packet per frame, video at KBPS), at rising rates: direct (no relay),
# through the baseline relay (examples/baseline_relay.rs) and through rtp-relay,
# all in one run. The highest rate each carries with < 0.01 % loss is its ceiling.
#
#   benches/relay_1200.sh                       # video 10–60 Mbit/s per stream, 5 s each
#   KBPS_LIST="20000 40000" DURATION=10s benches/relay_1200.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin rtp-relay --example baseline_relay
BIN=target/release/rtp-relay
DURATION=${DURATION:-5s}
ARGS=(--groups 32 --layout audio-video --audio-kbps 445 --duration "$DURATION" --json)
OUT=$(mktemp -d)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
for kbps in ${KBPS_LIST:-10000 20000 30000 40000 50000 60000}; do
    "$BIN" loadtest --direct "${ARGS[@]}" --video-kbps "$kbps" > "$OUT/direct-$kbps.json"
    target/release/examples/baseline_relay 32 > /dev/null &
    pid=$!
    sleep 1
    "$BIN" loadtest --external-pid "$pid" "${ARGS[@]}" --video-kbps "$kbps" > "$OUT/baseline-$kbps.json"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    "$BIN" loadtest "${ARGS[@]}" --video-kbps "$kbps" > "$OUT/rtp-relay-$kbps.json"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for f in os.listdir(out):
    kind, kbps = f[:-5].rsplit("-", 1)
    rows.setdefault(int(kbps), {})[kind] = json.load(open(os.path.join(out, f)))
print(f"{'video kbps':>10} {'path':<10} {'offered pkt/s':>13} {'bytes/pkt':>9} {'loss %':>8} {'p99 ms':>8} {'relay µs/pkt':>12} {'loss-free':>9}")
best = {}
for k in sorted(rows):
    for kind in ("direct", "baseline", "rtp-relay"):
        r = rows[k].get(kind)
        if not r:
            continue
        ok = r["loss_ratio"] < 1e-4 and not r["generator_fell_behind"]
        if ok:
            best[kind] = max(best.get(kind, 0), r["offered_packets_per_second"])
        cpu = r["relay_cpu_us_per_packet"]
        size = r["offered_bits_per_second"] / 8 / max(r["offered_packets_per_second"], 1)
        print(f"{k:>10} {kind:<10} {r['offered_packets_per_second']:>13.0f} {size:>9.0f} {r['loss_ratio']*100:>8.4f} "
              f"{r['latency_ms']['p99']:>8.2f} {(f'{cpu:.2f}' if cpu else '-'):>12} {('yes' if ok else 'no'):>9}")
for kind in ("direct", "baseline", "rtp-relay"):
    print(f"highest loss-free rate, {kind}: {best.get(kind, 0):.0f} packets/s")
PY
rm -rf "$OUT"
