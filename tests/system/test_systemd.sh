#!/bin/bash
# SPDX-License-Identifier: MIT
# kvpoold under a real systemd: boots /lib/systemd/systemd as PID 1 of a
# private PID + mount namespace, installs the built kvpoold.service (pointed
# at BUILD_DIR's binaries and a test config) and drives it with systemctl
# and kvctl through nsenter.
#
# usage: test_systemd.sh BUILD_DIR
# exit: 0 pass, 1 fail, 77 skip (not root, no systemd, no namespaces,
#       binaries not built)
#
# What the namespace shares with the host, and how the host is protected:
#   - /tmp, /run, /var/tmp and /var/lib are fresh tmpfs mounts inside it
#     (never boot without them: systemd-tmpfiles would clean the real /tmp;
#     /var/lib takes StateDirectory=kvpool); a BUILD_DIR below one of them
#     is bind-mounted back in;
#   - units of sysinit.target that change global kernel or host state
#     (sysctl, modules, binfmt, sysusers, clock, utmp, journal flush to
#     /var/log, tmpfiles, hugetlbfs/mqueue mount points in /dev) are masked;
#   - /dev/shm is the host's: pools go to /dev/shm/kvpool-systest-$$, removed
#     at exit;
#   - an EXIT trap and a guard process in its own session kill the
#     namespace's PID 1 (which ends every process in it) even when this
#     script is killed.
#
# Steps are functions named step_*, run in the order of STEPS; the first
# failure stops the run and prints the unit's journal. To add a step, write
# step_NAME (return non-zero on failure, print why) and list it in STEPS;
# config_file() writes the daemon's config, unit_file() the unit. Waits are
# bounded (start and stop 120 s each, the meson timeout is 300 s).
set -u

build_dir=$(realpath "${1:?usage: test_systemd.sh BUILD_DIR}")
src_dir=$(realpath "$(dirname "$0")/../..")
daemon_bin="$build_dir/daemon/kvpoold"
kvctl_bin="$build_dir/tools/kvctl"
kvfill_bin="$build_dir/tools/kvfill"
unit_in="$build_dir/systemd/kvpoold.service"

tag="kvpool-systest-$$"
shm_dir="/dev/shm/$tag"
ns_conf_dir="/run/$tag" # inside the namespace (its /run is a tmpfs)
ns_conf="$ns_conf_dir/kvpoold.toml"
control_socket="/run/kvpool/control"
pool_name="systest"
# A group other than root, so that the pool file's chown needs CAP_CHOWN
# inside the unit's capability bounding set.
pool_group=daemon
getent group "$pool_group" >/dev/null || pool_group=root
# Short, so that step_watchdog sees whether the daemon pings.
watchdog_sec=3

skip() { echo "SKIP: $*"; exit 77; }

[[ $(id -u) -eq 0 ]] || skip "needs root (boots systemd in a PID+mount namespace)"
[[ -x /lib/systemd/systemd ]] || skip "/lib/systemd/systemd not found"
for tool in unshare nsenter setsid timeout systemctl; do
    command -v "$tool" >/dev/null || skip "$tool not found"
done
[[ -x $daemon_bin ]] || skip "$daemon_bin not built"
[[ -x $kvctl_bin ]] || skip "$kvctl_bin not built"
[[ -f $unit_in ]] || { echo "FAIL: $unit_in missing: configure the build dir first"; exit 1; }

tmp=$(mktemp -d /tmp/kvpool-systest.XXXXXX) || exit 1
unshare_pid=""
ns_pid=""
guard_pid=""
# Mount points systemd may create on the host's devtmpfs; removed at exit
# if they were not there before (and are still empty).
created_dirs=()
for d in /dev/hugepages /dev/mqueue; do [[ -e $d ]] || created_dirs+=("$d"); done

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s; 0 once it succeeds, 1 on timeout.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        "$@" && return 0
        sleep 0.2
    done
    "$@"
}

