#!/usr/bin/env bash
# Installs the comparison servers, builds tricorn in Release, raises the descriptor
# limit for the idle-connection cases, and runs every case for every server.
# Usage: scripts/bench/run.sh [--seconds N] [--rounds N] [--servers bare,tricorn,...]
#        [--cases keep-alive,pipelined,...] [--skip-memory]
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh
need=(nginx-light h2o uvicorn python3-uvloop python3-httptools nghttp2-server gcc util-linux)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The packages start their own services; the benchmark runs its own instances.
  systemctl stop nginx h2o 2>/dev/null || service nginx stop 2>/dev/null || true
  pkill -x nginx 2>/dev/null || true
  pkill -x h2o 2>/dev/null || true
fi
TRICORN_BUILD=build-release ./scripts/build.sh -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON
ulimit -n "$(ulimit -Hn)"  # the idle-connection cases open 8,000 at once
exec /usr/bin/python3 scripts/bench/bench.py --build build-release "$@"
