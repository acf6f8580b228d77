#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The demo: build kvpool with its Python package, start kvpoold on the
# shipped default config (daemon/kvpoold.toml: one 256 MiB pool, hugepages
# when the kernel has them, 4 KiB pages otherwise), and run reference
# inference engines (tools/refengine: a Llama-style model in torch, paged KV
# in vLLM's layout, kvpool.vllm.KvpoolConnector driven through vLLM's V1
# connector calls) that answer prompts sharing prefixes: system prompts,
# multi-turn chats, RAG documents. Three rounds of engine processes:
#   1. without kvpool: each engine has only its own prefix cache;
#   2. with kvpool: the same requests, the engines load the blocks other
#      processes stored;
#   3. after a kvpoold restart (SIGTERM persists the pool to its snapshot;
#      the new daemon re-attaches the region that survived, or restores the
#      snapshot if it did not): fresh engines, new questions over the same
#      prefixes, and the chats of round 2 continued.
# Prints TTFT and the prefill tokens computed for each round, then stops the
# daemon cleanly. Exits non-zero if the daemon failed or the engines did not
# hit after the restart. Nothing outside a private directory and
# /dev/shm/kvpool-demo-PID is touched; both are removed on exit.
#   tools/demo.sh [--engines N] [--requests N] [--scale X]   (defaults 3, 12, 1)
set -euo pipefail
cd "$(dirname "$0")/.."

engines=3 requests=12 scale=1
while (($#)); do
    case $1 in
    --engines) engines=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    *) echo "usage: tools/demo.sh [--engines N] [--requests N] [--scale X]" >&2; exit 2 ;;
    esac
done

deps=(meson ninja-build pkg-config g++ liburing-dev libnuma-dev libxxhash-dev libssl-dev libjemalloc-dev libsystemd-dev
      libtomlplusplus-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev
      pybind11-dev python3-pybind11 python3-dev python3-numpy python3-torch python3-cbor2 python3-xxhash
      libopenblas0-pthread)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ -d build-demo ]]; then
    meson configure build-demo -Dpython=enabled >/dev/null
else
    meson setup build-demo --buildtype=release -Dtests=disabled -Dbenchmarks=disabled -Dpython=enabled >/dev/null
fi
# The package: the extension and the Python modules copied beside it.
pyext=$(ninja -C build-demo -t targets all | sed -n 's|^\(python/kvpool/[^:/]*\): .*|\1|p')
[[ -n $pyext ]] || { echo "demo: build-demo has no Python package (python3-dev, pybind11-dev?)"; exit 1; }
# shellcheck disable=SC2086 # one target per word
ninja -C build-demo daemon/kvpoold tools/kvctl $pyext >/dev/null

py=/usr/bin/python3 # Debian's interpreter, where python3-torch lives
export PYTHONPATH=$PWD/build-demo/python:$PWD/tools
work=$(mktemp -d /tmp/kvpool-demo.XXXXXX)
shm=/dev/shm/kvpool-demo-$$
daemon_pid=
cleanup() {
    local j
    for j in $(jobs -p); do [[ $j == "$daemon_pid" ]] || kill -TERM "$j" 2>/dev/null || true; done
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    rm -rf "$work" "$shm"
}
trap cleanup EXIT
trap "exit 130" INT TERM
t_start=$EPOCHREALTIME

# The shipped config's pools, with the daemon's paths made private to this run.
{
    cat <<EOF
[daemon]
control_socket = "$work/control"
shm_dir = "$shm"
hugepage_dir = "/dev/hugepages/kvpool-demo-$$"
state_dir = "$work/state"
admin_group = "root"
metrics = "unix:$work/metrics"
log_level = "info"

EOF
    sed -n '/^\[\[pool\]\]/,$p' daemon/kvpoold.toml
} >"$work/kvpoold.toml"

kvctl() { build-demo/tools/kvctl --socket "$work/control" "$@"; }

start_daemon() { # log file
    build-demo/daemon/kvpoold --config "$work/kvpoold.toml" 2>"$1" &
    daemon_pid=$!
    for _ in $(seq 300); do
        kvctl version >/dev/null 2>&1 && return 0
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    sed 's/^/  kvpoold| /' "$1"
    echo "demo: kvpoold failed to start"
    exit 1
}

check_daemon() { # log file
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        sed 's/^/  kvpoold| /' "$1"
        echo "demo: kvpoold died"
        exit 1
    fi
}

stop_daemon() { # log file
    check_daemon "$1"
    kill -TERM "$daemon_pid"
    local rc=0
    wait "$daemon_pid" || rc=$?
    daemon_pid=
    if ((rc != 0)); then
        echo "demo: kvpoold exited with $rc"
        exit 1
    fi
}

# One round: $engines engine processes at once, each serving $requests
# prompts of the "mix" workload (system prompts, multi-turn chats, RAG
# documents over the same shared content; --seed picks each engine's own
# requests). Each prints one JSON line; the summary is printed by report.
run_round() { # name, first seed, chats|- (continue and save the chats), engine options...
    local name=$1 seed=$2 chats=$3 i rc=0
    shift 3
    local pids=() t0=$EPOCHREALTIME
    for ((i = 0; i < engines; i++)); do
        local conv=()
        [[ $chats == - ]] || conv=(--conversations "$work/chats.$i.json")
        $py -m refengine serve --model demo --workload mix --scale "$scale" --items 4 --requests "$requests" \
            --max-tokens 4 --warmup 1 --seed $((seed + i)) --json "$@" \
            "${conv[@]}" \
            >"$work/$name.$i.json" 2>"$work/$name.$i.err" &
        pids+=($!)
    done
    for ((i = 0; i < engines; i++)); do
        if ! wait "${pids[$i]}"; then
            echo "demo: engine $i of round $name failed:"
            tail -n 20 "$work/$name.$i.err"
            rc=1
        fi
    done
    ((rc == 0)) || exit 1
    report "$name" "$t0"
}

