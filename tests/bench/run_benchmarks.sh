#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Build the benchmarks in release mode and run them.
#   tests/bench/run_benchmarks.sh [OUT.json] [extra bench_kv flags...]
# OUT.json defaults to build-bench/bench_kv.json. Builds into build-bench at
# the repository root (set up on first use), runs bench_kv with 3
# repetitions (interleaved, aggregates only), writes Google Benchmark's JSON
# to OUT.json and prints each figure next to its baseline, the ratio and the
# target. Environment: BUILD_DIR (default build-bench), REPS (default 3),
# MESON_SETUP_ARGS (extra arguments for the first `meson setup`).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
reps=${REPS:-3}
out=${1:-$build/bench_kv.json}
[ $# -gt 0 ] && shift

if [ ! -f "$build/build.ninja" ]; then
    # shellcheck disable=SC2086 # MESON_SETUP_ARGS is a list of words
    meson setup "$build" "$root" --buildtype=release -Dbenchmarks=enabled ${MESON_SETUP_ARGS:-}
elif [ "$(meson introspect --buildoptions "$build" 2>/dev/null |
          python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))')" != release ]; then
    meson configure "$build" --buildtype=release
fi
ninja -C "$build" tests/bench/bench_kv

mkdir -p "$(dirname "$out")"
"$build/tests/bench/bench_kv" \
    --benchmark_repetitions="$reps" \
    --benchmark_report_aggregates_only=true \
    --benchmark_enable_random_interleaving=true \
    --benchmark_out="$out" \
    --benchmark_out_format=json \
    "$@"

echo
python3 "$root/tests/bench/summarize.py" "$out"
