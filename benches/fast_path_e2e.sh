#!/usr/bin/env bash
# The kernel fast path end to end, one run, in a network namespace of its own
# (its loopback only; nothing is attached in the machine's namespace): for each
# number of webcasts (echo360-live, audio-display-video), the load test direct
# (gen → sink, no relay), through rtp-relay in userspace (fast_path = off) and
# through rtp-relay on the eBPF fast path. Besides the load test's figures it
# reads the whole box's busy CPU time (/proc/stat) over each run, set-up and
# tear-down included, per RTP packet sent.
#
#   benches/fast_path_e2e.sh                 # 256 1024 2048 webcasts, 10 s each
#   GROUPS_LIST="256" DURATION=20s benches/fast_path_e2e.sh
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
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
for n in ${GROUPS_LIST:-256 1024 2048}; do
    for kind in direct userspace ebpf; do
        case $kind in
            direct) args=(--direct) ;;
            userspace) args=(--fast-path off) ;;
            ebpf) args=(--fast-path ebpf) ;;
        esac
        before=$(busy)
        nsenter --net="/run/netns/$NS" "$BIN" loadtest "${args[@]}" --groups "$n" --duration "$DURATION" --json > "$OUT/$kind-$n.json"
        echo "$(( $(busy) - before ))" > "$OUT/$kind-$n.busy"
    done
done
python3 - "$OUT" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys
out, hz = sys.argv[1], int(sys.argv[2])
rows = {}
for f in sorted(os.listdir(out)):
    if f.endswith(".json"):
        kind, n = f[:-5].rsplit("-", 1)
        r = json.load(open(os.path.join(out, f)))
        r["busy_s"] = int(open(os.path.join(out, f[:-5] + ".busy")).read()) / hz
        rows.setdefault(int(n), {})[kind] = r
print(f"{'webcasts':>8} {'path':<10} {'offered pkt/s':>13} {'loss %':>8} {'p50 ms':>8} {'p99 ms':>8} {'relay µs/pkt':>12} {'box µs/pkt':>10} {'gen behind':>10}")
for n in sorted(rows):
    for kind in ("direct", "userspace", "ebpf"):
        r = rows[n].get(kind)
        if not r:
            continue
        cpu = r["relay_cpu_us_per_packet"]
        box = r["busy_s"] * 1e6 / max(r["sent"], 1)
        print(f"{n:>8} {kind:<10} {r['offered_packets_per_second']:>13.0f} {r['loss_ratio']*100:>8.4f} "
              f"{r['latency_ms']['p50']:>8.3f} {r['latency_ms']['p99']:>8.3f} "
              f"{(f'{cpu:.2f}' if cpu is not None else '-'):>12} {box:>10.2f} {('yes' if r['warnings'] else 'no'):>10}")
    d, e = rows[n].get("direct"), rows[n].get("ebpf")
    if d and e:
        db, eb = d["busy_s"] / d["sent"], e["busy_s"] / e["sent"]
        print(f"{'':>8} box CPU per packet, ebpf / direct: {eb / db:.2f}x; p99 ebpf / direct: {e['latency_ms']['p99'] / d['latency_ms']['p99']:.2f}x")
PY
