#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Crash torture, the long run (not part of CI, which runs 16 rounds through
# `meson test torture`): client processes and kvpoold SIGKILLed at random
# times during load, persist and restore, every invariant checked after each
# round (see tests/system/test_torture.cc).
#   tests/system/run_torture.sh [--rounds N] [--seed S] [--build DIR]
# Defaults: 1000 rounds, a seed from the clock (printed, so a failure can be
# repeated with --seed), build directory build-test (set up and built when
# missing). Needs root (kvpoold's pool and control paths). Exit status 0 when
# every round held every invariant.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=1000 seed= build="$root/build-test"
while (($#)); do
    case $1 in
        --rounds) rounds=$2; shift ;;
        --seed) seed=$2; shift ;;
        --build) build=$2; shift ;;
        -h|--help) sed -n '3,13p' "$0"; exit 0 ;;
        *) echo "run_torture.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "run_torture.sh: --rounds wants a positive number, got $rounds" >&2; exit 2; }
[[ -f $build/build.ninja ]] || meson setup "$build" "$root" --buildtype=debugoptimized -Dtests=enabled >/dev/null
ninja -C "$build" tests/system/test_torture daemon/kvpoold tools/kvctl >/dev/null
export KV_TORTURE_ROUNDS=$rounds KVPOOLD="$build/daemon/kvpoold" KVCTL="$build/tools/kvctl"
[[ -z $seed ]] || export KV_MP_SEED=$seed
exec "$build/tests/system/test_torture"
