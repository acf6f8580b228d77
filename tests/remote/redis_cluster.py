#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A real Redis Cluster on loopback ports for the remote-tier tests.

Starts N masters (default 3, no replicas) with redis-server
--cluster-enabled yes on free loopback ports in a private directory, joins
them with `redis-cli --cluster create --cluster-replicas 0 --cluster-yes`
and waits until every node reports cluster_state:ok with all 16384 slots
assigned and agrees on the slot map.

Nodes keep nothing on disk but their cluster config (appendonly no, save
""), so restart() brings a node back with its node ID and slots but no
data: "Redis restarted empty". cluster-require-full-coverage is off, as a
cache tier runs it: a dead master turns its own slots into errors and
leaves the others serving.

As a module:

    with RedisCluster(watch_pid=os.getpid()) as rc:
        rc.seeds             # ["127.0.0.1:P1", ...]
        rc.kill(0); rc.restart(0)
        rc.reshard(0, 1, 100)

As a command line (for C++ tests; state lives in DIR/cluster.json):

    redis_cluster.py start DIR [--masters N] [--password P [--user U]]
                               [--watch-pid PID]
        prints the seeds, one host:port a line; with --watch-pid a detached
        watchdog stops the cluster and removes DIR once PID has exited, so
        a test killed by its timeout leaves nothing behind.
    redis_cluster.py stop DIR              kill every node, remove DIR
    redis_cluster.py kill DIR I            SIGKILL node I
    redis_cluster.py restart DIR I         start node I again (empty), wait ok
    redis_cluster.py sigstop|sigcont DIR I
    redis_cluster.py reshard DIR FROM TO NSLOTS
    redis_cluster.py slot KEY              the key's hash slot
    redis_cluster.py owner DIR SLOT        index of the node serving SLOT
    redis_cluster.py migrate-begin DIR SLOT FROM TO
    redis_cluster.py migrate-keys DIR SLOT FROM TO KEY...
    redis_cluster.py migrate-end DIR SLOT TO
    redis_cluster.py cli DIR I ARG...      run redis-cli against node I
    redis_cluster.py node-ids DIR          the node IDs, one a line
    redis_cluster.py seeds DIR             the seeds again

Exit status 0 on success, 1 on failure (message on stderr), 77 when
redis-server or redis-cli is missing (the meson skip code).
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SLOTS = 16384


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem), the checksum Redis Cluster maps keys with."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(key) -> int:
    """The hash slot of key, honouring {hash tags} as Redis does."""
    if isinstance(key, str):
        key = key.encode()
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return crc16(key) % SLOTS


def _free_port(taken):
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free loopback port")


