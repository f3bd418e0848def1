#!/usr/bin/env python3
"""A/B of the event-loop core benchmark (bench/core) for two builds, with
libev beside them, in one run.

Each round runs every variant once per point, in rotating order, pinned to
CPU 0; a variant's figure is the median over rounds of each run's median
time per loop pass (median_us). Printed: A, B and libev, B/A, A/libev and
B/libev.

With --instr, each variant runs once under valgrind's callgrind instead,
and the figure is its instruction count in millions: the benchmark's work
is fixed, so the count does not move with the machine's other load.

usage: ab_core.py A_BIN_DIR B_BIN_DIR [--rounds N] [--backends uring,epoll] [--instr]
"""
import argparse
import csv
import io
import re
import statistics
import subprocess


def instructions(prog, argv):
    out = subprocess.run(['taskset', '-c', '0', 'valgrind', '--tool=callgrind',
                          '--callgrind-out-file=/dev/null', prog] + argv,
                         capture_output=True, text=True, check=True, timeout=1200)
    return int(re.search(r'Collected : (\d+)', out.stderr).group(1)) / 1e6


def run(prog, argv):
    out = subprocess.run(['taskset', '-c', '0', prog] + argv + ['--csv'],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    return float(list(csv.DictReader(io.StringIO(out)))[-1]['median_us'])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--backends', default='uring,epoll')
    ap.add_argument('--instr', action='store_true')
    args = ap.parse_args()
    measure = instructions if args.instr else run
    if args.instr:
        args.rounds = 1
    points = [['--pipes', str(n)] + r for n in (100, 1000, 9900) for r in ([], ['--rereg'])]
    unit = 'Minstr' if args.instr else 'us'
    print(f'backend | pipes | rereg | A {unit} | B {unit} | libev {unit} | B/A | A/libev | B/libev')
    for backend in args.backends.split(','):
        for point in points:
            variants = [('A', args.a + '/evmux-bench-core-evmux', ['--backend', backend] + point),
                        ('B', args.b + '/evmux-bench-core-evmux', ['--backend', backend] + point),
                        ('L', args.b + '/evmux-bench-core-libev', point)]
            got = {'A': [], 'B': [], 'L': []}
            for r in range(args.rounds):
                k = r % len(variants)
                for name, prog, argv in variants[k:] + variants[:k]:
                    got[name].append(measure(prog, argv))
            a, b, lev = (statistics.median(got[n]) for n in 'ABL')
            print(f'{backend} | {point[1]} | {int("--rereg" in point)} | {a:.1f} | {b:.1f} | '
                  f'{lev:.1f} | {b / a:.3f} | {a / lev:.3f} | {b / lev:.3f}', flush=True)


if __name__ == '__main__':
    main()
