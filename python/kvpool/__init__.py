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

``kvpool.engine`` (the paged-KV connector core) is imported on first use:
``import kvpool`` alone loads only the extension.
"""

import sys as _sys

# typing.TYPE_CHECKING without importing typing, whose import every
# `import kvpool` would pay for; mypy goes by the name.
TYPE_CHECKING = False

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

if TYPE_CHECKING:
    from kvpool import engine as engine
    from kvpool import vllm as vllm
else:
    # Submodules imported on first attribute access; importing binds them
    # on the package, so this runs once per name.
    _LAZY_SUBMODULES = ("engine", "vllm")

    def __getattr__(name: str) -> object:
        if name in _LAZY_SUBMODULES:
            __import__(f"{__name__}.{name}")
            return _sys.modules[f"{__name__}.{name}"]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY_SUBMODULES))