# ns [-t SECONDS] CMD...: run CMD inside the namespace, bounded.
ns() {
    local limit=30
    if [[ $1 == -t ]]; then limit=$2; shift 2; fi
    timeout -k 5 "$limit" nsenter -t "$ns_pid" -m -p "$@"
}

ns_kill() {
    [[ -n $ns_pid ]] && alive "$ns_pid" && kill -9 "$ns_pid" 2>/dev/null
    [[ -n $unshare_pid ]] && alive "$unshare_pid" && kill -9 "$unshare_pid" 2>/dev/null
    [[ -n $unshare_pid ]] && wait_for 10 eval '! alive "$unshare_pid"'
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $unshare_pid ]] && alive "$unshare_pid"; then
        echo "cleanup: namespace still up, killing it"
        ns_kill
    fi
    [[ -n $unshare_pid ]] && wait "$unshare_pid" 2>/dev/null
    [[ -n $guard_pid ]] && kill "$guard_pid" 2>/dev/null && wait "$guard_pid" 2>/dev/null
    rm -rf "$shm_dir" "$tmp"
    local d
    for d in "${created_dirs[@]}"; do
        [[ -d $d ]] && ! mountpoint -q "$d" && rmdir "$d" 2>/dev/null
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# ---------------------------------------------------------------- boot ----

# Units of sysinit.target (and timers) that would act on the host.
masked_units=(
    kmod-static-nodes.service systemd-modules-load.service systemd-sysctl.service
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
    systemd-sysusers.service systemd-firstboot.service systemd-machine-id-commit.service
    systemd-repart.service systemd-pstore.service systemd-random-seed.service
    systemd-timesyncd.service systemd-update-utmp.service systemd-journal-flush.service
    systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service
    dev-hugepages.mount dev-mqueue.mount timers.target
)

boot() {
    # A build dir under one of the paths the namespace covers with a tmpfs
    # is carried over: opened before, bound back to the same path after.
    local carry=""
    case $build_dir/ in /tmp/* | /run/* | /var/tmp/* | /var/lib/*) carry=$build_dir ;; esac
    # The private tmpfs mounts come first, before systemd exists; masks go
    # into the fresh /run.
    setsid unshare --pid --fork --mount-proc --mount --propagation private bash -c '
        carry=$1
        shift
        if [ -n "$carry" ]; then exec 3<"$carry" || exit 1; fi
        mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /run &&
        mount -t tmpfs tmpfs /var/tmp && mount -t tmpfs tmpfs /var/lib || exit 1
        # Shared inside the namespace only (its mounts are private copies of
        # the host'"'"'s): a unit'"'"'s credentials are mounted by a helper of
        # systemd in a namespace of its own and moved to /run/credentials,
        # which reaches PID 1'"'"'s view only by propagation.
        mount --make-rshared /run || exit 1
        if [ -n "$carry" ]; then
            mkdir -p "$carry" && mount --no-canonicalize --bind /proc/self/fd/3 "$carry" || exit 1
            exec 3<&-
        fi
        mkdir -p /run/systemd/system
        for u in "$@"; do ln -s /dev/null "/run/systemd/system/$u"; done
        exec /lib/systemd/systemd --system --unit=basic.target' \
        boot "$carry" "${masked_units[@]}" </dev/null >"$tmp/console.log" 2>&1 &
    unshare_pid=$!

    # setsid did not fork (a background job is no group leader), so $! is
    # unshare; its one child becomes systemd once the mounts are done.
    find_init() {
        local c
        for c in $(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null ||
            pgrep -P "$unshare_pid"); do
            if [[ $(cat "/proc/$c/comm" 2>/dev/null) == systemd ]] &&
                grep -qE '^NSpid:\s+[0-9]+\s+1$' "/proc/$c/status" 2>/dev/null; then
                ns_pid=$c
                return 0
            fi
        done
        return 1
    }
    if ! wait_for 15 find_init; then
        cat "$tmp/console.log"
        if ! alive "$unshare_pid"; then
            wait "$unshare_pid"
            skip "unshare --pid --mount failed (exit $?); no namespaces here?"
        fi
        echo "FAIL: boot: no systemd child of unshare (pid $unshare_pid) after 15 s"
        return 1
    fi

    # Kill the namespace if this script dies without running its trap
    # (SIGKILL from a test harness), and in any case after 10 minutes; then
    # remove the pools and temp files.
    setsid bash -c '
        end=$((SECONDS + 600))
        while st=$(sed -n "s/.*) \(.\).*/\1/p" "/proc/$1/stat" 2>/dev/null) &&
            [ -n "$st" ] && [ "$st" != Z ] && [ $SECONDS -lt $end ]; do sleep 1; done
        [ "$(cat /proc/$2/comm 2>/dev/null)" = systemd ] && kill -9 "$2"
        [ "$(cat /proc/$3/comm 2>/dev/null)" = unshare ] && kill -9 "$3"
        sleep 1
        rm -rf "$4" "$5"' \
        guard $$ "$ns_pid" "$unshare_pid" "$shm_dir" "$tmp" </dev/null >/dev/null 2>&1 &
    guard_pid=$!

    local t0=$SECONDS state=""
    is_up() {
        state=$(ns -t 5 systemctl is-system-running 2>/dev/null)
        [[ $state == running || $state == degraded ]]
    }
    if ! wait_for 60 is_up; then
        echo "FAIL: boot: system state '$state' after 60 s"
        ns -t 10 systemctl --no-pager list-jobs
        return 1
    fi
    echo "boot: namespace PID 1 is host pid $ns_pid, system $state after $((SECONDS - t0)) s"
    if [[ $state == degraded ]]; then
        ns -t 10 systemctl --no-pager --failed
    fi
}

