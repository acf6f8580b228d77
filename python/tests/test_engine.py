# SPDX-License-Identifier: MIT
"""kvpool.engine: paged KV blocks to and from a pool, in vLLM's layouts.

Fixtures (pool_path, pool, ns, manifest) come from conftest.py."""

from __future__ import annotations

import mmap
import os
import signal
from typing import Any

import pytest

torch = pytest.importorskip("torch")
xxhash = pytest.importorskip("xxhash")

import kvpool  # noqa: E402
from kvpool import _kvpool  # noqa: E402
from kvpool.engine import PagedKVStore, layout_of  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def ns_for(pool: Any, dtype: Any, block_size: int = 16) -> Any:
    """A namespace whose manifest matches a cache of that dtype and block size."""
    return pool.namespace(kvpool.Manifest("engine-test", block_size, dtype=str(dtype)))


def per_layer_cache(
    layers: int, blocks: int, bs: int, heads: int, dim: int, dtype: Any, seed: int = 0
) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, blocks, bs, heads, dim, generator=g).to(dtype) for _ in range(layers)
    ]


def cross_layer_cache(
    layers: int, blocks: int, bs: int, heads: int, dim: int, dtype: Any, seed: int = 0
) -> Any:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(blocks, layers, 2, bs, heads, dim, generator=g).to(dtype)


def canonical(cache: Any, layout: str, block: int) -> Any:
    """Engine block `block` in the pool's order (L, 2, bs, H, D)."""
    if layout == "per_layer":
        return torch.stack([t[:, block] for t in cache])
    return cache[block]


def zeros_like_cache(cache: Any, layout: str) -> Any:
    if layout == "per_layer":
        return [torch.zeros_like(t) for t in cache]
    return torch.zeros_like(cache)


def make_cache(layout: str, *args: Any, **kw: Any) -> Any:
    if layout == "per_layer":
        return per_layer_cache(*args, **kw)
    return cross_layer_cache(*args, **kw)


def block_bytes_of(t: Any) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def pool_block(ns: Any, key: int) -> bytes:
    v = ns.get(key)
    assert v is not None
    with v:
        data = bytes(memoryview(v))
        assert v.checksum == xxhash.xxh3_64_intdigest(data)
    return data


