# SPDX-License-Identifier: MIT
"""vLLM prefix-cache block hashes (vllm/v1/core/kv_cache_utils.py).

A block hash is H(canonical CBOR of (parent hash, tuple of the block's
token ids, extra keys or None)), the parent of the first block being
NONE_HASH = H(canonical CBOR of the seed string). H is SHA-256
(``sha256_cbor``, 32-byte digests) or XXH3-128 (``xxhash_cbor``, 16 bytes).
The seed is ``$PYTHONHASHSEED`` when set, else ``"vllm-none-hash"``.

``kvpool.vllm_block_hashes`` (C++ in libkv) is used when the kvpool package
provides it; otherwise the same digests are computed here with cbor2 and
hashlib/xxhash. Both give identical bytes (tests/test_refengine_hashing.py
checks the fixed vectors of issue 17).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import cbor2

if TYPE_CHECKING:
    from .vllm_types import Request

ALGOS = ("sha256_cbor", "xxhash_cbor")
DEFAULT_SEED = "vllm-none-hash"


def _kvpool_hashes() -> Any:
    try:
        import kvpool  # noqa: PLC0415
    except ImportError:
        return None
    return getattr(kvpool, "vllm_block_hashes", None)


def _digest(algo: str, obj: object) -> bytes:
    data = cbor2.dumps(obj, canonical=True)
    if algo == "sha256_cbor":
        return hashlib.sha256(data).digest()
    if algo == "xxhash_cbor":
        import xxhash  # noqa: PLC0415

        return xxhash.xxh3_128_digest(data)
    raise ValueError(f"hash algorithm {algo!r}: expected one of {ALGOS}")


def resolve_seed(seed: str | None) -> str:
    """vLLM's rule: None means $PYTHONHASHSEED if set, else "vllm-none-hash"."""
    if seed is not None:
        return seed
    return os.environ.get("PYTHONHASHSEED", DEFAULT_SEED)


def none_hash(algo: str = "sha256_cbor", seed: str | None = None) -> bytes:
    """NONE_HASH, the parent of a request's first block."""
    return _digest(algo, resolve_seed(seed))


def block_hashes_py(
    tokens: Sequence[int], block_size: int, algo: str = "sha256_cbor", seed: str | None = None,
    parent: bytes | None = None,
) -> list[bytes]:
    """Hashes of the full blocks of ``tokens`` chained from ``parent``, in pure Python."""
    h = parent if parent is not None else none_hash(algo, seed)
    out = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = _digest(algo, (h, tuple(tokens[start:start + block_size]), None))
        out.append(h)
    return out


def block_hashes(
    tokens: Sequence[int], block_size: int, algo: str = "sha256_cbor", seed: str | None = None,
    parent: bytes | None = None,
) -> list[bytes]:
    """Hashes of the full blocks of ``tokens``: kvpool's C++ when present, else Python."""
    fn = _kvpool_hashes()
    if fn is not None:
        return list(fn(list(tokens), block_size, algo=algo, seed=resolve_seed(seed), parent=parent))
    return block_hashes_py(tokens, block_size, algo, seed, parent)


def make_block_hasher(
    block_size: int, algo: str = "sha256_cbor", seed: str | None = None
) -> Callable[["Request"], list[bytes]]:
    """vLLM's ``get_request_block_hasher``: the returned callable gives the
    hashes of the request's blocks that became full since its last call
    (``len(request.block_hashes)`` blocks are already hashed)."""
    root = none_hash(algo, seed)

    def hasher(request: "Request") -> list[bytes]:
        done = len(request.block_hashes)
        start = done * block_size
        n_full = request.num_tokens // block_size
        if n_full <= done:
            return []
        parent = request.block_hashes[-1] if done else root
        tokens = request.all_token_ids[start:n_full * block_size]
        return block_hashes(tokens, block_size, algo, seed, parent=parent)

    return hasher
