# SPDX-License-Identifier: MIT
"""The paged KV cache: tensors in vLLM's layouts, and the block manager.

Tensors (``allocate_kv_caches``):
  per_layer    one tensor per layer, (2, num_blocks, block_size, num_kv_heads,
               head_size): vLLM's FlashAttention layout.
  cross_layer  one tensor (num_blocks, num_layers, 2, block_size, num_kv_heads,
               head_size), so that one engine block holds every layer
               contiguously; each layer sees a strided view of shape
               (2, num_blocks, block_size, H, D), as vLLM's cross-layer
               allocation gives its attention backends.

Block management mirrors vLLM V1's BlockPool and KVCacheManager
(vllm/v1/core/block_pool.py, kv_cache_manager.py) for one full-attention
group: blocks carry a reference count; a block whose count drops to 0 goes
to the tail of the free queue but keeps its hash, so it stays a prefix-cache
hit until it is reused from the head of the queue (LRU). A request's blocks
are freed tail first, so its last blocks are evicted before its prefix.
Full blocks are entered into the prefix cache when they are allocated for
computation (vLLM does the same; the step computes them before anyone can
read them, since a step writes each layer's K/V before attending).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .vllm_types import BlockHash, KVCacheBlock, KVCacheBlocks, Request

LAYOUTS = ("per_layer", "cross_layer")


def allocate_kv_caches(
    layout: str, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_size: int,
    dtype: torch.dtype,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per-layer tensors (2, num_blocks, block_size, H, D), and the cross-layer
    backing tensor when ``layout == "cross_layer"`` (else None)."""
    # Written once here (empty + zero_, not calloc'd zeros) so that every page
    # is resident from the start, as an engine's KV cache memory is: a first
    # touch in the middle of a request would bill it page faults.
    if layout == "per_layer":
        return [torch.empty(2, num_blocks, block_size, num_kv_heads, head_size, dtype=dtype).zero_()
                for _ in range(num_layers)], None
    if layout == "cross_layer":
        big = torch.empty(num_blocks, num_layers, 2, block_size, num_kv_heads, head_size, dtype=dtype).zero_()
        return [big[:, i].transpose(0, 1) for i in range(num_layers)], big
    raise ValueError(f"kv layout {layout!r}: expected one of {LAYOUTS}")


class BlockPool:
    """vLLM's BlockPool: all blocks, the LRU free queue and hash -> block map."""

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        # Free queue, least recently freed first.
        self.free_queue: OrderedDict[int, KVCacheBlock] = OrderedDict((b.block_id, b) for b in self.blocks)
        # One hash may name several blocks (two requests computed the same
        # block at once); a lookup takes any of them, as vLLM does.
        self.cached: dict[BlockHash, dict[int, KVCacheBlock]] = {}
        self.num_evictions = 0

    def get_num_free_blocks(self) -> int:
        return len(self.free_queue)

    def get_cached_block(self, block_hash: BlockHash) -> KVCacheBlock | None:
        d = self.cached.get(block_hash)
        return next(iter(d.values())) if d else None

    def get_new_blocks(self, n: int) -> list[KVCacheBlock]:
        """Take ``n`` blocks from the head of the free queue, evicting their hashes."""
        if n > len(self.free_queue):
            raise ValueError(f"cannot get {n} free blocks from the pool of {len(self.free_queue)}")
        out = []
        for _ in range(n):
            _, b = self.free_queue.popitem(last=False)
            self._evict(b)
            assert b.ref_cnt == 0
            b.ref_cnt = 1
            out.append(b)
        return out

    def _evict(self, b: KVCacheBlock) -> bool:
        h = b.block_hash
        if h is None:
            return False
        d = self.cached.get(h)
        if d is not None:
            d.pop(b.block_id, None)
            if not d:
                del self.cached[h]
        b.reset_hash()
        self.num_evictions += 1
        return True

    def uncache(self, block: KVCacheBlock) -> None:
        """Drop a block from the prefix cache (its contents are not valid)."""
        self._evict(block)

    def touch(self, blocks: list[KVCacheBlock]) -> None:
        """Take a reference on prefix-cache hits (a free one leaves the queue)."""
        for b in blocks:
            if b.ref_cnt == 0:
                del self.free_queue[b.block_id]
            b.ref_cnt += 1

    def free_blocks(self, ordered: list[KVCacheBlock]) -> None:
        """Drop a reference; blocks reaching 0 join the queue tail in this order."""
        for b in ordered:
            b.ref_cnt -= 1
            assert b.ref_cnt >= 0, f"block {b.block_id}: reference count below 0"
            if b.ref_cnt == 0:
                self.free_queue[b.block_id] = b

    def cache_full_blocks(self, blocks: list[KVCacheBlock], hashes: list[BlockHash], start: int, end: int) -> None:
        """Enter blocks[start:end] into the prefix cache under hashes[start:end]."""
        if not self.enable_caching:
            return
        for i in range(start, end):
            b = blocks[i]
            if b.block_hash is not None:
                continue
            b.block_hash = hashes[i]
            self.cached.setdefault(hashes[i], {})[b.block_id] = b

    def reset_prefix_cache(self) -> bool:
        if self.get_num_free_blocks() != self.num_blocks:
            return False
        for b in self.blocks:
            b.reset_hash()
        self.cached.clear()
        return True


