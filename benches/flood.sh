#!/usr/bin/env bash
# What a stranger's flood on a strict port costs the legitimate streams, in a
# network namespace of its own (its loopback only; nothing is attached in the
# machine's namespace). Each round, for each relay binary and data path: a
# relay bound on 127.0.0.1 (strict, source 127.0.0.1), `loadtest --relay` of
# WEBCASTS webcasts (echo360-live, audio-display-video) through it, and for the
# whole run a bounded flood (examples/flood.rs: one thread, sendmmsg) of
# FLOOD_RATE packets/s (0: as fast as it goes) from 127.0.0.2 to the video
# port of the first webcast, where one of the legitimate streams arrives.
# Medians over the rounds.
#
#   benches/flood.sh                                  # this tree, ebpf and off, 3 rounds
#   RELAYS="old=/tmp/old-relay new=target/release/rtp-relay" benches/flood.sh
#   WEBCASTS=16 DURATION=10s REPS=3 PATHS="ebpf" FLOOD=0 benches/flood.sh   # no flood
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin rtp-relay --example flood
FLOOD_BIN=$PWD/target/release/examples/flood
RELAYS=${RELAYS:-this=$PWD/target/release/rtp-relay}
WEBCASTS=${WEBCASTS:-16}
DURATION=${DURATION:-10s}
SECONDS_=${DURATION%s}
PATHS=${PATHS:-ebpf off}
FLOOD=${FLOOD:-1}
FLOOD_RATE=${FLOOD_RATE:-440000}
OUT=$(mktemp -d)
NS=rtp-relay-flood-$$
ip netns add "$NS"
RELAY_PID=
cleanup() {
    [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
    ip netns del "$NS"
    rm -rf "$OUT"
}
trap cleanup EXIT
ip -n "$NS" link set lo up
# nsenter execs what it runs: $! is the relay's own process ID.
in_ns=(nsenter --net="/run/netns/$NS")
# The flooded port: group 0's video stream.
TARGET=127.0.0.1:65532
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
for rep in $(seq "${REPS:-3}"); do
    for relay in $RELAYS; do
        name=${relay%%=*}
        bin=${relay#*=}
        for path in $PATHS; do
            dir=$OUT/run
            rm -rf "$dir" && mkdir -p "$dir"
            cat > "$dir/relay.toml" <<EOF
[control]
listen = "127.0.0.1:9871"
[data]
bind_address = "127.0.0.1"
fast_path = "$path"
[source]
policy = "strict"
[wowza]
address = "127.0.0.1"
port_offset = -16384
[state]
path = "$dir/state"
[log]
level = "warn"
EOF
            "${in_ns[@]}" "$bin" run --config "$dir/relay.toml" >/dev/null 2>"$dir/relay.log" &
            RELAY_PID=$!
            for _ in $(seq 100); do
                "${in_ns[@]}" curl -sf http://127.0.0.1:9871/readyz >/dev/null 2>&1 && break
                sleep 0.1
            done
            flood_pid=
            if [ "$FLOOD" = 1 ]; then
                # The reservations exist 1 s into the load test: flood from then on.
                (sleep 1; "${in_ns[@]}" "$FLOOD_BIN" 127.0.0.2 "$TARGET" "$SECONDS_" "$FLOOD_RATE") > "$dir/flood.txt" &
                flood_pid=$!
            fi
            "${in_ns[@]}" "$bin" loadtest --relay http://127.0.0.1:9871 --relay-pid "$RELAY_PID" \
                --groups "$WEBCASTS" --duration "$DURATION" --json > "$OUT/$name-$path-$rep.json"
            [ -n "$flood_pid" ] && wait "$flood_pid"
            # "flood: N packets in S s (R packets/s) …"
            sed -n 's/.*(\([0-9]*\) packets\/s).*/\1/p' "$dir/flood.txt" > "$OUT/$name-$path-$rep.flood" 2>/dev/null || true
            kill "$RELAY_PID"
            wait "$RELAY_PID" || true
            RELAY_PID=
        done
    done
done
python3 - "$OUT" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(os.listdir(out)):
    if not f.endswith(".json"):
        continue
    name, path, _ = f[:-5].rsplit("-", 2)
    r = json.load(open(os.path.join(out, f)))
    r["flood"] = int(open(os.path.join(out, f[:-5] + ".flood")).read().strip() or 0)
    runs.setdefault((name, path), []).append(r)
med = lambda v: statistics.median(v) if v else float("nan")
print(f"{'relay':<8} {'path':<6} {'runs':>4} {'offered pkt/s':>13} {'loss %':>10} {'loss % each':<28} {'p99 ms':>8} {'relay µs/pkt':>12} {'flood pkt/s':>11}")
for (name, path), rs in sorted(runs.items()):
    loss = [r["loss_ratio"] * 100 for r in rs]
    cpu = [r["relay_cpu_us_per_packet"] for r in rs if r["relay_cpu_us_per_packet"] is not None]
    print(f"{name:<8} {path:<6} {len(rs):>4} {med([r['offered_packets_per_second'] for r in rs]):>13.0f} "
          f"{med(loss):>10.4f} {', '.join(f'{x:.4f}' for x in loss):<28} "
          f"{med([r['latency_ms']['p99'] for r in rs]):>8.3f} {med(cpu):>12.2f} {med([r['flood'] for r in rs]):>11.0f}")
PY
