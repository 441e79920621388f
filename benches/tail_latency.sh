#!/usr/bin/env bash
# The fast path's latency tail and CPU at full load, from one command: the
# relay (spawned, fast_path = "ebpf") against the direct path (gen → sink, no
# relay) at 256, 1024 and 2048 webcasts, and against a bare kernel rewrite
# (`--compare bare`) at 2048 — each `loadtest --compare` with PAIRS pairs of
# DURATION-second runs (BARE_PAIRS for the bare rewrite, 5 by default: the
# machine-CPU goal is a few per cent, about the spread of one pair),
# alternating, with RTCP sender reports out and receiver reports back (every
# stream reports each 5 s, so a run carries two rounds).
# Prints every comparison's medians and ratios and the goals they are held to:
# p99 ≤ 1.2× and max ≤ 2× direct at 2048, machine CPU per packet ≤ 1.05×
# the bare rewrite's, nothing lost. Needs root (the fast path, the bare
# rewrite, the sink's steering and the program-time statistics).
#
#   benches/tail_latency.sh
#   SIZES=2048 PAIRS=5 DURATION=20 benches/tail_latency.sh
#   EXTRA=--realtime benches/tail_latency.sh       # the tools at real-time priority
#   UDP_TABLE=65536 benches/tail_latency.sh        # in a namespace with that UDP table
#   RESERVED= benches/tail_latency.sh              # ip_local_reserved_ports left as it is
#
# UDP_TABLE runs everything inside a new network namespace whose UDP socket
# table has that many slots (net.ipv4.udp_child_hash_entries), deleted after:
# the table size docs/forwarding.md asks of a host with Wowza beside a relay
# whose ports hold sockets. (On the fast path they hold none since stop 27;
# the sink's own 4,096 per-port sockets remain in either table.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${UDP_TABLE:-}" ]; then
    ns=rtp-relay-bench-$$
    # shellcheck source=benches/namespace.sh
    source benches/namespace.sh
    trap 'delete_namespace "$ns"' EXIT
    new_namespace "$ns" "$UDP_TABLE"
    echo "namespace $ns: $(nsenter --net=/run/netns/"$ns" sysctl -n net.ipv4.udp_hash_entries) UDP slots"
    UDP_TABLE= nsenter --net=/run/netns/"$ns" "$0"
    exit
fi
# The relay's ports reserved from the kernel's own port choices, as
# docs/forwarding.md ("Ports without sockets") asks, so that none of them
# needs a socket; put back at exit. RESERVED= leaves the setting alone.
RESERVED=${RESERVED-49152-65535}
if [ -n "$RESERVED" ]; then
    reserved_before=$(sysctl -n net.ipv4.ip_local_reserved_ports)
    trap 'sysctl -qw net.ipv4.ip_local_reserved_ports="$reserved_before"' EXIT
    sysctl -qw net.ipv4.ip_local_reserved_ports="$RESERVED"
fi
cargo build --release --quiet --bin rtp-relay
BIN=${BIN:-target/release/rtp-relay}
SIZES=${SIZES:-256 1024 2048}
BARE_SIZE=${BARE_SIZE-2048}   # empty: no bare comparison
PAIRS=${PAIRS:-3}
BARE_PAIRS=${BARE_PAIRS:-5}
DURATION=${DURATION:-12}
EXTRA=${EXTRA:-}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "runs: $PAIRS pairs of ${DURATION}s ($BARE_PAIRS against bare), extra arguments: ${EXTRA:-none}; reserved ports: $(sysctl -n net.ipv4.ip_local_reserved_ports); JSON in $OUT"

compare() { # baseline webcasts pairs
    echo "== $2 webcasts: fast path vs $1" >&2
    # shellcheck disable=SC2086
    "$BIN" loadtest --spawn --fast-path ebpf --compare "$1" --pairs "$3" --groups "$2" \
        --duration "${DURATION}s" --json $EXTRA > "$OUT/$1-$2.json"
}
for n in $SIZES; do compare direct "$n" "$PAIRS"; done
[ -z "$BARE_SIZE" ] || compare bare "$BARE_SIZE" "$BARE_PAIRS"

python3 - "$OUT" "$SIZES" "$BARE_SIZE" <<'PY'
import json, os, statistics, sys
out, sizes, bare_size = sys.argv[1], sys.argv[2].split(), sys.argv[3]
def load(base, n):
    path = f"{out}/{base}-{n}.json"
    return json.load(open(path)) if os.path.exists(path) else None
def med(pairs, side, f):
    vals = [f(p[side]) for p in pairs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)
head = ["webcasts", "vs", "p99 ms", "max ms", "box µs/pkt", "relay µs/pkt", "loss %", "RR back", "behind"]
print(" ".join(f"{h:>12}" for h in head))
verdicts = []
for base, ns in (("direct", sizes), ("bare", [bare_size] if bare_size else [])):
    for n in ns:
        c = load(base, n)
        if not c:
            continue
        pairs = c["pairs"]
        for side in ("relay", base):
            row = [n, side,
                   fmt(med(pairs, side, lambda r: r["latency_ms"]["p99"])),
                   fmt(med(pairs, side, lambda r: r["latency_ms"]["max"])),
                   fmt(med(pairs, side, lambda r: r["box_cpu_us_per_packet"])),
                   fmt(med(pairs, side, lambda r: r["relay_cpu_us_per_packet"])),
                   fmt(med(pairs, side, lambda r: r["loss_ratio"] * 100), ".4f"),
                   fmt(med(pairs, side, lambda r: r["receiver_reports_returned"]), ".0f"),
                   str(sum(p[side]["generator_fell_behind"] for p in pairs))]
            print(" ".join(f"{str(x):>12}" for x in row))
        r = c["ratios"]
        print(f"{n:>12} {'ratio':>12} {fmt(r['latency_p99_ms'], '.2f'):>12} {fmt(r['latency_max_ms'], '.2f'):>12} "
              f"{fmt(r['box_cpu_us_per_packet'], '.2f'):>12}")
        lost = max(p["relay"]["sent"] - p["relay"]["received"] for p in pairs)
        if base == "direct" and n == "2048":
            verdicts.append(("p99 ≤ 1.2× direct at 2048", r["latency_p99_ms"], 1.2))
            verdicts.append(("max ≤ 2× direct at 2048", r["latency_max_ms"], 2.0))
        if base == "bare":
            verdicts.append((f"machine CPU ≤ 1.05× bare at {n}", r["box_cpu_us_per_packet"], 1.05))
        verdicts.append((f"nothing lost through the relay at {n} (vs {base})", lost, 0))
print()
for name, value, limit in verdicts:
    ok = value is not None and value <= limit
    print(f"{'met' if ok else 'NOT met':>8}: {name}: {value if value is None else round(value, 3)}")
PY
