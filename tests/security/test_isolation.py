#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Tenant isolation and the audit trail, as real users (doc/security.md).

Two tenants, each a user in its own group owning one pool (alpha: group A,
mode 0660; beta: group B, mode 0640), and an outsider in no pool group,
all created here (useradd/groupadd) and removed on exit, pass or fail. As
each user (setpriv --init-groups) the test checks that nobody reaches the
other tenant's pool: no attach (file mode), no snapshot file or directory,
no control op that reads or changes it (entries, clients, health, remote
status, persist, restore, evict, destroy, detach, verify, remote fetch), no
per-pool series on the metrics endpoint (unix socket: SO_PEERCRED; loopback
TCP: inet_diag), and that the outsider sees only the public view.

kvpoold runs in a private mount namespace whose /run/systemd/journal/socket
is a datagram socket of this test, which parses journald's native protocol:
every audited op (refusals included) must be there once with its fields,
and a flood past audit_rate must be cut, then counted in one "suppressed"
entry.

Usage: test_isolation.py BUILD_ROOT. Root only (exit 77 otherwise).
"""
import errno
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
CTL_MAGIC = 0x4C54434B
OPS = {"status": 3, "entries": 6, "persist": 9, "remote status": 16, "remote fetch": 15}
REQ_SIZE = 416
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)


# ---- Client modes, run as a test user through setpriv ----------------------

def raw_request(sock_path, op, pool, payload=b"", wait=True):
    """One control request; returns (errno, body text). wait may be a
    function instead: the connection is closed once it returns true, without
    reading the answer, and None is returned."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    req = pool.encode().ljust(64, b"\0") + struct.pack("<QQ", 0, len(payload))
    req = req.ljust(REQ_SIZE, b"\0")
    body = req + payload
    s.sendall(struct.pack("<IHHII", CTL_MAGIC, 1, op, len(body), 1) + body)
    if wait is not True:
        deadline = time.monotonic() + 10
        while not wait() and time.monotonic() < deadline:
            time.sleep(0.01)
        s.close()
        return None
    data = b""
    while len(data) < 16 or len(data) < 16 + struct.unpack_from("<I", data, 8)[0]:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    err, blen = struct.unpack_from("<II", data, 16)
    return err, data[32:32 + blen].decode(errors="replace")


def http_get(spec):
    if spec.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(spec[5:])
    else:
        host, port = spec[4:].rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    s.settimeout(10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def client_main(argv):
    mode = argv[0]
    if mode == "--raw":  # SOCK OP_NAME POOL
        payload = b""
        if argv[2] == "remote fetch":  # kv_ctl_remote_fetch + one key
            payload = struct.pack("<QQIIII", 0, 0, 0, 1, 0, 1000) + bytes(16) + bytes(16)
        err, text = raw_request(argv[1], OPS[argv[2]], argv[3], payload)
        print(json.dumps({"errno": err, "text": text}))
    elif mode == "--http":
        print(http_get(argv[1]), end="")
    elif mode == "--open":  # PATH rw|ro|dir
        try:
            if argv[2] == "dir":
                os.listdir(argv[1])
            else:
                os.close(os.open(argv[1], os.O_RDWR if argv[2] == "rw" else os.O_RDONLY))
            print("ok")
        except OSError as e:
            print(errno.errorcode.get(e.errno, str(e.errno)))
    return 0


# ---- The journal stand-in ----------------------------------------------------

def parse_native(data):
    """journald's native protocol: KEY=value lines, or KEY\\n<le64 size><value>\\n."""
    fields = {}
    i = 0
    while i < len(data):
        nl = data.find(b"\n", i)
        if nl < 0:
            nl = len(data)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode(errors="replace")
            i = nl + 1
        else:
            size = struct.unpack_from("<Q", data, nl + 1)[0]
            start = nl + 9
            fields[line.decode()] = data[start:start + size].decode(errors="replace")
            i = start + size + 1
    return fields


class Journal:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.entries = []
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            data, anc, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 4))
            for level, kind, cdata in anc:  # a big entry comes as a memfd
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fd = struct.unpack("i", cdata[:4])[0]
                    data = os.pread(fd, 1 << 24, 0)
                    os.close(fd)
            with self.lock:
                self.entries.append(parse_native(data))

    def audit(self):
        with self.lock:
            return [e for e in self.entries if e.get("SYSLOG_IDENTIFIER") == "kvpoold"]


