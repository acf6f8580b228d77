#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Persistence benchmark: kvpoold's persist, restore, restore at start and
# warm restart, each next to the baseline it is judged against, measured in
# the same run on the same filesystem (defaults to the root disk):
#   persist  >= 0.9x fio's best sequential O_DIRECT io_uring write (bs 1M/4M
#               x iodepth 1/8/32; the best configuration, median of --reps),
#               both as fio runs it (no flush: the data may still sit in
#               the disk's write cache) and made durable as a snapshot is
#               (a write over its file with end_fsync=1, the grid's best
#               configuration run right after each persist over the spare),
#               and >= 3x Redis's SAVE of the same bytes;
#   restore  >= 0.9x fio's best sequential read (O_DIRECT or buffered after
#               dropping caches, same grid), and >= 2x Redis's restart-load;
#   warm restart (re-attach) of an 8 GiB pool: start to READY=1 < 100 ms,
#               prefault off;
#   start to READY=1 with a 4 GiB snapshot to restore (reported).
# kvpool figures use the wall clock around kvctl (the daemon's own seconds
# are reported beside them); ratios against fio use the snapshot file's
# bytes, ratios against Redis the data bytes, which both hold.
#
# Usage: tests/bench/snapshot_bench.sh [options] [OUT.json]
#   --data SIZE          bytes of blocks to persist and restore, and Redis's
#                        dataset and fio's file size (default 4G)
#   --block SIZE         block size, and Redis's value size (default 1M)
#   --size SIZE          pool size (default: the smallest whole GiB holding
#                        --data at <= 85%, below the eviction watermarks: 5G)
#   --reattach-size SIZE warm-restart pool (default 8G, filled to --fill-pct;
#                        shrunk to what /dev/shm and free memory allow, with
#                        a note)
#   --fill-pct N         fill of the warm-restart pool (default 85)
#   --dir DIR            filesystem under test: the snapshot, fio's file and
#                        Redis's dump go to DIR/kvpool-bench-PID (default
#                        /var/tmp)
#   --hugepages MODE     never (default), prefer or require
#   --reps N             repetitions of each measurement (default 3)
#   --quick              one repetition (--reps 1)
#   --skip LIST          comma list of parts to leave out: fio, redis, kvpool
#                        (persist, restore, restore at start), reattach
#   --redis-compression yes|no
#                        Redis's rdbcompression (default no: the values are
#                        random, LZF gives up on them and only burns CPU, so
#                        no is the faster, stricter baseline; yes is Redis's
#                        default)
#   --strict             exit 1 when a target is missed
#   --build DIR          build directory (default build-snapbench, release)
#   --no-build           use the binaries in --build DIR as they are
#   --out FILE, OUT.json every raw number as JSON (default
#                        BUILD/snapshot_bench.json); the daemon's and Redis's
#                        logs go to FILE's name without .json, plus -logs/
# Needs root (drop_caches, /dev/shm, apt-get for missing packages). Every
# process, pool file, snapshot, dump and fio file is removed on exit, on
# failure too. The numbers are only as quiet as the machine: the load
# average at the start and the end is printed; on a small shared machine,
# run it when nothing else does.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/../.." && pwd)
helper="$root/tests/bench/snapshot_summary.py"

data=4G
size=
reattach_size=8G
block=1M
fill_pct=85
base_dir=/var/tmp
hugepages=never
reps=3
skip=,
strict=0
no_build=0
redis_compression=no
build="$root/build-snapbench"
out=

die() { echo "snapshot_bench: $*" >&2; exit 1; }
while (($#)); do
    case "$1" in
        --data) data=$2; shift ;;
        --size) size=$2; shift ;;
        --reattach-size) reattach_size=$2; shift ;;
        --block) block=$2; shift ;;
        --fill-pct) fill_pct=$2; shift ;;
        --dir) base_dir=$2; shift ;;
        --hugepages) hugepages=$2; shift ;;
        --reps) reps=$2; shift ;;
        --quick) reps=1 ;;
        --skip) skip=",$2,"; shift ;;
        --strict) strict=1 ;;
        --redis-compression) redis_compression=$2; shift ;;
        --build) build=$2; shift ;;
        --no-build) no_build=1 ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '3,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) out=$1 ;;
    esac
    shift
