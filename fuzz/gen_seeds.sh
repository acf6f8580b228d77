#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Regenerate the generated seeds under fuzz/corpus/<target>/ (entries the
# fuzzer added are left alone): fuzz_seedgen writes region patch lists, real
# snapshots persisted by the daemon's engine, control streams and op
# sequences; the config seeds are the shipped daemon/kvpoold.toml and the
# multi-line TOML documents embedded in tests/unit/test_config.cc.
# Usage: fuzz/gen_seeds.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[[ -x $build/fuzz/fuzz_seedgen ]] || { echo "no $build/fuzz/fuzz_seedgen: build first (ninja -C $build)" >&2; exit 1; }

out=fuzz/corpus
"$build/fuzz/fuzz_seedgen" "$out"

mkdir -p "$out/config"
cp daemon/kvpoold.toml "$out/config/seed-kvpoold.toml"
# Every R"(...)" literal of test_config.cc that spans lines is a TOML document.
python3 - "$out/config" <<'PY'
import re, sys
src = open("tests/unit/test_config.cc").read()
n = 0
for m in re.finditer(r'R"\((.*?)\)"', src, re.S):
    if "\n" not in m.group(1):
        continue
    open(f"{sys.argv[1]}/seed-test-config-{n}.toml", "w").write(m.group(1))
    n += 1
print(f"config: {n} documents from tests/unit/test_config.cc")
PY
cat > "$out/config/seed-minimal.toml" <<'TOML'
[[pool]]
name = "p"
size = "16M"
TOML
cat > "$out/config/seed-all-keys.toml" <<'TOML'
[daemon]
control_socket = "/run/kvpool/control"
shm_dir = "/dev/shm/kvpool"
hugepage_dir = "/dev/hugepages/kvpool"
state_dir = "/var/lib/kvpool"
admin_group = "kvpool"
metrics = "unix:/run/kvpool/metrics"
reap_interval_ms = 10
evict_interval_ms = 10000
log_level = "debug"

[[pool]]
name = "a.b-c_d"
size = 17179869184
hugepages = "require"
numa_node = 0
eviction = "clock"
group = "kvpool"
mode = "0640"
prefault = false
high_watermark = 1.0
low_watermark = 0.5
slab_size = "1G"
avg_block_size = "4K"
max_clients = 4095
snapshot_dir = "/var/tmp/snaps"
persist_on_stop = true
restore_on_start = true

[[pool]]
name = "second"
size = "1G"
numa_node = "none"
metrics = 1
TOML
for t in region snapshot control ops config; do
    printf '%-9s %3d files %7d bytes\n' "$t" "$(ls "$out/$t" | wc -l)" "$(cat "$out/$t"/* | wc -c)"
done
