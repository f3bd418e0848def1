"""Scaling from one loop to two (python3 bench/run.py scale).

evmux-echo-server with 1 loop, and with 2 loops (--threads 2) under each
balance mode, on this 2-core machine. So that the server, not the load
generator, is the bottleneck, every message carries real server work:
evmux-bench --mark starts each message with the byte 0x7F, and the server
burns --work-us of CPU per such byte before replying. 64 connections, one
message in flight each, keep every loop busy.

The server pins its own loops (--pin: loop k on CPU k); the load generator
is not pinned, so it runs wherever a core has room. Rounds interleave the
three configurations; tables quote medians. Writes results/scale.csv and
results/scale.md, with the goals of issue 13: 2 loops give at least 1.8x
the throughput of 1, with server CPU per message within 10%.
"""
import run as r

WORK_US = 100
CONNS, SIZE, DEPTH = 64, 64, 1
CONFIGS = [
    ("1 loop", []),
    ("2 loops, reuseport", ["--threads", "2", "--balance", "reuseport"]),
    ("2 loops, handoff", ["--threads", "2", "--balance", "handoff"]),
]
FIELDS = ["config", "rounds_ok", "msgs_per_s", "p50_us", "p99_us", "server_ns_per_msg",
          "throughput_vs_1", "cpu_vs_1", "error"]


def once(extra, duration, warmup):
    argv = r.evmux_server("uring") + ["--work-us", str(WORK_US), "--pin"] + extra
    return r.run_once(argv, CONNS, 0, SIZE, DEPTH, duration, warmup, ["--mark"],
                      server_cpu=None, client_cpu=None)


def run_scale(args):
    duration = args.duration if args.duration is not None else 3.0
    warmup = args.warmup if args.warmup is not None else 0.5
    runs = {label: [] for label, _ in CONFIGS}
    for n in range(args.rounds):
        for label, extra in CONFIGS:
            row = once(extra, duration, warmup)
            runs[label].append(row)
            r.log("round %d  %-20s %9s msg/s  server %7s ns/msg %s" % (
                n + 1, label, row.get("msgs_per_s", "?"), row.get("server_ns_per_msg", "?"),
                row.get("error", "")))
    rows = []
    for label, _ in CONFIGS:
        row = r.summarize(label, runs[label], CONNS, 0, SIZE, DEPTH)
        row["config"] = label
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["throughput_vs_1"] = row["msgs_per_s"] / base["msgs_per_s"]
        row["cpu_vs_1"] = row["server_ns_per_msg"] / base["server_ns_per_msg"]
    r.write_csv("scale.csv", rows, FIELDS)
    r.write_md("scale.md", table(rows, args.rounds, duration))


def table(rows, rounds, duration):
    out = ["Scaling from 1 to 2 loops: `python3 bench/run.py scale --rounds %d` "
           "(evmux-echo-server --backend uring --work-us %d --pin [--threads 2 --balance MODE]; "
           "evmux-bench --conns %d --depth %d --size %d --mark, %.0f s per run). "
           "Medians of %d rounds." % (rounds, WORK_US, CONNS, DEPTH, SIZE, duration, rounds),
           "",
           "| server | messages/s | server ns/message | throughput vs 1 loop | CPU/message vs 1 loop "
           "| p50 us | p99 us |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        out.append("| %s | %s | %s | %.2f | %.2f | %s | %s |" % (
            row["config"], r.fmt(row["msgs_per_s"]), r.fmt(row["server_ns_per_msg"]),
            row["throughput_vs_1"], row["cpu_vs_1"], r.fmt(row["p50_us"]), r.fmt(row["p99_us"])))
    out += ["", "Goals (issue 13): 2 loops at least 1.80x the throughput of 1, with server CPU "
            "per message within 10% (ratio <= 1.10):", ""]
    for row in rows[1:]:
        met = row["throughput_vs_1"] >= 1.80 and row["cpu_vs_1"] <= 1.10
        out.append("- %s: %.2fx throughput, %.2f CPU per message: %s" % (
            row["config"], row["throughput_vs_1"], row["cpu_vs_1"], "met" if met else "NOT met"))
    return "\n".join(out) + "\n"
