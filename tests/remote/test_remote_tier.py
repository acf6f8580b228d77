# SPDX-License-Identifier: MIT
"""The remote tier end to end: two kvpoolds standing for two hosts.

A 3-master Redis Cluster (redis_cluster.py) and two kvpoolds with their own
config, control socket, shm directory and pool, both with [pool.remote] on
that cluster. Host A's blocks are uploaded behind its back (write-behind
from the feed); host B asks kvpoold for what it misses (kv_remote_fetch)
and gets them byte-exact; the reference engines of both hosts produce the
same logits that way. Then the faults: values overwritten in Redis (another
key's value, a wrong namespace, a flipped byte, a truncated value), a
master SIGKILLed during uploads and during a fetch, Redis restarted empty,
and a reshard during a run. After each, nothing corrupt is in B's pool
(kvctl verify), B's daemon still answers, and the counters say what
happened.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "python" / "tests"), str(ROOT / "tests" / "events")]

import kvpool  # noqa: E402
from e2e_support import Kvpoold, engine, tokens  # noqa: E402
from redis_cluster import RedisCluster  # noqa: E402

BLOCK = 16
MODEL = "remote-test"
HEADER = 128  # KV_REMOTE_HEADER_SIZE_V1 (uapi/kvpool/remote.h)


class Host(Kvpoold):
    """A kvpoold whose pool has a remote tier on the cluster."""

    def __init__(self, workdir: Path, tag: str, seeds: list[str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, tag)
        self.events_ep = f"ipc://{workdir}/events"
        with open(self.config, "a") as f:
            f.write("\n[pool.remote]\n"
                    "seeds = [" + ", ".join(f'"{s}"' for s in seeds) + "]\n"
                    'key_prefix = "kvt:"\n'
                    "timeout_ms = 300\n"
                    "\n[pool.events]\n"
                    f'endpoint = "{self.events_ep}"\n'
                    'topic = "alpha"\n')

    def remote(self) -> dict[str, Any]:
        return self.kvctl("remote", "status", "alpha")["remote"]

    def verify(self) -> dict[str, Any]:
        return self.kvctl("verify", "alpha")


@pytest.fixture(scope="module")
def world(tmp_path_factory: Any) -> Any:
    if not os.path.exists("/usr/bin/redis-server"):
        pytest.skip("redis-server is not installed")
    base = tmp_path_factory.mktemp("remote")
    with RedisCluster() as rc:
        tag = f"{os.getpid()}-remote"
        a = Host(base / "a", tag + "-a", rc.seeds)
        b = Host(base / "b", tag + "-b", rc.seeds)
        try:
            a.start()
            b.start()
            yield rc, a, b
        finally:
            a.close()
            b.close()


def put_chain(path: str, n: int, size: int, seed: int) -> tuple[list[int], list[bytes]]:
    """n blocks of size bytes, each naming the one before as its parent."""
    rng = random.Random(seed)
    keys = [rng.getrandbits(128) for _ in range(n)]
    datas = [rng.randbytes(size) for _ in range(n)]
    with kvpool.Pool(path) as pool:
        ns = pool.namespace(kvpool.Manifest(MODEL, BLOCK))
        for i, (k, d) in enumerate(zip(keys, datas)):
            ns.put(k, d, tokens=BLOCK, parent=keys[i - 1] if i else None)
    return keys, datas


def wait_uploaded(host: Host, at_least: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = host.remote()
        if r["uploads"] >= at_least and r["queue"]["blocks"] == 0:
            return r
        assert time.monotonic() < deadline, f"uploads stalled: {r}"
        time.sleep(0.05)


def fetch(host: Host, keys: list[int], first: int = 0, timeout_ms: int = 5000) -> dict[str, Any]:
    with kvpool.Pool(host.pool_path) as pool:
        ns = pool.namespace(kvpool.Manifest(MODEL, BLOCK))
        return ns.remote_fetch(keys, first, timeout_ms=timeout_ms, socket=str(host.sock))


def read_back(host: Host, keys: list[int]) -> list[bytes | None]:
    with kvpool.Pool(host.pool_path) as pool:
        ns = pool.namespace(kvpool.Manifest(MODEL, BLOCK))
        out: list[bytes | None] = []
        for k in keys:
            v = ns.get(k)
            out.append(None if v is None else bytes(v))
            if v is not None:
                v.release()
        return out


def redis_key(rc: RedisCluster, key: int) -> str:
    """The Redis key of a block (found by its key hex suffix on the nodes)."""
    suffix = f":{key:032x}"
    for i in range(rc.masters):
        for k in rc.cli(i, "--scan", "--pattern", f"kvt:*{suffix}", check=False).split():
            if k.endswith(suffix):
                return k
    raise AssertionError(f"block {key:032x} is in no node")


def redis_client(rc: RedisCluster) -> Any:
    from redis.cluster import ClusterNode, RedisCluster as Client

    host, port = rc.seeds[0].rsplit(":", 1)
    return Client(startup_nodes=[ClusterNode(host, int(port))], socket_timeout=5)


def assert_clean(host: Host) -> None:
    v = host.verify()
    assert v["bad_count"] == 0, v


def test_b_fetches_what_a_stored_byte_exact(world: Any) -> None:
    rc, a, b = world
    keys, datas = put_chain(a.pool_path, 24, 64 << 10, 1)
    up = wait_uploaded(a, 24)
    assert up["upload_errors"] == 0 and up["upload_dropped"] == 0, up
    r = fetch(b, keys)
    assert r["committed"] == 24 and r["fetched"] == 24, r
    assert r["fetched_bytes"] == 24 * (64 << 10)
    assert read_back(b, keys) == datas
    # Fetched blocks are not uploaded back by B.
    time.sleep(0.3)
    rb = b.remote()
    assert rb["uploads"] == 0, rb
    assert rb["fetched_blocks"] == 24
    # Asking again: everything present, nothing fetched.
    again = fetch(b, keys)
    assert again["committed"] == 24 and again["present"] == 24 and again["fetched"] == 0
    # A chain B never saw stops at its first block: a miss.
    miss = fetch(b, [random.Random(9).getrandbits(128) for _ in range(3)])
    assert miss["committed"] == 0 and miss["missing"] == 1, miss
    assert_clean(b)
    m = b.kvctl("status", "alpha")
    assert m["remote"]["fetch_missing"] >= 1


def test_engines_on_both_hosts_give_identical_logits(world: Any, tmp_path: Path) -> None:
    rc, a, b = world
    prompt, suffix = tokens(4 * BLOCK + 5, 11), tokens(9, 12)
    base = a.remote()["uploads"]
    stored = engine("store", tmp_path, a.pool_path, [prompt])
    assert stored["stats"][0]["saved_blocks"] >= 4
    wait_uploaded(a, base + 4)
    variant = {"extra": {"remote_fetch": True, "control_socket": str(b.sock)}}
    rb = engine("reuse", tmp_path, b.pool_path, [prompt], suffix=suffix, variant=variant,
                max_tokens=6)
    assert rb["pool"]["stats"]["remote_blocks"] == 4, rb["pool"]["stats"]
    assert rb["pool"]["external"] == 4 * BLOCK, rb["pool"]["stats"]
    assert rb["pool"]["stats"]["failed_blocks"] == 0
    ra = engine("reuse", tmp_path, a.pool_path, [prompt], suffix=suffix, max_tokens=6)
    import torch

    assert torch.equal(rb["pool"]["logits"], ra["pool"]["logits"]), \
        "host B's logits after a remote fetch differ from host A's"
    assert torch.equal(rb["pool"]["logits"], rb["local"]["logits"])
    assert rb["pool"]["tokens"] == rb["full"]["tokens"]
    assert_clean(b)


def test_uploads_are_published_as_remote_events(world: Any) -> None:
    from events_support import Subscriber

    rc, a, b = world
    sub = Subscriber(a.events_ep, "alpha")
    try:
        sub.pump(0.3)  # the subscription reaches the publisher
        base = a.remote()["uploads"]
        keys, _ = put_chain(a.pool_path, 5, 4 << 10, 50)
        wait_uploaded(a, base + 5)
        deadline = time.monotonic() + 10
        want = {k & ((1 << 64) - 1) for k in keys}  # vLLM's int form: the low 64 bits
        while not want <= sub.remote and time.monotonic() < deadline:
            sub.pump(0.2)
        assert want <= sub.index, "the pool's own Stored events (medium CPU) are missing"
        assert want <= sub.remote, "no Stored events of the remote medium for the uploads"
        media = {e.get("medium") for e in sub.events if e["type"] == "BlockStored"}
        assert "REDIS" in media, media
    finally:
        sub.close()


BAD_VALUES = ["other_key", "namespace", "flipped", "truncated"]


@pytest.mark.parametrize("kind", BAD_VALUES)
def test_bad_values_are_never_committed(world: Any, kind: str) -> None:
    rc, a, b = world
    base = a.remote()["uploads"]
    # A chain of its own per case: a chain already in A's pool is not
    # committed again (the puts dedup), so it would not be uploaded again.
    keys, datas = put_chain(a.pool_path, 6, 8 << 10, 100 + BAD_VALUES.index(kind))
    wait_uploaded(a, base + 6)
    client = redis_client(rc)
    bad = 3
    k = redis_key(rc, keys[bad])
    value = bytearray(client.get(k))
    if kind == "other_key":
        value = bytearray(client.get(redis_key(rc, keys[0])))
    elif kind == "namespace":
        value[16] ^= 1  # ns_digest_lo
    elif kind == "flipped":
        value[HEADER + 100] ^= 0x40
    else:
        value = value[: HEADER + 4096]
    client.set(k, bytes(value))
    before = b.remote()["rejected"]
    r = fetch(b, keys)
    assert r["committed"] == bad and r["rejected"] == 1, r
    assert read_back(b, keys[:bad]) == datas[:bad]
    assert read_back(b, keys[bad:]) == [None] * (len(keys) - bad)
    after = b.remote()["rejected"]
    assert sum(after.values()) == sum(before.values()) + 1, (before, after)
    assert_clean(b)


def test_redis_restarted_empty_turns_into_misses(world: Any) -> None:
    rc, a, b = world
    base = a.remote()["uploads"]
    keys, _ = put_chain(a.pool_path, 8, 4 << 10, 200)
    wait_uploaded(a, base + 8)
    for i in range(rc.masters):
        rc.restart(i, wait=False)
    rc.wait_ok()
    # The first request may find the client's connection to the node gone
    # (an error); then the node answers that it has nothing (a miss).
    r = fetch(b, keys)
    assert r["committed"] == 0 and r["missing"] + r["errors"] == 1, r
    missing = b.remote()["fetch_missing"]
    r = fetch(b, keys)
    assert r["committed"] == 0 and r["missing"] == 1, r
    assert b.remote()["fetch_missing"] == missing + 1
    assert_clean(b)


def test_master_killed_mid_upload_and_mid_fetch(world: Any) -> None:
    rc, a, b = world
    # Mid-upload: a master dies once the uploads of a large chain began.
    base = a.remote()
    result: dict[str, Any] = {}
    putter = threading.Thread(
        target=lambda: result.update(chain=put_chain(a.pool_path, 40, 512 << 10, 300)))
    putter.start()
    deadline = time.monotonic() + 20
    while a.remote()["uploads"] == base["uploads"] and time.monotonic() < deadline:
        time.sleep(0.005)
    rc.kill(1)
    putter.join()
    keys, datas = result["chain"]
    while a.remote()["queue"]["blocks"] and time.monotonic() < deadline:
        time.sleep(0.05)
    ra = a.remote()
    assert ra["upload_errors"] > base["upload_errors"], ra
    assert ra["queue"]["blocks"] == 0, ra
    assert a.kvctl("status", "alpha")["name"] == "alpha"  # the daemon kept answering
    # Mid-fetch: B reads the chain while that master is still down; the
    # chain stops at the first block it held, and what came is exact.
    r = fetch(b, keys, timeout_ms=3000)
    assert r["committed"] < 40 and (r["errors"] + r["missing"]) == 1, r
    assert read_back(b, keys[: r["committed"]]) == datas[: r["committed"]]
    assert b.remote()["fetch_errors"] + b.remote()["fetch_missing"] >= 1
    assert_clean(b)
    rc.restart(1)
    # Uploads work again once it is back.
    base = a.remote()["uploads"]
    keys2, datas2 = put_chain(a.pool_path, 6, 4 << 10, 301)
    wait_uploaded(a, base + 6)
    r2 = fetch(b, keys2)
    assert r2["committed"] == 6, r2
    assert read_back(b, keys2) == datas2


def test_master_killed_while_a_fetch_waits_on_it(world: Any) -> None:
    """A fetch is in flight on a master (stopped, so the fetch waits on
    its reply) when the master is SIGKILLed: the fetch ends with an error
    at that master's first block, within its timeout; what it committed
    before is exact; the daemon keeps answering."""
    rc, a, b = world
    base = a.remote()["uploads"]
    keys, datas = put_chain(a.pool_path, 24, 64 << 10, 350)
    wait_uploaded(a, base + 24)
    owners = [rc.owner(int(rc.cli(0, "CLUSTER", "KEYSLOT", redis_key(rc, k)).strip()))
              for k in keys]
    victim = owners[5]
    first = owners.index(victim)
    errors = b.remote()["fetch_errors"]
    rc.sigstop(victim)
    result: dict[str, Any] = {}
    fetcher = threading.Thread(target=lambda: result.update(r=fetch(b, keys, timeout_ms=5000)))
    t0 = time.monotonic()
    try:
        fetcher.start()
        time.sleep(0.1)  # the fetch is now waiting on the stopped master
        rc.kill(victim)
    finally:
        fetcher.join()
    took = time.monotonic() - t0
    r = result["r"]
    assert r["committed"] == first and r["errors"] == 1 and r["missing"] == 0, (r, first)
    assert took < 5.0, took
    assert read_back(b, keys[:first]) == datas[:first]
    assert b.remote()["fetch_errors"] == errors + 1
    assert b.kvctl("status", "alpha")["name"] == "alpha"
    assert_clean(b)
    rc.restart(victim)
    r = fetch(b, keys)  # the master came back empty: a miss at the same block
    assert r["committed"] == first and r["missing"] == 1, (r, first)


def test_reshard_during_a_run(world: Any) -> None:
    rc, a, b = world
    base = a.remote()["uploads"]
    keys, datas = put_chain(a.pool_path, 40, 16 << 10, 400)
    wait_uploaded(a, base + 40)
    mover = threading.Thread(target=rc.reshard, args=(0, 2, 2000))
    mover.start()
    more, more_datas = put_chain(a.pool_path, 20, 16 << 10, 401)
    r = fetch(b, keys, timeout_ms=10000)
    mover.join()
    deadline = time.monotonic() + 20
    while a.remote()["queue"]["blocks"] and time.monotonic() < deadline:
        time.sleep(0.05)
    # A block moving at the moment it is read may be a miss (redis-cli
    # moves keys with MIGRATE); whatever came must be exact.
    assert read_back(b, keys[: r["committed"]]) == datas[: r["committed"]]
    r = fetch(b, keys, timeout_ms=10000)
    assert r["committed"] == 40, r
    assert read_back(b, keys) == datas
    r2 = fetch(b, more, timeout_ms=10000)
    assert read_back(b, more[: r2["committed"]]) == more_datas[: r2["committed"]]
    assert_clean(b)
    assert b.kvctl("remote", "status")["pools"][0]["pool"] == "alpha"


def test_reload_restarts_a_changed_tier(world: Any) -> None:
    import signal

    rc, a, b = world
    text = b.config.read_text().replace('timeout_ms = 300\n', 'timeout_ms = 300\nmedium = "REDIS-B"\n')
    b.config.write_text(text)
    assert b.proc is not None
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while b.remote()["medium"] != "REDIS-B":
        assert time.monotonic() < deadline, b.remote()
        time.sleep(0.05)
    base = a.remote()["uploads"]
    keys, datas = put_chain(a.pool_path, 3, 4 << 10, 500)
    wait_uploaded(a, base + 3)
    r = fetch(b, keys)
    assert r["committed"] == 3, r
    assert read_back(b, keys) == datas