# Poweroff ends the namespace: systemd stops every unit, then reboot(2) in a
# child PID namespace ends its init.
shutdown_ns() {
    ns -t 10 systemctl --no-block poweroff >/dev/null 2>&1
    if wait_for 60 eval '! alive "$unshare_pid"'; then
        wait "$unshare_pid" 2>/dev/null
        echo "PASS: poweroff: namespace ended"
        return 0
    fi
    echo "FAIL: poweroff: namespace still up after 60 s; killing it"
    ns_kill
    return 1
}

# --------------------------------------------------------------- units ----

# The built unit, run from BUILD_DIR with the test config. The sandbox
# would hide a build dir below /home, /root, /run/user (ProtectHome=) or
# /tmp, /var/tmp (PrivateTmp=): only then is that one setting relaxed.
# A sanitizer build's leak checker needs ptrace, which the unit's seccomp
# filter forbids: the test's copy of the unit turns leak checking off (the
# daemon suite checks leaks outside systemd).
unit_file() {
    local installed_bin protect_home=yes private_tmp=yes
    installed_bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit_in")
    case $build_dir/ in
    /home/* | /root/* | /run/user/*) protect_home=read-only ;;
    /tmp/* | /var/tmp/*) private_tmp=no ;;
    esac
    [[ $protect_home == yes ]] || echo "note: ProtectHome=$protect_home for a build dir in $build_dir" >&2
    [[ $private_tmp == yes ]] || echo "note: PrivateTmp=no for a build dir in $build_dir" >&2
    sed -e "s|$installed_bin|$daemon_bin|g" \
        -e "s|--config [^ ]*|--config $ns_conf|g" \
        -e "s|^WatchdogSec=.*|WatchdogSec=${watchdog_sec}s|" \
        -e "s|^ProtectHome=.*|ProtectHome=$protect_home|" \
        -e "s|^PrivateTmp=.*|PrivateTmp=$private_tmp|" \
        -e '/^\[Service\]/a Environment=ASAN_OPTIONS=detect_leaks=0' \
        "$unit_in"
}

config_file() {
    cat <<EOF
# test config written by $0
[daemon]
control_socket = "$control_socket"
shm_dir = "$shm_dir"
hugepage_dir = "/dev/hugepages/$tag"
state_dir = "/var/lib/kvpool"
admin_group = "root"
log_level = "debug"

[[pool]]
name = "$pool_name"
size = "64M"
hugepages = "never"
numa_node = "none"
group = "$pool_group"
mode = "0640"
prefault = false
persist_on_stop = true
restore_on_start = true
EOF
}

show() { ns systemctl show -p "$1" --value kvpoold; }

# --------------------------------------------------------------- steps ----

step_install() {
    unit_file | ns sh -c 'cat > /run/systemd/system/kvpoold.service' || return 1
    config_file | ns sh -c "mkdir -p '$ns_conf_dir' && cat > '$ns_conf'" || return 1
    ns systemctl daemon-reload || return 1
    local load
    load=$(show LoadState)
    [[ $load == loaded ]] || { echo "kvpoold.service LoadState=$load"; return 1; }
}

# The project's tmpfiles.d entries, applied inside the namespace with the
# test's shm_dir and group: the unit's StateDirectory= and RuntimeDirectory=
# must leave the ownership and modes they set (step_dirs).
dirs_expected=("/run/kvpool 755 root" "/var/lib/kvpool 750 root" "$shm_dir 755 $pool_group")
step_tmpfiles() {
    sed -e "s|/dev/shm/kvpool |$shm_dir |" -e "s| root kvpool | root $pool_group |" \
        "$src_dir/systemd/kvpool.tmpfiles" |
        ns sh -c "cat > '$ns_conf_dir/kvpool.conf' && systemd-tmpfiles --create '$ns_conf_dir/kvpool.conf'" ||
        return 1
    step_dirs
}

step_dirs() {
    local want path mode group got bad=0
    for want in "${dirs_expected[@]}"; do
        read -r path mode group <<<"$want"
        got=$(ns stat -c '%a %U:%G' "$path" 2>/dev/null)
        if [[ $got == "$mode root:$group" ]]; then
            echo "$path: $got"
        else
            echo "$path: expected $mode root:$group, got '${got:-missing}'"
            bad=1
        fi
    done
    return $bad
}

step_start() {
    local t0=$SECONDS
    ns -t 120 systemctl start kvpoold || { echo "systemctl start kvpoold failed"; return 1; }
    # Type=notify: start returns once READY=1 arrived, so the unit is
    # running and the control socket is there right now, not eventually.
    local state
    state="$(show ActiveState)/$(show SubState)"
    echo "start returned after $((SECONDS - t0)) s: $state, status: $(show StatusText)"
    [[ $state == active/running ]] || return 1
    ns test -S "$control_socket" || { echo "no socket at $control_socket right after start"; return 1; }
    # The pool file, as the sandboxed daemon left it (shm_dir is the host's).
    local got
    got=$(stat -c '%a %G' "$shm_dir/$pool_name" 2>/dev/null)
    [[ $got == "640 $pool_group" ]] || {
        echo "pool file $shm_dir/$pool_name: expected mode 640 group $pool_group, got '${got:-missing}'"
        return 1
    }
}

step_journal() {
    if [[ $(ns systemctl is-active systemd-journald) != active ]]; then
        echo "journald not running in the namespace: journal not checked"
        return 0
    fi
    local main_pid
    main_pid=$(show MainPID)
    ns journalctl --sync 2>/dev/null
    # Lines the daemon wrote to stderr; its <N> prefixes must have become
    # PRIORITY fields, not text.
    ns journalctl --no-pager -o json _SYSTEMD_UNIT=kvpoold.service _PID="$main_pid" >"$tmp/journal.json"
    local n bad
    n=$(wc -l <"$tmp/journal.json")
    bad=$(grep -c '"MESSAGE":"<[0-7]>' "$tmp/journal.json")
    ns journalctl --no-pager -o cat _SYSTEMD_UNIT=kvpoold.service _PID="$main_pid" | head -n 5 | sed 's/^/  | /'
    ((n > 0)) || { echo "no journal lines from kvpoold (pid $main_pid)"; return 1; }
    ((bad == 0)) || { echo "$bad journal lines still start with a <N> prefix"; return 1; }
    echo "$n journal lines from kvpoold"
}

step_kvctl_list() {
    local out
    out=$(ns "$kvctl_bin" --socket "$control_socket" list 2>&1)
    local rc=$?
    printf '%s\n' "$out" | sed 's/^/  | /'
    ((rc == 0)) || { echo "kvctl list: exit $rc"; return 1; }
    grep -qw "$pool_name" <<<"$out" || { echo "kvctl list does not show pool $pool_name"; return 1; }
}

step_watchdog() {
    local pid0
    pid0=$(show MainPID)
    sleep $((watchdog_sec * 2 + 1))
    local state pid1 restarts
    state="$(show ActiveState)/$(show SubState)"
    pid1=$(show MainPID)
    restarts=$(show NRestarts)
    echo "after $((watchdog_sec * 2 + 1)) s with WatchdogSec=${watchdog_sec}s: $state, pid $pid0 -> $pid1, restarts $restarts"
    [[ $state == active/running && $pid1 == "$pid0" && $restarts == 0 ]]
}

step_reload() {
    local pid0
    pid0=$(show MainPID)
    ns -t 60 systemctl reload kvpoold || { echo "systemctl reload kvpoold failed"; return 1; }
    local state
    state="$(show ActiveState)/$(show SubState)"
    echo "after reload: $state, status: $(show StatusText)"
    [[ $state == active/running && $(show MainPID) == "$pid0" ]] || return 1
    ns "$kvctl_bin" --socket "$control_socket" list >/dev/null || { echo "kvctl list after reload failed"; return 1; }
}

step_stop() {
    local t0=$SECONDS
    ns -t 120 systemctl stop kvpoold || { echo "systemctl stop kvpoold failed"; return 1; }
    local state result
    state="$(show ActiveState)/$(show SubState)"
    result=$(show Result)
    echo "stop returned after $((SECONDS - t0)) s: $state, result $result"
    [[ $state == inactive/dead && $result == success ]] || return 1
    ns "$kvctl_bin" --socket "$control_socket" list >/dev/null 2>&1
    local rc=$?
    ((rc == 3)) || { echo "kvctl list with the daemon stopped: exit $rc, expected 3"; return 1; }
}

# pool_state: the pool's "state" in `kvctl --json status POOL`.
pool_state() {
    ns "$kvctl_bin" --socket "$control_socket" --json status "$pool_name" |
        sed -n 's/.*"state" *: *"\([a-z]*\)".*/\1/p' | head -n 1
}