@pytest.mark.parametrize("layout", ["per_layer", "cross_layer"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_round_trip(pool: Any, layout: str, dtype: Any) -> None:
    ns = ns_for(pool, dtype)
    L, nb, bs, H, D = 3, 8, 16, 2, 32
    src = make_cache(layout, L, nb, bs, H, D, dtype, seed=1)
    store = PagedKVStore(ns, src, layout)
    assert store.block_bytes == L * 2 * bs * H * D * src_element_size(src)
    keys = [1000 + i for i in range(4)]
    ids = [5, 2, 7, 0]
    assert store.save(keys, ids) == 4
    for k, b in zip(keys, ids):
        assert pool_block(ns, k) == block_bytes_of(canonical(src, layout, b))

    dst = zeros_like_cache(src, layout)
    other = PagedKVStore(ns, dst, layout)
    assert other.lookup("r", keys + [999]) == 4
    assert other.pinned("r") == 4
    into = [1, 3, 4, 6]
    assert other.load("r", into[:2]) == 2
    assert other.pinned("r") == 2
    assert other.load("r", into[2:]) == 2
    assert other.pinned("r") == 0
    for b_src, b_dst in zip(ids, into):
        assert torch.equal(canonical(dst, layout, b_dst), canonical(src, layout, b_src))
    # Blocks not loaded into stay untouched.
    for b in (0, 2, 5, 7):
        assert not canonical(dst, layout, b).any()


def src_element_size(cache: Any) -> int:
    return (cache[0] if isinstance(cache, list) else cache).element_size()


@pytest.mark.parametrize("width", [16, 32, 64])
@pytest.mark.parametrize(
    "shape",
    [(3, 3, 1, 5), (2, 5, 3, 7), (4, 16, 2, 24), (2, 16, 4, 64), (1, 1, 1, 2)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_checksum_every_width(pool: Any, width: int, shape: tuple[int, ...]) -> None:
    """Odd fragment sizes split stripes between pieces; every vector width
    must give XXH3-64 of the block, saving in order, out of order, and loading."""
    L, bs, H, D = shape
    ns = ns_for(pool, torch.float16, bs)
    got = _kvpool.paged_simd_width(width)
    try:
        src = per_layer_cache(L, 4, bs, H, D, torch.float16, seed=width)
        store = PagedKVStore(ns, src)
        keys = [width * 100 + i for i in range(3)]
        assert store.save(keys[:1], [3]) == 1
        with store.begin_save(keys[1:2], [1]) as batch:
            for layer in range(L):
                batch.write_layer(layer)
        with store.begin_save(keys[2:], [2]) as batch:
            for layer in reversed(range(L)):
                batch.write_layer(layer)
        for k, b in zip(keys, [3, 1, 2]):
            assert pool_block(ns, k) == block_bytes_of(canonical(src, "per_layer", b))
        dst = zeros_like_cache(src, "per_layer")
        other = PagedKVStore(ns, dst)
        assert other.lookup("r", keys) == 3
        assert other.load("r", [0, 1, 2]) == 3, other.last_failure
        for b_src, b_dst in zip([3, 1, 2], [0, 1, 2]):
            assert torch.equal(canonical(dst, "per_layer", b_dst), canonical(src, "per_layer", b_src))
    finally:
        _kvpool.paged_simd_width(0)
    assert got <= width


def test_per_layer_save(ns: Any) -> None:
    L = 4
    src = per_layer_cache(L, 6, 16, 2, 16, torch.float16, seed=2)
    store = PagedKVStore(ns, src)
    keys = [11, 12, 13]
    batch = store.begin_save(keys, [4, 0, 2])
    assert batch.present == [True, True, True] and batch.pending == 3
    for layer in range(L):
        assert not any(ns.contains(k) for k in keys)  # reserved: invisible
        batch.write_layer(layer)
    with pytest.raises(ValueError, match="written twice"):
        batch.write_layer(1)
    with pytest.raises(IndexError):
        batch.write_layer(L)
    assert batch.commit() == 3
    assert batch.committed == 3 and batch.pending == 0
    for k, b in zip(keys, [4, 0, 2]):
        assert pool_block(ns, k) == block_bytes_of(canonical(src, "per_layer", b))


def test_commit_before_all_layers(pool: Any) -> None:
    ns = ns_for(pool, torch.float32)
    src = per_layer_cache(3, 4, 16, 2, 16, torch.float32, seed=3)
    store = PagedKVStore(ns, src)
    batch = store.begin_save([21, 22], [0, 1])
    batch.write_layer(0)
    batch.write_layer(2)
    with pytest.raises(ValueError, match="layers 1 were written"):
        batch.commit()
    batch.abort()
    assert not ns.contains(21) and not ns.contains(22)
    assert pool.live_bytes() == 0
    # A batch that raises inside `with` is aborted.
    with pytest.raises(RuntimeError):
        with store.begin_save([21], [0]) as b2:
            b2.write_all()
            raise RuntimeError("engine failed")
    assert not ns.contains(21)


def test_write_all_after_some_layers(pool: Any) -> None:
    ns = ns_for(pool, torch.bfloat16)
    src = per_layer_cache(5, 3, 16, 1, 8, torch.bfloat16, seed=4)
    store = PagedKVStore(ns, src)
    with store.begin_save([31], [2]) as batch:
        batch.write_layer(0)
        batch.write_layer(1)
        batch.write_all()
    assert pool_block(ns, 31) == block_bytes_of(canonical(src, "per_layer", 2))


def test_dedup(ns: Any, pool: Any) -> None:
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=5)
    store = PagedKVStore(ns, src)
    assert store.save([41, 42], [0, 1]) == 2
    before = pool.live_bytes()
    assert store.save([41, 42, 43], [0, 1, 2]) == 1
    assert pool.live_bytes() == before + store.block_bytes
    batch = store.begin_save([41, 44, 42], [0, 3, 1])
    assert batch.present == [False, True, False] and batch.pending == 1
    batch.write_all()
    assert batch.commit() == 1
    # Nothing to do: a batch of present keys commits 0 without any layer written.
    assert store.begin_save([41, 42], [0, 1]).commit() == 0


def test_chain_parents(ns: Any) -> None:
    src = per_layer_cache(2, 4, 16, 1, 8, torch.float16, seed=6)
    store = PagedKVStore(ns, src)
    assert store.save([51, 52], [0, 1]) == 2
    assert store.save([53], [2], parent=52) == 1
    assert store.save([54, 55], [3, 0], parents=[53, None]) == 1 + 1
    with pytest.raises(ValueError, match="parents has 1 entries"):
        store.save([56, 57], [0, 1], parents=[None])
    with pytest.raises(ValueError, match="not both"):
        store.save([56], [0], parents=[None], parent=55)
    assert ns.match_prefix([51, 52, 53, 54]) == 4


def fill_keys(store: PagedKVStore, pool: Any) -> int:
    """More blocks than the pool holds."""
    return pool.stats()["capacity"] // store.block_bytes + 8


def test_pool_full_begin_save(ns: Any, pool: Any) -> None:
    src = per_layer_cache(4, 4, 16, 8, 64, torch.float16, seed=7)  # 128 KiB blocks
    store = PagedKVStore(ns, src)
    n = fill_keys(store, pool)
    with pytest.raises(kvpool.PoolFullError):
        store.begin_save(range(10_000, 10_000 + n), [i % 4 for i in range(n)])
    assert pool.live_bytes() == 0
    assert not any(ns.contains(10_000 + i) for i in range(n))
    # The pool still works.
    assert store.save([1], [0]) == 1


def test_pool_full_save_keeps_whole_prefix(ns: Any, pool: Any) -> None:
    src = per_layer_cache(4, 4, 16, 8, 64, torch.float16, seed=8)
    store = PagedKVStore(ns, src)
    n = fill_keys(store, pool)
    keys = list(range(20_000, 20_000 + n))
    ids = [i % 4 for i in range(n)]
    # Pinned blocks cannot be evicted: the saves below find no room.
    stored = 0
    with pytest.raises(kvpool.PoolFullError):
        for k, b in zip(keys, ids):
            stored += store.save([k], [b])
            assert store.lookup(("pin", k), [k]) == 1
    assert 0 < stored < n
    present = [k for k in keys if ns.contains(k)]
    assert len(present) == stored
    for k in present:
        assert pool_block(ns, k) == block_bytes_of(canonical(src, "per_layer", ids[k - 20_000]))
    store.close()


def removed_pinned_bytes(ns: Any, pool: Any, keys: list[int]) -> int:
    """Remove keys; their bytes stay live while someone pins them."""
    for k in keys:
        assert ns.remove(k)
    return int(pool.live_bytes())


def test_pins_released_on_release(ns: Any, pool: Any) -> None:
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=9)
    store = PagedKVStore(ns, src)
    keys = [61, 62, 63]
    store.save(keys, [0, 1, 2])
    assert store.lookup("a", keys) == 3
    assert store.lookup("b", keys[:1]) == 1
    assert pool.pins_held() == 4
    assert removed_pinned_bytes(ns, pool, keys) == 3 * store.block_bytes
    store.release("a")
    assert pool.pins_held() == 1
    assert pool.live_bytes() == store.block_bytes  # "b" still pins key 61
    store.release("b")
    store.release("never-looked-up")
    assert pool.pins_held() == 0
    assert pool.live_bytes() == 0


def test_pins_released_by_load_and_close(ns: Any, pool: Any) -> None:
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=10)
    store = PagedKVStore(ns, src)
    keys = [71, 72, 73]
    store.save(keys, [0, 1, 2])
    assert store.lookup("a", keys) == 3
    removed_pinned_bytes(ns, pool, keys)
    assert store.load("a", [3]) == 1
    assert pool.pins_held() == 2
    assert pool.live_bytes() == 2 * store.block_bytes
    with pytest.raises(ValueError, match="3 block ids for 2 pinned"):
        store.load("a", [0, 1, 2])
    store.close()
    assert pool.pins_held() == 0
    assert pool.live_bytes() == 0
    with pytest.raises(KeyError):
        store.load("a", [0])
    assert store.load("a", []) == 0


def test_lookup_again_replaces_pins(ns: Any, pool: Any) -> None:
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=11)
    store = PagedKVStore(ns, src)
    store.save([81, 82], [0, 1])
    assert store.lookup("a", [81, 82]) == 2
    assert store.lookup("a", [81]) == 1
    removed_pinned_bytes(ns, pool, [81, 82])
    assert pool.live_bytes() == store.block_bytes
    store.close()


