#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Save and load of engine KV blocks through kvpool.engine vs memcpy.

Each case moves the same bytes two ways in one run, interleaved, and
reports the ratio of their throughputs (target: >= 0.8):

  save   PagedKVStore.save: reserve, gather the engine block into the
         reservation with the XXH3-64 taken in the same pass, commit;
         vs ctypes.memmove (libc memcpy) of each block's bytes, contiguous,
         into reserved pool memory (no reserve, commit nor checksum).
  load   PagedKVStore.load of pinned blocks: scatter into engine blocks,
         checksum verified during the copy (verify) or not (noverify);
         vs ctypes.memmove of each pinned block into a contiguous engine
         block.

Geometries (one engine block = one 2 MiB pool block by default):
  cross_layer  (num_blocks, L, 2, 16, H, D): each block is one 2 MiB run;
  per_layer    L tensors (2, num_blocks, 16, H, D): each block is 2 * L
               fragments of 32 KiB spread over the tensors.
A batch of blocks larger than the last-level cache is moved per repetition
so that both sides run from memory; the ratio is the median over
repetitions of (memcpy time / kvpool time), each repetition pairing one
baseline pass with one kvpool pass in alternating order; "best" is the
fastest memcpy pass over the fastest kvpool pass, the least disturbed by
other load on the machine.

Run:  PYTHONPATH=build/python /usr/bin/python3 tests/bench/bench_paged.py
      [--layers 32] [--heads 8] [--head-size 128] [--batch 32] [--reps 15]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import statistics
import sys
import time
import uuid
from typing import Any, Callable

import torch

import kvpool
from kvpool.engine import PagedKVStore


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-size", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32, help="blocks moved per repetition")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--pool-size", type=int, default=512 << 20)
    args = ap.parse_args()

    L, H, D, bs, nb = args.layers, args.heads, args.head_size, args.block_size, args.batch
    dtype = torch.float16
    frag = bs * H * D * 2
    block = L * 2 * frag
    print("command:", shlex.join([sys.executable] + sys.argv))
    print(
        f"geometry: {L} layers x 2 x ({bs} tokens x {H} heads x {D}) fp16: "
        f"block {block >> 10} KiB, fragment {frag >> 10} KiB; {nb} blocks "
        f"({nb * block >> 20} MiB) per repetition, {args.reps} repetitions; "
        f"simd width {kvpool._kvpool.paged_simd_width()} bytes"
    )
    path = f"/dev/shm/kvpool-bench-paged-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    kvpool.create_pool(path, args.pool_size, slab_size=max(4 << 20, block))
    try:
        with kvpool.Pool(path) as pool:
            ns = pool.namespace(kvpool.Manifest("bench-paged", bs, dtype="fp16"))
            caches = {
                "cross_layer": torch.randn(nb, L, 2, bs, H, D).to(dtype),
                "per_layer": [torch.randn(2, nb, bs, H, D).to(dtype) for _ in range(L)],
            }
            # Contiguous engine blocks for the memcpy baseline.
            flat = caches["cross_layer"]
            flat_addr = [flat[b].data_ptr() for b in range(nb)]
            results = []
            for layout, cache in caches.items():
                results += run_layout(ns, pool, layout, cache, flat_addr, block, args)
    finally:
        kvpool.destroy_pool(path)

    print()
    print(
        f"{'case':<28}{'kvpool GB/s':>12}{'memcpy GB/s':>13}{'ratio':>8}{'best':>7}"
        "   (GB/s and ratio: medians; best: fastest kvpool vs fastest memcpy)"
    )
    ok = True
    for name, ours, base, ratio, best in results:
        print(f"{name:<28}{ours:>12.2f}{base:>13.2f}{ratio:>8.2f}{best:>7.2f}")
        ok &= ratio >= 0.8
    print("all ratios >= 0.8" if ok else "SOME RATIOS < 0.8")
    return 0


def run_layout(
    ns: Any, pool: Any, layout: str, cache: Any, flat_addr: list[int], block: int, args: Any
) -> list[tuple[str, float, float, float, float]]:
    nb = args.batch
    store = PagedKVStore(ns, cache, layout)
    assert store.block_bytes == block
    ids = list(range(nb))
    gen = [0]

    def fresh_keys() -> list[int]:
        gen[0] += 1
        return [(gen[0] << 32) | i for i in range(nb)]

    # Baseline destinations: reserved pool memory, written by memmove.
    res = [ns.reserve((1 << 100) | i, block) for i in range(nb)]
    dst_addr = [r.address for r in res]

    def memcpy_save() -> None:
        for d, s in zip(dst_addr, flat_addr):
            ctypes.memmove(d, s, block)

    saved: list[list[int]] = []

    def kv_save() -> None:
        keys = fresh_keys()
        assert store.save(keys, ids) == nb
        saved.append(keys)

    def drop_saved() -> None:
        while saved:
            for k in saved.pop():
                ns.remove(k)

    # Warm up: fault in the pool pages both sides write.
    memcpy_save()
    kv_save()
    drop_saved()

    save_b, save_k = [], []
    for rep in range(args.reps):
        # Alternate which side goes first, so neither always finds the
        # other's leftovers in the cache.
        if rep % 2:
            save_k.append(timed(kv_save))
            save_b.append(timed(memcpy_save))
        else:
            save_b.append(timed(memcpy_save))
            save_k.append(timed(kv_save))
        drop_saved()
    for r in res:
        r.abort()

    # Load: the blocks to load, saved once.
    keys = fresh_keys()
    store.save(keys, ids)
    load_b, load_v, load_n = [], [], []
    order = ids[::-1]  # into other engine blocks than they came from

    views = [ns.get(k) for k in keys]
    src_addr = [v.address for v in views]

    def memcpy_load() -> None:
        for d, s in zip(order, src_addr):
            ctypes.memmove(flat_addr[d], s, block)

    def kv_load(verify: bool) -> float:
        store.verify = verify
        assert store.lookup("req", keys) == nb
        t = timed(lambda: store.load("req", order))
        assert store.last_failure is None
        return t

    for rep in range(args.reps):
        if rep % 2:
            load_v.append(kv_load(True))
            load_n.append(kv_load(False))
            load_b.append(timed(memcpy_load))
        else:
            load_b.append(timed(memcpy_load))
            load_n.append(kv_load(False))
            load_v.append(kv_load(True))
    for v in views:
        v.release()
    for k in keys:
        ns.remove(k)

    def row(name: str, ours: list[float], base: list[float]) -> tuple[str, float, float, float, float]:
        gb = nb * block / 1e9
        return (
            f"{name} {layout}",
            gb / statistics.median(ours),
            gb / statistics.median(base),
            statistics.median(b / o for b, o in zip(base, ours)),
            min(base) / min(ours),
        )

    return [
        row("save", save_k, save_b),
        row("load verify", load_v, load_b),
        row("load noverify", load_n, load_b),
    ]


if __name__ == "__main__":
    sys.exit(main())
