# SPDX-License-Identifier: MIT
"""Pools: create, attach, detach, stats; namespaces and manifests."""

import errno
import os

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
        st = pool.stats()
        assert st["clients"] == 1
        assert st["capacity"] > 0
        assert pool.live_bytes() == 0
    assert not pool.attached
    with pytest.raises(ValueError, match="detached"):
        pool.stats()
    pool.detach()  # idempotent


def test_create_existing_path_fails(pool_path):
    with pytest.raises(kvpool.Error) as ei:
        kvpool.create_pool(pool_path, 32 << 20)
    assert ei.value.errno == errno.EEXIST
    kvpool.create_pool(pool_path, 32 << 20, replace=True)


def test_destroy_pool(pool_path):
    kvpool.destroy_pool(pool_path)
    assert not os.path.exists(pool_path)
    with pytest.raises(kvpool.NotFoundError):
        kvpool.destroy_pool(pool_path)


def test_namespace_round_trip(pool, manifest):
    ns = pool.namespace(manifest)
    assert ns.manifest == manifest
    assert ns.seed == manifest.seed
    assert ns.pool is pool
    again = pool.namespace(ns.id)
    assert again.id == ns.id and again.manifest == manifest
    other = pool.namespace(kvpool.Manifest("test-model", 16, dtype="bf16"))
    assert other.id != ns.id


def test_put_get_contains_remove(ns):
    assert ns.put(1, b"hello")
    assert not ns.put(1, b"other")  # dedup: nothing copied
    assert ns.contains(1) and 1 in ns
    with ns.get(1) as v:
        assert bytes(v) == b"hello"
        assert v.length == 5 == len(v)
        assert v.verify()
    assert ns.get(2) is None
    assert ns.remove(1)
    assert not ns.remove(1)
    assert not ns.contains(1)


def test_reserve_commit(ns):
    r = ns.reserve(7, 64, tokens=16, priority=3, user_tag=9)
    r.buffer[:] = b"y" * 64
    r.commit()
    assert r.state == "committed"
    v = ns.get(7)
    assert bytes(v) == b"y" * 64
    assert (v.tokens, v.priority, v.user_tag) == (16, 3, 9)
    assert ns.reserve(7, 64) is None
