#!/usr/bin/env bash
# Configures and builds tricorn into build/ (or $TRICORN_BUILD). Extra arguments go to
# cmake's configure step, e.g. -DCMAKE_BUILD_TYPE=Release.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TRICORN_BUILD:-build}
cmake -S . -B "$build" -G Ninja "$@" >/dev/null
ninja -C "$build"
