#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The engine-facing benchmarks, each against its baseline in the same run:
#   1. bench_py.py     get + release of a present block from Python (vs a
#                      dict lookup + memoryview), match_prefix of a
#                      1,000-block chain with its hashing;
#   2. bench_paged.py  save (gather into a reservation) and load (scatter
#                      from a pinned view) of engine blocks vs memcpy, for
#                      2 MiB cross-layer blocks and 32 KiB per-layer
#                      fragments;
#   3. refengine bench-ttft on the "bench" model: TTFT of a 2,000-token
#      shared prefix + 32-token suffix served by a full recompute, an
#      in-engine prefix hit, and a kvpool hit on blocks another process
#      stored; once with the pool on hugepages (what kvpoold uses when the
#      kernel has them: hugepages = "prefer") and once on 4 KiB pages in
#      /dev/shm.
# For the hugepage case the script reserves 600 hugepages and mounts a
# private hugetlbfs; both are undone on exit, also on failure. Skipped
# (with a line saying so) when the reservation does not succeed.
#
#   tests/bench/engine_bench.sh [BUILD_DIR]     (root; BUILD_DIR: build-bench)
# Environment: TRIALS (bench-ttft trials, default 3), THREADS (torch
# threads, default 1).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-bench}
trials=${TRIALS:-3}
threads=${THREADS:-1}
py=/usr/bin/python3

if [[ ! -f "$build/build.ninja" ]]; then
    meson setup "$build" "$root" --buildtype=release -Dpython=enabled -Dtests=disabled \
        -Dbenchmarks=disabled >/dev/null
fi
ninja -C "$build" >/dev/null
export PYTHONPATH="$build/python:$root/tools"

work=$(mktemp -d /tmp/kvpool-engine-bench.XXXXXX)
hp_saved=$(cat /proc/sys/vm/nr_hugepages)
hp_mount=
shm_pool=/dev/shm/kvpool-engine-bench-$$
cleanup() {
    rm -f "$shm_pool"
    if [[ -n "$hp_mount" ]]; then
        rm -f "$hp_mount"/* 2>/dev/null || true
        umount "$hp_mount" 2>/dev/null || true
    fi
    echo "$hp_saved" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== Python API: get + release, match_prefix =="
"$py" "$root/tests/bench/bench_py.py"
echo
echo "== paged save / load vs memcpy =="
"$py" "$root/tests/bench/bench_paged.py"
echo

ttft() { # label pool-path hugepages(never|require)
    echo "== TTFT, bench model, pool $1 =="
    "$py" -c "import kvpool, sys; kvpool.create_pool(sys.argv[1], 1 << 30, hugepages=sys.argv[2], replace=True)" \
        "$2" "$3"
    "$py" -m refengine bench-ttft --model bench --connector kvpool --pool "$2" --trials "$trials" \
        --threads "$threads"
    rm -f "$2"
    echo
}

mkdir -p "$work/hugetlbfs"
echo 600 >/proc/sys/vm/nr_hugepages 2>/dev/null || true
if (($(cat /proc/sys/vm/nr_hugepages) >= 520)) && mount -t hugetlbfs none "$work/hugetlbfs"; then
    hp_mount=$work/hugetlbfs
    ttft "on 2 MiB hugepages" "$hp_mount/pool-bench" require
else
    echo "== TTFT on hugepages: skipped (could not reserve 520 hugepages) =="
fi
ttft "on 4 KiB pages (/dev/shm)" "$shm_pool" never
