#!/usr/bin/env bash
# Runs the timer benchmark for every library that was built, REPEATS
# times, interleaving the programs so that a burst of load on a shared
# machine hits all of them alike. Writes every run to OUT (CSV) and prints
# the median per operation with its ratio to libev.
#
#   bench/timers/run.sh [-b BUILD_DIR] [-r REPEATS] [-o OUT] [-- extra flags, e.g. --count 100000]
#   bench/timers/run.sh -s OUT     only summarise an earlier OUT
set -euo pipefail

build=build
repeats=3
out=timers-results.csv
summary_only=false
while getopts "b:r:o:s:" opt; do
    case $opt in
    b) build=$OPTARG ;;
    r) repeats=$OPTARG ;;
    o) out=$OPTARG ;;
    s) out=$OPTARG; summary_only=true ;;
    *) echo "usage: $0 [-b BUILD_DIR] [-r REPEATS] [-o OUT] [-- FLAGS]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
extra=("$@")
bin=$build/bin

if ! $summary_only; then
libs=()
for lib in evmux libev libevent libuv; do
    if [ -x "$bin/evmux-bench-timers-$lib" ]; then
        libs+=("$lib")
    else
        echo "note: $lib not built, skipped" >&2
    fi
done

echo "library,count,runs,op,median_ns,min_ns,max_ns,median_wall_ns" >"$out"
for ((rep = 1; rep <= repeats; rep++)); do
    for lib in "${libs[@]}"; do
        "$bin/evmux-bench-timers-$lib" --csv --no-header "${extra[@]}" >>"$out"
    done
    echo "repeat $rep of $repeats done" >&2
done
fi

python3 - "$out" <<'PY'
import csv, statistics, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1])))
ops = ["start", "restart", "stop", "expire"]
libs = sorted({r["library"] for r in rows}, key=["evmux", "libev", "libevent", "libuv"].index)
ns = defaultdict(list)
for r in rows:
    ns[(r["library"], r["op"])].append(float(r["median_ns"]))
med = {k: statistics.median(v) for k, v in ns.items()}
print("ns per timer (CPU time), median of the programs' medians; (x libev)")
print(f"{'library':<9}" + "".join(f"{op:>18}" for op in ops))
for lib in libs:
    cells = []
    for op in ops:
        v, ref = med.get((lib, op)), med.get(("libev", op))
        ratio = f"({v / ref:.2f})" if v is not None and ref else ""
        cells.append(f"{v:>10.1f} {ratio:>7}" if v is not None else f"{'-':>18}")
    print(f"{lib:<9}" + "".join(cells))
PY
