#!/usr/bin/env python3
"""UDP echo, evmux on io_uring against the raw recvmmsg/sendmmsg peer and
libuv alone, 11 interleaved rounds of 2 s per point: by default one client
with one datagram in flight (python3 bench/udp/depth1_ab.py), or the points
given as CLIENTS/SIZE/DEPTH (python3 bench/udp/depth1_ab.py 1/1200/8). The
points where issue 12's "within 10% of raw" goal is missed;
results/udp-depth1.txt holds runs."""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import run  # noqa: E402  (bench/run.py: servers, evmux-bench, pinning)

ROUNDS = 11
servers = [s for s in run.udp_servers() if s[0] in ("evmux-uring", "udp-raw", "udp-libuv")]
points = [tuple(int(x) for x in a.split("/")) for a in sys.argv[1:]] or [(1, 64, 1), (1, 1200, 1)]
for (conns, size, depth) in points:
    ns = {label: [] for label, _ in servers}
    for _ in range(ROUNDS):
        for label, argv in servers:
            r = run.udp_once(argv, conns, size, depth, 2.0, 0.5)
            if r.get("server_ns_per_msg"):
                ns[label].append(float(r["server_ns_per_msg"]))
    med = {label: statistics.median(v) for label, v in ns.items()}
    print("clients=%d size=%d depth=%d: server ns/datagram (median of %d): %s" % (
        conns, size, depth, ROUNDS, ", ".join("%s %.0f" % (k, v) for k, v in med.items())))
    print("  evmux-uring/raw %.2f, evmux-uring/libuv %.2f, libuv/raw %.2f" % (
        med["evmux-uring"] / med["udp-raw"], med["evmux-uring"] / med["udp-libuv"],
        med["udp-libuv"] / med["udp-raw"]))
    for label, v in ns.items():
        print("  %s runs: %s" % (label, " ".join("%.0f" % x for x in v)))