done
[[ $build = /* ]] || build="$root/$build"
out=${out:-$build/snapshot_bench.json}
((EUID == 0)) || die "run as root (drop_caches, /dev/shm, apt-get)"
[[ -d $base_dir ]] || die "--dir $base_dir: no such directory"
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive number"
[[ $redis_compression == yes || $redis_compression == no ]] || die "--redis-compression: yes or no"
skipped() { [[ $skip == *",$1,"* ]]; }

bytes_of() { # 4G -> 4294967296 (binary suffixes, as kvpool reads them)
    local v=${1^^}
    case "$v" in
        *K) echo $((${v%K} << 10)) ;; *M) echo $((${v%M} << 20)) ;;
        *G) echo $((${v%G} << 30)) ;; *T) echo $((${v%T} << 40)) ;;
        *) echo $((v)) ;;
    esac
}
block_b=$(bytes_of "$block")
blocks=$(($(bytes_of "$data") / block_b))
fill_b=$((blocks * block_b))
((blocks > 0)) || die "--data $data is less than one --block $block"
# The pool: by default the smallest whole GiB that holds the data at 85% or
# less, below the eviction watermarks (high 0.95) with room for metadata.
if [[ -z $size ]]; then size="$(((fill_b * 100 / 85 + (1 << 30) - 1) >> 30))G"; fi
size_b=$(bytes_of "$size")
reattach_b=$(bytes_of "$reattach_size")

# ---- packages and build ------------------------------------------------------
deps=(meson ninja-build pkg-config g++ liburing-dev libnuma-dev libjemalloc-dev libxxhash-dev
      libsystemd-dev libtomlplusplus-dev nlohmann-json3-dev fio redis-server redis-tools python3)
missing=()
for d in "${deps[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((!no_build)) && { ! skipped kvpool || ! skipped reattach; }; then
    [[ -f $build/build.ninja ]] || meson setup "$build" "$root" --buildtype=release >/dev/null
    echo "== build ($build) =="
    ninja -C "$build" daemon/kvpoold tools/kvctl tools/kvfill >"$build/snapshot_bench.build.log" 2>&1 ||
        { tail -30 "$build/snapshot_bench.build.log"; die "build failed (log: $build/snapshot_bench.build.log)"; }
fi
buildtype=$(meson introspect --buildoptions "$build" 2>/dev/null |
    python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))' \
    2>/dev/null || echo unknown)
kvpoold="$build/daemon/kvpoold"
kvctl="$build/tools/kvctl"
kvfill="$build/tools/kvfill"

# ---- scratch state and cleanup -------------------------------------------------
tmp=$(mktemp -d /tmp/kvpool-snapbench.XXXXXX)
shm="/dev/shm/kvpool-bench-$$"
huge="/dev/hugepages/kvpool-bench-$$"
work="$base_dir/kvpool-bench-$$"      # the filesystem under test
raw="$tmp/raw.tsv"
sup_pid=                              # a supervise helper (kvpoold or redis-server under it)
huge_mounted=0                        # a private hugetlbfs on $huge (--hugepages prefer|require)
old_nr_huge=                          # vm.nr_hugepages to put back on exit

stop_sup() { # SIGTERM through the supervisor (it forwards and reaps); SIGKILL after 60 s
    [[ -n $sup_pid ]] || return 0
    local pid=$sup_pid child
    sup_pid=
    child=$(python3 "$helper" jget "$tmp/ready.json" pid 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "snapshot_bench: pid $pid did not stop in 60 s: SIGKILL" >&2
        [[ -z $child ]] || kill -KILL "$child" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_sup
    if [[ -n $out ]] && compgen -G "$tmp/*.log" >/dev/null; then
        { mkdir -p "${out%.json}-logs" && cp "$tmp"/*.log "${out%.json}-logs/"; } 2>/dev/null || true
    fi
    rm -rf "$shm" "$work" "$tmp"
    if ((huge_mounted)); then
        rm -f "$huge"/* 2>/dev/null || true
        umount "$huge" 2>/dev/null || true
    fi
    [[ -d $huge ]] && rm -rf "$huge"
    [[ -z $old_nr_huge ]] || echo "$old_nr_huge" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work"
: >"$raw"


record() { # key value... (words joined by spaces)
    local k=$1
    shift
    printf '%s\t%s\n' "$k" "$*" >>"$raw"
}
jget() { python3 "$helper" jget "$@"; }

# Hugepage pools: a private hugetlbfs mount and enough reserved 2 MiB pages
# for the largest pool (the bench and warm-restart pools never coexist);
# both are undone on exit.
if [[ $hugepages != never ]]; then
    need=$(((size_b > reattach_b ? size_b : reattach_b) / (2 << 20) + 64))
    have=$(cat /proc/sys/vm/nr_hugepages)
    if ((have < need)); then
        old_nr_huge=$have
        echo "$need" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
        have=$(cat /proc/sys/vm/nr_hugepages)
        echo "reserved 2 MiB hugepages: $old_nr_huge -> $have (asked $need; put back on exit)"
    fi
    ((have >= need)) || [[ $hugepages == prefer ]] ||
        die "--hugepages require: only $have of $need 2 MiB hugepages could be reserved"
    mkdir -p "$huge"
    mount -t hugetlbfs -o pagesize=2M none "$huge" || die "cannot mount hugetlbfs on $huge"
    huge_mounted=1
    record info.hugepages "$hugepages: $have 2 MiB pages reserved, hugetlbfs on $huge"
fi
drop_caches() {
    sync
    if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        [[ -n ${warned_drop:-} ]] || echo "warning: cannot drop caches; reads may come from the page cache" >&2
        warned_drop=1
        record note.drop_caches "could not drop the page cache: read figures may be cached"
    fi
}
gib() { awk -v b="$1" -v s="${2:-1}" 'BEGIN { printf "%.3f", b / s / 1073741824 }'; }

# Start CMD under the supervisor (READY: notify or ping:PORT); sets sup_pid
# and ready_s, the seconds from fork to readiness. Not for $(...): the
# supervisor must be this shell's child so that stop_sup can wait for it.
start_sup() {
    local ready=$1 log=$2
    shift 2
    rm -f "$tmp/ready.json"
    python3 "$helper" supervise --ready "$ready" --ready-file "$tmp/ready.json" --log "$log" -- "$@" \
        </dev/null >>"$tmp/supervise.log" 2>&1 &
    sup_pid=$!
    for _ in $(seq 6000); do # 10 minutes: a restore at start of a big pool on a slow disk
        [[ -f $tmp/ready.json ]] && break
        kill -0 "$sup_pid" 2>/dev/null || break
        sleep 0.05
    done
    ready_s=$(jget "$tmp/ready.json" ready_s)
    if [[ -z $ready_s ]]; then
        echo "--- $log:" >&2
        tail -20 "$log" >&2
        die "$1 start failed: $(jget "$tmp/ready.json" error)"
    fi
}

# ---- machine --------------------------------------------------------------------
fs_src=$(findmnt -no SOURCE -T "$work")
fs_type=$(findmnt -no FSTYPE -T "$work")
fs_opts=$(findmnt -no OPTIONS -T "$work")
disk=$(lsblk -no PKNAME "$fs_src" 2>/dev/null | head -1 || true)
disk=${disk:-$(basename "$fs_src")}
dev_model=$(xargs 2>/dev/null <"/sys/block/$disk/device/model" || true)
[[ $disk == vd* ]] && dev_model="${dev_model:+$dev_model }virtio-blk"
sched=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "/sys/block/$disk/queue/scheduler" 2>/dev/null || true)
rota=$(cat "/sys/block/$disk/queue/rotational" 2>/dev/null || echo "?")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem_total=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
record info.date "$(date -Iseconds)"
record info.host "$(hostname)"
record info.kernel "$(uname -r)"
record info.nproc "$(nproc)"
record info.cpu "$cpu"
record info.mem "$mem_total"
record info.dir "$work"
record info.filesystem "$fs_type on $fs_src ($fs_opts)"
record info.device "$disk: ${dev_model:-unknown model}, rotational $rota, scheduler ${sched:-?}"
record info.reps "$reps"
record info.buildtype "$buildtype"
if [[ $buildtype != release ]] && ! { skipped kvpool && skipped reattach; }; then
    record note.buildtype "kvpool binaries from a $buildtype build ($build), not release"
fi
record info.load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
record info.git "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    [[ -n $(git -C "$root" --no-optional-locks status --porcelain 2>/dev/null | head -1) ]] && echo ' + local changes')"
record info.fio_version "$(fio --version)"
record info.redis_version "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
record info.redis_config "save \"\", appendonly no, rdbcompression $redis_compression, rdbchecksum yes"
cat <<EOF
== machine ==
date        $(date -Iseconds)
cpu         $(nproc) x $cpu, $mem_total RAM (shared machine: other work may run; load $(cut -d' ' -f1-3 /proc/loadavg))
kernel      $(uname -r)
under test  $work: $fs_type on $fs_src, $disk ${dev_model:+($dev_model) }rotational $rota, scheduler ${sched:-?}
repetitions $reps (medians reported)
EOF
if (($(nproc) <= 2)); then
    record note.cores "only $(nproc) cores, shared with other work (builds, tests): kvpoold, its client and" \
        "the disk's interrupts compete for them; expect noisy figures"
fi

avail_work=$(($(df -B1 --output=avail "$work" | tail -1)))
((avail_work > 3 * fill_b)) ||
    die "$work has $(gib "$avail_work") GiB free; needs 3x the fill ($(gib $((3 * fill_b))) GiB)"

# ---- fio baselines -------------------------------------------------------------------
fio_durable() { # bs iodepth -> bytes/s: a write over fio's laid-out file, made durable
    # (end_fsync: fio's runtime, and so its bandwidth, includes the fsync),
    # as a persist over the spare is.
    drop_caches
    fio --name=seqwritesync --filename="$work/fio.dat" --rw=write --bs="$1" --iodepth="$2" --direct=1 \
        --ioengine=io_uring --size="$fill_b" --numjobs=1 --end_fsync=1 --output-format=json \
        --output="$tmp/fio-sync.json" >/dev/null 2>"$tmp/fio.err" ||
        { cat "$tmp/fio.err" >&2; die "fio write bs=$1 iodepth=$2 end_fsync=1 failed"; }
    python3 "$helper" fio-bw "$tmp/fio-sync.json" write
}
fio_run() { # rw bs iodepth direct -> bytes/s
    local rw=$1 bs=$2 qd=$3 direct=$4 f="$work/fio.dat"
    [[ $rw == write ]] && rm -f "$f"
    drop_caches
    fio --name="seq$rw" --filename="$f" --rw="$rw" --bs="$bs" --iodepth="$qd" --direct="$direct" \
        --ioengine=io_uring --size="$fill_b" --numjobs=1 --output-format=json --output="$tmp/fio.json" \
        >/dev/null 2>"$tmp/fio.err" || { cat "$tmp/fio.err" >&2; die "fio $rw bs=$bs iodepth=$qd failed"; }
    python3 "$helper" fio-bw "$tmp/fio.json" "$rw"
}
durable_cfg='' durable_bw=0 # the best durable write of the grid: "bs qd"
fio_grid() { # rw: one run per configuration, then reps-1 more of the best
    local rw=$1 best='' best_bw=0 bw dbw cfg direct bs qd
    local modes=(1)
    [[ $rw == read ]] && modes=(1 0)
    for direct in "${modes[@]}"; do
        for bs in 1M 4M; do
            for qd in 1 8 32; do
                cfg="$([[ $direct == 1 ]] && echo direct || echo buffered) bs=$bs qd=$qd"
                bw=$(fio_run "$rw" "$bs" "$qd" "$direct")
                record "fio.$rw.$cfg" "$bw"
                if [[ $rw == write ]]; then # the same again over the file just written, durable
                    dbw=$(fio_durable "$bs" "$qd")
                    record "fio.write_durable.$cfg" "$dbw"
                    printf '  fio %-5s %-22s %s GiB/s; over it again + end_fsync %s GiB/s\n' "$rw" "$cfg" \
                        "$(gib "$bw")" "$(gib "$dbw")"
                    if ((dbw > durable_bw)); then durable_bw=$dbw durable_cfg="$bs $qd"; fi
                else
                    printf '  fio %-5s %-22s %s GiB/s\n' "$rw" "$cfg" "$(gib "$bw")"
                fi
                if ((bw > best_bw)); then best_bw=$bw; best=$cfg; fi
            done
        done
    done
    record "fio.$rw.best" "$best"
    read -r direct bs qd <<<"$best"
    for ((i = 1; i < reps; i++)); do
        bw=$(fio_run "$rw" "${bs#bs=}" "${qd#qd=}" "$([[ $direct == direct ]] && echo 1 || echo 0)")
        record "fio.$rw.$best" "$bw"
        printf '  fio %-5s %-22s %s GiB/s (repeat)\n' "$rw" "$best" "$(gib "$bw")"
    done
}
# The write grid runs before kvpool: its best durable configuration is then
# run again right after each persist ("paired"), so that a persist and its
# like-for-like baseline meet the same state of the disk and of the host (on
# this VM one configuration swings by 2x within minutes).
if ! skipped fio; then
    echo "== fio: sequential write $(gib "$fill_b") GiB, io_uring, one job =="
    fio_grid write
    record fio.write_durable.best "direct bs=${durable_cfg% *} qd=${durable_cfg#* }"
    # Leave a laid-out file for the paired runs.
    fio --name=layout --filename="$work/fio.dat" --rw=write --bs=4M --iodepth=8 --direct=1 --ioengine=io_uring \
        --size="$fill_b" --output="$tmp/fio-layout.txt" >/dev/null 2>&1
fi

# ---- kvpool ----------------------------------------------------------------------------
write_config() { # file pool-name size restore_on_start
    cat >"$1" <<EOF
[daemon]
control_socket = "$tmp/control"
shm_dir = "$shm"
hugepage_dir = "$huge"
state_dir = "$work"
admin_group = "root"
log_level = "info"

[[pool]]
name = "$2"
size = "$3"
hugepages = "$hugepages"
prefault = false
slab_size = "4M"
avg_block_size = "$block"
persist_on_stop = false
restore_on_start = $4
EOF
}
ctl() { "$kvctl" --socket "$tmp/control" "$@"; }
kv_start() { # config; sets ready_s, the seconds to READY=1
    start_sup notify "$tmp/kvpoold.log" "$kvpoold" --config "$1"
}
pool_file() { # name -> the pool's region file (shm or hugetlbfs)
    if [[ -e $huge/$1 ]]; then echo "$huge/$1"; else echo "$shm/$1"; fi
}
check_pool() { # name blocks what: entries and evictions as expected
    ctl --json status "$1" >"$tmp/status.json"
    local e ev
    e=$(jget "$tmp/status.json" entries)
    ev=$(jget "$tmp/status.json" evictions)
    [[ $e == "$2" && ${ev:-0} == 0 ]] ||
        die "$3: pool $1 holds $e entries ($2 expected), $ev evictions"
}
verify_pool() { # name blocks
    "$kvfill" --pool "$(pool_file "$1")" --bytes $(($2 * block_b)) --block "$block" --seed 1 --verify \
        >"$tmp/verify.txt" ||
        { cat "$tmp/verify.txt"; die "kvfill --verify failed on pool $1"; }
    echo "  $(cat "$tmp/verify.txt")"
}

if ! skipped kvpool; then
    avail_shm=$(($(df -B1 --output=avail /dev/shm | tail -1)))
    ((avail_shm > size_b)) || die "/dev/shm has $(gib "$avail_shm") GiB free; the pool needs $size"
    write_config "$tmp/plain.toml" bench "$size" false
    write_config "$tmp/restore.toml" bench "$size" true
    echo "== kvpool: pool of $size, $(gib "$fill_b") GiB in $blocks blocks of $block =="
    kv_start "$tmp/plain.toml"
    ctl --json status bench >"$tmp/status.json"
    capacity=$(jget "$tmp/status.json" capacity)
    ((fill_b * 100 <= capacity * 90)) ||
        die "pool $size holds $(gib "$capacity") GiB; $(gib "$fill_b") GiB is over 90% of it: give a larger --size"
    record kv.size "$size_b"
    record kv.capacity "$capacity"
    record kv.blocks "$blocks"
    record kv.fill_bytes "$fill_b"
    echo "  capacity $(gib "$capacity") GiB, filling $((fill_b * 100 / capacity))%"
    "$kvfill" --pool "$(pool_file bench)" --bytes "$fill_b" --block "$block" --seed 1 | sed 's/^/  /'
    check_pool bench "$blocks" "after the fill"

    # The first two persists write new files (the second finds no spare
    # yet: the first had no snapshot to replace); from the third on, each
    # writes over the spare, as a daemon's persists do from then on: those
    # reps are the steady-state figure, each followed by its paired fio run.
    echo "-- persist (kvctl persist, wall clock around it): 2 into new files, $reps over the spare --"
    for ((i = 0; i < reps + 2; i++)); do
        sync
        w=$(python3 "$helper" timeit --stdout "$tmp/persist.json" -- \
            "$kvctl" --socket "$tmp/control" --json persist bench) ||
            { cat "$tmp/persist.json"; tail -20 "$tmp/kvpoold.log"; die "kvctl persist failed"; }
        fb=$(jget "$tmp/persist.json" file_bytes)
        db=$(jget "$tmp/persist.json" bytes)
        ds=$(jget "$tmp/persist.json" seconds)
        [[ -n $fb ]] || fb=$(stat -c %s "$work/bench.kvsnap")
        record kv.persist.wall_s "$w"
        record kv.persist.daemon_s "$ds"
        record kv.persist.bytes "$db"
        record kv.persist.file_bytes "$fb"
        record kv.persist.json "$(tr -d '\n ' <"$tmp/persist.json")"
        rc=$(jget "$tmp/persist.json" recycled_spare)
        echo "  $w s wall, ${ds:-?} s daemon: $(gib "$fb" "$w") GiB/s of file ($fb bytes; data $db;" \
            "$([[ $rc == true ]] && echo "written over the spare" || echo "a new file"))"
        if [[ -n $durable_cfg && $rc == true ]]; then
            bw=$(fio_durable $durable_cfg)
            record fio.write_paired "$bw"
            echo "  then fio write + end_fsync, bs=${durable_cfg% *} qd=${durable_cfg#* }: $(gib "$bw") GiB/s"
        fi
    done
    echo "  $(stat -c '%n: %s bytes' "$work/bench.kvsnap")"

    echo "-- restore (fresh pool from the config, caches dropped, kvctl restore) --"
    for ((i = 0; i < reps; i++)); do
        stop_sup
        rm -f "$(pool_file bench)"
        kv_start "$tmp/plain.toml"
        drop_caches
        w=$(python3 "$helper" timeit --stdout "$tmp/restore.json" -- \
            "$kvctl" --socket "$tmp/control" --json restore bench --path "$work/bench.kvsnap") ||
            { cat "$tmp/restore.json"; tail -20 "$tmp/kvpoold.log"; die "kvctl restore failed"; }
        fb=$(jget "$tmp/restore.json" file_bytes)
        db=$(jget "$tmp/restore.json" bytes)
        ds=$(jget "$tmp/restore.json" seconds)
        [[ -n $fb ]] || fb=$(stat -c %s "$work/bench.kvsnap")
        record kv.restore.wall_s "$w"
        record kv.restore.daemon_s "$ds"
        record kv.restore.bytes "$db"
        record kv.restore.file_bytes "$fb"
        record kv.restore.json "$(tr -d '\n ' <"$tmp/restore.json")"
        echo "  $w s wall, ${ds:-?} s daemon: $(gib "$fb" "$w") GiB/s of file"
        check_pool bench "$blocks" "after restore"
        if ((i == 0)); then verify_pool bench "$blocks"; fi
    done

    echo "-- start -> READY=1 with restore_on_start (pool file removed, caches dropped) --"
    for ((i = 0; i < reps; i++)); do
        stop_sup
        rm -f "$(pool_file bench)"
        drop_caches
        kv_start "$tmp/restore.toml"
        s=$ready_s
        ctl --json status bench >"$tmp/status.json"
        ds=$(jget "$tmp/status.json" snapshot.last_restore.seconds)
        record kv.start_restore.ready_s "$s"
        record kv.start_restore.daemon_s "$ds"
        record kv.start_restore.status "$(jget "$tmp/status.json" snapshot | tr -d '\n ')"
        echo "  READY=1 after $s s (daemon's restore: ${ds:-?} s)"
        check_pool bench "$blocks" "after restore at start"
        if ((i == 0)); then verify_pool bench "$blocks"; fi
    done
    stop_sup
    rm -f "$(pool_file bench)" "$work"/bench.kvsnap*
fi


if ! skipped fio; then
    echo "== fio: sequential read $(gib "$fill_b") GiB, io_uring, one job =="
    # Lay the file out again for the reads (the paired writes left it, but
    # a run with kvpool skipped has only the grid's last write).
    fio --name=layout --filename="$work/fio.dat" --rw=write --bs=4M --iodepth=8 --direct=1 --ioengine=io_uring \
        --size="$fill_b" --output="$tmp/fio-layout.txt" >/dev/null 2>&1
    fio_grid read
    rm -f "$work/fio.dat"
fi

if ! skipped reattach; then
    # The largest pool up to --reattach-size that /dev/shm and free memory
    # hold with 2 GiB to spare, in whole GiB.
    avail_shm=$(($(df -B1 --output=avail /dev/shm | tail -1)))
    avail_mem=$(($(awk '/^MemAvailable/ { print $2 }' /proc/meminfo) * 1024))
    room=$((avail_shm < avail_mem ? avail_shm : avail_mem))
    ra_b=$reattach_b
    if ((ra_b > room - (2 << 30))); then
        ra_b=$((((room - (2 << 30)) >> 30) << 30))
        ((ra_b >= 1 << 30)) ||
            die "no room for a warm-restart pool (/dev/shm $(gib "$avail_shm") GiB free, memory $(gib "$avail_mem") GiB)"
        record note.reattach_size "warm restart measured on a $(gib "$ra_b") GiB pool, not $reattach_size:" \
            "/dev/shm had $(gib "$avail_shm") GiB free and $(gib "$avail_mem") GiB of memory was available"
        echo "  note: $reattach_size does not fit; using $(gib "$ra_b") GiB"
    fi
    write_config "$tmp/reattach.toml" reattach "$((ra_b >> 20))M" false
    echo "== kvpool warm restart: pool of $(gib "$ra_b") GiB, prefault off, filled to $fill_pct% =="
    kv_start "$tmp/reattach.toml"
    ctl --json status reattach >"$tmp/status.json"
    ra_blocks=$(($(jget "$tmp/status.json" capacity) * fill_pct / 100 / block_b))
    "$kvfill" --pool "$(pool_file reattach)" --bytes $((ra_blocks * block_b)) --block "$block" --seed 1 | sed 's/^/  /'
    check_pool reattach "$ra_blocks" "after the fill"
    record kv.reattach.size "$ra_b"
    record kv.reattach.fill_bytes $((ra_blocks * block_b))
    for ((i = 0; i < reps; i++)); do
        stop_sup
        kv_start "$tmp/reattach.toml"
        s=$ready_s
        ctl --json status reattach >"$tmp/status.json"
        [[ $(jget "$tmp/status.json" state) == reattached ]] ||
            die "the pool was not re-attached (state $(jget "$tmp/status.json" state))"
        check_pool reattach "$ra_blocks" "after the warm restart"
        record kv.reattach.ready_s "$s"
        echo "  READY=1 after $(awk -v s="$s" 'BEGIN { printf "%.1f", s * 1000 }') ms" \
            "(state reattached, $ra_blocks entries)"
    done
    stop_sup
    rm -f "$(pool_file reattach)"
fi

# ---- Redis baseline -------------------------------------------------------------------
if ! skipped redis; then
    port=$(python3 "$helper" free-port)
    mkdir -p "$work/redis"
    rcmd() { python3 "$helper" redis-cmd --port "$port" "$@"; }
    redis_start() {
        start_sup "ping:$port" "$tmp/redis.log" redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
            --save "" --appendonly no --dir "$work/redis" --dbfilename dump.rdb --daemonize no --logfile "" \
            --maxmemory 0 --rdbcompression "$redis_compression" --rdbchecksum yes
    }
    echo "== redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port:" \
        "$blocks values of $block, rdbcompression $redis_compression =="
    redis_start
    f=$(python3 "$helper" redis-fill --port "$port" --blocks "$blocks" --block "$block_b" --seed 1)
    keys=$(rcmd DBSIZE)
    [[ $keys == ":$blocks" ]] || die "redis holds $keys keys, $blocks expected"
    record redis.fill_s "$f"
    record redis.keys "$blocks"
    record redis.bytes "$fill_b"
    echo "  filled in $f s"
    echo "-- SAVE (synchronous; wall clock around it) --"
    for ((i = 0; i < reps; i++)); do
        sync
        w=$(python3 "$helper" timeit --stdout "$tmp/save.txt" -- redis-cli -h 127.0.0.1 -p "$port" SAVE)
        [[ $(cat "$tmp/save.txt") == OK ]] || die "redis SAVE answered $(cat "$tmp/save.txt")"
        record redis.save_s "$w"
        echo "  $w s: $(gib "$fill_b" "$w") GiB/s"
    done
    record redis.rdb_bytes "$(stat -c %s "$work/redis/dump.rdb")"
    echo "-- restart-load (caches dropped; start -> PING answers PONG) --"
    for ((i = 0; i < reps; i++)); do
        rcmd SHUTDOWN NOSAVE >/dev/null 2>&1 || true
        stop_sup
        drop_caches
        n0=$(wc -l <"$tmp/redis.log")
        redis_start
        s=$ready_s
        keys=$(rcmd DBSIZE)
        [[ $keys == ":$blocks" ]] || die "redis loaded $keys keys, $blocks expected"
        [[ $(rcmd INFO persistence) == *"loading:0"* ]] || die "redis still loading after PONG"
        l=$(tail -n +$((n0 + 1)) "$tmp/redis.log" | sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p')
        record redis.load_ready_s "$s"
        record redis.load_log_s "$l"
        echo "  PONG after $s s (log: loaded in ${l:-?} s): $(gib "$fill_b" "$s") GiB/s"
    done
    rcmd SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    stop_sup
    rm -rf "$work/redis"
fi

# ---- summary -----------------------------------------------------------------------------
record info.load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
record note.load "load average $(sed -n 's/^info.load_start\t//p' "$raw") at the start," \
    "$(cut -d' ' -f1-3 /proc/loadavg) at the end ($(nproc) cores)"
mkdir -p "$(dirname "$out")"
echo
echo "== results ($(date -Iseconds)) =="
python3 "$helper" summary "$raw" "$out" | tee "$tmp/summary.txt"
echo "raw numbers: $out"
if ((strict)) && grep -q ' MISS$' "$tmp/summary.txt"; then exit 1; fi
exit 0