# Pools outlive the daemon (they stay in shm_dir); a second start re-attaches
# them instead of creating them again.
step_restart() {
    step_start && step_kvctl_list || return 1
    local state
    state=$(pool_state)
    echo "pool $pool_name after restart: state '$state'"
    [[ $state == reattached ]] || { echo "expected state 'reattached' (warm restart)"; return 1; }
    step_stop
}

# Persistence across a "reboot": fill, `systemctl stop` persists, the pool's
# shared memory goes away, `systemctl start` restores it before READY=1, and
# a client reads back every block identical.
step_persist_restore() {
    [[ -x $kvfill_bin ]] || { echo "$kvfill_bin not built"; return 1; }
    step_start || return 1
    ns "$kvfill_bin" --pool "$shm_dir/$pool_name" --bytes 24M --block 192K --seed 7 || return 1
    step_stop || return 1
    ns test -s "/var/lib/kvpool/$pool_name.kvsnap" || { echo "no snapshot written by systemctl stop"; return 1; }
    ns journalctl --no-pager -u kvpoold | grep -q "persist pool $pool_name" ||
        { echo "the journal does not show the persist"; return 1; }
    rm -f "$shm_dir/$pool_name" # the reboot: shared memory is gone, the disk is not
    step_start || return 1
    local state
    state=$(pool_state)
    echo "pool $pool_name after start without its region: state '$state'"
    [[ $state == restored ]] || { echo "expected state 'restored'"; return 1; }
    ns "$kvfill_bin" --pool "$shm_dir/$pool_name" --bytes 24M --block 192K --seed 7 --verify || return 1
    step_stop
}

