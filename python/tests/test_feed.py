# SPDX-License-Identifier: MIT
"""Token ids reach the pool's change feed (uapi/PROTOCOL.md section 13):
Namespace.put(token_ids=), Reservation.commit(token_ids=), read back from
the region's feed slots as kvpoold's drainer reads them."""

import mmap
import struct
from typing import Callable

import pytest

import kvpool

FEED_SLOT = 1024
HEADER_FEED_OFF = 296  # kv_region_header.feed_off
KIND_COMMIT = 1
SEQ_PUBLISHED = 2


def records(path: str) -> list[dict[str, object]]:
    """The published records of the feed, in ticket order."""
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            feed_off, _feed_len, slots = struct.unpack_from("<QQI", m, HEADER_FEED_OFF)
            head = struct.unpack_from("<Q", m, feed_off)[0]
            out = []
            for t in range(1, head + 1):
                at = feed_off + 256 + ((t - 1) % slots) * FEED_SLOT
                seq, kind, flags, ns, n_ids, key_lo, key_hi = struct.unpack_from(
                    "<QIIIIQQ", m, at)
                assert seq >> 16 == t and seq & 0xF == SEQ_PUBLISHED
                ids = list(struct.unpack_from(f"<{n_ids}I", m, at + 128))
                out.append({"kind": kind, "ns": ns, "key": key_hi << 64 | key_lo, "ids": ids})
            return out
        finally:
            m.close()


@pytest.fixture
def feed_ns(pool_factory: Callable[..., str]):
    path = pool_factory(feed_slots=64)
    pool = kvpool.Pool(path)
    ns = pool.namespace(kvpool.Manifest("feed-model", 4, dtype="fp16"))
    yield path, ns
    pool.detach()


def test_put_records_token_ids(feed_ns) -> None:
    path, ns = feed_ns
    assert ns.put(7, b"x" * 4096, tokens=4, token_ids=[10, 11, 12, 13])
    assert ns.put(8, b"y" * 4096, parent=7)
    recs = records(path)
    assert [r["kind"] for r in recs] == [KIND_COMMIT, KIND_COMMIT]
    assert recs[0]["ids"] == [10, 11, 12, 13]
    assert recs[1]["ids"] == []
    assert recs[0]["key"] == 7 and recs[0]["ns"] == ns.id


def test_reservation_commit_records_token_ids(feed_ns) -> None:
    path, ns = feed_ns
    r = ns.reserve(9, 4096)
    assert r is not None
    r.commit(token_ids=(1, 2, 3, 4))
    assert records(path)[-1]["ids"] == [1, 2, 3, 4]


def test_bad_token_ids(feed_ns) -> None:
    _, ns = feed_ns
    with pytest.raises(OverflowError):
        ns.put(10, b"z" * 4096, token_ids=[-1])
    with pytest.raises(OverflowError):
        ns.put(10, b"z" * 4096, token_ids=[1 << 32])


def test_pool_without_feed_takes_token_ids(pool_factory: Callable[..., str]) -> None:
    pool = kvpool.Pool(pool_factory())
    try:
        ns = pool.namespace(kvpool.Manifest("feed-model", 4, dtype="fp16"))
        assert ns.put(1, b"a" * 4096, token_ids=[1, 2, 3, 4])
    finally:
        pool.detach()


def test_engine_save_records_block_token_ids(pool_factory: Callable[..., str]) -> None:
    """PagedKVStore.save and begin_save (what the vLLM connector calls) pass
    each block's token ids to its commit."""
    torch = pytest.importorskip("torch")
    from kvpool.engine import PagedKVStore

    path = pool_factory(feed_slots=64)
    pool = kvpool.Pool(path)
    try:
        ns = pool.namespace(kvpool.Manifest("engine-feed", 4, dtype="torch.float16"))
        g = torch.Generator().manual_seed(1)
        src = [torch.randn(2, 4, 4, 2, 8, generator=g).to(torch.float16) for _ in range(2)]
        store = PagedKVStore(ns, src)
        assert store.save([21, 22], [0, 1], token_ids=[[1, 2, 3, 4], None]) == 2
        batch = store.begin_save([23], [2], token_ids=[[9, 9, 9, 9]])
        batch.write_all()
        assert batch.commit() == 1
        recs = records(path)
        assert [(r["key"], r["ids"]) for r in recs] == [
            (21, [1, 2, 3, 4]), (22, []), (23, [9, 9, 9, 9])]
        with pytest.raises(ValueError):
            store.save([24], [3], token_ids=[[1], [2]])
    finally:
        pool.detach()
