#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Soak: kvpoold on a private config and kvdemo's inference-engine clients
# (multi-turn chats on shared system prompts: match_prefix with pins, checks
# of every cached block, reserve + commit of the rest) for a long run, with
# `kvctl status` and `kvctl persist` issued on the way as an operator would.
# Every interval it records the clients' throughput and hit rate, kvpoold's
# memory and the clients' memory; at the end it prints them over time and
# judges the run:
#   - no error: no client error or failed block check, kvdemo and kvpoold
#     exit 0, every kvctl call succeeds, and the pool is consistent after;
#   - kvpoold's memory stays flat: its anonymous resident memory (RssAnon
#     in /proc/PID/status: heap, stacks; where a leak would show) at the end
#     is within 1% of what it was after the warm-up (the first tenth of the
#     run, which includes the first persist, so the persist worker's thread
#     and buffers are part of the baseline). Shown, not judged: RssFile
#     (mapped binaries; the machine's proactive reclaim, DAMON, trims it)
#     and RssShmem (pool pages the daemon maps: they grow as it touches the
#     region, e.g. when a persist registers it with io_uring).
# Not part of CI (it runs for minutes).
#
# Usage: tests/soak/soak.sh [--duration SECONDS] [--interval SECONDS]
#            [--clients N] [--pool-size SIZE] [--persist-every SECONDS]
#            [--build DIR] [--out FILE.tsv]
# Defaults: 600 s, 10 s, 4 clients, 512M, 120 s, build-test (set up and built
# when missing), build-test/soak.tsv. Exit status 0 when the run passes.
set -euo pipefail
export LC_ALL=C
root=$(cd "$(dirname "$0")/../.." && pwd)

duration=600 interval=10 clients=4 pool_size=512M persist_every=120 build="$root/build-test" out=
while (($#)); do
    case $1 in
        --duration) duration=$2; shift ;;
        --interval) interval=$2; shift ;;
        --clients) clients=$2; shift ;;
        --pool-size) pool_size=$2; shift ;;
        --persist-every) persist_every=$2; shift ;;
        --build) build=$2; shift ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '3,24p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in duration interval clients persist_every; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: --${v//_/-} wants a positive whole number, got ${!v}" >&2; exit 2; }
done
((interval * 3 <= duration)) || { echo "soak.sh: --duration must be at least 3 intervals" >&2; exit 2; }
[[ -n $out ]] || out="$build/soak.tsv"

[[ -f $build/build.ninja ]] || meson setup "$build" "$root" --buildtype=debugoptimized -Dtests=enabled >/dev/null
ninja -C "$build" daemon/kvpoold tools/kvctl tools/kvdemo >/dev/null
kvpoold="$build/daemon/kvpoold" kvctl="$build/tools/kvctl" kvdemo="$build/tools/kvdemo"

tmp=$(mktemp -d /tmp/kvpool-soak.XXXXXX)
shm="/dev/shm/kvpool-soak-$$"
daemon_pid= demo_pid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -z $demo_pid ]] || kill -KILL "$demo_pid" 2>/dev/null || true
    [[ -z $daemon_pid ]] || kill -KILL "$daemon_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp" "$shm"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
die() { echo "soak.sh: $*" >&2; exit 1; }

cat >"$tmp/kvpoold.toml" <<EOF
[daemon]
control_socket = "$tmp/control"
shm_dir = "$shm"
hugepage_dir = "$tmp/huge"
state_dir = "$tmp/state"
admin_group = "root"
log_level = "notice"

[[pool]]
name = "soak"
size = "$pool_size"
hugepages = "never"
prefault = false
avg_block_size = "64K"
persist_on_stop = false
EOF
ctl() { "$kvctl" --socket "$tmp/control" "$@"; }

"$kvpoold" --config "$tmp/kvpoold.toml" 2>"$tmp/kvpoold.log" &
daemon_pid=$!
for _ in $(seq 100); do ctl status soak >/dev/null 2>&1 && break; sleep 0.1; done
ctl status soak >/dev/null || { cat "$tmp/kvpoold.log"; die "kvpoold did not come up"; }

echo "soak: kvpoold pid $daemon_pid, $clients clients, pool $pool_size, ${duration} s, sample every ${interval} s"
"$kvdemo" --pool "$shm/soak" --clients "$clients" --duration "$duration" --report "$interval" \
    >"$tmp/demo.out" 2>"$tmp/demo.err" &
demo_pid=$!

