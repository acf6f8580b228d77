#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The demo: build kvpool, start kvpoold on the shipped default config
# (daemon/kvpoold.toml: one 256 MiB pool, hugepages when the kernel has
# them), and run four "inference engine" processes that share system prompts
# and grow multi-turn chats through it (tools/kvdemo.cc). One engine is
# SIGKILLed mid-run; the daemon reaps it. Prints the prefix hit rate and the
# prefill tokens saved, shows the pool through kvctl, then stops the daemon
# cleanly. Nothing outside a private directory and /dev/shm/kvpool-demo-PID
# is touched; both are removed on exit.
#   tools/demo.sh [kvdemo options, e.g. --clients 8 --requests 2000]
set -euo pipefail
cd "$(dirname "$0")/.."

deps=(meson ninja-build pkg-config g++ liburing-dev libnuma-dev libxxhash-dev libssl-dev libjemalloc-dev libsystemd-dev
      libtomlplusplus-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ -d build-demo ]] || meson setup build-demo --buildtype=release -Dtests=disabled -Dbenchmarks=disabled >/dev/null
ninja -C build-demo daemon/kvpoold tools/kvctl tools/kvdemo >/dev/null

work=$(mktemp -d /tmp/kvpool-demo.XXXXXX)
shm=/dev/shm/kvpool-demo-$$
daemon_pid=
cleanup() {
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work" "$shm"
}
trap cleanup EXIT

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

echo "== starting kvpoold (config: daemon/kvpoold.toml's pools) =="
build-demo/daemon/kvpoold --config "$work/kvpoold.toml" 2>"$work/kvpoold.log" &
daemon_pid=$!
for _ in $(seq 200); do
    kvctl version >/dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/kvpoold.log"; echo "demo: kvpoold failed to start"; exit 1; }
    sleep 0.1
done
kvctl list
pool=$(kvctl --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["path"])')

echo
echo "== 4 engines share system prompts and multi-turn chats through $pool =="
build-demo/tools/kvdemo --pool "$pool" --clients 4 --requests 600 --kill-one "$@"

echo
echo "== the pool through kvctl =="
kvctl status default
kvctl health default
kvctl clients default

echo
echo "== stopping kvpoold =="
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
sed 's/^/  kvpoold| /' "$work/kvpoold.log"
if ((rc != 0)); then
    echo "demo: kvpoold exited with $rc"
    exit 1
fi
echo "demo: kvpoold stopped cleanly"