def _alive(pid):
    """True while pid runs; a zombie counts as dead (nobody may reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class ClusterError(RuntimeError):
    pass


class RedisCluster:
    """A private Redis Cluster. Always call stop() (the context manager does)."""

    def __init__(self, directory=None, masters=3, password=None, user=None,
                 node_timeout_ms=2000, maxmemory=None, startup_timeout=30.0,
                 watch_pid=None):
        if user and not password:
            raise ValueError("user needs a password")
        self.owns_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="kvpool-redis-")
        self.masters = masters
        self.password = password
        self.user = user
        self.node_timeout_ms = node_timeout_ms
        self.maxmemory = maxmemory
        self.startup_timeout = startup_timeout
        self.ports = []
        self.bus_ports = []
        self.pids = []
        self.ids = []
        self.watchdog_pid = None
        self.watch_pid = watch_pid
        self._procs = {}

    # --- state shared with the command line -------------------------------
    def _state_path(self):
        return os.path.join(self.dir, "cluster.json")

    def save(self):
        st = dict(masters=self.masters, password=self.password, user=self.user,
                  node_timeout_ms=self.node_timeout_ms, maxmemory=self.maxmemory,
                  ports=self.ports, bus_ports=self.bus_ports, pids=self.pids,
                  ids=self.ids, watchdog_pid=self.watchdog_pid)
        tmp = self._state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self._state_path())

    @classmethod
    def load(cls, directory):
        with open(os.path.join(directory, "cluster.json")) as f:
            st = json.load(f)
        rc = cls(directory, st["masters"], st["password"], st["user"],
                 st["node_timeout_ms"], st.get("maxmemory"))
        rc.owns_dir = True
        for k in ("ports", "bus_ports", "pids", "ids", "watchdog_pid"):
            setattr(rc, k, st[k])
        return rc

    # --- properties -------------------------------------------------------
    @property
    def seeds(self):
        return [f"127.0.0.1:{p}" for p in self.ports]

    def _node_dir(self, i):
        return os.path.join(self.dir, f"node{i}")

    # --- processes --------------------------------------------------------
    def _spawn(self, i):
        nd = self._node_dir(i)
        os.makedirs(nd, exist_ok=True)
        args = [REDIS_SERVER,
                "--port", str(self.ports[i]),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_ports[i]),
                "--cluster-config-file", os.path.join(nd, "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-require-full-coverage", "no",
                "--dir", nd,
                "--appendonly", "no",
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "no",
                "--logfile", os.path.join(nd, "redis.log")]
        if self.maxmemory:
            args += ["--maxmemory", str(self.maxmemory)]
        if self.password:
            args += ["--masterauth", self.password]
            if self.user:
                args += ["--masteruser", self.user,
                         # One token per word: redis-server joins the words
                         # after an option into its config line.
                         "--user", self.user, "on", ">" + self.password, "~*", "&*",
                         "+@all", "--user", "default", "off"]
            else:
                args += ["--requirepass", self.password]
        # Its own session: a Ctrl-C of the test does not reach it, stop()
        # does; stdin/stdout closed so the CLI caller does not wait on it.
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        self._procs[p.pid] = p
        if len(self.pids) <= i:
            self.pids.append(p.pid)
        else:
            self.pids[i] = p.pid
        return p.pid

    def _reap(self, pid):
        p = self._procs.pop(pid, None)
        if p is not None:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def _wait_dead(self, pid, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            p = self._procs.get(pid)
            if p is not None:
                if p.poll() is not None:
                    self._procs.pop(pid, None)
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.01)
        return False

    def cli_args(self, i):
        a = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.ports[i])]
        if self.password:
            if self.user:
                a += ["--user", self.user]
            a += ["--pass", self.password, "--no-auth-warning"]
        return a

    def cli(self, i, *args, timeout=10.0, check=True):
        """Runs redis-cli against node i; returns stdout (str)."""
        r = subprocess.run(self.cli_args(i) + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, text=True)
        if check and (r.returncode != 0 or r.stdout.startswith("ERR")
                      or r.stdout.startswith("(error)")):
            raise ClusterError(f"redis-cli -p {self.ports[i]} {' '.join(map(str, args))}: "
                               f"rc {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
        return r.stdout

    def _ping(self, i):
        try:
            return self.cli(i, "PING", timeout=2, check=False).strip() == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def _wait_up(self, i, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self._alive_node(i):
                return False
            if self._ping(i):
                return True
            time.sleep(0.05)
        return False

    def _alive_node(self, i):
        pid = self.pids[i]
        p = self._procs.get(pid)
        if p is not None:
            return p.poll() is None
        return _alive(pid)

    def _info(self, i):
        out = self.cli(i, "CLUSTER", "INFO", timeout=3, check=False)
        d = {}
        for line in out.splitlines():
            if ":" in line:
                k, v = line.strip().split(":", 1)
                d[k] = v
        return d

    def node_ok(self, i):
        try:
            d = self._info(i)
        except subprocess.TimeoutExpired:
            return False
        return (d.get("cluster_state") == "ok"
                and d.get("cluster_slots_assigned") == str(SLOTS)
                and d.get("cluster_known_nodes") == str(self.masters))

    def wait_ok(self, nodes=None, timeout=None):
        """Waits until each node (default all) says cluster_state:ok and all
        nodes agree on who serves every slot."""
        nodes = range(self.masters) if nodes is None else nodes
        end = time.monotonic() + (timeout or self.startup_timeout)
        while time.monotonic() < end:
            if all(self.node_ok(i) for i in nodes):
                maps = {tuple(self.slot_owners(i)) for i in nodes}
                if len(maps) == 1:
                    return
            time.sleep(0.1)
        raise ClusterError(f"cluster not ok after {timeout or self.startup_timeout}s: "
                           + "; ".join(f"node{i}:{self._info(i).get('cluster_state')}"
                                       for i in nodes))

    # --- lifecycle --------------------------------------------------------
    def start(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        os.makedirs(self.dir, exist_ok=True)
        for attempt in range(5):
            taken = set()
            self.ports = [_free_port(taken) for _ in range(self.masters)]
            self.bus_ports = [_free_port(taken) for _ in range(self.masters)]
            self.pids = []
            for i in range(self.masters):
                self._spawn(i)
            self.save()
            if all(self._wait_up(i, 10.0) for i in range(self.masters)):
                break
            # A port was taken between the probe and the bind: try again.
            self._kill_all()
        else:
            raise ClusterError("redis-server did not start; see " + self.dir)
        args = [REDIS_CLI]
        if self.password:
            if self.user:
                args += ["--user", self.user]
            args += ["--pass", self.password, "--no-auth-warning"]
        args += ["--cluster", "create"] + self.seeds + [
            "--cluster-replicas", "0", "--cluster-yes"]
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60, text=True)
        if r.returncode != 0:
            raise ClusterError(f"redis-cli --cluster create: {r.stdout}{r.stderr}")
        self.wait_ok()
        self.ids = [self.cli(i, "CLUSTER", "MYID").strip() for i in range(self.masters)]
        if self.watch_pid:
            w = _spawn_watchdog(self.dir, self.watch_pid)
            self._procs[w.pid] = w
            self.watchdog_pid = w.pid
        self.save()

    def _kill_all(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            self._wait_dead(pid)
            self._reap(pid)

    def stop(self):
        """Kills every node and the watchdog and removes the directory.
        Safe to call twice and after a failed start."""
        self._kill_all()
        if self.watchdog_pid and self.watchdog_pid != os.getpid():
            try:
                os.kill(self.watchdog_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap(self.watchdog_pid)
            self.watchdog_pid = None
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            for i in range(self.masters):
                shutil.rmtree(self._node_dir(i), ignore_errors=True)
            try:
                os.unlink(self._state_path())
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # --- faults -----------------------------------------------------------
    def kill(self, i):
        """SIGKILLs node i and waits until it is gone."""
        pid = self.pids[i]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self._wait_dead(pid):
            raise ClusterError(f"node{i} (pid {pid}) survived SIGKILL")
        self._reap(pid)
        self.save()

    def restart(self, i, wait=True):
        """Starts node i again on its port with its cluster config (same
        node ID and slots) and no data; kills it first if it still runs."""
        if self._alive_node(i):
            self.kill(i)
        self._spawn(i)
        self.save()
        if not self._wait_up(i, 10.0):
            raise ClusterError(f"node{i} did not restart; see {self._node_dir(i)}")
        if wait:
            self.wait_ok()

    def sigstop(self, i):
        os.kill(self.pids[i], signal.SIGSTOP)

    def sigcont(self, i):
        os.kill(self.pids[i], signal.SIGCONT)

    # --- slots ------------------------------------------------------------
    def slot_owners(self, i=0):
        """A list of SLOTS node indexes (-1: unassigned), as node i sees it."""
        owners = [-1] * SLOTS
        # CLUSTER NODES: id addr@bus flags master ping pong epoch link slots...
        raw = self.cli(i, "CLUSTER", "NODES", timeout=3, check=False)
        port_index = {p: n for n, p in enumerate(self.ports)}
        for line in raw.splitlines():
            f = line.split()
            if len(f) < 8 or "master" not in f[2]:
                continue
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            n = port_index.get(port, -1)
            for r in f[8:]:
                if r.startswith("["):
                    continue  # [slot->-id] migrating/importing markers
                if "-" in r:
                    a, b = r.split("-")
                    for s in range(int(a), int(b) + 1):
                        owners[s] = n
                else:
                    owners[int(r)] = n
        return owners

    def owner(self, slot, i=0):
        return self.slot_owners(i)[slot]

    def reshard(self, src, dst, nslots, timeout=60):
        """Moves nslots slots (with their keys) from node src to node dst
        with redis-cli --cluster reshard, then waits until all agree."""
        args = [REDIS_CLI]
        if self.password:
            if self.user:
                args += ["--user", self.user]
            args += ["--pass", self.password, "--no-auth-warning"]
        args += ["--cluster", "reshard", self.seeds[src],
                 "--cluster-from", self.ids[src], "--cluster-to", self.ids[dst],
                 "--cluster-slots", str(nslots), "--cluster-yes"]
        r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, text=True)
        if r.returncode != 0:
            raise ClusterError(f"redis-cli --cluster reshard: {r.stdout}{r.stderr}")
        self.wait_ok()

    def migrate_begin(self, slot, src, dst):
        """Puts slot in migration from src to dst (IMPORTING on dst,
        MIGRATING on src): src answers ASK for its keys that have moved."""
        self.cli(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[src])
        self.cli(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[dst])

    def migrate_keys(self, slot, src, dst, keys):
        """MIGRATEs keys (all in slot) from src to dst."""
        if not keys:
            return
        args = ["MIGRATE", "127.0.0.1", self.ports[dst], "", 0, 5000]
        if self.password:
            args += ["AUTH2", self.user, self.password] if self.user else [
                "AUTH", self.password]
        args += ["KEYS"] + list(keys)
        out = self.cli(src, *args)
        if "OK" not in out and "NOKEY" not in out:
            raise ClusterError(f"MIGRATE: {out}")

    def migrate_end(self, slot, dst):
        """Ends a migration: slot belongs to dst on every node."""
        for i in range(self.masters):
            if self._alive_node(i):
                self.cli(i, "CLUSTER", "SETSLOT", slot, "NODE", self.ids[dst])
        self.wait_ok()


def _spawn_watchdog(directory, pid):
    """Starts a detached process (redis_cluster.py watch) that stops the
    cluster in directory once pid has exited. A separate interpreter, not
    a fork: the caller may have threads."""
    return subprocess.Popen([sys.executable or "/usr/bin/python3", os.path.abspath(__file__),
                             "watch", directory, str(pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _watch(directory, pid):
    state = os.path.join(directory, "cluster.json")
    while _alive(pid) and os.path.exists(state):
        time.sleep(0.5)
    if os.path.exists(state):
        rc = RedisCluster.load(directory)
        rc.watchdog_pid = None
        rc.stop()


def main(argv):
    import argparse
    if not (os.access(REDIS_SERVER, os.X_OK) and os.access(REDIS_CLI, os.X_OK)):
        print("redis-server or redis-cli not installed", file=sys.stderr)
        return 77
    ap = argparse.ArgumentParser(description="A private Redis Cluster for tests.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("dir")
    s.add_argument("--masters", type=int, default=3)
    s.add_argument("--password")
    s.add_argument("--user")
    s.add_argument("--node-timeout-ms", type=int, default=2000)
    s.add_argument("--watch-pid", type=int)
    for name in ("stop", "node-ids", "seeds"):
        sub.add_parser(name).add_argument("dir")
    for name in ("kill", "restart", "sigstop", "sigcont"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("node", type=int)
    p = sub.add_parser("reshard")
    p.add_argument("dir")
    p.add_argument("src", type=int)
    p.add_argument("dst", type=int)
    p.add_argument("nslots", type=int)
    p = sub.add_parser("watch")
    p.add_argument("dir")
    p.add_argument("pid", type=int)
    p = sub.add_parser("slot")
    p.add_argument("key")
    p = sub.add_parser("owner")
    p.add_argument("dir")
    p.add_argument("slot", type=int)
    p = sub.add_parser("migrate-begin")
    p.add_argument("dir")
    p.add_argument("slot", type=int)
    p.add_argument("src", type=int)
    p.add_argument("dst", type=int)
    p = sub.add_parser("migrate-keys")
    p.add_argument("dir")
    p.add_argument("slot", type=int)
    p.add_argument("src", type=int)
    p.add_argument("dst", type=int)
    p.add_argument("keys", nargs="+")
    p = sub.add_parser("migrate-end")
    p.add_argument("dir")
    p.add_argument("slot", type=int)
    p.add_argument("dst", type=int)
    p = sub.add_parser("cli")
    p.add_argument("dir")
    p.add_argument("node", type=int)
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)

    try:
        if a.cmd == "watch":
            _watch(a.dir, a.pid)
            return 0
        if a.cmd == "slot":
            print(key_slot(a.key))
            return 0
        if a.cmd == "start":
            if os.path.exists(os.path.join(a.dir, "cluster.json")):
                print(f"{a.dir} already holds a cluster", file=sys.stderr)
                return 1
            rc = RedisCluster(a.dir, a.masters, a.password, a.user, a.node_timeout_ms,
                              watch_pid=a.watch_pid)
            rc.owns_dir = True
            rc.start()
            print("\n".join(rc.seeds))
            return 0
        if a.cmd == "stop":
            if not os.path.exists(os.path.join(a.dir, "cluster.json")):
                shutil.rmtree(a.dir, ignore_errors=True)
                return 0
            RedisCluster.load(a.dir).stop()
            return 0
        rc = RedisCluster.load(a.dir)
        if a.cmd == "seeds":
            print("\n".join(rc.seeds))
        elif a.cmd == "node-ids":
            print("\n".join(rc.ids))
        elif a.cmd == "kill":
            rc.kill(a.node)
        elif a.cmd == "restart":
            rc.restart(a.node)
        elif a.cmd == "sigstop":
            rc.sigstop(a.node)
        elif a.cmd == "sigcont":
            rc.sigcont(a.node)
        elif a.cmd == "reshard":
            rc.reshard(a.src, a.dst, a.nslots)
        elif a.cmd == "owner":
            print(rc.owner(a.slot))
        elif a.cmd == "migrate-begin":
            rc.migrate_begin(a.slot, a.src, a.dst)
        elif a.cmd == "migrate-keys":
            rc.migrate_keys(a.slot, a.src, a.dst, a.keys)
        elif a.cmd == "migrate-end":
            rc.migrate_end(a.slot, a.dst)
        elif a.cmd == "cli":
            sys.stdout.write(rc.cli(a.node, *a.args, check=False))
        return 0
    except (ClusterError, subprocess.TimeoutExpired, OSError, ValueError) as e:
        print(f"redis_cluster.py {a.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
