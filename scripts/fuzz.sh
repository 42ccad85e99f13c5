#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (coverage, ASan, UBSan) into build-fuzz/ and
# runs each for SECONDS (default 60), starting from the seeds in the repo:
#   http1_parser  the HTTP/1.1 parser and chunked decoder (seeds: tests/data/requests)
#   connection    a whole HTTP/1.1 or HTTP/2 connection over a socket pair (fuzz/corpus)
# New inputs go to a scratch directory; a crash, a sanitizer report or a hang fails the
# run and leaves the input in $TRICORN_FUZZ_OUT (default: build-fuzz/findings).
#   ./scripts/fuzz.sh 20      what the test command runs
#   ./scripts/fuzz.sh 3600    a longer run (docs/hardening.md)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
./scripts/setup.sh
build=$(realpath -m "${TRICORN_FUZZ_BUILD:-build-fuzz}")
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTRICORN_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
ninja -C "$build" http1_parser_fuzz connection_fuzz
findings=$(realpath -m "${TRICORN_FUZZ_OUT:-$build/findings}")
mkdir -p "$findings"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for target in http1_parser connection; do
  work=$(mktemp -d)
  if [ "$target" = http1_parser ]; then
    cp tests/data/requests/*/*.http "$work/"
  else
    cp fuzz/corpus/connection/* "$work/"
  fi
  echo "== fuzz $target for ${seconds}s"
  # -timeout: one input taking 20 s is a hang (the connection target allows 10 s).
  "$build/${target}_fuzz" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/$target-" "$work" \
    2>"$findings/$target.log" || {
    tail -50 "$findings/$target.log"
    echo "fuzz $target failed; the input is in $findings"
    exit 1
  }
  grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$findings/$target.log"
  rm -rf "$work"
done
