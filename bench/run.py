#!/usr/bin/env python3
"""Runs the evmux benchmarks and the I/O-models lab, side by side in one run.

  python3 bench/run.py lab      the I/O models of the original text (docs/io-models.md)
                                over 1..10000 connections, and
                                one heavy client among light ones (results/lab.csv,
                                docs/lab-*.png, under 10 minutes); --series heavy
                                (or busy, idle, comma-separated) re-measures only those
  python3 bench/run.py lab-plots  redraws the lab's plots from results/lab.csv
  python3 bench/run.py echo     evmux (each backend) against every peer
  python3 bench/run.py udp      UDP echo: evmux (each backend) against the UDP peers
  python3 bench/run.py memory   bytes per idle connection at 10000 connections
  python3 bench/run.py core     event-loop core: N socketpairs, A active writers
  python3 bench/run.py timers   1M timers: start, restart, stop, expire
  python3 bench/run.py scale    1 loop against 2 (--threads 2, both balance modes), the
                                server the bottleneck (--work-us); results/scale.*
  python3 bench/run.py all      everything above (about half an hour)

Servers run pinned to CPU 0 and the load generator to CPU 1 (2-core machine).
Each point is measured ROUNDS times; tables quote medians. Figures are written
as CSV under results/ and as Markdown tables under results/*.md; the
documents in docs/ quote them.
"""
import argparse
import csv
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
RESULTS = os.path.join(ROOT, "results")
DOCS = os.path.join(ROOT, "docs")

SERVER_CPU = "0"
CLIENT_CPU = "1"
DEFAULT_DURATION, DEFAULT_WARMUP = 2.0, 0.5  # seconds per run, unless --duration/--warmup


def log(msg):
    print(msg, flush=True)


def have(prog):
    return os.access(os.path.join(BIN, prog), os.X_OK)


def pinned(cpu, argv):
    """Pins a command to one CPU when taskset exists (util-linux)."""
    if subprocess.call(["sh", "-c", "command -v taskset >/dev/null"]) == 0:
        return ["taskset", "-c", cpu] + argv
    return argv


class Server:
    """A server under test: started on port 0, its port read from its
    'listening on HOST:PORT (...)' line, stopped with SIGTERM."""

    def __init__(self, argv, cpu=SERVER_CPU):
        self.argv = argv
        self.cpu = cpu  # None: not pinned (a server that pins its own threads)
        self.proc = None
        self.port = None

    def __enter__(self):
        argv = pinned(self.cpu, self.argv) if self.cpu is not None else self.argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r":(\d+) \(", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("%s did not say where it listens: %r" % (self.argv[0], line))
        self.port = int(m.group(1))
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_bytes(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def evmux_server(backend):
    return [os.path.join(BIN, "evmux-echo-server"), "--port", "0", "--backend", backend]


def peer_server(name):
    return [os.path.join(BIN, "evmux-peer-" + name), "--port", "0"]


def bench_argv(port, conns, idle, size, depth, duration, warmup, extra=()):
    return [os.path.join(BIN, "evmux-bench"), "--port", str(port),
            "--conns", str(conns), "--idle", str(idle), "--size", str(size),
            "--depth", str(depth), "--duration", str(duration), "--warmup", str(warmup),
            "--csv"] + list(extra)


def bench_row(out):
    """evmux-bench's CSV row from its finished run, with "error" set on failure."""
    rows = list(csv.DictReader(out.stdout.splitlines()))
    if not rows:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    row = rows[-1]
    if out.returncode != 0:
        row["error"] = "exit %d" % out.returncode
    return row


def bench_once(server, conns, idle, size, depth, duration, warmup, extra=(),
               client_cpu=CLIENT_CPU):
    """One evmux-bench run against a started server; returns its CSV row.
    extra: more evmux-bench flags; client_cpu None: the load is not pinned."""
    argv = bench_argv(server.port, conns, idle, size, depth, duration, warmup,
                      list(extra) + ["--server-pid", str(server.proc.pid)])
    if client_cpu is not None:
        argv = pinned(client_cpu, argv)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + warmup + 120)
    return bench_row(out)


def median_of(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return statistics.median(vals) if vals else float("nan")


def write_csv(name, rows, fields):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    log("wrote " + os.path.relpath(path, ROOT))
    return path


def write_md(name, text):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write(text)
    log("wrote " + os.path.relpath(path, ROOT))


def fmt(v, digits=0):
    if isinstance(v, float) and v != v:
        return "n/a"
    return "{:,.{d}f}".format(v, d=digits)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- echo ---

def run_once(argv, conns, idle, size, depth, duration, warmup, extra=(),
             server_cpu=SERVER_CPU, client_cpu=CLIENT_CPU):
    """One run against a fresh server (see bench_once; server_cpu None: a
    server that pins its own threads, or none)."""
    try:
        with Server(argv, cpu=server_cpu) as srv:
            return bench_once(srv, conns, idle, size, depth, duration, warmup, extra, client_cpu)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}