report() { # round name, start time: a few lines per round, and $work/NAME.sum for the table
    $py - "$work" "$1" "$2" "$EPOCHREALTIME" <<'EOF'
import glob, json, statistics, sys
work, name, t0, t1 = sys.argv[1:]
runs = [json.loads(open(f).read()) for f in sorted(glob.glob(f"{work}/{name}.*.json"))]
ttft = [x for r in runs for x in r["ttft_ms"]]
tok = sum(r["prompt_tokens"] for r in runs)
loc = sum(r["local_hit_tokens"] for r in runs)
ext = sum(r["external_hit_tokens"] for r in runs)
comp = sum(r["computed_tokens"] for r in runs)
s = {"requests": len(ttft), "tokens": tok, "local": loc, "ext": ext, "computed": comp,
     "mean": statistics.mean(ttft), "p50": statistics.median(ttft),
     "loaded_blocks": sum(r["engine_stats"].get("connector_loaded_blocks", 0) for r in runs),
     "saved_blocks": sum(r["engine_stats"].get("connector_saved_blocks", 0) for r in runs)}
json.dump(s, open(f"{work}/{name}.sum", "w"))
pct = lambda x: f"{100 * x / max(tok, 1):.0f}%"
print(f"{len(runs)} engines, {s['requests']} requests, {tok} prompt tokens: computed {comp} ({pct(comp)}), "
      f"in-engine prefix cache {loc} ({pct(loc)}), kvpool {ext} ({pct(ext)})")
if s["loaded_blocks"] or s["saved_blocks"]:
    print(f"kvpool blocks loaded {s['loaded_blocks']}, stored {s['saved_blocks']}")
print(f"TTFT mean {s['mean']:.0f} ms, p50 {s['p50']:.0f} ms (round: {float(t1) - float(t0):.1f} s)")
EOF
}

echo "== starting kvpoold (config: daemon/kvpoold.toml's pools) =="
start_daemon "$work/kvpoold.log"
kvctl list
pool=$(kvctl --json list | $py -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["path"])')

echo
echo "== 1. without kvpool: $engines engines, $requests requests each, only their own prefix caches =="
run_round off 1 -
check_daemon "$work/kvpoold.log"

echo
echo "== 2. with kvpool: the same requests, --connector kvpool --pool $pool =="
run_round on 1 chats --connector kvpool --pool "$pool"
check_daemon "$work/kvpoold.log"
kvctl status default | grep -E '^(state|used|entries|puts|pins|clients|policy|page size):'

echo
echo "== kvpoold restart: SIGTERM (persist), start again =="
stop_daemon "$work/kvpoold.log"
grep -E 'snapshot: persist pool' "$work/kvpoold.log" | sed 's/^/  kvpoold| /'
start_daemon "$work/kvpoold2.log"
grep -E 'pool default (reattached|created)|snapshot: restore' "$work/kvpoold2.log" | sed 's/^/  kvpoold| /'
if grep -q 'pool default reattached' "$work/kvpoold2.log"; then
    echo "kvpoold re-attached the region that survived it (warm restart; no restore needed)"
elif grep -q 'snapshot: restore' "$work/kvpoold2.log"; then
    echo "kvpoold created a new region and restored the snapshot"
fi

echo
kvctl list

echo
echo "== 3. after the restart: $engines fresh engines, new questions over the same prefixes, the same chats =="
run_round after 101 chats --connector kvpool --pool "$pool"
check_daemon "$work/kvpoold2.log"

echo
echo "== summary =="
$py - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
s = {k: json.load(open(f"{w}/{k}.sum")) for k in ("off", "on", "after")}
o = s["off"]
print("round                  TTFT mean (speedup)    p50 (speedup)  computed  from kvpool")
for k, label in (("off", "without kvpool"), ("on", "with kvpool"), ("after", "after kvpoold restart")):
    r = s[k]
    print(f"{label:<22} {r['mean']:>6.0f} ms ({o['mean'] / r['mean']:>4.1f}x) {r['p50']:>6.0f} ms ({o['p50'] / r['p50']:>4.1f}x)"
          f" {100 * r['computed'] / r['tokens']:>8.0f}% {100 * r['ext'] / r['tokens']:>11.0f}%")
EOF

echo
echo "== stopping kvpoold =="
stop_daemon "$work/kvpoold2.log"
grep -E 'snapshot: persist pool|stopped' "$work/kvpoold2.log" | sed 's/^/  kvpoold| /'
awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "demo: ran in %.0f s (after the build)\n", b - a }'
after_ext=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["ext"])' "$work/after.sum")
if ((after_ext == 0)); then
    echo "demo: FAILED: the engines did not hit kvpool after the restart"
    exit 1
fi
echo "demo: OK, kvpoold stopped cleanly"
