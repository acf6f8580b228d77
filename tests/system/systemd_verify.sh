#!/bin/bash
# SPDX-License-Identifier: MIT
# Offline checks of the systemd integration files, no running systemd needed:
#   - the configured kvpoold.service has no @VAR@ left and passes
#     `systemd-analyze verify` without a warning about it;
#   - kvpool.sysusers and kvpool.tmpfiles apply cleanly to a scratch root
#     (--root) and give the modes and group they promise.
# The unit's ExecStart= binary is pointed at BUILD_DIR/daemon/kvpoold, or at
# a copy of /bin/true when kvpoold is not built (verify only checks that the
# command is executable).
#
# usage: systemd_verify.sh BUILD_DIR
# exit: 0 pass, 1 fail, 77 skip (no systemd-analyze)
set -u

build_dir=$(realpath "${1:?usage: systemd_verify.sh BUILD_DIR}")
src_dir=$(realpath "$(dirname "$0")/../..")
unit="$build_dir/systemd/kvpoold.service"

skip() { echo "SKIP: $*"; exit 77; }
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

command -v systemd-analyze >/dev/null || skip "systemd-analyze not found (install systemd)"
[[ -f $unit ]] || { echo "FAIL: $unit missing: configure the build dir first"; exit 1; }

tmp=$(mktemp -d /tmp/kvpool-verify.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT

# 1. Template fully substituted.
if grep -n '@[A-Z_]*@' "$unit"; then
    fail "unsubstituted @VAR@ in $unit"
else
    pass "no @VAR@ left in kvpoold.service"
fi

# 2. systemd-analyze verify on a copy that runs the built (or stand-in) daemon.
installed_bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[[ -n $installed_bin ]] || fail "no ExecStart= in $unit"
daemon_bin="$build_dir/daemon/kvpoold"
if [[ ! -x $daemon_bin ]]; then
    echo "note: $daemon_bin not built; verifying with /bin/true in its place"
    daemon_bin="$tmp/kvpoold"
    cp /bin/true "$daemon_bin"
fi
sed "s|$installed_bin|$daemon_bin|g" "$unit" >"$tmp/kvpoold.service"
# verify exits non-zero on errors only; unknown keys and bad values are
# warnings naming the file, and fail this test too.
out=$(cd "$tmp" && systemd-analyze verify --man=no ./kvpoold.service 2>&1)
rc=$?
if [[ $rc -ne 0 ]] || grep -q 'kvpoold\.service' <<<"$out"; then
    printf '%s\n' "$out"
    fail "systemd-analyze verify kvpoold.service (rc=$rc)"
else
    [[ -n $out ]] && printf 'systemd-analyze (other units):\n%s\n' "$out"
    pass "systemd-analyze verify kvpoold.service"
fi
# Informational: the sandbox's exposure score (lower is tighter).
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    (cd "$tmp" && systemd-analyze security --offline=yes --no-pager ./kvpoold.service 2>/dev/null | tail -n 1)
fi

# 3. sysusers.d and tmpfiles.d entries, applied to a scratch root.
root="$tmp/root"
mkdir -p "$root/etc"
if command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null; then
    if systemd-sysusers --root="$root" "$src_dir/systemd/kvpool.sysusers" >"$tmp/sysusers.log" 2>&1 &&
        gid=$(awk -F: '$1 == "kvpool" { print $3 }' "$root/etc/group") && [[ -n $gid ]]; then
        pass "kvpool.sysusers creates group kvpool (gid $gid in the scratch root)"
    else
        cat "$tmp/sysusers.log"
        fail "kvpool.sysusers did not create group kvpool"
        gid=
    fi
    if systemd-tmpfiles --create --root="$root" "$src_dir/systemd/kvpool.tmpfiles" >"$tmp/tmpfiles.log" 2>&1; then
        pass "kvpool.tmpfiles applies"
    else
        cat "$tmp/tmpfiles.log"
        fail "systemd-tmpfiles --create kvpool.tmpfiles"
    fi
    # /run/kvpool and /var/lib/kvpool as systemd leaves them at each start
    # (the unit's RuntimeDirectory= and StateDirectory=, root:root).
    for want in "/run/kvpool 755 0" "/var/lib/kvpool 750 0" "/dev/shm/kvpool 755 ${gid:-kvpool}"; do
        read -r path mode group <<<"$want"
        got=$(stat -c '%a %u %g' "$root$path" 2>/dev/null)
        if [[ $got == "$mode 0 $group" ]]; then
            pass "$path is $mode, owner 0, group $group"
        else
            fail "$path: expected mode $mode owner 0 group $group, got '${got:-missing}'"
        fi
    done
else
    echo "note: systemd-sysusers/systemd-tmpfiles not found; sysusers and tmpfiles checks skipped"
fi

if [[ $failures -ne 0 ]]; then
    echo "FAIL: systemd_verify: $failures check(s) failed"
    exit 1
fi
echo "PASS: systemd_verify"
exit 0
