# SPDX-License-Identifier: MIT
"""Block table, reference counts, LRU eviction and the prefix cache."""

from refengine import hashing
from refengine.kv_cache import KVCacheManager
from refengine.vllm_types import Request, SamplingParams

BS = 4


def _req(rid: str, tokens: list[int]) -> Request:
    return Request(rid, tokens, SamplingParams(max_tokens=1), block_hasher=hashing.make_block_hasher(BS))


def _admit(m: KVCacheManager, req: Request) -> list[int]:
    """Schedule a request's prompt as the scheduler does; returns its block ids."""
    hit, n_local = m.get_computed_blocks(req)
    assert m.allocate_slots(req, req.num_tokens - n_local, n_local, hit) is not None
    req.num_computed_tokens = req.num_tokens
    return m.get_block_ids(req.request_id)[0]


def test_shared_prefix_reference_counts() -> None:
    m = KVCacheManager(16, BS)
    a = _req("a", list(range(10)))                  # 2 full blocks + 2 tokens
    ids_a = _admit(m, a)
    assert len(ids_a) == 3
    b = _req("b", list(range(8)) + [50, 51, 52])    # shares the 2 full blocks
    hit, n = m.get_computed_blocks(b)
    assert n == 8 and hit.get_block_ids()[0] == ids_a[:2]
    ids_b = _admit(m, b)
    assert ids_b[:2] == ids_a[:2] and ids_b[2] != ids_a[2]
    pool = m.block_pool
    assert [pool.blocks[i].ref_cnt for i in ids_a] == [2, 2, 1]
    m.free(a)
    assert [pool.blocks[i].ref_cnt for i in ids_a] == [1, 1, 0]
    m.free(b)
    assert all(pool.blocks[i].ref_cnt == 0 for i in ids_a + ids_b)
    assert pool.get_num_free_blocks() == 16


def test_hit_capped_before_last_token() -> None:
    """A prompt whose every block is cached still computes its last block:
    the last token's logits are needed."""
    m = KVCacheManager(16, BS)
    a = _req("a", list(range(8)))
    _admit(m, a)
    m.free(a)
    _, n = m.get_computed_blocks(_req("b", list(range(8))))
    assert n == 4


def test_lru_evicts_least_recently_freed_tail_first() -> None:
    m = KVCacheManager(6, BS)
    a = _req("a", list(range(12)))                  # 3 full blocks
    ids_a = _admit(m, a)
    m.free(a)
    pool = m.block_pool
    # Free blocks go to the queue tail, the request's last block first.
    assert list(pool.free_queue)[-3:] == [ids_a[2], ids_a[1], ids_a[0]]
    # Freed blocks still hit.
    hit, n = m.get_computed_blocks(_req("x", list(range(12)) + [99]))
    assert n == 12 and hit.get_block_ids()[0] == ids_a
    # Taking 4 blocks uses the 3 never-used ones, then evicts a's last block.
    c = _req("c", list(range(100, 116)))
    _admit(m, c)
    assert pool.get_cached_block(a.block_hashes[2]) is None
    assert pool.get_cached_block(a.block_hashes[1]) is not None
    _, n = m.get_computed_blocks(_req("y", list(range(12)) + [99]))
    assert n == 8


def test_hit_on_free_block_leaves_free_queue() -> None:
    m = KVCacheManager(4, BS)
    a = _req("a", list(range(8)))
    ids = _admit(m, a)
    m.free(a)
    b = _req("b", list(range(8)) + [7])
    _admit(m, b)
    pool = m.block_pool
    assert ids[0] not in pool.free_queue and pool.blocks[ids[0]].ref_cnt == 1


def test_allocation_failure_changes_nothing() -> None:
    m = KVCacheManager(3, BS)
    a = _req("a", list(range(8)))
    _admit(m, a)
    big = _req("big", list(range(100, 112)))
    assert m.allocate_slots(big, 12) is None
    assert m.block_pool.get_num_free_blocks() == 1
    assert m.get_block_ids("big") == ([],)


def test_uncache_after_failed_load() -> None:
    m = KVCacheManager(8, BS)
    a = _req("a", list(range(13)))
    _admit(m, a)
    m.uncache_blocks_from(a, 1)
    _, n = m.get_computed_blocks(_req("b", list(range(13))))
    assert n == 4
