# SPDX-License-Identifier: MIT
"""Pools: create, destroy, attach, detach, the inspection calls, namespaces."""

import errno
import os
import time

import pytest

import kvpool


def test_create_attach_detach(pool_factory):
    path = pool_factory(32 << 20, max_clients=4, pins_per_client=64, evict_policy="lru")
    with kvpool.Pool(path) as pool:
        assert pool.path == path
        assert pool.attached
        assert pool.evict_policy == "lru"
        assert pool.mapping_size >= 32 << 20
        assert pool.base_address != 0
        assert pool.slab_size == 4 << 20
        assert 0 <= pool.client_index < 4
        assert repr(pool) == f"<kvpool.Pool {path}>"
    assert not pool.attached
    assert repr(pool) == f"<kvpool.Pool {path} detached>"
    pool.detach()  # idempotent


@pytest.mark.parametrize("call", [
    lambda p: p.stats(), lambda p: p.usage(), lambda p: p.live_bytes(), lambda p: p.clients(),
    lambda p: p.pins_held(), lambda p: p.reap(), lambda p: p.evict_bytes(1), lambda p: p.base_address,
    lambda p: p.mapping_size, lambda p: p.slab_size, lambda p: p.evict_policy, lambda p: p.client_index,
    lambda p: p.namespace(kvpool.Manifest("m", 16)),
])
def test_detached_pool_raises(pool_path, call):
    pool = kvpool.Pool(pool_path)
    pool.detach()
    with pytest.raises(ValueError, match="detached"):
        call(pool)


def test_create_options(pool_factory):
    path = pool_factory(16 << 20, slab_size=1 << 16, avg_block_size=4096, max_clients=2,
                        pins_per_client=16, max_namespaces=2, max_entries=1000,
                        evict_policy=3, hugepages="prefer", mode=0o600, prefault=True)
    assert os.stat(path).st_mode & 0o777 == 0o600
    with kvpool.Pool(path) as pool:
        assert pool.slab_size == 1 << 16
        assert pool.evict_policy == "fifo"
        assert pool.stats()["n_entries"] <= 1000


def test_create_existing_path_fails(pool_path):
    with pytest.raises(kvpool.Error) as ei:
        kvpool.create_pool(pool_path, 32 << 20)
    assert ei.value.errno == errno.EEXIST
    assert pool_path in str(ei.value)
    kvpool.create_pool(pool_path, 32 << 20, replace=True)


def test_create_bad_options(pool_factory, tmp_path):
    path = str(tmp_path / "never-created")
    with pytest.raises(kvpool.Error, match="slab_size 12345: expected a power of two") as ei:
        kvpool.create_pool("/dev/shm/kvpool-pytest-bad", 16 << 20, slab_size=12345)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ValueError, match="unknown eviction policy 'nope'"):
        kvpool.create_pool(path, 16 << 20, evict_policy="nope")
    with pytest.raises(ValueError, match="unknown hugepages mode"):
        kvpool.create_pool(path, 16 << 20, hugepages="always")
    with pytest.raises(TypeError):
        kvpool.create_pool(path, -1)
    with pytest.raises(kvpool.NotFoundError):
        kvpool.create_pool("/nonexistent-dir/pool", 16 << 20)
    assert not os.path.exists(path)


def test_destroy_pool(pool_path):
    kvpool.destroy_pool(pool_path)
    assert not os.path.exists(pool_path)
    with pytest.raises(kvpool.NotFoundError):
        kvpool.destroy_pool(pool_path)


def test_replaced(pool_path):
    """st_dev/st_ino name the mapped file; replaced() says when the path
    names another file or none, and the old mapping keeps working."""
    st = os.stat(pool_path)
    old = kvpool.Pool(pool_path)
    try:
        assert (old.st_dev, old.st_ino) == (st.st_dev, st.st_ino)
        assert not old.replaced()
        ns = old.namespace(kvpool.Manifest("m", 16))
        assert ns.put(1, b"old")
        kvpool.create_pool(pool_path, 32 << 20, replace=True)
        assert old.replaced()
        with kvpool.Pool(pool_path) as new:
            assert new.st_ino == os.stat(pool_path).st_ino != old.st_ino
            assert not new.replaced()
            assert 1 not in new.namespace(kvpool.Manifest("m", 16))
        with ns.get(1) as v:  # the orphan is still mapped and readable
            assert bytes(v) == b"old"
        os.unlink(pool_path)
        assert old.replaced()
        old.detach()
        assert old.replaced()  # examines the path, not the mapping
        assert old.st_ino == st.st_ino
    finally:
        old.detach()


