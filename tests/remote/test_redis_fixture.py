#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The fixture itself, through its Python API, as the remote tier's Python
tests use it: start, slot map, a node killed and restarted empty, a
reshard, stop removing everything. Exit 77 when redis-server is missing."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis_cluster  # noqa: E402
from redis_cluster import RedisCluster, key_slot  # noqa: E402


def check(cond, what):
    if not cond:
        print("FAIL:", what, file=sys.stderr)
        sys.exit(1)


def main():
    if not (os.access(redis_cluster.REDIS_SERVER, os.X_OK)
            and os.access(redis_cluster.REDIS_CLI, os.X_OK)):
        print("redis-server or redis-cli not installed")
        return 77
    check(key_slot("foo") == 12182, "key_slot(foo)")
    check(key_slot("{user1000}.following") == key_slot("{user1000}.followers"), "hash tags")
    t0 = time.monotonic()
    with RedisCluster(watch_pid=os.getpid()) as rc:
        d, pids, wd = rc.dir, list(rc.pids), rc.watchdog_pid
        check(len(rc.seeds) == 3 and len(set(rc.ids)) == 3, "three masters")
        owners = rc.slot_owners()
        check(set(owners) == {0, 1, 2}, "every slot served by one of the three")
        check(rc.cli(0, "-c", "SET", "foo", "bar").strip() == "OK", "SET through -c")
        o = rc.owner(key_slot("foo"))
        check(rc.cli(o, "GET", "foo").strip() == "bar", "the owner holds the key")
        rc.kill(o)
        rc.restart(o)
        check(rc.cli(o, "GET", "foo").strip() == "", "restarted empty")
        before = rc.slot_owners().count(1)
        rc.reshard(0, 1, 10)
        check(rc.slot_owners().count(1) == before + 10, "reshard moved 10 slots")
        check(wd and redis_cluster._alive(wd), "watchdog running")
    check(not os.path.exists(d), "directory removed")
    check(not any(redis_cluster._alive(p) for p in pids), "nodes gone")
    time.sleep(0.2)
    check(not redis_cluster._alive(wd), "watchdog gone")
    r = subprocess.run(["pgrep", "-f", d], capture_output=True, text=True)
    check(r.stdout.strip() == "", "nothing of the cluster left running")
    print(f"ok in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
