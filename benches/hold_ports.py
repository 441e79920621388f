#!/usr/bin/env python3
"""Binds the sink ports of groups 0..N-1 (base(g) - 16384 + k, k < 6) on
127.0.0.1 and never reads them, so `rtp-relay gen` can be measured alone.

    python3 benches/hold_ports.py GROUPS SECONDS &
"""
import socket
import sys
import time

groups, seconds = int(sys.argv[1]), float(sys.argv[2])
held = []
for g in range(groups):
    base = 65528 - 8 * g - 16384
    for k in range(6):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", base + k))
        held.append(s)
print("held", len(held), flush=True)
time.sleep(seconds)