def test_pins_reaped_when_process_dies(pool_path: str, ns: Any, pool: Any, manifest: Any) -> None:
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=12)
    store = PagedKVStore(ns, src)
    keys = [91, 92]
    store.save(keys, [0, 1])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child attaches on its own, pins, reserves, and is killed
        try:
            os.close(r)
            with kvpool.Pool(pool_path) as p:
                cns = p.namespace(manifest)
                cstore = PagedKVStore(cns, src)
                ok = cstore.lookup("req", keys) == 2
                batch = cstore.begin_save([93], [2])
                batch.write_layer(0)
                os.write(w, b"1" if ok and batch.pending == 1 else b"0")
                signal.pause()
        finally:
            os._exit(1)
    try:
        os.close(w)
        assert os.read(r, 1) == b"1"
        os.close(r)
        assert not ns.contains(93)  # reserved, not committed
        removed_pinned_bytes(ns, pool, keys)
        assert pool.live_bytes() == 2 * store.block_bytes  # the child's pins
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert pool.reap() == 1
    assert pool.live_bytes() == 0
    assert not ns.contains(93)
    assert store.save([93], [2]) == 1  # the key is free again


def test_forked_child_leaves_parent_pins(ns: Any, pool: Any) -> None:
    """A child that inherits a store must not release the parent's pins or
    abort its reservations when it drops them, nor use them."""
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=18)
    store = PagedKVStore(ns, src)
    store.save([171, 172], [0, 1])
    assert store.lookup("r", [171, 172]) == 2
    batch = store.begin_save([173], [2])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                store.load("r", [3])
            except ValueError as e:
                code = 0 if "after fork" in str(e) else 2
            store.close()
            batch.abort()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.pins_held() == 2 and store.pinned("r") == 2
    assert store.load("r", [2, 3]) == 2
    batch.write_all()
    assert batch.commit() == 1