def measure_point(label, argv, conns, idle, size, depth, rounds, duration, warmup):
    """Medians over `rounds` runs, each against a fresh server."""
    runs = [run_once(argv, conns, idle, size, depth, duration, warmup) for _ in range(rounds)]
    return summarize(label, runs, conns, idle, size, depth)


def summarize(label, runs, conns, idle, size, depth):
    good = [r for r in runs if "error" not in r and int(r.get("mismatches", "0") or 0) == 0]
    errors = "; ".join(sorted({r["error"] for r in runs if "error" in r}))
    return {
        "server": label, "conns": conns, "idle": idle, "size": size, "depth": depth,
        "rounds_ok": len(good),
        "msgs_per_s": median_of(good, "msgs_per_s"),
        "mb_per_s": median_of(good, "mb_per_s"),
        "p50_us": median_of(good, "p50_us"),
        "p99_us": median_of(good, "p99_us"),
        "server_ns_per_msg": median_of(good, "server_ns_per_msg"),
        "connect_failures": median_of(good, "connect_failures") if good else float("nan"),
        "error": errors,
    }


ECHO_FIELDS = ["server", "conns", "idle", "size", "depth", "rounds_ok", "msgs_per_s",
               "mb_per_s", "p50_us", "p99_us", "server_ns_per_msg", "connect_failures", "error"]


def echo_servers():
    servers = [("evmux-" + b, evmux_server(b)) for b in ("uring", "epoll", "poll", "select")]
    for peer in ("libev", "libevent", "libuv", "epoll", "uring", "threads"):
        if have("evmux-peer-" + peer):
            servers.append((peer, peer_server(peer)))
        else:
            log("skipping peer %s: not built (run bench/setup.sh, then make)" % peer)
    return servers


def run_echo(args):
    # 10000 connections: 100 active, the rest idle, as the issue asks.
    scales = [(1, 0), (100, 0), (1000, 0), (100, 9900)]
    points = [(c, i, s, d) for (c, i) in scales for s in (64, 16384) for d in (1, 16)]
    servers = echo_servers()
    duration = args.duration if args.duration is not None else DEFAULT_DURATION
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP
    rows = []
    total = len(points) * len(servers)
    n = 0
    for (conns, idle, size, depth) in points:
        # select cannot watch descriptors past FD_SETSIZE
        here = [(label, argv) for label, argv in servers
                if not (label == "evmux-select" and conns + idle > 1000)]
        # Rounds interleave the servers, so that a slow spell of this noisy
        # machine hits every server alike instead of one server's rounds.
        runs = {label: [] for label, _ in here}
        for _ in range(args.rounds):
            for label, argv in here:
                runs[label].append(run_once(argv, conns, idle, size, depth, duration, warmup))
        for label, _ in here:
            n += 1
            row = summarize(label, runs[label], conns, idle, size, depth)
            rows.append(row)
            log("[%d/%d] %-14s conns=%-5d idle=%-5d size=%-5d depth=%-2d  %10s msg/s  "
                "p99 %8s us  server %7s ns/msg %s" % (
                    n, total, label, conns, idle, size, depth, fmt(row["msgs_per_s"]),
                    fmt(row["p99_us"]), fmt(row["server_ns_per_msg"]), row["error"]))
    write_csv("echo.csv", rows, ECHO_FIELDS)
    write_md("echo.md", echo_tables(rows))


