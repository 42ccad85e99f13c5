#!/usr/bin/env bash
# Sets everything up, builds, and serves the hello app on http://127.0.0.1:8000 with
# two workers. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
build=${TRICORN_BUILD:-build}
echo
echo "Serving the demo app at http://127.0.0.1:8000/  (Ctrl-C to stop)"
echo "  try: curl http://127.0.0.1:8000/"
echo
exec "$build/tricorn" -w 2 -b 127.0.0.1:8000 "$build/libhello.so"