# Encrypted persistence (doc/persistence.md, Encryption): the pool key is a
# systemd credential, `systemd-creds encrypt`ed with the host key and given
# to the unit by LoadCredentialEncrypted= (a drop-in); the pool names it
# with [pool.encryption] credential =. `systemctl stop` writes an encrypted
# snapshot (format 1.2, its header names the key id), the shared memory
# goes away, `systemctl start` decrypts it back before READY=1 and a client
# reads every block identical.
key_id="systest-1"
step_persist_restore_encrypted() {
    [[ -x $kvfill_bin ]] || { echo "$kvfill_bin not built"; return 1; }
    command -v systemd-creds >/dev/null || { echo "SKIP (no systemd-creds): encrypted persistence"; return 0; }
    local cred="$ns_conf_dir/$key_id.cred" snap="/var/lib/kvpool/$pool_name.kvsnap"
    ns sh -c "umask 077 && openssl rand -hex 32 > '$ns_conf_dir/$key_id.key' &&
              systemd-creds encrypt --with-key=host --name=$key_id.key '$ns_conf_dir/$key_id.key' '$cred' &&
              rm -f '$ns_conf_dir/$key_id.key'" ||
        { echo "systemd-creds encrypt failed"; return 1; }
    printf '[Service]\nLoadCredentialEncrypted=%s:%s\n' "$key_id.key" "$cred" |
        ns sh -c "mkdir -p /run/systemd/system/kvpoold.service.d &&
                  cat > /run/systemd/system/kvpoold.service.d/key.conf" || return 1
    { config_file; printf '[pool.encryption]\nkey = "%s"\n[[pool.encryption.keys]]\nid = "%s"\ncredential = "%s.key"\n' \
        "$key_id" "$key_id" "$key_id"; } | ns sh -c "cat > '$ns_conf'" || return 1
    ns systemctl daemon-reload || return 1
    rm -f "$shm_dir/$pool_name" # start afresh: the plain snapshot of the step before is restored
    step_start || return 1
    ns "$kvfill_bin" --pool "$shm_dir/$pool_name" --bytes 16M --block 128K --seed 11 || return 1
    step_stop || return 1
    local incompat id
    incompat=$(ns od -An -t u8 -j 24 -N 8 "$snap" | tr -d ' ')
    id=$(ns dd if="$snap" bs=1 skip=312 count=${#key_id} status=none)
    echo "snapshot after stop: incompat_features $incompat, key id '$id'"
    [[ $incompat == 1 && $id == "$key_id" ]] || { echo "expected an encrypted snapshot sealed by $key_id"; return 1; }
    ns journalctl --no-pager -u kvpoold | grep -q "persist pool $pool_name to $snap (encrypted, key $key_id)" ||
        { echo "the journal does not show the encrypted persist"; return 1; }
    rm -f "$shm_dir/$pool_name"
    step_start || return 1
    local state
    state=$(pool_state)
    echo "pool $pool_name after start without its region: state '$state'"
    [[ $state == restored ]] || { echo "expected state 'restored'"; return 1; }
    ns "$kvfill_bin" --pool "$shm_dir/$pool_name" --bytes 16M --block 128K --seed 11 --verify || return 1
    step_stop
}

STEPS=(install tmpfiles start dirs journal kvctl_list watchdog reload stop restart persist_restore
    persist_restore_encrypted dirs)

# ---------------------------------------------------------------- main ----

boot || exit 1
failed=""
for s in "${STEPS[@]}"; do
    echo "--- $s"
    if "step_$s"; then
        echo "PASS: $s"
    else
        echo "FAIL: $s"
        failed=$s
        break
    fi
done
if [[ -n $failed ]]; then
    echo "--- systemctl status / journal of kvpoold"
    ns systemctl --no-pager --lines=0 status kvpoold 2>&1
    ns journalctl --no-pager -u kvpoold 2>&1 | tail -n 40
fi
shutdown_ns || failed=${failed:-poweroff}
if [[ -n $failed ]]; then
    echo "FAIL: test_systemd (step $failed)"
    exit 1
fi
echo "PASS: test_systemd"
exit 0