def echo_tables(rows):
    """Per point: each server's msg/s and CPU ns/msg, and its ratio to the
    best peer (msg/s: higher is better; ns/msg: lower is better)."""
    out = ["| conns (idle) | size | depth | server | msg/s | vs best peer | server ns/msg | "
           "vs best peer | p99 us |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["conns"], r["idle"], r["size"], r["depth"]) for r in rows})
    for key in keys:
        group = [r for r in rows if (r["conns"], r["idle"], r["size"], r["depth"]) == key]
        peers = [r for r in group if not r["server"].startswith("evmux-")]
        best_rate = max((r["msgs_per_s"] for r in peers if r["msgs_per_s"] == r["msgs_per_s"]),
                        default=float("nan"))
        best_cpu = min((r["server_ns_per_msg"] for r in peers
                        if r["server_ns_per_msg"] == r["server_ns_per_msg"]),
                       default=float("nan"))
        for r in group:
            out.append("| %d (%d) | %d | %d | %s | %s | %s | %s | %s | %s |" % (
                key[0], key[1], key[2], key[3], r["server"], fmt(r["msgs_per_s"]),
                fmt(r["msgs_per_s"] / best_rate, 2) if best_rate == best_rate else "n/a",
                fmt(r["server_ns_per_msg"]),
                fmt(r["server_ns_per_msg"] / best_cpu, 2) if best_cpu == best_cpu else "n/a",
                fmt(r["p99_us"])))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- udp ---

# (clients, size, depth): 1 and 64 clients, 64 and 1,200 bytes; one
# datagram in flight per client, and 8 (a server that is never idle).
UDP_POINTS = [(c, s, d) for c in (1, 64) for s in (64, 1200) for d in (1, 8)]
UDP_FIELDS = ["server", "conns", "size", "depth", "rounds_ok", "msgs_per_s", "loss_pct",
              "p50_us", "p99_us", "server_ns_per_msg", "error"]


def udp_servers():
    servers = [("evmux-" + b, evmux_server(b) + ["--udp"])
               for b in ("uring", "epoll", "poll", "select")]
    for peer in ("udp-raw", "udp-libuv", "udp-libevent"):
        if have("evmux-peer-" + peer):
            servers.append((peer, peer_server(peer)))
        else:
            log("skipping peer %s: not built (run bench/setup.sh, then make)" % peer)
    return servers


def udp_once(argv, conns, size, depth, duration, warmup):
    row = run_once(argv, conns, 0, size, depth, duration, warmup, ["--udp"])
    if "error" not in row and float(row.get("sent") or 0) > 0:
        row["loss_pct"] = 100.0 * float(row["lost"]) / float(row["sent"])
    return row


def run_udp(args):
    servers = udp_servers()
    duration = args.duration if args.duration is not None else DEFAULT_DURATION
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP
    rows = []
    for (conns, size, depth) in UDP_POINTS:
        runs = {label: [] for label, _ in servers}
        for _ in range(args.rounds):  # interleaved, as for echo
            for label, argv in servers:
                runs[label].append(udp_once(argv, conns, size, depth, duration, warmup))
        for label, _ in servers:
            row = summarize(label, runs[label], conns, 0, size, depth)
            good = [r for r in runs[label] if "loss_pct" in r]
            row["loss_pct"] = median_of(good, "loss_pct")
            rows.append(row)
            log("%-14s clients=%-3d size=%-5d depth=%d  %9s dgram/s  loss %5s%%  "
                "server %6s ns/dgram %s" % (label, conns, size, depth, fmt(row["msgs_per_s"]),
                                            fmt(row["loss_pct"], 2),
                                            fmt(row["server_ns_per_msg"]), row["error"]))
    write_csv("udp.csv", rows, UDP_FIELDS)
    write_md("udp.md", udp_tables(rows))
    run_udp_offload(args)


def run_udp_offload(args):
    """GSO and GRO on and off (bench/udp/offload.c): medians of the CPU
    each side spends per datagram."""
    prog = os.path.join(BIN, "evmux-bench-udp-offload")
    runs = []
    for _ in range(args.rounds):
        out = subprocess.run([prog, "--csv", "--datagrams", "300000"], capture_output=True,
                             text=True, timeout=600, check=True)
        runs.extend(csv.DictReader(out.stdout.splitlines()))
    keys = []
    for r in runs:
        key = (r["backend"], r["size"], r["gso"], r["gro"])
        if key not in keys:
            keys.append(key)
    rows = []
    for key in keys:
        group = [r for r in runs if (r["backend"], r["size"], r["gso"], r["gro"]) == key]
        rows.append({"backend": key[0], "size": key[1], "gso": key[2], "gro": key[3],
                     "sender_ns": median_of(group, "sender_ns"),
                     "receiver_ns": median_of(group, "receiver_ns")})
    write_csv("udp-offload.csv", rows, ["backend", "size", "gso", "gro", "sender_ns",
                                        "receiver_ns"])
    out = ["| backend | size | GSO | GRO | sender ns/datagram | receiver ns/datagram |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            r["backend"], r["size"], "on" if r["gso"] == "1" else "off",
            "on" if r["gro"] == "1" else "off", fmt(r["sender_ns"]), fmt(r["receiver_ns"])))
    write_md("udp-offload.md", "\n".join(out) + "\n")


