#!/usr/bin/env bash
# Sets everything up from a fresh Debian 12 and runs every test: the doctest unit tests,
# a short run of each fuzz target, then the integration tests against the real binary
# with real clients.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
build=$(realpath -m "${TRICORN_BUILD:-build}")
echo "== unit tests"
"$build/unit_tests"
echo "== fuzzing, a short run of each target"
./scripts/fuzz.sh "${TRICORN_FUZZ_SECONDS:-15}"
echo "== integration tests"
# Debian's python3 (with python3-h2, -httpx, -pytest) rather than any other on PATH.
TRICORN_BUILD="$build" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider "$@"