mem_kb() { # pid field -> kB (0 when gone)
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}
printf 't_s\treq_per_s\thit_rate\tverify_failures\terrors\tdaemon_anon_kb\tdaemon_file_kb\tdaemon_shmem_kb\tclients_anon_kb\tclients_shmem_kb\n' >"$out"
ctl_failures=0 persists=0 seen=0 next_persist=0 persist_pid= # the first persist: at the first sample
persist_done() { # wait for the last background persist and count it
    [[ -n $persist_pid ]] || return 0
    if wait "$persist_pid"; then persists=$((persists + 1)); else ctl_failures=$((ctl_failures + 1)); fi
    persist_pid=
}
while kill -0 "$demo_pid" 2>/dev/null; do
    sleep 1
    lines=$(grep -c '^{' "$tmp/demo.out" || true)
    ((lines > seen)) || continue
    seen=$lines
    line=$(grep '^{' "$tmp/demo.out" | tail -1)
    read -r t rps hit vf errs pids < <(python3 -c '
import json, sys
j = json.loads(sys.argv[1])
print(j["t"], j["req_per_s"], j["hit_rate"], j["verify_failures"], j["errors"], ",".join(map(str, j["client_pids"])))' "$line")
    d_anon=$(mem_kb "$daemon_pid" RssAnon) d_file=$(mem_kb "$daemon_pid" RssFile) d_shm=$(mem_kb "$daemon_pid" RssShmem)
    c_priv=0 c_shm=0
    for p in ${pids//,/ }; do
        c_priv=$((c_priv + $(mem_kb "$p" RssAnon)))
        c_shm=$((c_shm + $(mem_kb "$p" RssShmem)))
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rps" "$hit" "$vf" "$errs" \
        "$d_anon" "$d_file" "$d_shm" "$c_priv" "$c_shm" >>"$out"
    printf '  t=%6ss  %7s req/s  hit %s  kvpoold anon %s kB, file %s kB, pool %s kB  clients anon %s kB\n' \
        "$t" "$rps" "$hit" "$d_anon" "$d_file" "$d_shm" "$c_priv"
    ctl --json status soak >"$tmp/status.json" 2>>"$tmp/ctl.err" || ctl_failures=$((ctl_failures + 1))
    if (( ${t%.*} >= next_persist )); then # in the background: sampling goes on meanwhile
        next_persist=$((next_persist + persist_every))
        persist_done
        ctl --json persist soak >"$tmp/persist.json" 2>>"$tmp/ctl.err" &
        persist_pid=$!
    fi
done
persist_done
demo_rc=0
wait "$demo_pid" || demo_rc=$?
demo_pid=
tail -7 "$tmp/demo.out" | grep -v '^{' | sed 's/^/  kvdemo: /'
kill -TERM "$daemon_pid"
daemon_rc=0
wait "$daemon_pid" || daemon_rc=$?
daemon_pid=

python3 - "$out" "$demo_rc" "$daemon_rc" "$ctl_failures" "$persists" <<'EOF'
import csv, statistics, sys
path, demo_rc, daemon_rc, ctl_failures, persists = sys.argv[1], *map(int, sys.argv[2:])
rows = list(csv.DictReader(open(path), delimiter="\t"))
if len(rows) < 3:
    print("soak: FAIL: only %d samples" % len(rows)); sys.exit(1)
warm = max(1, len(rows) // 10)              # samples of the warm-up (first tenth)
base = statistics.median(int(r["daemon_anon_kb"]) for r in rows[warm:warm + 3])
end = statistics.median(int(r["daemon_anon_kb"]) for r in rows[-3:])
growth = (end - base) / base * 100 if base else 0.0
rps = [float(r["req_per_s"]) for r in rows]
last = rows[-1]
errors = int(last["errors"]) + int(last["verify_failures"])
print("soak: %d samples over %s s; throughput %.0f req/s median (min %.0f, max %.0f); hit rate %.1f%% at the end"
      % (len(rows), last["t_s"], statistics.median(rps), min(rps), max(rps), 100 * float(last["hit_rate"])))
print("soak: kvpoold anonymous memory %d kB after warm-up -> %d kB at the end: %+.2f%% (limit 1%%); "
      "file-backed %s -> %s kB, pool pages it maps %s -> %s kB; clients' anonymous memory %s -> %s kB"
      % (base, end, growth, rows[warm]["daemon_file_kb"], last["daemon_file_kb"], rows[warm]["daemon_shmem_kb"],
         last["daemon_shmem_kb"], rows[warm]["clients_anon_kb"], last["clients_anon_kb"]))
print("soak: client errors + failed block checks %d, kvdemo exit %d, kvpoold exit %d, failed kvctl calls %d, "
      "persists under load %d" % (errors, demo_rc, daemon_rc, ctl_failures, persists))
ok = errors == 0 and demo_rc == 0 and daemon_rc == 0 and ctl_failures == 0 and growth < 1.0
print("soak: %s (samples in %s)" % ("PASS" if ok else "FAIL", path))
sys.exit(0 if ok else 1)
EOF
