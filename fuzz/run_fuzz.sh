#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Build the libFuzzer targets (clang, ASan + UBSan) and run them.
#
#   fuzz/run_fuzz.sh [--time SECONDS] [--runs N] [--build DIR] [--no-merge] [TARGET...]
#       Run each named target (default: all) for SECONDS (default 60), or
#       until it has executed N inputs when --runs is given (whichever
#       comes first), with
#       its dictionary (fuzz/dict/TARGET.dict) and corpus, then merge the
#       inputs that found new coverage back into fuzz/corpus/TARGET
#       (-merge=1 keeps it minimal). Crashing inputs are written to
#       fuzz/artifacts/. Prints target, execs, exec/s, new corpus entries,
#       findings.
#   fuzz/run_fuzz.sh --ci
#       What CI runs (tests/run_all.sh): every target for 10 s, nothing
#       merged; fails on any finding.
#
# Needs clang >= 19 with libFuzzer: older clang cannot compile the code
# base's std::expected with libstdc++ 12. Installs clang-19 and
# libclang-rt-19-dev with apt-get when missing (root). Override with
# FUZZ_CC / FUZZ_CXX. Runs under nice -n 15, one target at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(region snapshot snapshot_crypto control config ops)
declare -A max_len=([region]=8192 [snapshot]=32768 [snapshot_crypto]=32768 [control]=8192 [config]=8192 [ops]=2048)
secs=60 runs=-1 build=build-fuzz merge=1 ci=0 targets=()
all_targets+=(remote)
max_len[remote]=1024
while (($#)); do
    case $1 in
    --time) secs=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-merge) merge=0; shift ;;
    --ci) ci=1 secs=10 merge=0; shift ;;
    -h|--help) sed -n '3,22p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ -n ${max_len[$t]:-} ]] || { echo "unknown target $t (known: ${all_targets[*]})" >&2; exit 2; }
done

cc=${FUZZ_CC:-clang-19} cxx=${FUZZ_CXX:-clang++-19}
if [[ -z ${FUZZ_CXX:-} ]] && { ! command -v "$cxx" >/dev/null || ! dpkg -s libclang-rt-19-dev >/dev/null 2>&1; }; then
    echo "installing clang-19 libclang-rt-19-dev"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang-19 libclang-rt-19-dev >/dev/null
fi

if [[ ! -d $build ]]; then
    CC=$cc CXX=$cxx nice -n 15 meson setup "$build" --buildtype=debugoptimized -Dwerror=true \
        -Dfuzz=enabled -Dtests=enabled -Dbenchmarks=disabled -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
if ! nice -n 15 ninja -C "$build" -j2 "${targets[@]/#/fuzz/fuzz_}" >"$build/fuzz-build.log" 2>&1; then
    tail -40 "$build/fuzz-build.log" >&2
    echo "building the fuzz targets failed (log: $build/fuzz-build.log)" >&2
    exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
for s in /usr/lib/llvm-19/bin/llvm-symbolizer /usr/bin/llvm-symbolizer; do
    [[ -x $s ]] && { export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$s}; break; }
done
export KVPOOL_FUZZ_TMPDIR=${KVPOOL_FUZZ_TMPDIR:-/var/tmp}
mkdir -p fuzz/artifacts
logdir=$(mktemp -d /var/tmp/kvpool-fuzz-logs.XXXXXX)
rows=() failed=0
for t in "${targets[@]}"; do
    bin=$build/fuzz/fuzz_$t corpus=fuzz/corpus/$t new=$logdir/new-$t
    mkdir -p "$new" "$corpus"
    before=$(ls "$corpus" | wc -l)
    set +e
    nice -n 15 "$bin" -max_total_time="$secs" -runs="$runs" -dict="fuzz/dict/$t.dict" -max_len="${max_len[$t]}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t-" \
        "$new" "$corpus" >"$logdir/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logdir/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logdir/$t.log" | tail -1)
    findings=0
    if ((rc != 0)); then
        findings=1 failed=1
        echo "=== fuzz_$t: finding (exit $rc); log $logdir/$t.log, inputs in fuzz/artifacts/" >&2
        grep -E "ERROR|fuzz_$t:|runtime error|SUMMARY|Test unit written" "$logdir/$t.log" | head -20 >&2 || true
    fi
    added=0
    if ((merge && rc == 0)); then
        nice -n 15 "$bin" -merge=1 -max_len="${max_len[$t]}" -timeout=10 "$corpus" "$new" >>"$logdir/$t.log" 2>&1
        added=$(($(ls "$corpus" | wc -l) - before))
    else
        added="$(ls "$new" | wc -l) (not merged)"
    fi
    rows+=("$(printf '%-9s %12s %8s %22s %9s' "$t" "${execs:-?}" "${rate:-?}" "$added" "$findings")")
done
printf '%-9s %12s %8s %22s %9s\n' target execs exec/s "new corpus entries" findings
printf '%s\n' "${rows[@]}"
if ((ci && !failed)); then
    rm -rf "$logdir" # CI keeps logs only when something was found
else
    echo "logs: $logdir"
fi
exit $failed
