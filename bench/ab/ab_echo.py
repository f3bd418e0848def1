#!/usr/bin/env python3
"""A/B of two evmux-echo-server builds, side by side in one run.

For each backend and load point, the two servers take turns (ABBA order,
so neither always runs first), each pinned to CPU 0 with evmux-bench on
CPU 1, and the medians of server CPU per message and messages per second
are printed with the ratio B/A. Server CPU per message is the figure to
read: on a shared machine, messages per second follow the load generator
and the neighbours.

With --peers, each backend's matched peer server takes its turn in the
same rotation (uring: the raw io_uring peer, epoll: libev; see --peer-map),
and A/peer and B/peer are printed too: the before-and-after comparison
against the peers, in one run.

usage: ab_echo.py A_SERVER B_SERVER [--bench PATH] [--rounds N]
                  [--duration S] [--backends uring,epoll] [--peers]
"""
import argparse
import json
import re
import statistics
import subprocess

POINTS = [(1, 64, 1), (100, 64, 1), (100, 64, 16), (100, 16384, 1), (1000, 64, 1)]


def run(server, bench, backend, conns, size, depth, duration, peer=False):
    argv = [server, '--port', '0'] + ([] if peer else ['--backend', backend])
    srv = subprocess.Popen(['taskset', '-c', '0'] + argv,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r':(\d+) \((?:backend|peer)', srv.stdout.readline()).group(1))
        out = subprocess.run(['taskset', '-c', '1', bench, '--port', str(port), '--conns',
                              str(conns), '--size', str(size), '--depth', str(depth),
                              '--duration', str(duration), '--warmup', '0.5', '--server-pid',
                              str(srv.pid), '--backend', 'epoll', '--json'],
                             capture_output=True, text=True, check=True).stdout
    finally:
        srv.terminate()
        srv.wait()
    d = json.loads(out)
    return d['server_ns_per_msg'], d['msgs_per_s']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--bench', default='build/bin/evmux-bench')
    ap.add_argument('--rounds', type=int, default=4)
    ap.add_argument('--duration', type=float, default=2)
    ap.add_argument('--backends', default='uring,epoll')
    ap.add_argument('--peers', action='store_true')
    ap.add_argument('--peer-map', default='uring=build/bin/evmux-peer-uring,'
                                          'epoll=build/bin/evmux-peer-libev')
    args = ap.parse_args()
    peer_of = dict(kv.split('=', 1) for kv in args.peer_map.split(','))
    print('backend | conns | size | depth | A ns/msg | B ns/msg | B/A | A msg/s | B msg/s' +
          (' | peer ns/msg | A/peer | B/peer' if args.peers else ''))
    for backend in args.backends.split(','):
        for conns, size, depth in POINTS:
            got = {'A': [], 'B': [], 'P': []}
            peer = peer_of.get(backend) if args.peers else None
            for r in range(args.rounds):
                order = [('A', args.a), ('B', args.b)] + ([('P', peer)] if peer else [])
                for name, server in (order if r % 2 == 0 else order[::-1]):
                    ns, rate = run(server, args.bench, backend, conns, size, depth, args.duration,
                                   peer=name == 'P')
                    if ns is not None:
                        got[name].append((ns, rate))
            if not got['A'] or not got['B']:
                print(f'{backend} | {conns} | {size} | {depth} | no measurement')
                continue
            a = statistics.median(x[0] for x in got['A'])
            b = statistics.median(x[0] for x in got['B'])
            ra = statistics.median(x[1] for x in got['A'])
            rb = statistics.median(x[1] for x in got['B'])
            line = (f'{backend} | {conns} | {size} | {depth} | {a:.0f} | {b:.0f} | {b / a:.3f} '
                    f'| {ra:.0f} | {rb:.0f}')
            if peer and got['P']:
                p = statistics.median(x[0] for x in got['P'])
                line += f' | {p:.0f} | {a / p:.3f} | {b / p:.3f}'
            print(line, flush=True)


if __name__ == '__main__':
    main()