def flip_byte(pool_path: str, pool: Any, address: int) -> None:
    """Flip one byte of the pool file under the given mapped address."""
    off = address - pool.base_address
    with open(pool_path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        m[off] ^= 0x40


@pytest.mark.parametrize("layout", ["per_layer", "cross_layer"])
def test_corruption_detected(pool_path: str, pool: Any, ns: Any, layout: str) -> None:
    src = make_cache(layout, 3, 6, 16, 2, 32, torch.float16, seed=13)
    store = PagedKVStore(ns, src, layout)
    keys = [101, 102, 103, 104]
    store.save(keys, [0, 1, 2, 3])
    v = ns.get(keys[2])
    addr, length = v.address, v.length
    v.release()
    flip_byte(pool_path, pool, addr + length // 2 + 3)

    # Unverified, the flipped byte reaches the engine.
    dst = zeros_like_cache(src, layout)
    other = PagedKVStore(ns, dst, layout, verify=False)
    assert other.lookup("r", keys) == 4
    assert other.load("r", [5, 4, 3, 2]) == 4
    assert not torch.equal(canonical(dst, layout, 3), canonical(src, layout, 2))
    assert torch.equal(canonical(dst, layout, 2), canonical(src, layout, 3))
    assert ns.contains(keys[2])

    dst = zeros_like_cache(src, layout)
    other = PagedKVStore(ns, dst, layout)
    assert other.lookup("r", keys) == 4  # lookup does not read the data
    assert other.load("r", [5, 4, 3, 2]) == 2
    assert "checksum" in (other.last_failure or "")
    assert other.pinned("r") == 0  # the rest released: the chain is broken
    assert pool.pins_held() == 0
    assert not ns.contains(keys[2])  # the bad block is gone
    assert ns.contains(keys[3])
    for b_src, b_dst in zip([0, 1], [5, 4]):
        assert torch.equal(canonical(dst, layout, b_dst), canonical(src, layout, b_src))
    assert pool.live_bytes() == 3 * store.block_bytes  # the bad one freed once unpinned


def test_wrong_length_block(ns: Any) -> None:
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=14)
    before = [t.clone() for t in src]
    store = PagedKVStore(ns, src)
    assert ns.put(111, b"x" * 1000)
    assert store.lookup("r", [111]) == 1
    assert store.load("r", [0]) == 0
    assert "holds 1000 bytes, expected" in (store.last_failure or "")
    assert ns.contains(111)  # not corrupt, only not ours: left in place
    assert all(torch.equal(a, b) for a, b in zip(src, before))  # nothing copied


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_cross_layout_compatible(pool: Any, dtype: Any) -> None:
    ns = ns_for(pool, dtype)
    L, nb, bs, H, D = 4, 5, 16, 2, 16
    per = per_layer_cache(L, nb, bs, H, D, dtype, seed=15)
    cross = cross_layer_cache(L, nb, bs, H, D, dtype, seed=16)
    sp = PagedKVStore(ns, per, "per_layer")
    sc = PagedKVStore(ns, cross, "cross_layer")
    assert sp.block_bytes == sc.block_bytes
    assert sp.save([121, 122], [1, 3]) == 2
    assert sc.save([131], [4]) == 1

    cross_dst = torch.zeros_like(cross)
    sc2 = PagedKVStore(ns, cross_dst, "cross_layer")
    assert sc2.lookup("r", [121, 122]) == 2 and sc2.load("r", [0, 2]) == 2
    assert torch.equal(cross_dst[0], canonical(per, "per_layer", 1))
    assert torch.equal(cross_dst[2], canonical(per, "per_layer", 3))

    per_dst = [torch.zeros_like(t) for t in per]
    sp2 = PagedKVStore(ns, per_dst, "per_layer")
    assert sp2.lookup("r", [131]) == 1 and sp2.load("r", [3]) == 1
    for layer in range(L):
        assert torch.equal(per_dst[layer][:, 3], cross[4, layer])


def test_permuted_and_dict_per_layer(pool: Any) -> None:
    """(num_blocks, 2, ...) storage passed as a permuted view; a dict of layers."""
    ns = ns_for(pool, torch.float32)
    L, nb, bs, H, D = 3, 4, 16, 2, 8
    phys = [torch.randn(nb, 2, bs, H, D) for _ in range(L)]
    views = {f"layer.{i}": t.permute(1, 0, 2, 3, 4) for i, t in enumerate(phys)}
    store = PagedKVStore(ns, views)
    assert store.save([141], [2]) == 1
    per = per_layer_cache(L, nb, bs, H, D, torch.float32)
    s2 = PagedKVStore(ns, per)
    assert s2.lookup("r", [141]) == 1 and s2.load("r", [0]) == 1
    for layer in range(L):
        assert torch.equal(per[layer][:, 0], phys[layer][2])


def test_layout_errors(ns: Any) -> None:
    good = per_layer_cache(2, 4, 16, 2, 8, torch.float16)
    with pytest.raises(ValueError, match="layout 'paged'"):
        PagedKVStore(ns, good, "paged")
    with pytest.raises(ValueError, match=r"shape \(4, 16, 2, 8\), expected \(2, num_blocks"):
        PagedKVStore(ns, [good[0][0]])
    with pytest.raises(ValueError, match="layer 1: shape .* layer 0 has"):
        PagedKVStore(ns, [good[0], good[1].float()])
    with pytest.raises(ValueError, match="must be contiguous"):
        PagedKVStore(ns, [t.transpose(3, 4) for t in good])
    with pytest.raises(ValueError, match="overlaps fragments"):
        PagedKVStore(ns, [good[0][:, :1].expand(2, 4, 16, 2, 8)])
    with pytest.raises(ValueError, match="expected a CPU tensor"):
        PagedKVStore(ns, [torch.empty(2, 4, 16, 2, 8, device="meta")])
    with pytest.raises(TypeError, match="expected a torch tensor"):
        PagedKVStore(ns, [[1, 2]])
    with pytest.raises(TypeError, match="sequence or dict"):
        PagedKVStore(ns, good[0])
    with pytest.raises(ValueError, match="no layers"):
        PagedKVStore(ns, [])
    with pytest.raises(ValueError, match=r"cross_layer: shape \(2, 4, 16, 2, 8\)"):
        PagedKVStore(ns, good[0], "cross_layer")
    store = PagedKVStore(ns, good)
    with pytest.raises(IndexError, match=r"engine block id 4 out of range \[0, 4\)"):
        store.save([1], [4])
    with pytest.raises(IndexError, match="engine block id -1"):
        store.begin_save([1], [-1])
    with pytest.raises(ValueError, match="2 keys but 1 block ids"):
        store.save([1, 2], [0])
    assert not ns.contains(1)


def test_manifest_must_match_cache(pool: Any, ns: Any) -> None:
    cache = per_layer_cache(2, 4, 16, 2, 8, torch.bfloat16)
    with pytest.raises(ValueError, match="manifest dtype is 1, the KV cache's is torch.bfloat16"):
        PagedKVStore(ns, cache)  # ns: fp16
    with pytest.raises(ValueError, match="block_tokens is 32, the KV cache's block_size 16"):
        PagedKVStore(ns_for(pool, torch.bfloat16, 32), cache)
    with pytest.raises(ValueError, match=r"code none"):
        PagedKVStore(ns, [t.double() for t in cache])
    # fp8 caches live in uint8 tensors in vLLM.
    u8 = [torch.zeros(2, 4, 16, 2, 8, dtype=torch.uint8) for _ in range(2)]
    PagedKVStore(pool.namespace(kvpool.Manifest("engine-test", 16, dtype="fp8_e4m3")), u8)
    # An unset dtype (0) accepts any; the engine then owns the identity.
    PagedKVStore(pool.namespace(kvpool.Manifest("engine-test", 16)), cache)
    PagedKVStore(ns_for(pool, torch.bfloat16), cache)


def test_layout_of_describes_cache() -> None:
    cross = cross_layer_cache(3, 4, 16, 2, 8, torch.bfloat16)
    info = layout_of(cross, "cross_layer")
    assert info["num_layers"] == 3 and info["num_blocks"] == 4
    assert info["frag_bytes"] == 16 * 2 * 8 * 2
    base = cross.data_ptr()
    assert info["layers"][1] == (base + 2 * info["frag_bytes"], info["frag_bytes"], 6 * info["frag_bytes"])


def test_detach_keeps_pins_valid(pool_path: str, manifest: Any) -> None:
    p = kvpool.Pool(pool_path)
    ns = p.namespace(manifest)
    src = per_layer_cache(2, 4, 16, 2, 16, torch.float16, seed=17)
    store = PagedKVStore(ns, src)
    store.save([151, 152], [0, 1])
    assert store.lookup("r", [151, 152]) == 2
    batch = store.begin_save([153], [2])
    p.detach()
    with pytest.raises(ValueError):
        store.load("r", [3])
    with pytest.raises(ValueError):
        store.lookup("s", [151])
    store.release("r")  # releases after detach are fine
    batch.abort()
    with kvpool.Pool(pool_path) as q:
        assert q.live_bytes() == 2 * store.block_bytes
        assert q.namespace(manifest).contains(152)


def test_lookup_out_of_pins(pool_factory: Any, manifest: Any) -> None:
    with kvpool.Pool(pool_factory(pins_per_client=4)) as p:
        ns = p.namespace(manifest)
        store = PagedKVStore(ns, per_layer_cache(2, 6, 16, 2, 8, torch.float16))
        keys = list(range(161, 167))
        assert store.save(keys, range(6)) == 6
        with pytest.raises(kvpool.NoPinsError):
            store.lookup("r", keys)
        assert p.pins_held() == 0 and store.pinned("r") == 0
        assert store.lookup("r", keys[:4]) == 4


def test_random_geometries(pool: Any) -> None:
    """Random shapes, dtypes, layouts, block ids and layer write orders:
    what is loaded equals what was saved, whatever layout either side uses."""
    import random

    rng = random.Random(1234)
    key = 1 << 64
    for it in range(40):
        L = rng.randint(1, 6)
        nb = rng.randint(2, 6)
        bs = rng.choice([1, 3, 16])
        H = rng.randint(1, 3)
        D = rng.choice([1, 7, 32, 64])
        dtype = rng.choice(DTYPES)
        ns = ns_for(pool, dtype, bs)
        src_layout, dst_layout = rng.choice(["per_layer", "cross_layer"]), rng.choice(
            ["per_layer", "cross_layer"]
        )
        src = make_cache(src_layout, L, nb, bs, H, D, dtype, seed=it)
        dst = zeros_like_cache(make_cache(dst_layout, L, nb, bs, H, D, dtype), dst_layout)
        s_src, s_dst = PagedKVStore(ns, src, src_layout), PagedKVStore(ns, dst, dst_layout)
        n = rng.randint(1, nb)
        ids = rng.sample(range(nb), n)
        into = rng.sample(range(nb), n)
        keys = list(range(key, key + n))
        key += n
        if rng.random() < 0.5:
            assert s_src.save(keys, ids) == n
        else:
            order = list(range(L))
            rng.shuffle(order)
            with s_src.begin_save(keys, ids) as batch:
                for layer in order:
                    batch.write_layer(layer)
        for k, b in zip(keys, ids):
            assert pool_block(ns, k) == block_bytes_of(canonical(src, src_layout, b))
        assert s_dst.lookup("r", keys) == n
        assert s_dst.load("r", into) == n, s_dst.last_failure
        for b_src, b_dst in zip(ids, into):
            assert torch.equal(canonical(dst, dst_layout, b_dst), canonical(src, src_layout, b_src))


def test_bench_memcpy() -> None:
    """The benchmark's baseline copies each (dst, src, n) piece, and only
    takes uint64 triples."""
    import array
    import ctypes

    src = (ctypes.c_uint8 * 256).from_buffer_copy(bytes(range(256)))
    dst = (ctypes.c_uint8 * 256)()
    s, d = ctypes.addressof(src), ctypes.addressof(dst)
    _kvpool._bench_memcpy(array.array("Q", [d, s + 200, 56, d + 100, s, 7]))
    assert bytes(dst)[:56] == bytes(range(200, 256))
    assert bytes(dst)[100:107] == bytes(range(7))
    assert bytes(dst)[56:100] == bytes(44)
    with pytest.raises(ValueError, match="triples"):
        _kvpool._bench_memcpy(array.array("Q", [d, s]))
    with pytest.raises(TypeError, match="uint64"):
        _kvpool._bench_memcpy(array.array("I", [0, 0, 0]))