def test_attach_errors(pool_factory, tmp_path):
    with pytest.raises(kvpool.NotFoundError, match="No such file"):
        kvpool.Pool(str(tmp_path / "missing"))
    junk = tmp_path / "zeros"
    junk.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(kvpool.BadRegionError, match="magic is 0") as ei:
        kvpool.Pool(str(junk))
    assert ei.value.errno == errno.ENODATA
    junk.write_bytes(b"\0" * 10)
    with pytest.raises(kvpool.BadRegionError, match="10 bytes"):
        kvpool.Pool(str(junk))
    path = pool_factory(16 << 20, max_clients=1)
    with kvpool.Pool(path):
        with pytest.raises(kvpool.TooManyClientsError, match="max_clients 1") as ei:
            kvpool.Pool(path, no_reap=True)
        assert ei.value.errno == errno.EUSERS
    kvpool.Pool(path).detach()  # the slot came back


def test_stats_usage_clients(pool, ns):
    assert ns.put(1, b"a" * 1000)
    assert ns.get(1) is not None  # a hit, released at once
    assert ns.get(2) is None      # a miss
    st = pool.stats()
    assert set(st) == {"capacity", "slab_size", "page_size", "numa_node", "backing", "clients",
                       "n_entries", "gets", "hits", "misses", "puts", "dedups", "evictions",
                       "removes", "bytes_committed", "bytes_freed", "reaps"}
    assert (st["puts"], st["hits"], st["misses"], st["clients"]) == (1, 1, 1, 1)
    assert pool.live_bytes() == 1000
    u = pool.usage()
    assert u["entries_committed"] == 1 and u["bytes_committed"] == 1000
    assert u["pins"] == 0 and u["orphan_blocks"] == 0 and u["bad_links"] == 0
    (me,) = pool.clients()
    assert me["pid"] == os.getpid() and me["alive"] and me["slot"] == pool.client_index
    assert me["pins"] == 0 and me["reservations"] == 0
    v = ns.get(1)
    assert pool.pins_held() == 1 and pool.usage()["pins"] == 1
    v.release()
    assert pool.pins_held() == 0
    assert pool.reap() == 0


def test_evict_bytes(pool, ns):
    for k in range(8):
        ns.put(k, bytes(4096))
    assert pool.evict_bytes(4096) >= 4096
    assert sum(ns.contains_many(range(8))) < 8


def test_detach_waits_for_views(pool_path, manifest):
    pool = kvpool.Pool(pool_path)
    ns = pool.namespace(manifest)
    ns.put(1, b"payload")
    v = ns.get(1)
    mv = memoryview(ns.get(1))
    r = ns.reserve(2, 8)
    with kvpool.Pool(pool_path) as observer:
        assert observer.stats()["clients"] == 2
        pool.detach()
        # Closed for new calls, but the mapping stays for what is pinned.
        with pytest.raises(ValueError, match="detached"):
            ns.get(1)
        with pytest.raises(ValueError, match="detached"):
            ns.put(3, b"x")
        assert bytes(v) == b"payload" and bytes(mv) == b"payload"
        assert observer.stats()["clients"] == 2
        v.release()
        mv.release()
        assert observer.stats()["clients"] == 2
        r.abort()
        # The last hold is gone: libkv's detach ran.
        assert observer.stats()["clients"] == 1


def test_pool_collected_detaches(pool_path, manifest):
    with kvpool.Pool(pool_path) as observer:
        pool = kvpool.Pool(pool_path)
        assert observer.stats()["clients"] == 2
        del pool
        assert observer.stats()["clients"] == 1


