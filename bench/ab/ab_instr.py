#!/usr/bin/env python3
"""Instructions per echoed message, counted by valgrind's callgrind, for
two evmux-echo-server builds: a count that does not move with the
machine's other load, unlike time. The server runs under callgrind on CPU
0, evmux-bench on CPU 1 for a fixed time; the figure is the server's
instruction count (start-up and shutdown included, a small part of the
total) divided by the messages the bench saw echoed.

usage: ab_instr.py A_SERVER B_SERVER [--backends uring,epoll] [--rounds N]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

POINTS = [(100, 64, 16), (100, 16384, 1)]


def run(server, bench, backend, conns, size, depth, duration):
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, 'cg.out')
        srv = subprocess.Popen(['taskset', '-c', '0', 'valgrind', '--tool=callgrind',
                                '--callgrind-out-file=' + out_file, server, '--port', '0',
                                '--backend', backend],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            port = int(re.search(r':(\d+) \(backend', srv.stdout.readline()).group(1))
            out = subprocess.run(['taskset', '-c', '1', bench, '--port', str(port), '--conns',
                                  str(conns), '--size', str(size), '--depth', str(depth),
                                  '--duration', str(duration), '--warmup', '0', '--backend',
                                  'epoll', '--json'],
                                 capture_output=True, text=True, check=True).stdout
        finally:
            srv.terminate()
            _, err = srv.communicate()
        d = json.loads(out)
        total = int(re.search(r'Collected : (\d+)', err).group(1))
        return total / d['messages']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--bench', default='build/bin/evmux-bench')
    ap.add_argument('--backends', default='uring,epoll')
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--duration', type=float, default=4)
    args = ap.parse_args()
    print('backend | conns | size | depth | A instr/msg | B instr/msg | B/A')
    for backend in args.backends.split(','):
        for conns, size, depth in POINTS:
            got = {'A': [], 'B': []}
            for r in range(args.rounds):
                order = (('A', args.a), ('B', args.b))
                for name, server in (order if r % 2 == 0 else order[::-1]):
                    got[name].append(run(server, args.bench, backend, conns, size, depth,
                                         args.duration))
            a, b = statistics.median(got['A']), statistics.median(got['B'])
            print(f'{backend} | {conns} | {size} | {depth} | {a:.0f} | {b:.0f} | {b / a:.3f}',
                  flush=True)


if __name__ == '__main__':
    main()
