#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The demo: build kvpool, create a 512 MiB pool in /dev/shm, and run four
# "inference engine" processes that share system prompts and grow
# multi-turn chats through it (tools/kvdemo.cc); one of them is SIGKILLed
# mid-run to show that its pins and reservations are reclaimed. Prints the
# prefix hit rate and the prefill tokens saved, then removes the pool.
set -euo pipefail
cd "$(dirname "$0")/.."

deps=(meson ninja-build pkg-config g++ liburing-dev libnuma-dev libxxhash-dev libgtest-dev libbenchmark-dev)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ -d build-demo ]] || meson setup build-demo --buildtype=release -Dtests=disabled -Dbenchmarks=disabled >/dev/null
ninja -C build-demo tools/kvdemo >/dev/null

pool=/dev/shm/kvpool-demo-$$
trap 'rm -f "$pool"' EXIT
build-demo/tools/kvdemo --pool "$pool" --create 512M --clients 4 --requests 600 --kill-one "$@"