def test_namespace_round_trip(pool, manifest):
    ns = pool.namespace(manifest)
    assert ns.manifest == manifest
    assert ns.seed == manifest.seed
    assert ns.block_tokens == 16
    assert ns.pool is pool
    assert repr(ns) == f"<kvpool.Namespace {ns.id} of {pool.path} (test-model)>"
    again = pool.namespace(ns.id)
    assert again.id == ns.id and again.manifest == manifest and again.seed == ns.seed
    assert pool.namespace(manifest).id == ns.id
    other = pool.namespace(kvpool.Manifest("test-model", 16, dtype="bf16"))
    assert other.id != ns.id
    assert other.seed != ns.seed


def test_namespace_errors(pool_factory):
    with kvpool.Pool(pool_factory(16 << 20, max_namespaces=1)) as pool:
        ns = pool.namespace(kvpool.Manifest("a", 16))
        with pytest.raises(kvpool.PoolFullError, match=r"namespace table is full \(max_namespaces 1\)"):
            pool.namespace(kvpool.Manifest("b", 16))
        unused = next(i for i in range(64) if i != ns.id)
        with pytest.raises(kvpool.NotFoundError, match=f"namespace {unused}"):
            pool.namespace(unused)
        with pytest.raises(TypeError, match="Manifest or a namespace id"):
            pool.namespace("a")


def test_namespaces_are_isolated(pool, manifest):
    a = pool.namespace(manifest)
    b = pool.namespace(kvpool.Manifest("test-model", 16, tp_rank=1, tp_world=2))
    a.put(1, b"a")
    assert not b.contains(1)
    assert b.get(1) is None
    assert b.put(1, b"b")
    assert bytes(a.get(1)) == b"a" and bytes(b.get(1)) == b"b"


def test_two_clients_share_blocks(pool_path, manifest):
    with kvpool.Pool(pool_path) as p1, kvpool.Pool(pool_path) as p2:
        n1, n2 = p1.namespace(manifest), p2.namespace(manifest)
        assert n1.id == n2.id
        n1.put(42, b"shared")
        with n2.get(42) as v:
            assert bytes(v) == b"shared"
        assert not n2.put(42, b"again")


def test_forked_child_neither_uses_nor_releases_the_parents_client(pool_path, manifest):
    pool = kvpool.Pool(pool_path)
    ns = pool.namespace(manifest)
    ns.put(1, b"parent's")
    v = ns.get(1)
    r = ns.reserve(2, 8)
    mv = memoryview(ns.get(1))
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, drop everything, exit without cleanup
        status = 0
        try:
            for call in (lambda: ns.get(1), lambda: ns.put(3, b"x"), lambda: pool.stats(),
                         lambda: r.commit()):
                try:
                    call()
                    status |= 1
                except ValueError as e:
                    if "attach again after fork()" not in str(e):
                        status |= 2
            if bytes(mv) != b"parent's":
                status |= 4
            v.release()
            r.abort()
            del mv
            pool.detach()
            with kvpool.Pool(pool_path) as own:  # the child attaches on its own
                if bytes(own.namespace(manifest).get(1)) != b"parent's":
                    status |= 8
        except BaseException:
            status |= 16
        os.write(wfd, bytes([status]))
        os._exit(0)
    os.close(wfd)
    status = os.read(rfd, 1)
    os.close(rfd)
    os.waitpid(pid, 0)
    assert status == b"\0"
    # The child released nothing of ours.
    assert pool.pins_held() == 2
    (me,) = [c for c in pool.clients() if c["slot"] == pool.client_index]
    assert me["reservations"] == 1
    assert bytes(v) == b"parent's"
    r.buffer[:] = b"12345678"
    r.commit()
    v.release()
    del mv
    assert pool.pins_held() == 0
    pool.detach()


def test_killed_clients_pins_are_reaped(pool, ns):
    import signal
    ns.put(1, b"x")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with kvpool.Pool(pool.path) as own:
                mine = own.namespace(ns.manifest)
                views = [mine.get(1) for _ in range(5)]
                r = mine.reserve(2, 64)
                os.write(wfd, b"k" if all(views) and r else b"?")
                time.sleep(60)
        finally:
            os._exit(1)
    os.close(wfd)
    assert os.read(rfd, 1) == b"k"
    os.close(rfd)
    assert pool.usage()["pins"] == 5 and pool.usage()["entries_reserved"] == 1
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert pool.reap() == 1
    u = pool.usage()
    assert u["pins"] == 0 and u["entries_reserved"] == 0
    assert ns.reserve(2, 64) is not None
