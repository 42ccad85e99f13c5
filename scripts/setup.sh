#!/usr/bin/env bash
# Installs everything tricorn needs to build and test, from Debian 12's packages.
# Idempotent: packages already present are skipped by apt-get, and the apt lists are
# refreshed only when a package is missing. Must run as root (or through sudo).
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config git
  # fuzzing: clang with libFuzzer and the sanitizer runtimes
  clang-14 libclang-rt-14-dev
  # libraries
  libboost1.81-dev libnghttp2-dev libyaml-cpp-dev libfmt-dev doctest-dev libssl-dev
  libsystemd-dev
  # test clients and tools
  curl wrk nghttp2-client openssl procps iproute2 systemd
  python3 python3-h2 python3-hyperframe python3-httpx python3-websockets python3-pytest
  # the chat example end to end, in a real browser
  chromium chromium-driver python3-selenium
  # the deployment files in deploy/, run or checked by the tests
  nginx-light haproxy python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # nginx and haproxy are test tools here: keep their packages from starting the
  # system services (policy-rc.d 101 = "not now"), unless a policy is already set.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod +x "$policy"
    trap '"${sudo_cmd[@]}" rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