# ---- The test ----------------------------------------------------------------

class Env:
    def __init__(self, build):
        self.kvpoold = os.path.join(build, "daemon", "kvpoold")
        self.kvctl = os.path.join(build, "tools", "kvctl")
        self.tag = str(os.getpid() % 100000)
        self.dir = tempfile.mkdtemp(prefix="kvpool-iso-")
        os.chmod(self.dir, 0o755)
        self.shm = "/dev/shm/kvpool-iso-" + self.tag
        self.sock = self.dir + "/control"
        self.users, self.groups = [], []
        self.daemon = None
        self.log = None

    def cleanup(self):
        self.stop()
        for u in self.users:
            subprocess.run(["userdel", u], capture_output=True)
        for g in self.groups:
            subprocess.run(["groupdel", g], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)

    def add_group(self, name):
        subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
        self.groups.append(name)
        return grp.getgrnam(name).gr_gid

    def add_user(self, name, group=None):
        args = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                "--user-group"]
        if group:
            args += ["-G", group]
        self.users.append(name)
        self.groups.append(name)  # --user-group: removed by userdel, groupdel is a no-op
        subprocess.run(args + [name], check=True, capture_output=True)
        return pwd.getpwnam(name).pw_uid

    def config(self, metrics, extra=""):
        return f"""[daemon]
control_socket = "{self.sock}"
shm_dir = "{self.shm}"
hugepage_dir = "{self.dir}/huge"
state_dir = "{self.dir}/state"
admin_group = "root"
metrics = "{metrics}"
log_level = "debug"
{extra}
[[pool]]
name = "alpha"
size = "32M"
hugepages = "never"
prefault = false
group = "{self.ga}"
mode = "0660"
snapshot_dir = "{self.dir}/snap-alpha"

[[pool]]
name = "beta"
size = "32M"
hugepages = "never"
prefault = false
group = "{self.gb}"
mode = "0640"
snapshot_dir = "{self.dir}/snap-beta"
"""

    def start(self, cfg_text):
        with open(self.dir + "/kvpoold.toml", "w") as f:
            f.write(cfg_text)
        self.log = open(self.dir + "/kvpoold.log", "ab")
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.daemon = subprocess.Popen([self.kvpoold, "--config", self.dir + "/kvpoold.toml"],
                                       stderr=self.log, stdout=self.log, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                break
            if self.ctl(["list"]).returncode == 0:
                return True
            time.sleep(0.05)
        print(open(self.dir + "/kvpoold.log").read())
        return False

    def stop(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None

    def as_user(self, user, argv):
        if user == "root":
            return subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return subprocess.run(["setpriv", "--reuid", user, "--regid", user, "--init-groups",
                               "--"] + argv, capture_output=True, text=True, timeout=60)

    def ctl(self, args, user="root"):
        return self.as_user(user, [self.kvctl, "--socket", self.sock] + args)

    def client(self, user, args):
        return self.as_user(user, [sys.executable, os.path.abspath(__file__)] + args).stdout


def pool_series(text):
    pools = set()
    for line in text.splitlines():
        if line.startswith("kvpool_") and '{pool="' in line:
            pools.add(line.split('{pool="', 1)[1].split('"', 1)[0])
    return pools


def check_metrics(env, spec, who_sees, phase):
    for user, pools in who_sees.items():
        text = env.client(user, ["--http", spec])
        check(text.startswith("HTTP/1.1 200"), f"{phase}: {user} GET /metrics: {text[:200]}")
        check("kvpoold_requests_total" in text, f"{phase}: {user}: daemon-wide series missing")
        got = pool_series(text)
        check(got == pools, f"{phase}: {user} sees series of pools {sorted(got)}, "
                            f"expected {sorted(pools)}")


def run_test(env):
    ua, ub, uc = "kvta" + env.tag, "kvtb" + env.tag, "kvtc" + env.tag
    env.ga, env.gb = "kvga" + env.tag, "kvgb" + env.tag
    env.add_group(env.ga)
    env.add_group(env.gb)
    uid = {"root": 0, ua: env.add_user(ua, env.ga), ub: env.add_user(ub, env.gb),
           uc: env.add_user(uc)}
    owner = {"alpha": ua, "beta": ub}
    other = {"alpha": ub, "beta": ua}

    journal_dir = "/run/systemd/journal"
    os.makedirs(journal_dir, exist_ok=True)
    journal = Journal(journal_dir + "/socket")

    metrics_unix = "unix:" + env.dir + "/metrics"
    if not env.start(env.config(metrics_unix)):
        check(False, "kvpoold did not start")
        return
    # A snapshot of each pool (as root), for the file checks.
    for pool in ("alpha", "beta"):
        r = env.ctl(["persist", pool])
        check(r.returncode == 0, f"root persist {pool}: {r.stderr}")

    expected_audit = []  # (op, pool, uid, result)
    expected_audit += [("persist", "alpha", 0, "ok"), ("persist", "beta", 0, "ok")]

    # 1. The file system: pool files and snapshots.
    for pool, mode in (("alpha", "rw"), ("beta", "ro")):
        path = env.shm + "/" + pool
        snap = f"{env.dir}/snap-{pool}/{pool}.kvsnap"
        check(os.path.exists(snap), f"no snapshot {snap}")
        check(env.client(owner[pool], ["--open", path, mode]).strip() == "ok",
              f"{owner[pool]} cannot open its own pool {pool} ({mode})")
        for user in (other[pool], uc):
            for target, m in ((path, "ro"), (path, "rw"), (snap, "ro"),
                              (f"{env.dir}/snap-{pool}", "dir")):
                got = env.client(user, ["--open", target, m]).strip()
                check(got == "EACCES", f"{user} open {target} ({m}): {got}, expected EACCES")

    # 2. Control ops on the other tenant's pool: refused with EPERM (exit 4).
    refused_verbs = [
        (["entries", "{p}"], "entries"), (["clients", "{p}"], None), (["health", "{p}"], None),
        (["remote", "status", "{p}"], None), (["persist", "{p}"], "persist"),
        (["restore", "{p}"], "restore"), (["evict", "{p}", "--percent", "50"], "evict"),
        (["verify", "{p}"], "verify"), (["detach", "{p}", "--pid", "1"], "detach"),
        (["destroy", "{p}"], "destroy"),
    ]
    for pool in ("alpha", "beta"):
        for user in (other[pool], uc):
            for args, op in refused_verbs:
                r = env.ctl([a.format(p=pool) for a in args], user)
                check(r.returncode == 4, f"{user} kvctl {' '.join(args).format(p=pool)}: exit "
                                         f"{r.returncode}, expected 4 (EPERM): {r.stderr}")
                check(r.returncode != 4 or "group" in r.stderr,
                      f"{user}: the refusal does not name the group: {r.stderr}")
                if op:
                    expected_audit.append((op, pool, uid[user], "error"))
            out = json.loads(env.client(user, ["--raw", env.sock, "remote fetch", pool]))
            check(out["errno"] == errno.EPERM, f"{user} remote fetch {pool}: {out}")
            expected_audit.append(("remote fetch", pool, uid[user], "error"))
            # The public view: name, state and group, nothing about usage.
            r = env.ctl(["--json", "status", pool], user)
            check(r.returncode == 0, f"{user} status {pool}: {r.stderr}")
            doc = json.loads(r.stdout or "{}")
            check(doc.get("restricted") is True and "used_bytes" not in doc
                  and "path" not in doc and "snapshot" not in doc and doc.get("name") == pool,
                  f"{user} status {pool} is not the public view: {doc}")
            r = env.ctl(["status", pool], user)
            check(r.returncode == 0 and "restricted" in r.stdout and "capacity" not in r.stdout,
                  f"{user} kvctl status {pool}: {r.stdout}")
            for verb in ("list", "stats"):
                r = env.ctl(["--json", verb], user)
                docs = {p["name"]: p for p in json.loads(r.stdout or "{}").get("pools", [])}
                check(set(docs) == {"alpha", "beta"} and docs[pool].get("restricted") is True
                      and set(docs[pool]) == {"name", "state", "group", "restricted"},
                      f"{user} {verb}: {pool} shown as {docs.get(pool)}")
    # The pool is still there and whole.
    check(os.path.exists(env.shm + "/alpha") and os.path.exists(env.shm + "/beta"),
          "a pool was destroyed by another tenant")

    # 3. The owners may do all of it to their own pool.
    for pool in ("alpha", "beta"):
        user = owner[pool]
        for args in (["entries", pool], ["clients", pool], ["health", pool],
                     ["evict", pool, "--percent", "10"], ["verify", pool], ["persist", pool]):
            r = env.ctl(args, user)
            check(r.returncode == 0, f"{user} kvctl {' '.join(args)}: exit {r.returncode}: "
                                     f"{r.stderr}")
        expected_audit += [("entries", pool, uid[user], "ok"), ("evict", pool, uid[user], "ok"),
                           ("verify", pool, uid[user], "ok"), ("persist", pool, uid[user], "ok")]
        r = env.ctl(["--json", "status", pool], user)
        check("used_bytes" in json.loads(r.stdout or "{}"), f"{user} status {pool}: {r.stdout}")
        out = json.loads(env.client(user, ["--raw", env.sock, "remote fetch", pool]))
        check(out["errno"] == errno.ENODEV, f"{user} remote fetch {pool}: {out} (expected "
                                            "ENODEV: the pool has no remote tier)")
        expected_audit.append(("remote fetch", pool, uid[user], "error"))

    # Creating pools is for root and the admin group; both outcomes audited.
    r = env.ctl(["create", "gamma", "--size", "16M", "--no-persist"], uc)
    check(r.returncode == 4, f"{uc} create gamma: exit {r.returncode}: {r.stderr}")
    expected_audit.append(("create", "gamma", uid[uc], "error"))
    for args in (["create", "gamma", "--size", "16M", "--no-persist"], ["destroy", "gamma"]):
        r = env.ctl(args)
        check(r.returncode == 0, f"root kvctl {' '.join(args)}: {r.stderr}")
        expected_audit.append((args[0], "gamma", 0, "ok"))

    # A deferred op is audited when it ends, also when its caller closed
    # the connection once the daemon took the request (a close before
    # that withdraws the request).
    started = lambda: open(env.dir + "/kvpoold.log").read().count("persist of pool beta")
    n = started()
    raw_request(env.sock, OPS["persist"], "beta", wait=lambda: started() > n)
    expected_audit.append(("persist", "beta", 0, "ok"))

    # 4. Metrics on the unix socket, by SO_PEERCRED.
    check_metrics(env, metrics_unix, {"root": {"alpha", "beta"}, ua: {"alpha"}, ub: {"beta"},
                                      uc: set()}, "unix metrics")

    # 5. The audit trail: each audited request once, with its fields.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(journal.audit()) < len(expected_audit):
        time.sleep(0.05)
    entries = journal.audit()
    for op, pool, u, result in expected_audit:
        match = [e for e in entries if e.get("KVPOOL_OP") == op and e.get("KVPOOL_POOL") == pool
                 and e.get("KVPOOL_PEER_UID") == str(u) and e.get("KVPOOL_RESULT") == result]
        check(len(match) >= 1, f"no audit entry for {op} {pool} by uid {u}: {result}")
    check(len(entries) == len(expected_audit),
          f"{len(entries)} audit entries, expected {len(expected_audit)}")
    refused = [e for e in entries if e.get("KVPOOL_ERRNO") == str(errno.EPERM)]
    check(len(refused) == sum(1 for x in expected_audit if x[3] == "error") - 2,
          f"{len(refused)} EPERM entries")
    for e in entries:
        for k in ("MESSAGE", "MESSAGE_ID", "PRIORITY", "KVPOOL_PEER_GID", "KVPOOL_PEER_PID",
                  "KVPOOL_ERRNO"):
            check(k in e, f"audit entry without {k}: {e}")
    check(all(e.get("MESSAGE_ID") == "43768fdbab114cd1afbf3b9c474c7b69" for e in entries),
          "audit entries with another MESSAGE_ID")
    sample = next((e for e in entries if e.get("KVPOOL_OP") == "entries"
                   and e.get("KVPOOL_RESULT") == "error"), {})
    check("EPERM" in sample.get("MESSAGE", ""), f"refusal MESSAGE: {sample}")
    check(not [e for e in entries if e.get("KVPOOL_OP") in ("status", "list", "stats")],
          "status, list or stats audited")

    # 6. Restart: loopback TCP metrics (inet_diag), and a low audit_rate.
    env.stop()
    port = free_port()
    metrics_tcp = f"tcp:127.0.0.1:{port}"
    if not env.start(env.config(metrics_tcp, "audit_rate = 2\n")):
        check(False, "kvpoold did not restart")
        return
    root_view = pool_series(env.client("root", ["--http", metrics_tcp]))
    log = open(env.dir + "/kvpoold.log").read()
    no_diag = ("cannot tell who connected (netlink sock_diag: Protocol not" in log
               or "cannot tell who connected (inet_diag lookup: No such file" in log)
    if not root_view and no_diag:
        print("note: this kernel has no inet_diag; the TCP metrics checks are skipped")
    else:
        check_metrics(env, metrics_tcp, {"root": {"alpha", "beta"}, ua: {"alpha"},
                                         ub: {"beta"}, uc: set()}, "tcp metrics")

    # 7. The rate limit: 2/s, bursts of 20; 60 requests at once.
    before = len(journal.audit())
    flood = 60
    for i in range(flood):
        err, _ = raw_request(env.sock, OPS["entries"], "alpha")
        check(err == 0, f"flood request {i}: errno {err}")
    passed = settled(journal) - before
    check(20 <= passed < flood, f"{passed} of {flood} flood requests audited at audit_rate 2")
    time.sleep(1.1)  # two tokens back
    raw_request(env.sock, OPS["entries"], "beta")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(journal.audit()) < before + passed + 2:
        time.sleep(0.05)
    tail = journal.audit()[before + passed:]
    sup = [e for e in tail if "KVPOOL_SUPPRESSED" in e]
    check(len(sup) == 1 and int(sup[0]["KVPOOL_SUPPRESSED"]) == flood - passed
          and "suppressed" in sup[0].get("MESSAGE", ""),
          f"expected one entry saying {flood - passed} were suppressed: {tail}")
    check(any(e.get("KVPOOL_POOL") == "beta" for e in tail), f"the entry after the pause: {tail}")

    # 8. audit = false: nothing is written.
    env.stop()
    if env.start(env.config(metrics_tcp, "audit = false\n")):
        n = len(journal.audit())
        env.ctl(["entries", "alpha"])
        env.ctl(["persist", "alpha"])
        time.sleep(0.3)
        check(len(journal.audit()) == n, "audit = false still writes entries")
    else:
        check(False, "kvpoold did not start with audit = false")


def settled(journal):
    """The number of audit entries once no more arrive for 0.3 s (at most 5 s)."""
    n, deadline = len(journal.audit()), time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.3)
        m = len(journal.audit())
        if m == n:
            break
        n = m
    return n


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("--"):
        return client_main(sys.argv[1:])
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    # useradd and friends live in sbin, which a root shell's PATH may lack.
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    if os.geteuid() != 0:
        print("skip: needs root (users, groups, a mount namespace)")
        return SKIP
    for tool in ("useradd", "groupadd", "userdel", "setpriv", "unshare"):
        if not shutil.which(tool):
            print(f"skip: {tool} not found")
            return SKIP
    if os.environ.get("KVPOOL_ISO_NS") != "1":
        # A private mount namespace, so that the journal socket is ours.
        env = dict(os.environ, KVPOOL_ISO_NS="1")
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                            os.path.abspath(__file__), sys.argv[1]], env=env)
        return r.returncode
    run_dir = "/run/systemd" if os.path.isdir("/run/systemd") else "/run"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", run_dir]).returncode:
        print(f"skip: cannot mount a tmpfs on {run_dir} in a private mount namespace")
        return SKIP
    env = Env(sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    start = time.monotonic()
    try:
        run_test(env)
    finally:
        if FAILURES:
            try:
                print("kvpoold log:\n" + open(env.dir + "/kvpoold.log").read()[-6000:])
            except OSError:
                pass
        env.cleanup()
    print(f"{len(FAILURES)} failure(s) in {time.monotonic() - start:.1f} s")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
