#!/usr/bin/env python3
"""Runs the evmux benchmarks and the I/O-models lab, side by side in one run.

  python3 bench/run.py lab      the seed's I/O models over 1..10000 connections
                                (results/lab.csv, docs/lab-*.png, under 10 minutes)
  python3 bench/run.py lab-plots  redraws the lab's plots from results/lab.csv
  python3 bench/run.py echo     evmux (each backend) against every peer
  python3 bench/run.py memory   bytes per idle connection at 10000 connections
  python3 bench/run.py core     event-loop core: N socketpairs, A active writers
  python3 bench/run.py timers   1M timers: start, restart, stop, expire
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

    def __init__(self, argv):
        self.argv = argv
        self.proc = None
        self.port = None

    def __enter__(self):
        self.proc = subprocess.Popen(pinned(SERVER_CPU, self.argv), stdout=subprocess.PIPE,
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


def bench_once(server, conns, idle, size, depth, duration, warmup):
    """One evmux-bench run against a started server; returns its CSV row."""
    argv = [os.path.join(BIN, "evmux-bench"), "--port", str(server.port),
            "--conns", str(conns), "--idle", str(idle), "--size", str(size),
            "--depth", str(depth), "--duration", str(duration), "--warmup", str(warmup),
            "--server-pid", str(server.proc.pid), "--csv"]
    out = subprocess.run(pinned(CLIENT_CPU, argv), capture_output=True, text=True,
                         timeout=duration + warmup + 120)
    rows = list(csv.DictReader(out.stdout.splitlines()))
    if not rows:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    row = rows[-1]
    if out.returncode != 0:
        row["error"] = "exit %d" % out.returncode
    return row


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

def run_once(argv, conns, idle, size, depth, duration, warmup):
    """One run against a fresh server."""
    try:
        with Server(argv) as srv:
            return bench_once(srv, conns, idle, size, depth, duration, warmup)
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
                runs[label].append(run_once(argv, conns, idle, size, depth, args.duration,
                                            args.warmup))
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


def run_lab(args):
    rows = []
    models = [(m, desc) for (m, desc) in LAB_MODELS if have("evmux-peer-" + m)]
    for m, _ in LAB_MODELS:
        if not have("evmux-peer-" + m):
            log("skipping model %s: evmux-peer-%s not built" % (m, m))
    total = len(models) * sum(len(c) for _, _, c in LAB_SERIES)
    n = 0
    started = time.time()
    for series, _, counts in LAB_SERIES:
        for conns in counts:
            active = conns if series == "busy" else LAB_BUSY_IN_IDLE
            for model, _ in models:
                n += 1
                if model == "select" and conns > 1000:
                    rows.append({"series": series, "model": model, "conns": conns,
                                 "rounds_ok": 0, "msgs_per_s": float("nan"),
                                 "p50_us": float("nan"), "p99_us": float("nan"),
                                 "server_ns_per_msg": float("nan"),
                                 "error": "cannot watch descriptors >= FD_SETSIZE (1024)"})
                    log("[%d/%d] %-5s %-8s conns=%-5d  skipped: FD_SETSIZE" % (
                        n, total, series, model, conns))
                    continue
                row = measure_point(model, peer_server(model), active, conns - active, 64, 1,
                                    args.rounds, args.duration, args.warmup)
                row.update({"series": series, "model": model, "conns": conns})
                rows.append(row)
                log("[%d/%d] %-5s %-8s conns=%-5d %10s msg/s  p99 %9s us  server %7s ns/msg  "
                    "(%.0f s elapsed) %s" % (n, total, series, model, conns,
                                             fmt(row["msgs_per_s"]), fmt(row["p99_us"]),
                                             fmt(row["server_ns_per_msg"]),
                                             time.time() - started, row["error"]))
    fields = ["series", "model", "conns", "rounds_ok", "msgs_per_s", "p50_us", "p99_us",
              "server_ns_per_msg", "error"]
    write_csv("lab.csv", rows, fields)
    write_md("lab.md", lab_tables(rows, models))
    plot_lab(rows, models)


def lab_tables(rows, models):
    out = []
    head = "| connections | " + " | ".join(d for _, d in models) + " |"
    sep = "|---" * (len(models) + 1) + "|"
    for series, title, counts in LAB_SERIES:
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


def plot_lab(rows, models):
    if subprocess.call(["sh", "-c", "command -v gnuplot >/dev/null"]) != 0:
        log("gnuplot not installed: no plots (bench/setup.sh installs gnuplot-nox)")
        return
    terminal = ("set terminal pngcairo size 900,540 noenhanced" if pngcairo()
                else "set terminal png size 900,540")
    for series, title, _ in LAB_SERIES:
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


def replot_lab(args):
    """Redraws the lab's plots from results/lab.csv without measuring."""
    rows = []
    for r in csv.DictReader(open(os.path.join(RESULTS, "lab.csv"))):
        r["conns"] = int(r["conns"])
        for k in ("msgs_per_s", "p99_us", "server_ns_per_msg"):
            r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
        rows.append(r)
    models = [(m, d) for (m, d) in LAB_MODELS if any(r["model"] == m for r in rows)]
    write_md("lab.md", lab_tables(rows, models))
    plot_lab(rows, models)


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["lab", "lab-plots", "echo", "memory", "core", "timers",
                                    "all"])
    p.add_argument("--rounds", type=int, default=3, help="runs per point (medians)")
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per run")
    p.add_argument("--idle-conns", type=int, default=10000, help="connections for memory")
    args = p.parse_args()
    if not have("evmux-bench"):
        sys.exit("build/bin/evmux-bench is missing: run make first")
    raise_fd_limit()
    started = time.time()
    steps = {"lab": [run_lab], "lab-plots": [replot_lab], "echo": [run_echo], "memory": [run_memory], "core": [run_core],
             "timers": [run_timers],
             "all": [run_lab, run_echo, run_memory, run_core, run_timers]}[args.what]
    for step in steps:
        step(args)
    log("done in %.0f s" % (time.time() - started))


if __name__ == "__main__":
    main()
