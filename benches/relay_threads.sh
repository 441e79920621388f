#!/usr/bin/env bash
# The relay process's own CPU at full load, thread by thread: a spawned relay
# (fast_path = "ebpf") under `loadtest` at WEBCASTS webcasts, its threads' run
# time and context switches read from /proc/<pid>/task/*/schedstat (ns, not
# ticks) over WINDOW seconds in the middle of the run. Runs in a network
# namespace of its own with a 65,536-slot UDP table (deleted after), as
# benches/tail_latency.sh's UDP_TABLE does. Needs root.
#
#   benches/relay_threads.sh
#   BIN=/tmp/before/rtp-relay benches/relay_threads.sh      # an older build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WEBCASTS=${WEBCASTS:-2048}
WINDOW=${WINDOW:-15}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin rtp-relay
    BIN=target/release/rtp-relay
fi
ns=rtp-relay-threads-$$
# shellcheck source=benches/namespace.sh
source benches/namespace.sh
trap 'delete_namespace "$ns"' EXIT
new_namespace "$ns" 65536
# Setup takes a few seconds at 2048 webcasts; the window starts after it.
warmup=8
nsenter --net=/run/netns/"$ns" "$BIN" loadtest --spawn --fast-path ebpf --groups "$WEBCASTS" \
    --duration "$((warmup + WINDOW + 8))s" > /dev/null 2>&1 &
loadtest=$!
sleep "$warmup"
relay=$(pgrep -P "$loadtest" -f ' run --config' | head -1 || true)
[ -n "$relay" ] || { echo "no relay process under the load test" >&2; exit 1; }
snapshot() {
    for t in /proc/"$relay"/task/*; do
        echo "$(basename "$t") $(cat "$t/comm") $(cut -d' ' -f1,3 "$t/schedstat")"
    done | sort
}
before=$(snapshot)
sleep "$WINDOW"
after=$(snapshot)
echo "relay $BIN, $WEBCASTS webcasts, ${WINDOW}s in the middle of the run"
join <(echo "$before") <(echo "$after") | awk -v w="$WINDOW" '
    { ms = ($6 - $3) / 1e6 / w; sw = ($7 - $4) / w; total += ms
      printf "%-16s %7.2f ms/s %6.0f switches/s\n", $2, ms, sw }
    END { printf "%-16s %7.2f ms/s\n", "total", total }'
wait "$loadtest"
