#!/usr/bin/env bash
# The kernel fast path end to end, in a network namespace of its own (its
# loopback only; nothing is attached in the machine's namespace): for each
# number of webcasts (echo360-live, audio-display-video), the load test direct
# (gen → sink, no relay), through rtp-relay in userspace (fast_path = off) and
# through rtp-relay on the eBPF fast path, REPS times round; medians printed.
# "box µs/pkt" is the whole machine's busy CPU while sending, per RTP packet.
#
#   benches/fast_path_e2e.sh                          # 256 1024 2048 webcasts, 10 s, 3 rounds
#   GROUPS_LIST="256" DURATION=20s REPS=1 benches/fast_path_e2e.sh
#   KINDS="direct ebpf" REPS=5 benches/fast_path_e2e.sh   # paired, more rounds
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin rtp-relay
BIN=$PWD/target/release/rtp-relay
DURATION=${DURATION:-10s}
OUT=$(mktemp -d)
NS=rtp-relay-bench-$$
ip netns add "$NS"
trap 'ip netns del "$NS"; rm -rf "$OUT"' EXIT
ip -n "$NS" link set lo up
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
for rep in $(seq "${REPS:-3}"); do
    for n in ${GROUPS_LIST:-256 1024 2048}; do
        for kind in ${KINDS:-direct userspace ebpf}; do
            case $kind in
                direct) args=(--direct) ;;
                userspace) args=(--fast-path off) ;;
                ebpf) args=(--fast-path ebpf) ;;
            esac
            nsenter --net="/run/netns/$NS" "$BIN" loadtest "${args[@]}" --groups "$n" \
                --duration "$DURATION" --json > "$OUT/$kind-$n-$rep.json"
        done
    done
done
python3 - "$OUT" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(os.listdir(out)):
    kind, n, _ = f[:-5].rsplit("-", 2)
    runs.setdefault((int(n), kind), []).append(json.load(open(os.path.join(out, f))))
def med(rs, f):
    v = [f(r) for r in rs if f(r) is not None]
    return statistics.median(v) if v else None
fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
print(f"{'webcasts':>8} {'path':<10} {'runs':>4} {'offered pkt/s':>13} {'loss %':>8} {'p50 ms':>8} {'p99 ms':>8} {'relay µs/pkt':>12} {'box µs/pkt':>10} {'gen behind':>10}")
for n in sorted({n for n, _ in runs}):
    m = {}
    for kind in ("direct", "userspace", "ebpf"):
        rs = runs.get((n, kind))
        if not rs:
            continue
        m[kind] = {k: med(rs, f) for k, f in {
            "pps": lambda r: r["offered_packets_per_second"],
            "loss": lambda r: r["loss_ratio"] * 100,
            "p50": lambda r: r["latency_ms"]["p50"],
            "p99": lambda r: r["latency_ms"]["p99"],
            "relay": lambda r: r["relay_cpu_us_per_packet"],
            "box": lambda r: r["box_cpu_us_per_packet"],
        }.items()}
        behind = sum(1 for r in rs if r["generator_fell_behind"])
        x = m[kind]
        print(f"{n:>8} {kind:<10} {len(rs):>4} {x['pps']:>13.0f} {x['loss']:>8.4f} {x['p50']:>8.3f} {x['p99']:>8.3f} "
              f"{fmt(x['relay']):>12} {fmt(x['box']):>10} {f'{behind}/{len(rs)}':>10}")
    d, e = m.get("direct"), m.get("ebpf")
    if d and e and d["box"] and e["box"]:
        print(f"{'':>8} ebpf / direct: box CPU per packet {e['box'] / d['box']:.2f}x, p99 {e['p99'] / d['p99']:.2f}x")
PY
