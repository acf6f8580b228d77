#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. install the Debian packages the build needs (apt-get; root), and
#      check that every C and C++ source is formatted (tests/check_format.sh),
#   2. build with warnings as errors and run every meson test suite
#      (uapi, unit, mp, and python: pytest on /usr/bin/python3 against the
#      kvpool package) -- benchmarks are built, not run -- and build the
#      installed programs as a release build, warnings as errors,
#   3. build again with AddressSanitizer + UndefinedBehaviorSanitizer and
#      run the same suites, then the threaded tests (kvpoold, the snapshot
#      engine, libkv in threads) under ThreadSanitizer,
#   4. build the libFuzzer targets with clang-19 and run each for 10 s
#      (fuzz/run_fuzz.sh --ci), when clang-19 is installed (it is in deps).
# The uapi, unit, mp, system, fuzz (corpus replay) and doc suites run in 2
# and 3; python, remote (a real Redis Cluster), events (ZeroMQ) and
# security (encryption, secure erase, tenant isolation, audit) in 2 only.
# Usage: tests/run_all.sh [--no-sanitizers]
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizers=1
[[ "${1:-}" == "--no-sanitizers" ]] && sanitizers=0

deps=(meson ninja-build pkg-config g++ liburing-dev libnuma-dev libboost-dev libjemalloc-dev
      libbenchmark-dev libgtest-dev libgmock-dev libxxhash-dev libssl-dev libsystemd-dev
      libtomlplusplus-dev nlohmann-json3-dev clang-19 libclang-rt-19-dev gnuplot-nox
      # The formatting check (tests/check_format.sh) and the man pages.
      clang-format-19 scdoc
      # The Python package (python/) and its tests: Debian's /usr/bin/python3,
      # pybind11, numpy, torch (fast with OpenBLAS), cbor2 and xxhash for
      # the vLLM hash cross-checks, mypy for the type stubs and hints.
      pybind11-dev python3-pybind11 python3-dev python3-numpy python3-torch python3-pytest
      python3-cbor2 python3-xxhash libopenblas0-pthread mypy
      # The remote tier (Redis Cluster through hiredis) and KV events
      # (ZeroMQ, msgpack), their tests' Redis servers and subscribers.
      libhiredis-dev libzmq3-dev cppzmq-dev libmsgpack-dev redis-server redis-tools
      python3-zmq python3-msgpack python3-redis)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc)

echo "== formatting (clang-format-19) =="
tests/check_format.sh
run_suites() { # build-dir
    meson test -C "$1" --suite uapi --suite unit --suite mp --suite system --suite fuzz --suite doc --print-errorlogs --num-processes "$jobs"
}

echo "== build (warnings as errors) =="
[[ -d build-test ]] || meson setup build-test --buildtype=debugoptimized -Dwerror=true -Dbenchmarks=enabled -Dtests=enabled \
    -Dpython=enabled
ninja -C build-test
run_suites build-test
# Only here: the sanitizer builds leave the extension out (an instrumented
# module cannot load into /usr/bin/python3).
meson test -C build-test --suite python --print-errorlogs --num-processes "$jobs"
# Real redis-server nodes and ZeroMQ subscribers on loopback ports, and the
# security suite (test users, a kvpoold in a private mount namespace, crash
# rounds inside an erase): once, serially, not under the sanitizers (the
# servers are not what is tested; the libkv parts of security also run in
# suite unit and mp).
meson test -C build-test --suite remote --suite events --suite security --print-errorlogs \
    --num-processes 1

# What users install, built as they would (-O3, NDEBUG): g++ warns about
# some things only when it inlines that far.
echo "== release build of the installed programs (warnings as errors) =="
[[ -d build-release ]] || meson setup build-release --buildtype=release -Dwerror=true -Dtests=disabled \
    -Dbenchmarks=disabled
ninja -C build-release

if ((sanitizers)); then
    echo "== build with ASan + UBSan =="
    [[ -d build-asan ]] || meson setup build-asan --buildtype=debug -Dwerror=true -Dbenchmarks=disabled \
        -Dtests=enabled -Db_sanitize=address,undefined -Db_lundef=false
    ninja -C build-asan
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        run_suites build-asan

    # The threaded code under ThreadSanitizer: kvpoold (its epoll loop,
    # snapshot worker threads and housekeeping) through the daemon and
    # snapshot tests, the team that seals and opens encrypted snapshots
    # beside the engine's thread, and libkv used from many threads of one
    # process.
    # -Wno-tsan: gcc warns that TSan does not model standalone fences; the
    # ones in libkv order memory for other processes, which TSan cannot see
    # anyway. A race makes the process exit non-zero (a kvpoold that does
    # fails the test that stops it). Timeouts are doubled: TSan makes the
    # snapshot suite about 8x slower, which puts it at its 180 s limit.
    echo "== ThreadSanitizer: kvpoold, the snapshot engine, libkv in threads =="
    [[ -d build-tsan ]] || meson setup build-tsan --buildtype=debugoptimized -Dwerror=true -Dbenchmarks=disabled \
        -Dtests=enabled -Db_sanitize=thread -Dcpp_args=-Wno-tsan -Dc_args=-Wno-tsan
    ninja -C build-tsan daemon/kvpoold tools/kvctl tools/kvfill tests/system/test_daemon \
        tests/system/test_snapshot tests/unit/unit_tests tests/security/test_snapshot_crypto
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        meson test -C build-tsan --no-rebuild --print-errorlogs --timeout-multiplier 2 daemon snapshot
    TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/unit/unit_tests --gtest_filter='ConcurrencyTest.*'
    TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/security/test_snapshot_crypto \
        --gtest_filter='SnapshotCryptoTest.KeyRotation:SnapshotDamageTest.ForgedChecksumsAreCaughtByTags:SnapshotDamageTest.PartsOfAnotherSnapshotDoNotOpen'
fi
if command -v clang++-19 >/dev/null && dpkg -s libclang-rt-19-dev >/dev/null 2>&1; then
    echo "== libFuzzer targets, 10 s each =="
    fuzz/run_fuzz.sh --ci
else
    echo "== libFuzzer targets skipped: clang-19 / libclang-rt-19-dev not installed =="
fi
echo "all test suites passed"
