# SPDX-License-Identifier: MIT
"""kvpool: a host-wide, crash-safe, zero-copy KV-cache store, from Python.

A thin layer over libkv (the C++ extension ``kvpool._kvpool``)::

    import kvpool
    kvpool.create_pool("/dev/shm/kv", 1 << 30)
    with kvpool.Pool("/dev/shm/kv") as pool:
        ns = pool.namespace(kvpool.Manifest("llama-3-8b", 16, dtype="bf16"))
        keys = ns.hash_chain(tokens)            # or engine block hashes
        ns.put(keys[0], block_bytes)
        with ns.get(keys[0]) as view:           # pinned, zero-copy
            arr = numpy.frombuffer(view, numpy.uint16)

Lifetimes: a View's pin is released by ``release()``, the end of a ``with``
block or collection, but never while a buffer exported from it
(memoryview, numpy array, torch tensor) is alive: the block stays pinned
until the last of those is gone. A Reservation refuses to ``commit()``
(BufferError) while such a buffer over it is alive.
"""

from kvpool._kvpool import (
    BadRegionError,
    BlockMemory,
    BusyError,
    Error,
    Manifest,
    Namespace,
    NoPinsError,
    NotFoundError,
    Pool,
    PoolFullError,
    Reservation,
    TooLargeError,
    TooManyClientsError,
    View,
    create_pool,
    destroy_pool,
    hash_block,
    hash_chain,
    release_all,
    to_key,
    vllm_block_hashes,
    vllm_key,
    vllm_none_hash,
    vllm_seed_id,
)

__all__ = [
    "BadRegionError",
    "BlockMemory",
    "BusyError",
    "Error",
    "Manifest",
    "Namespace",
    "NoPinsError",
    "NotFoundError",
    "Pool",
    "PoolFullError",
    "Reservation",
    "TooLargeError",
    "TooManyClientsError",
    "View",
    "create_pool",
    "destroy_pool",
    "hash_block",
    "hash_chain",
    "release_all",
    "to_key",
    "vllm_block_hashes",
    "vllm_key",
    "vllm_none_hash",
    "vllm_seed_id",
]
