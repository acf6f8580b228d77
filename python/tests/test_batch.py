# SPDX-License-Identifier: MIT
"""Batch calls (match_prefix, get_many, contains_many, put_many) and the
GIL: calls over many blocks let other threads run meanwhile."""

import threading
import time

import pytest

import kvpool


@pytest.fixture
def chain(ns):
    keys = ns.hash_chain(list(range(16 * 40)))
    assert ns.put_many(keys[:30], [bytes([i]) * 100 for i in range(30)], chain=True) == [True] * 30
    return keys


def test_match_prefix(ns, chain):
    assert ns.match_prefix(chain) == 30
    assert ns.match_prefix(chain[:10]) == 10
    assert ns.match_prefix([]) == 0
    assert ns.match_prefix(chain[30:]) == 0
    assert ns.match_prefix(iter(chain)) == 30
    ns.remove(chain[5])
    assert ns.match_prefix(chain) == 5


def test_match_prefix_pin(pool, ns, chain):
    views = ns.match_prefix(chain, pin=True)
    assert len(views) == 30 and pool.pins_held() == 30
    assert [v.key for v in views] == chain[:30]
    assert all(bytes(v) == bytes([i]) * 100 for i, v in enumerate(views))
    kvpool.release_all(views)
    assert pool.pins_held() == 0
    assert ns.match_prefix(chain[30:], pin=True) == []
    views = ns.match_prefix(chain, True)
    del views
    assert pool.pins_held() == 0


def test_match_prefix_pin_runs_out(pool_factory, manifest):
    with kvpool.Pool(pool_factory(16 << 20, pins_per_client=8)) as pool:
        ns = pool.namespace(manifest)
        keys = list(range(1, 11))
        ns.put_many(keys, [b"x"] * 10)
        with pytest.raises(kvpool.NoPinsError):
            ns.match_prefix(keys, pin=True)
        assert pool.pins_held() == 0  # none kept
        assert len(ns.match_prefix(keys[:8], pin=True)) == 8


def test_get_many(pool, ns, chain):
    got = ns.get_many([chain[0], 12345, chain[29], chain[30]])
    assert got[1] is None and got[3] is None
    assert bytes(got[0]) == b"\0" * 100 and bytes(got[2]) == bytes([29]) * 100
    assert pool.pins_held() == 2
    kvpool.release_all(got)
    assert pool.pins_held() == 0
    assert ns.get_many([]) == []
    many = ns.get_many(chain)  # >= 16 keys: without the GIL
    assert sum(v is not None for v in many) == 30
    del many
    assert pool.pins_held() == 0


def test_get_many_runs_out(pool_factory, manifest):
    with kvpool.Pool(pool_factory(16 << 20, pins_per_client=8)) as pool:
        ns = pool.namespace(manifest)
        ns.put(1, b"x")
        with pytest.raises(kvpool.NoPinsError, match="get_many"):
            ns.get_many([1] * 9)
        assert pool.pins_held() == 0


def test_contains_many(ns, chain):
    assert ns.contains_many(chain) == [True] * 30 + [False] * 10
    assert ns.contains_many([chain[0], 5]) == [True, False]
    assert ns.contains_many([]) == []


def test_put_many(pool, ns):
    keys = list(range(100, 120))
    assert ns.put_many(keys, [b"v%d" % k for k in keys], tokens=16, user_tag=5) == [True] * 20
    assert ns.put_many(keys[:2] + [999], [b"a", b"b", b"c"]) == [False, False, True]
    with ns.get(105) as v:
        assert bytes(v) == b"v105" and v.tokens == 16 and v.user_tag == 5
    with pytest.raises(ValueError, match="3 keys but 2 datas"):
        ns.put_many([1, 2, 3], [b"a", b"b"])
    with pytest.raises(TypeError):
        ns.put_many([1], 5)
    with pytest.raises(TypeError):
        ns.put_many([1], ["text"])


def test_put_many_stops_at_first_error(ns):
    r = ns.reserve(3, 1)
    with pytest.raises(kvpool.BusyError, match=r"put_many: key 2 of 4 \(the ones before it are stored\)"):
        ns.put_many([1, 2, 3, 4], [b"a", b"b", b"c", b"d"])
    assert ns.contains_many([1, 2, 3, 4]) == [True, True, False, False]
    r.abort()


def test_put_many_chain(pool_factory, manifest):
    # chain=True gives block i the parent keys[i-1] (the first: parent=).
    # Which block prefix eviction then picks is sampled, not exact, so this
    # checks that chained batches store and evict, not the order.
    with kvpool.Pool(pool_factory(16 << 20, evict_policy="prefix")) as pool:
        ns = pool.namespace(manifest)
        ns.put(1, b"root")
        keys = list(range(2, 10))
        assert ns.put_many(keys, [bytes(4096)] * 8, parent=1, chain=True) == [True] * 8
        assert ns.match_prefix([1] + keys) == 9
        assert pool.evict_bytes(4096) >= 4096
        assert not all(ns.contains_many([1] + keys))


def runs_concurrently(call) -> bool:
    """True if the main thread made progress while call() ran in a thread."""
    state = {"start": None, "end": None}

    def worker():
        state["start"] = time.perf_counter()
        call()
        state["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    stamps = []
    t.start()
    while t.is_alive():
        stamps.append(time.perf_counter())
    t.join()
    start, end = state["start"], state["end"]
    assert start is not None and end is not None
    # Progress strictly inside the call, away from its edges.
    margin = (end - start) * 0.2
    inside = [s for s in stamps if start + margin < s < end - margin]
    return len(inside) > 100


def test_batches_release_the_gil(pool_factory, manifest):
    with kvpool.Pool(pool_factory(512 << 20)) as pool:
        ns = pool.namespace(manifest)
        data = [bytes(1 << 20)] * 200
        keys = list(range(1, 201))
        assert runs_concurrently(lambda: ns.put_many(keys, data))
        # verify() of a 1 MiB block and a big put() run without the GIL too.
        assert runs_concurrently(lambda: [ns.get(k).verify() for k in keys])
        big = bytes(4 << 20)
        assert runs_concurrently(lambda: [ns.put(k, big) for k in range(1000, 1020)])


def test_threads_and_detach_race(pool_path, manifest):
    # Threads run GIL-free batches and hot-path gets while the pool is
    # detached under them: each call either completes or raises ValueError,
    # and libkv's detach waits for the last pin.
    pool = kvpool.Pool(pool_path)
    ns = pool.namespace(manifest)
    keys = list(range(1, 65))
    ns.put_many(keys, [bytes(1024)] * 64)
    errors = []
    kept = []

    def worker():
        try:
            for i in range(2000):
                views = ns.get_many(keys)
                if i % 100 == 0:
                    kept.append(memoryview(views[0]))
                kvpool.release_all(views)
                v = ns.get(keys[i % 64])
                assert v is not None and v.length == 1024
                v.release()
                assert ns.match_prefix(keys) == 64
        except ValueError as e:
            if "detached" not in str(e):
                errors.append(e)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    pool.detach()
    for t in threads:
        t.join()
    assert errors == []
    assert all(m.tobytes() == bytes(1024) for m in kept)
    with kvpool.Pool(pool_path) as observer:
        assert observer.stats()["clients"] == (2 if kept else 1)
        kept.clear()
        assert observer.stats()["clients"] == 1
