#!/usr/bin/env bash
# Runs every test against a build with AddressSanitizer and UndefinedBehaviorSanitizer.
# Sanitizer reports go to files (a worker's stderr is not always read by the tests);
# any report fails the run, whether or not a test noticed the crash.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
build=$(realpath -m "${TRICORN_BUILD:-build-asan}")
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTRICORN_SANITIZE=ON >/dev/null
ninja -C "$build"
reports=$(mktemp -d)
# A small quarantine: the tests that bound a worker's memory measure the server, not
# ASan holding freed blocks (256 MB by default).
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:abort_on_error=1:quarantine_size_mb=4"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1"
status=0
"$build/unit_tests" || status=1
# test_allocations.py counts calls into glibc's malloc through an LD_PRELOAD shim; ASan
# replaces malloc and will not start behind another preloaded library. The normal build
# (scripts/test.sh) runs it. test_parked_connections_cost_little_memory measures the
# worker's resident size, which under ASan is its quarantine and shadow memory.
TRICORN_BUILD="$build" /usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider \
  --ignore=tests/integration/test_allocations.py \
  --deselect tests/integration/test_http1.py::test_parked_connections_cost_little_memory \
  "$@" || status=1
if compgen -G "$reports/*" >/dev/null; then
  echo "== sanitizer reports"
  for f in "$reports"/*; do echo "--- $f"; cat "$f"; done
  status=1
fi
exit $status
