#!/usr/bin/env bash
# Runs the event-loop core benchmark for every library that was built, at
# several pipe counts, with and without re-registration, REPEATS times,
# interleaving the programs so that a burst of load on a shared machine
# hits all of them alike. Writes every run to OUT (CSV) and prints the
# median per configuration with its ratio to libev.
#
#   bench/core/run.sh [-b BUILD_DIR] [-r REPEATS] [-o OUT] [-n "100 1000 9900"] [-- extra flags]
#   bench/core/run.sh -s OUT     only summarise an earlier OUT
set -euo pipefail

build=build
repeats=5
out=core-results.csv
pipes="100 1000 9900"
summary_only=false
while getopts "b:r:o:n:s:" opt; do
    case $opt in
    b) build=$OPTARG ;;
    r) repeats=$OPTARG ;;
    o) out=$OPTARG ;;
    n) pipes=$OPTARG ;;
    s) out=$OPTARG; summary_only=true ;;
    *) echo "usage: $0 [-b BUILD_DIR] [-r REPEATS] [-o OUT] [-n PIPES] [-- FLAGS]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
extra=("$@")
bin=$build/bin

# program|flags; select only where every descriptor stays below
# FD_SETSIZE (2 per pair), the others everywhere.
if ! $summary_only; then
configs=()
for lib in evmux libev libevent libuv; do
    [ -x "$bin/evmux-bench-core-$lib" ] || { echo "note: $lib not built, skipped" >&2; continue; }
    if [ "$lib" = evmux ]; then
        configs+=("evmux|--backend epoll" "evmux|--backend poll" "evmux|--backend select")
    else
        configs+=("$lib|")
    fi
done

echo "library,backend,pipes,active,writes,rereg,rounds,median_us,min_us,p90_us,setup_median_us,cpu_median_us" >"$out"
for ((rep = 1; rep <= repeats; rep++)); do
    for n in $pipes; do
        for rereg in "" --rereg; do
            for c in "${configs[@]}"; do
                lib=${c%%|*}
                flags=${c#*|}
                if [[ $flags == *select* ]] && ((2 * n + 16 > 1024)); then
                    continue
                fi
                # shellcheck disable=SC2086
                "$bin/evmux-bench-core-$lib" --pipes "$n" $flags $rereg --csv --no-header \
                    "${extra[@]}" >>"$out"
            done
        done
    done
    echo "repeat $rep of $repeats done" >&2
done
fi

python3 - "$out" <<'PY'
# Per configuration, the median over the runs of: the median round (wall),
# the median round's CPU time, and the fastest round (wall). On a shared
# machine the last is the steadiest: it is the round nobody disturbed.
import csv, statistics, sys
from collections import defaultdict
cols = {"wall": "median_us", "cpu": "cpu_median_us", "min": "min_us"}
runs = defaultdict(lambda: defaultdict(list))
for r in csv.DictReader(open(sys.argv[1])):
    k = (int(r["pipes"]), int(r["rereg"]), r["library"], r["backend"])
    for name, col in cols.items():
        runs[k][name].append(float(r[col]))
med = {k: {n: statistics.median(v) for n, v in d.items()} for k, d in runs.items()}
print("us per round; median over runs (x libev at the same pipes and rereg)")
print(f"{'pipes':>6} {'rereg':>5} {'library':<9} {'backend':<7} {'runs':>4} "
      + "".join(f"{h:>19}" for h in ("median wall", "median cpu", "min wall")))
for k in sorted(med):
    n, rr, lib, be = k
    ref = med.get((n, rr, "libev", "epoll"))
    cells = ""
    for name in cols:
        ratio = f"({med[k][name] / ref[name]:.2f})" if ref else ""
        cells += f"{med[k][name]:>11.1f} {ratio:>7}"
    print(f"{n:>6} {rr:>5} {lib:<9} {be:<7} {len(runs[k]['wall']):>4} {cells}")
PY
