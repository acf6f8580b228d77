#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. install the Debian packages the build needs (apt-get; root),
#   2. build with warnings as errors and run every meson test suite
#      (uapi, unit, mp) -- benchmarks are built, not run,
#   3. build again with AddressSanitizer + UndefinedBehaviorSanitizer and
#      run the same suites.
# Usage: tests/run_all.sh [--no-sanitizers]
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizers=1
[[ "${1:-}" == "--no-sanitizers" ]] && sanitizers=0

deps=(meson ninja-build pkg-config g++ liburing-dev libnuma-dev libboost-dev libjemalloc-dev
      libbenchmark-dev libgtest-dev libgmock-dev libxxhash-dev libsystemd-dev
      libtomlplusplus-dev nlohmann-json3-dev)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc)
run_suites() { # build-dir
    meson test -C "$1" --suite uapi --suite unit --suite mp --suite system --print-errorlogs --num-processes "$jobs"
}

echo "== build (warnings as errors) =="
[[ -d build-test ]] || meson setup build-test --buildtype=debugoptimized -Dwerror=true -Dbenchmarks=enabled -Dtests=enabled
ninja -C build-test
run_suites build-test

if ((sanitizers)); then
    echo "== build with ASan + UBSan =="
    [[ -d build-asan ]] || meson setup build-asan --buildtype=debug -Dwerror=true -Dbenchmarks=disabled \
        -Dtests=enabled -Db_sanitize=address,undefined -Db_lundef=false
    ninja -C build-asan
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        run_suites build-asan
fi
echo "all test suites passed"
