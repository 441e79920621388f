#!/usr/bin/env bash
# What the load tools cost: `loadtest --direct` (gen → sink, no relay) at
# 2048 webcasts, CPU per packet and latency, measured from outside the same way
# for any build. With BASELINE set to another build's binary, the two run
# alternately (baseline, current, baseline, …) and the medians are compared.
#
# CPU is read from /proc while the generator is in full swing (from 1.5 s after
# the start to 1 s before the end): the loadtest process's own time (gen and
# sink are its threads) and the sum over every process on the machine, both
# exact totals (not /proc/stat's tick samples), per packet offered meanwhile.
#
#   benches/load_tools.sh                          # 3 runs of this build
#   BASELINE=/tmp/before/rtp-relay RUNS=3 benches/load_tools.sh
#   WEBCASTS=1024 DURATION=10 EXTRA="--receive per-port" benches/load_tools.sh
#   BASELINE=target/release/rtp-relay EXTRA=--realtime BASELINE_EXTRA= benches/load_tools.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin rtp-relay
BIN=${BIN:-target/release/rtp-relay}
WEBCASTS=${WEBCASTS:-2048}
DURATION=${DURATION:-8}
RUNS=${RUNS:-3}
EXTRA=${EXTRA:-}
BASELINE_EXTRA=${BASELINE_EXTRA-$EXTRA}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"

# CPU seconds (user + system) of one process, and of every process.
proc_cpu() { awk '{ sub(/.*\) /, ""); print ($12 + $13) / 100 }' "/proc/$1/stat"; }
all_cpu() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{ sub(/.*\) /, ""); t += $12 + $13 } END { print t / 100 }'
}

measure() { # name binary run extra-arguments
    local name=$1 bin=$2 run=$3 extra=$4 window
    window=$(awk -v d="$DURATION" 'BEGIN { print d - 2.5 }')
    # shellcheck disable=SC2086
    "$bin" loadtest --direct --groups "$WEBCASTS" --duration "${DURATION}s" --json $extra \
        > "$OUT/$name-$run.json" 2> /dev/null &
    local pid=$!
    sleep 1.5
    local p0 a0 p1 a1
    p0=$(proc_cpu "$pid"); a0=$(all_cpu)
    sleep "$window"
    p1=$(proc_cpu "$pid"); a1=$(all_cpu)
    wait "$pid"
    echo "$p0 $p1 $a0 $a1 $window" > "$OUT/$name-$run.cpu"
}

for run in $(seq 1 "$RUNS"); do
    if [ -n "${BASELINE:-}" ]; then
        measure baseline "$BASELINE" "$run" "$BASELINE_EXTRA"
    fi
    measure current "$BIN" "$run" "$EXTRA"
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def row(name, run):
    r = json.load(open(f"{out}/{name}-{run}.json"))
    p0, p1, a0, a1, window = map(float, open(f"{out}/{name}-{run}.cpu").read().split())
    packets = r["offered_packets_per_second"] * window
    return {
        "tools µs/pkt": (p1 - p0) * 1e6 / packets,
        "box µs/pkt": (a1 - a0) * 1e6 / packets,
        "offered pkt/s": r["offered_packets_per_second"],
        "loss %": r["loss_ratio"] * 100,
        "p50 ms": r["latency_ms"]["p50"],
        "p99 ms": r["latency_ms"]["p99"],
        "max ms": r["latency_ms"]["max"],
        "behind": r["generator_fell_behind"],
    }
names = [n for n in ("baseline", "current") if os.path.exists(f"{out}/{n}-1.json")]
keys = ["tools µs/pkt", "box µs/pkt", "offered pkt/s", "loss %", "p50 ms", "p99 ms", "max ms"]
print(f"{'build':<9} {'run':>3} " + " ".join(f"{k:>13}" for k in keys) + f" {'gen behind':>10}")
medians = {}
for n in names:
    rows = [row(n, i) for i in range(1, runs + 1)]
    for i, r in enumerate(rows, 1):
        print(f"{n:<9} {i:>3} " + " ".join(f"{r[k]:>13.3f}" for k in keys) + f" {str(r['behind']):>10}")
    medians[n] = {k: statistics.median(r[k] for r in rows) for k in keys}
    print(f"{n:<9} {'med':>3} " + " ".join(f"{medians[n][k]:>13.3f}" for k in keys))
if len(names) == 2:
    b, c = medians["baseline"], medians["current"]
    print("current / baseline (medians): " + ", ".join(
        f"{k} {c[k] / b[k]:.2f}x" for k in keys if b[k]))
PY
