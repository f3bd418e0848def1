#!/usr/bin/env bash
# Installs what the benchmarks and the lab need beyond the build itself:
# the peer libraries and gnuplot. Debian packages only.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  cmake make gcc libc6-dev pkg-config \
  libev-dev libevent-dev libuv1-dev liburing-dev gnuplot-nox util-linux