@dataclass
class PrefixCacheStats:
    """Mirrors vllm.v1.metrics.stats.PrefixCacheStats (tokens asked, tokens hit)."""

    requests: int = 0
    queries: int = 0
    hits: int = 0


class KVCacheManager:
    """vLLM's KVCacheManager for one full-attention group."""

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.block_pool = BlockPool(num_blocks, enable_caching)
        self.req_to_blocks: dict[str, list[KVCacheBlock]] = {}
        self.num_cached_block: dict[str, int] = {}
        self.prefix_cache_stats = PrefixCacheStats()
        self.empty_kv_cache_blocks = KVCacheBlocks(((),))

    @property
    def usage(self) -> float:
        return 1.0 - self.block_pool.get_num_free_blocks() / self.block_pool.num_blocks

    def get_computed_blocks(self, request: Request) -> tuple[KVCacheBlocks, int]:
        """Longest run of leading full blocks in the prefix cache.

        At most num_tokens - 1 tokens hit: the last token is always computed,
        since its logits are needed.
        """
        if not self.enable_caching:
            return self.empty_kv_cache_blocks, 0
        max_blocks = (request.num_tokens - 1) // self.block_size
        hit: list[KVCacheBlock] = []
        for h in request.block_hashes[:max_blocks]:
            b = self.block_pool.get_cached_block(h)
            if b is None:
                break
            hit.append(b)
        st = self.prefix_cache_stats
        st.requests += 1
        st.queries += request.num_tokens
        st.hits += len(hit) * self.block_size
        return KVCacheBlocks((hit,)), len(hit) * self.block_size

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: KVCacheBlocks | None = None,
        num_external_computed_tokens: int = 0,
        delay_cache_blocks: bool = False,
    ) -> KVCacheBlocks | None:
        """Blocks for ``num_new_tokens`` more tokens after the computed ones.

        Returns the newly allocated blocks, or None (nothing changed) when the
        pool cannot supply them.
        """
        computed = list(new_computed_blocks.blocks[0]) if new_computed_blocks is not None else []
        num_computed = request.num_computed_tokens + num_new_computed_tokens + num_external_computed_tokens
        total = num_computed + num_new_tokens
        req_blocks = self.req_to_blocks.setdefault(request.request_id, [])
        need = -(-total // self.block_size) - len(req_blocks) - len(computed)
        # Hits that sit in the free queue are not available for new blocks.
        free_hits = sum(1 for b in computed if b.ref_cnt == 0)
        if need > self.block_pool.get_num_free_blocks() - free_hits:
            if not req_blocks:
                del self.req_to_blocks[request.request_id]
            return None
        self.block_pool.touch(computed)
        req_blocks.extend(computed)
        new_blocks = self.block_pool.get_new_blocks(max(need, 0))
        req_blocks.extend(new_blocks)
        if self.enable_caching and not delay_cache_blocks:
            self.cache_blocks(request, min(total, request.num_tokens))
        return KVCacheBlocks((new_blocks,))

    def cache_blocks(self, request: Request, num_computed_tokens: int) -> None:
        """Enter the request's full blocks up to ``num_computed_tokens`` into the cache."""
        if not self.enable_caching:
            return
        rid = request.request_id
        start = self.num_cached_block.get(rid, 0)
        end = min(num_computed_tokens // self.block_size, len(request.block_hashes))
        if end > start:
            self.block_pool.cache_full_blocks(self.req_to_blocks[rid], request.block_hashes, start, end)
            self.num_cached_block[rid] = end

    def uncache_blocks_from(self, request: Request, first_block: int) -> None:
        """Forget the prefix-cache entries of the request's blocks from index
        ``first_block`` on (their contents failed to load)."""
        blocks = self.req_to_blocks.get(request.request_id, [])
        for b in blocks[first_block:]:
            self.block_pool.uncache(b)
        if self.num_cached_block.get(request.request_id, 0) > first_block:
            self.num_cached_block[request.request_id] = first_block

    def free(self, request: Request) -> None:
        """Release the request's blocks, tail first (its prefix is evicted last)."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self.num_cached_block.pop(request.request_id, None)
        self.block_pool.free_blocks(list(reversed(blocks)))

    def get_blocks(self, request_id: str) -> KVCacheBlocks:
        return KVCacheBlocks((list(self.req_to_blocks.get(request_id, [])),))

    def get_block_ids(self, request_id: str) -> tuple[list[int], ...]:
        return self.get_blocks(request_id).get_block_ids()

    def reset_prefix_cache(self) -> bool:
        return self.block_pool.reset_prefix_cache()