def udp_tables(rows):
    """Per point: datagrams/s, loss, server CPU per datagram, and the CPU
    ratio to libuv's peer and to the raw recvmmsg/sendmmsg peer."""
    out = ["| clients | size | depth | server | datagrams/s | loss % | server ns/datagram | "
           "vs libuv | vs raw | p99 us |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted({(r["conns"], r["size"], r["depth"]) for r in rows}):
        group = [r for r in rows if (r["conns"], r["size"], r["depth"]) == key]
        ref = {r["server"]: r["server_ns_per_msg"] for r in group}
        uv, raw = ref.get("udp-libuv", NAN), ref.get("udp-raw", NAN)
        for r in group:
            ns = r["server_ns_per_msg"]
            out.append("| %d | %d | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                key[0], key[1], key[2], r["server"], fmt(r["msgs_per_s"]),
                fmt(r["loss_pct"], 2), fmt(ns), fmt(ns / uv, 2) if uv == uv else "n/a",
                fmt(ns / raw, 2) if raw == raw else "n/a", fmt(r["p99_us"])))
    out += ["", "Goals (issue 12), for evmux-uring, the backend evmux picks where it "
            "starts: server CPU per datagram below libuv's (ratio < 1.00) and within 10% of "
            "the raw recvmmsg/sendmmsg peer's (ratio <= 1.10).", "",
            "| clients | size | depth | evmux-uring ns | libuv ns | raw ns | vs libuv | "
            "vs raw | goal |", "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted({(r["conns"], r["size"], r["depth"]) for r in rows}):
        ref = {r["server"]: r["server_ns_per_msg"] for r in rows
               if (r["conns"], r["size"], r["depth"]) == key}
        ns, uv, raw = ref.get("evmux-uring", NAN), ref.get("udp-libuv", NAN), ref.get("udp-raw", NAN)
        met = ns == ns and uv == uv and raw == raw and ns / uv < 1.0 and ns / raw <= 1.10
        out.append("| %d | %d | %d | %s | %s | %s | %s | %s | %s |" % (
            key[0], key[1], key[2], fmt(ns), fmt(uv), fmt(raw),
            fmt(ns / uv, 2) if uv == uv else "n/a", fmt(ns / raw, 2) if raw == raw else "n/a",
            "met" if met else "not met"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- lab ---

LAB_MODELS = [("threads", "thread per connection"), ("select", "select"), ("poll", "poll"),
              ("epoll", "epoll"), ("uring", "io_uring")]
LAB_CONNS = [1, 10, 100, 1000, 10000]
# Two series: every connection busy (one 64-byte message in flight each),
# and 10 busy connections among idle ones, where a model that scans every
# descriptor on every call pays for the idle ones.
LAB_SERIES = [("busy", "every connection busy", LAB_CONNS),
              ("idle", "10 busy, the rest idle", [10, 100, 1000, 10000])]
LAB_BUSY_IN_IDLE = 10

# The heavy series (claim 3): 10 light connections and 1 heavy one on one
# server, each with one 64-byte message in flight, the heavy one's messages
# marked (0x7F first); the server spends W us of CPU per marked message.
# Two generators, so the light figures are the light clients' alone.
HEAVY_WORK_US = [0, 100, 1000, 10000]
HEAVY_LIGHT_CONNS = 10
HEAVY_DURATION, HEAVY_WARMUP = 1.5, 0.3  # 5 models x 4 W x 3 rounds x ~1.9 s: ~2 minutes
# (name, description, argv without --work-us, flags its --help must list)
HEAVY_MODELS = [
    ("threads", "thread per connection", peer_server("threads"), ["--work-us"]),
    ("epoll", "epoll", peer_server("epoll"), ["--work-us"]),
    ("uring", "io_uring", peer_server("uring"), ["--work-us"]),
    ("evmux-loop", "evmux, handler on the loop thread", evmux_server("epoll"), ["--work-us"]),
    ("evmux-pool", "evmux, worker pool", evmux_server("epoll") + ["--workers", "2"],
     ["--work-us", "--workers"]),
]
LAB_ALL_SERIES = [name for name, _, _ in LAB_SERIES] + ["heavy"]
LAB_FIELDS = ["series", "model", "conns", "work_us", "rounds_ok", "msgs_per_s", "p50_us",
              "p99_us", "server_ns_per_msg", "heavy_msgs_per_s", "heavy_p50_us", "error"]
NAN = float("nan")


def run_lab(args):
    series = lab_series_wanted(args)
    started = time.time()
    rows = []
    busy_idle = [s for s in LAB_SERIES if s[0] in series]
    if busy_idle:
        rows += run_lab_conns(args, busy_idle, started)
    if "heavy" in series:
        rows += run_lab_heavy(args, started)
    # Re-measuring some series keeps the others' rows from results/lab.csv.
    kept = [r for r in read_lab_csv() if r["series"] not in series]
    rows = kept + rows
    write_csv("lab.csv", rows, LAB_FIELDS)
    write_lab_md_and_plots(rows)


def lab_series_wanted(args):
    wanted = [s.strip() for s in (args.series or ",".join(LAB_ALL_SERIES)).split(",") if s.strip()]
    for s in wanted:
        if s not in LAB_ALL_SERIES:
            sys.exit("--series: unknown series '%s' (choose from %s)" % (s, ", ".join(LAB_ALL_SERIES)))
    return wanted


def run_lab_conns(args, series_list, started):
    """The busy and idle series: one generator, 1..10000 connections."""
    duration = args.duration if args.duration is not None else DEFAULT_DURATION
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP
    rows = []
    models = [(m, desc) for (m, desc) in LAB_MODELS if have("evmux-peer-" + m)]
    for m, _ in LAB_MODELS:
        if not have("evmux-peer-" + m):
            log("skipping model %s: evmux-peer-%s not built" % (m, m))
    total = len(models) * sum(len(c) for _, _, c in series_list)
    n = 0
    for series, _, counts in series_list:
        for conns in counts:
            active = conns if series == "busy" else LAB_BUSY_IN_IDLE
            for model, _ in models:
                n += 1
                if model == "select" and conns > 1000:
                    rows.append({"series": series, "model": model, "conns": conns,
                                 "rounds_ok": 0, "msgs_per_s": NAN,
                                 "p50_us": NAN, "p99_us": NAN,
                                 "server_ns_per_msg": NAN,
                                 "error": "cannot watch descriptors >= FD_SETSIZE (1024)"})
                    log("[%d/%d] %-5s %-8s conns=%-5d  skipped: FD_SETSIZE" % (
                        n, total, series, model, conns))
                    continue
                row = measure_point(model, peer_server(model), active, conns - active, 64, 1,
                                    args.rounds, duration, warmup)
                row.update({"series": series, "model": model, "conns": conns})
                rows.append(row)
                log("[%d/%d] %-5s %-8s conns=%-5d %10s msg/s  p99 %9s us  server %7s ns/msg  "
                    "(%.0f s elapsed) %s" % (n, total, series, model, conns,
                                             fmt(row["msgs_per_s"]), fmt(row["p99_us"]),
                                             fmt(row["server_ns_per_msg"]),
                                             time.time() - started, row["error"]))
    return rows


def server_accepts(argv, flags):
    """Whether a server's --help lists every flag in `flags` (a server built
    before the flag existed would refuse to start with it)."""
    if not os.access(argv[0], os.X_OK):
        return False
    out = subprocess.run([argv[0], "--help"], capture_output=True, text=True, timeout=10)
    return all(f in out.stdout for f in flags)


def heavy_models():
    models = []
    for name, desc, argv, flags in HEAVY_MODELS:
        if server_accepts(argv, flags):
            models.append((name, desc, argv))
        else:
            log("skipping heavy model %s: %s is missing or has no %s" % (
                name, os.path.basename(argv[0]), " / ".join(flags)))
    return models


def heavy_client_priority():
    """The heavy generator runs SCHED_FIFO when allowed. Both generators
    share the client CPU, and the light one keeps it busy: at normal
    priority the heavy one waited there for up to a time slice before
    sending its next request, so the server saw the heavy client late, at
    a rate set by the client CPU's scheduler (runs flipped between two
    regimes, light msg/s 12k or 29k at W = 1000 on epoll). At real-time
    priority it sends as soon as its reply arrives, as a client on its own
    machine would, and costs the light one only its few microseconds."""
    if subprocess.call(["sh", "-c", "chrt -f 1 true 2>/dev/null"]) == 0:
        return ["chrt", "-f", "1"]
    log("heavy series: cannot use chrt -f (SCHED_FIFO); the heavy generator runs at normal "
        "priority, and its rate depends on the client CPU's scheduler")
    return []


def heavy_once(argv, work_us, duration, warmup, prio):
    """One round: a fresh server with --work-us, the light and the heavy
    generator started together, both on the client CPU."""
    try:
        with Server(argv + ["--work-us", str(work_us)]) as srv:
            light = pinned(CLIENT_CPU, bench_argv(srv.port, HEAVY_LIGHT_CONNS, 0, 64, 1,
                                                  duration, warmup))
            heavy = prio + pinned(CLIENT_CPU, bench_argv(srv.port, 1, 0, 64, 1, duration,
                                                         warmup, ["--mark"]))
            procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for a in (light, heavy)]
            rows = []
            for proc in procs:
                try:
                    out, err = proc.communicate(timeout=duration + warmup + 60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, err = proc.communicate()
                    rows.append({"error": "evmux-bench timed out"})
                    continue
                rows.append(bench_row(subprocess.CompletedProcess(proc.args, proc.returncode,
                                                                  out, err)))
            return rows
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return [{"error": str(e)}, {"error": str(e)}]


def run_lab_heavy(args, started):
    """Claim 3: what one heavy client does to 10 light ones, per model."""
    duration = args.duration if args.duration is not None else HEAVY_DURATION
    warmup = args.warmup if args.warmup is not None else HEAVY_WARMUP
    models = heavy_models()
    prio = heavy_client_priority()
    rows = []
    total = len(models) * len(HEAVY_WORK_US)
    n = 0
    series_started = time.time()
    for work_us in HEAVY_WORK_US:
        # Rounds interleave the models, as in the echo comparison.
        runs = {name: [] for name, _, _ in models}
        for _ in range(args.rounds):
            for name, _, argv in models:
                runs[name].append(heavy_once(argv, work_us, duration, warmup, prio))
        for name, _, _ in models:
            n += 1
            row = summarize_heavy(runs[name])
            row.update({"series": "heavy", "model": name, "work_us": work_us})
            rows.append(row)
            log("[%d/%d] heavy %-10s work=%-5d light %8s msg/s  p50 %8s us  p99 %8s us  "
                "heavy %6s msg/s  (%.0f s elapsed) %s" % (
                    n, total, name, work_us, fmt(row["msgs_per_s"]), fmt(row["p50_us"]),
                    fmt(row["p99_us"]), fmt(row["heavy_msgs_per_s"]),
                    time.time() - started, row["error"]))
    log("heavy series: %.0f s" % (time.time() - series_started))
    return rows


def summarize_heavy(runs):
    """Medians over the rounds in which both generators ran clean."""
    def clean(r):
        return "error" not in r and int(r.get("mismatches", "0") or 0) == 0
    good = [(light, heavy) for light, heavy in runs if clean(light) and clean(heavy)]
    errors = "; ".join(sorted({r["error"] for pair in runs for r in pair if "error" in r}))
    lights = [light for light, _ in good]
    heavies = [heavy for _, heavy in good]
    return {"conns": HEAVY_LIGHT_CONNS + 1, "rounds_ok": len(good),
            "msgs_per_s": median_of(lights, "msgs_per_s"),
            "p50_us": median_of(lights, "p50_us"), "p99_us": median_of(lights, "p99_us"),
            "server_ns_per_msg": NAN,
            "heavy_msgs_per_s": median_of(heavies, "msgs_per_s"),
            "heavy_p50_us": median_of(heavies, "p50_us"), "error": errors}


def read_lab_csv():
    """results/lab.csv as rows with numbers, or [] if there is none; rows
    written before the heavy series existed simply lack its columns."""
    path = os.path.join(RESULTS, "lab.csv")
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            r["conns"] = int(r["conns"])
            r["work_us"] = int(r["work_us"]) if r.get("work_us") not in (None, "") else ""
            for k in ("msgs_per_s", "p50_us", "p99_us", "server_ns_per_msg"):
                v = r.get(k)
                r[k] = float(v) if v not in (None, "", "nan") else NAN
            for k in ("heavy_msgs_per_s", "heavy_p50_us"):  # empty outside the heavy series
                v = r.get(k)
                r[k] = "" if v in (None, "") else float(v)
            r["error"] = r.get("error") or ""
            rows.append(r)
    return rows


def write_lab_md_and_plots(rows):
    models = [(m, d) for (m, d) in LAB_MODELS
              if any(r["model"] == m and r["series"] != "heavy" for r in rows)]
    hmodels = [(m, d) for (m, d, _, _) in HEAVY_MODELS
               if any(r["model"] == m and r["series"] == "heavy" for r in rows)]
    write_md("lab.md", lab_tables(rows, models) + heavy_tables(rows, hmodels))
    plot_lab(rows, models)
    plot_heavy(rows, hmodels)


def lab_tables(rows, models):
    out = []
    head = "| connections | " + " | ".join(d for _, d in models) + " |"
    sep = "|---" * (len(models) + 1) + "|"
    for series, title, counts in LAB_SERIES:
        if not any(r["series"] == series for r in rows):
            continue
        for key, what in (("msgs_per_s", "messages per second"), ("p99_us", "p99 latency (us)"),
                          ("server_ns_per_msg", "server CPU per message (ns)")):
            out += ["%s, %s:" % (title.capitalize(), what), "", head, sep]
            for conns in counts:
                cells = []
                for m, _ in models:
                    r = next((r for r in rows if r["series"] == series and r["model"] == m
                              and r["conns"] == conns), None)
                    cells.append(fmt(r[key]) if r else "n/a")
                out.append("| %d | %s |" % (conns, " | ".join(cells)))
            out.append("")
    return "\n".join(out)


def heavy_tables(rows, models):
    if not models:
        return ""
    out = ["", "One heavy client among %d light ones (64-byte messages, one in flight each; "
           "each of the heavy client's messages costs W us of server CPU):" % HEAVY_LIGHT_CONNS, ""]
    head = "| W (us) | " + " | ".join(d for _, d in models) + " |"
    sep = "|---" * (len(models) + 1) + "|"
    for key, what in (("msgs_per_s", "light clients, messages per second"),
                      ("p50_us", "light clients, p50 latency (us)"),
                      ("p99_us", "light clients, p99 latency (us)"),
                      ("heavy_msgs_per_s", "heavy client, messages per second")):
        out += ["Heavy series, %s:" % what, "", head, sep]
        for w in HEAVY_WORK_US:
            cells = []
            for m, _ in models:
                r = next((r for r in rows if r["series"] == "heavy" and r["model"] == m
                          and r["work_us"] == w), None)
                cells.append(fmt(r[key]) if r else "n/a")
            out.append("| %d | %s |" % (w, " | ".join(cells)))
        out.append("")
    return "\n".join(out)


def gnuplot_terminal():
    if subprocess.call(["sh", "-c", "command -v gnuplot >/dev/null"]) != 0:
        log("gnuplot not installed: no plots (bench/setup.sh installs gnuplot-nox)")
        return None
    return ("set terminal pngcairo size 900,540 noenhanced" if pngcairo()
            else "set terminal png size 900,540")


def plot_lab(rows, models):
    terminal = gnuplot_terminal()
    if terminal is None:
        return
    for series, title, _ in LAB_SERIES:
        if not any(r["series"] == series for r in rows):
            continue
        datafiles = []
        for m, desc in models:
            path = os.path.join(RESULTS, "lab-%s-%s.dat" % (series, m))
            with open(path, "w") as f:
                for r in rows:
                    if (r["series"] == series and r["model"] == m
                            and r["msgs_per_s"] == r["msgs_per_s"]):
                        f.write("%s %s %s %s\n" % (r["conns"], r["msgs_per_s"], r["p99_us"],
                                                   r["server_ns_per_msg"]))
            datafiles.append((path, desc))
        for name, col, ylabel, logy in (("throughput", 2, "messages per second", False),
                                        ("p99", 3, "p99 latency (microseconds)", True),
                                        ("cpu", 4, "server CPU per message (ns)", True)):
            out = os.path.join(DOCS, "lab-%s-%s.png" % (series, name))
            plots = ", ".join("'%s' using 1:%d with linespoints lw 2 title '%s'" % (p, col, d)
                              for p, d in datafiles)
            script = "\n".join([
                terminal, "set output '%s'" % out, "set logscale x",
                "set logscale y" if logy else "set yrange [0:*]",
                "set xlabel 'concurrent connections'", "set ylabel '%s'" % ylabel,
                "set key outside right", "set grid",
                "set title 'Uppercase echo, 64-byte messages: %s'" % title,
                "plot " + plots, ""])
            subprocess.run(["gnuplot"], input=script, text=True, check=True)
            log("wrote " + os.path.relpath(out, ROOT))


def plot_heavy(rows, models):
    """The light clients' p99 and msg/s against W. W = 0 cannot sit on a
    log axis, so the x axis is the list of W, evenly spaced and labelled."""
    if not models:
        return
    terminal = gnuplot_terminal()
    if terminal is None:
        return
    datafiles = []
    for m, desc in models:
        path = os.path.join(RESULTS, "lab-heavy-%s.dat" % m)
        with open(path, "w") as f:
            for i, w in enumerate(HEAVY_WORK_US):
                r = next((r for r in rows if r["series"] == "heavy" and r["model"] == m
                          and r["work_us"] == w and r["msgs_per_s"] == r["msgs_per_s"]), None)
                if r:
                    f.write("%d %d %s %s %s\n" % (i, w, r["msgs_per_s"], r["p99_us"],
                                                  r["heavy_msgs_per_s"]))
        datafiles.append((path, desc))
    xtics = ", ".join('"%d" %d' % (w, i) for i, w in enumerate(HEAVY_WORK_US))
    for name, col, ylabel, logy in (("p99", 4, "light clients' p99 latency (microseconds)", True),
                                    ("throughput", 3, "light clients' messages per second",
                                     False)):
        out = os.path.join(DOCS, "lab-heavy-%s.png" % name)
        plots = ", ".join("'%s' using 1:%d with linespoints lw 2 title '%s'" % (p, col, d)
                          for p, d in datafiles)
        script = "\n".join([
            terminal, "set output '%s'" % out,
            "set logscale y" if logy else "set yrange [0:*]",
            "set xrange [-0.2:%f]" % (len(HEAVY_WORK_US) - 0.8), "set xtics (%s)" % xtics,
            "set xlabel 'CPU time of one heavy request (microseconds)'",
            "set ylabel \"%s\"" % ylabel, "set key outside right", "set grid",
            "set title '%d light clients and 1 heavy one, 64-byte messages'"
            % HEAVY_LIGHT_CONNS,
            "plot " + plots, ""])
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        log("wrote " + os.path.relpath(out, ROOT))


def replot_lab(args):
    """Redraws the lab's plots (and results/lab.md) from results/lab.csv
    without measuring."""
    rows = read_lab_csv()
    if not rows:
        sys.exit("results/lab.csv is missing: run the lab first")
    write_lab_md_and_plots(rows)


def pngcairo():
    out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in (out.stdout + out.stderr)


# ------------------------------------------------------------- memory ---

def idle_bytes(argv, count):
    """Server RSS growth per idle connection, with `count` connections open."""
    raise_fd_limit()
    with Server(argv) as srv:
        time.sleep(0.3)
        before = srv.rss_bytes()
        socks = []
        try:
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", srv.port))
                socks.append(s)
            # Let the server accept and settle every one of them.
            time.sleep(2.0)
            after = srv.rss_bytes()
        finally:
            for s in socks:
                s.close()
    return (after - before) / count


def run_memory(args):
    rows = []
    for label, argv in echo_servers():
        if label == "evmux-select":
            continue
        vals = [idle_bytes(argv, args.idle_conns) for _ in range(args.rounds)]
        row = {"server": label, "idle_conns": args.idle_conns,
               "bytes_per_conn": statistics.median(vals)}
        rows.append(row)
        log("%-14s %8.0f bytes per idle connection" % (label, row["bytes_per_conn"]))
    write_csv("memory.csv", rows, ["server", "idle_conns", "bytes_per_conn"])
    md = ["| server | bytes per idle connection (user-space RSS, %d connections) |"
          % args.idle_conns, "|---|---|"]
    md += ["| %s | %s |" % (r["server"], fmt(r["bytes_per_conn"])) for r in rows]
    write_md("memory.md", "\n".join(md) + "\n")


# ------------------------------------------------------- core, timers ---

def run_table_bench(args, kind, variants, extra_args):
    """Runs bench/core or bench/timers programs; they print CSV themselves."""
    rows = []
    header = None
    for prog, argv in variants:
        if not have(prog):
            log("skipping %s: not built" % prog)
            continue
        for extra in extra_args:
            cmd = pinned(SERVER_CPU, [os.path.join(BIN, prog)] + argv + extra + ["--csv"])
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            lines = [l for l in out.stdout.splitlines() if l.strip()]
            if out.returncode != 0 or len(lines) < 2:
                log("%s %s failed: %s" % (prog, " ".join(argv + extra),
                                          (out.stderr.strip().splitlines() or [""])[-1]))
                continue
            header = lines[0]
            for line in lines[1:]:
                rows.append(line)
                log("%s: %s" % (prog, line))
    if header:
        os.makedirs(RESULTS, exist_ok=True)
        path = os.path.join(RESULTS, kind + ".csv")
        with open(path, "w") as f:
            f.write(header + "\n" + "\n".join(rows) + "\n")
        log("wrote " + os.path.relpath(path, ROOT))


def run_core(args):
    variants = [("evmux-bench-core-evmux", ["--backend", b])
                for b in ("uring", "epoll", "poll", "select")]
    variants += [("evmux-bench-core-" + lib, []) for lib in ("libev", "libevent", "libuv")]
    # 9900 socketpairs is as near 10000 as 20000 descriptors allow; select
    # stops at FD_SETSIZE, so it gets 500 instead of the larger sizes.
    extra = []
    for n in (100, 500, 1000, 9900):
        for rereg in ([], ["--rereg"]):
            extra.append(["--pipes", str(n)] + rereg)
    raise_fd_limit()
    run_table_bench(args, "core", variants, extra)


def run_timers(args):
    variants = [("evmux-bench-timers-" + lib, []) for lib in ("evmux", "libev", "libevent",
                                                              "libuv")]
    run_table_bench(args, "timers", variants, [[]])


def run_scale(args):
    from scale import run_scale as run  # bench/scale.py: its own page of code
    run(args)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["lab", "lab-plots", "echo", "udp", "memory", "core",
                                    "timers", "scale", "all"])
    p.add_argument("--rounds", type=int, default=3, help="runs per point (medians)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds measured per run (default 2; lab's heavy series 1.5)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of warm-up per run (default 0.5; lab's heavy series 0.3)")
    p.add_argument("--series", default=None,
                   help="lab only: comma-separated series to measure (busy, idle, heavy; "
                        "default all); results/lab.csv keeps the others' rows")
    p.add_argument("--idle-conns", type=int, default=10000, help="connections for memory")
    args = p.parse_args()
    if not have("evmux-bench"):
        sys.exit("build/bin/evmux-bench is missing: run make first")
    raise_fd_limit()
    started = time.time()
    steps = {"lab": [run_lab], "lab-plots": [replot_lab], "echo": [run_echo], "udp": [run_udp], "memory": [run_memory], "core": [run_core],
             "timers": [run_timers], "scale": [run_scale],
             "all": [run_lab, run_echo, run_udp, run_memory, run_core, run_timers,
                     run_scale]}[args.what]
    for step in steps:
        step(args)
    log("done in %.0f s" % (time.time() - started))


if __name__ == "__main__":
    main()
