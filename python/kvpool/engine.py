# SPDX-License-Identifier: MIT
"""The paged-KV connector core: engine KV blocks to and from a kvpool pool.

An inference engine keeps its KV cache in fixed-size blocks of
``block_size`` tokens. :class:`PagedKVStore` stores one engine block, with
all its layers, as one kvpool block, in the canonical order
``(num_layers, 2, block_size, num_kv_heads, head_size)`` of the engine's
dtype, whatever the engine's own layout. So engines that keep their cache
differently (one tensor per layer, or one cross-layer tensor) share blocks,
as long as their namespace manifest (model, dtype, block size, TP rank...)
is the same.

Saving reserves one pool block per engine block and gathers the engine's
fragments straight into the reservation; loading scatters a pinned,
zero-copy view of the pool straight into the engine's blocks. The copy
loops are C++ (``kvpool._kvpool``), run without the GIL, and take the
block's XXH3-64 checksum in the same pass: a save commits it, a load checks
it, and a block whose bytes changed in the pool is removed and not used.

Accepted caches (CPU tensors; torch, or anything with the same ``shape``,
``stride()``, ``data_ptr()``, ``element_size()`` and ``dtype``):

``layout="per_layer"``
    a sequence (or a dict, in model order, as vLLM's ``register_kv_caches``
    gives it) of ``num_layers`` tensors of shape ``(2, num_blocks,
    block_size, num_kv_heads, head_size)`` (vLLM's FlashAttention layout).
    A cache kept as ``(num_blocks, 2, ...)`` is accepted as the view
    ``t.permute(1, 0, 2, 3, 4)``: only strides matter.
``layout="cross_layer"``
    one tensor of shape ``(num_blocks, num_layers, 2, block_size,
    num_kv_heads, head_size)``, one engine block holding all its layers.

Every layer must have the same shape and dtype; the ``(block_size,
num_kv_heads, head_size)`` part of each must be contiguous (the fragment
that is copied as a whole); the outer dimensions may have any strides that
do not overlap. Any dtype works (the copy is byte for byte); fp16, bf16 and
fp32 are tested. Tensors are kept referenced by the store; they must not be
resized or freed while it is in use.

Example::

    store = kvpool.engine.PagedKVStore(ns, kv_caches, layout="per_layer")
    n = store.lookup("req-1", keys)          # leading blocks in the pool, pinned
    loaded = store.load("req-1", block_ids[:n])
    store.release("req-1")
    store.save(keys[loaded:], block_ids[loaded:], parent=keys[loaded - 1] if loaded else None)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

from . import _kvpool

__all__ = ["PagedKVStore", "SaveBatch", "check_manifest", "dtype_code", "layout_of"]

log = logging.getLogger(__name__)

Key = Union[int, bytes, bytearray, memoryview]
"""A kvpool key: an int in [0, 2**128) or a 16/32-byte engine block hash."""

LAYOUTS = ("per_layer", "cross_layer")

# uapi/kvpool/region.h KV_DTYPE_*, by torch dtype name.
_DTYPE_CODES = {
    "float16": 1,
    "bfloat16": 2,
    "float8_e4m3fn": 3,
    "float8_e5m2": 4,
    "float32": 5,
    "int8": 6,
}


def dtype_code(dtype: Any) -> int:
    """The manifest code (KV_DTYPE_*) of a torch dtype, 0 if it has none."""
    return _DTYPE_CODES.get(str(dtype).removeprefix("torch."), 0)


def check_manifest(manifest: _kvpool.Manifest, info: dict[str, Any]) -> None:
    """The namespace's identity must describe the cache: its block_tokens is
    the cache's block_size and its dtype, when set (1..1024), the tensors'
    (an fp8 dtype also accepts uint8 tensors, vLLM's storage for fp8).
    Blocks of another dtype but the same size would load as garbage that no
    length or checksum check can see."""
    bs = int(info["block_size"])
    if int(manifest.block_tokens) != bs:
        raise ValueError(
            f"namespace manifest block_tokens is {manifest.block_tokens}, "
            f"the KV cache's block_size {bs}"
        )
    want = int(manifest.dtype)
    got = dtype_code(info["dtype"])
    # vLLM keeps fp8 caches in uint8 tensors.
    fp8_bytes = str(info["dtype"]) == "torch.uint8" and want in (3, 4)
    if 0 < want <= 1024 and want != got and not fp8_bytes:
        raise ValueError(
            f"namespace manifest dtype is {want}, the KV cache's is {info['dtype']} "
            f"(code {got or 'none'})"
        )


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in t.shape)


def _check_tensor(t: Any, what: str) -> None:
    for attr in ("shape", "stride", "data_ptr", "element_size", "dtype"):
        if not hasattr(t, attr):
            raise TypeError(f"{what}: expected a torch tensor, got {type(t).__name__}")
    device = getattr(t, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        raise ValueError(f"{what}: tensor is on {device}, expected a CPU tensor")


def _check_fragment(t: Any, shape: tuple[int, ...], strides: tuple[int, ...], what: str) -> None:
    """The last three dims (block_size, num_kv_heads, head_size) must be contiguous."""
    bs, h, d = shape[-3:]
    want = (h * d, d, 1)
    for dim, (n, got, exp) in enumerate(zip((bs, h, d), strides[-3:], want)):
        if n > 1 and got != exp:
            raise ValueError(
                f"{what}: (block_size, num_kv_heads, head_size) must be contiguous, "
                f"stride of dim {len(shape) - 3 + dim} is {got} elements, expected {exp}"
            )


def _check_outer(dims: list[tuple[int, int]], frag_bytes: int, what: str) -> None:
    """Outer dims, (extent, byte stride), must place fragments without overlap."""
    span = frag_bytes
    for stride, extent in sorted((abs(s), e) for e, s in dims if e > 1):
        if stride < span:
            raise ValueError(
                f"{what}: a stride of {stride} bytes overlaps fragments of {span} bytes "
                "(expanded or overlapping view?)"
            )
        span = stride * extent


def layout_of(kv_caches: Any, layout: str = "per_layer") -> dict[str, Any]:
    """Check an engine's KV cache and describe it.

    Returns a dict with ``layers`` (per layer: address of K of block 0,
    K-to-V byte stride, block byte stride), ``frag_bytes``, ``num_blocks``,
    ``num_layers``, ``block_size``, ``num_kv_heads``, ``head_size``,
    ``dtype``, ``element_size`` and ``tensors`` (the tensors, to keep alive).
    Raises TypeError or ValueError naming what does not fit.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    layers: list[tuple[int, int, int]] = []
    if layout == "per_layer":
        if isinstance(kv_caches, Mapping):
            tensors = list(kv_caches.values())
        elif isinstance(kv_caches, Sequence) and not hasattr(kv_caches, "data_ptr"):
            tensors = list(kv_caches)
        else:
            raise TypeError("per_layer: expected a sequence or dict of per-layer tensors")
        if not tensors:
            raise ValueError("per_layer: no layers")
        shape0: Optional[tuple[int, ...]] = None
        dtype0: Any = None
        for i, t in enumerate(tensors):
            what = f"per_layer layer {i}"
            _check_tensor(t, what)
            shape = _shape(t)
            if len(shape) != 5 or shape[0] != 2:
                raise ValueError(
                    f"{what}: shape {shape}, expected (2, num_blocks, block_size, "
                    "num_kv_heads, head_size)"
                )
            if shape0 is None:
                shape0, dtype0 = shape, t.dtype
            elif shape != shape0 or t.dtype != dtype0:
                raise ValueError(
                    f"{what}: shape {shape} dtype {t.dtype}, layer 0 has {shape0} {dtype0}"
                )
            strides = tuple(int(s) for s in t.stride())
            _check_fragment(t, shape, strides, what)
            es = int(t.element_size())
            frag = shape[2] * shape[3] * shape[4] * es
            _check_outer([(2, strides[0] * es), (shape[1], strides[1] * es)], frag, what)
            layers.append((int(t.data_ptr()), strides[0] * es, strides[1] * es))
        assert shape0 is not None
        num_blocks, bs, h, d = shape0[1:]
        num_layers = len(tensors)
        t0 = tensors[0]
    else:
        t0 = kv_caches
        what = "cross_layer"
        _check_tensor(t0, what)
        shape = _shape(t0)
        if len(shape) != 6 or shape[2] != 2:
            raise ValueError(
                f"{what}: shape {shape}, expected (num_blocks, num_layers, 2, block_size, "
                "num_kv_heads, head_size)"
            )
        strides = tuple(int(s) for s in t0.stride())
        _check_fragment(t0, shape, strides, what)
        es = int(t0.element_size())
        num_blocks, num_layers, _, bs, h, d = shape
        frag = bs * h * d * es
        _check_outer(
            [(num_blocks, strides[0] * es), (num_layers, strides[1] * es), (2, strides[2] * es)],
            frag,
            what,
        )
        base = int(t0.data_ptr())
        for lyr in range(num_layers):
            layers.append((base + lyr * strides[1] * es, strides[2] * es, strides[0] * es))
        tensors = [t0]
    es = int(t0.element_size())
    return {
        "layers": layers,
        "frag_bytes": bs * h * d * es,
        "num_blocks": num_blocks,
        "num_layers": num_layers,
        "block_size": bs,
        "num_kv_heads": h,
        "head_size": d,
        "dtype": t0.dtype,
        "element_size": es,
        "tensors": tensors,
    }


class SaveBatch:
    """Pool reservations for engine blocks, filled layer by layer or whole.

    Made by :meth:`PagedKVStore.begin_save`. Call :meth:`write_layer` for
    each layer as it is ready (vLLM's ``save_kv_layer``) or
    :meth:`write_all`, then :meth:`commit` (vLLM's ``wait_for_save``); or
    :meth:`abort`. As a context manager it commits on normal exit and
    aborts on an exception. Reservations not committed are aborted when the
    batch is collected; until then the keys are invisible to readers.
    """

    def __init__(self, batch: _kvpool.SaveBatch) -> None:
        self._b = batch

    @property
    def present(self) -> list[bool]:
        """Per key: True if reserved here, False if skipped (already in the
        pool, or being written by another client)."""
        return list(self._b.present)

    @property
    def pending(self) -> int:
        """Reservations open (blocks this batch will store)."""
        return int(self._b.pending)

    @property
    def committed(self) -> int:
        """Blocks stored by :meth:`commit` (0 before it)."""
        return int(self._b.committed)

    def write_layer(self, layer: int) -> None:
        """Copy layer ``layer`` of every block into its reservation.

        Layers written in order 0, 1, ... are checksummed during the copy;
        out of order, each block is checksummed once more at commit.
        ValueError for a layer written twice, IndexError out of range.
        """
        self._b.write_layer(layer)

    def write_all(self) -> None:
        """Copy every layer not yet written."""
        self._b.write_all()

    def commit(self) -> int:
        """Publish the blocks; returns how many were stored. ValueError if a
        layer was not written (nothing is committed then)."""
        return int(self._b.commit())

    def abort(self) -> None:
        """Drop the reservations not yet committed."""
        self._b.abort()

    def __enter__(self) -> "SaveBatch":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class PagedKVStore:
    """Save and load an engine's paged KV blocks in a kvpool namespace.

    ``ns`` is a :class:`kvpool.Namespace` whose manifest identifies the model
    (dtype, block size, TP rank...): its ``block_tokens`` must equal the
    cache's block size and its ``dtype``, unless 0 (unset), the tensors'
    (ValueError otherwise). ``kv_caches`` and ``layout`` are described in
    the module docstring. ``verify`` (default True) checks
    each loaded block's checksum during the copy.

    Pins taken by :meth:`lookup` are kept per request id until
    :meth:`load` consumes them, :meth:`release` drops them, the store is
    closed, or the process exits (the pool's reaper frees them then).
    Not thread-safe: one thread (the engine's worker) uses a store.
    """

    def __init__(
        self,
        ns: _kvpool.Namespace,
        kv_caches: Any,
        layout: str = "per_layer",
        *,
        verify: bool = True,
    ) -> None:
        info = layout_of(kv_caches, layout)
        check_manifest(ns.manifest, info)
        self._ns = ns
        self._cache = _kvpool.PagedCache(
            info["layers"], info["frag_bytes"], info["num_blocks"], info["tensors"]
        )
        self._info = info
        self.layout = layout
        self.verify = verify
        self._pins: dict[Hashable, _kvpool.PinnedBlocks] = {}
        self.last_failure: Optional[str] = None
        """Why the last load stopped early (checksum mismatch, wrong length), or None."""

    # ---- geometry -----------------------------------------------------
    @property
    def namespace(self) -> _kvpool.Namespace:
        return self._ns

    @property
    def block_bytes(self) -> int:
        """Bytes of one pool block: num_layers * 2 * block_size * heads * head_size * dtype size."""
        return int(self._cache.block_bytes)

    @property
    def num_layers(self) -> int:
        return int(self._info["num_layers"])

    @property
    def num_blocks(self) -> int:
        return int(self._info["num_blocks"])

    @property
    def block_size(self) -> int:
        return int(self._info["block_size"])

    @property
    def num_kv_heads(self) -> int:
        return int(self._info["num_kv_heads"])

    @property
    def head_size(self) -> int:
        return int(self._info["head_size"])

    @property
    def dtype(self) -> Any:
        return self._info["dtype"]

    # ---- lookup and load ----------------------------------------------
    def lookup(self, req_id: Hashable, keys: Iterable[Key]) -> int:
        """How many leading ``keys`` are in the pool; pins them for ``req_id``.

        Pins an earlier lookup of ``req_id`` still holds are released first.
        Raises NoPinsError when this client's pins run out (none kept).
        """
        self.release(req_id)
        pins = _kvpool.PinnedBlocks(self._ns, keys)
        if pins.pinned:
            self._pins[req_id] = pins
        return int(pins.pinned)

    def pinned(self, req_id: Hashable) -> int:
        """Blocks ``req_id`` still holds pinned (looked up, not yet loaded)."""
        pins = self._pins.get(req_id)
        return int(pins.remaining) if pins is not None else 0

    def load(self, req_id: Hashable, block_ids: Sequence[int]) -> int:
        """Copy the next ``len(block_ids)`` pinned blocks of ``req_id`` into
        those engine blocks; returns how many were loaded.

        Each block's length must be :attr:`block_bytes` and, with
        :attr:`verify`, its checksum must match the bytes copied. The first
        block that fails is removed from the pool (checksum) and ends the
        load: its engine block holds garbage and the engine must recompute
        it and everything after it; the rest of the request's pins are
        released and :attr:`last_failure` says why. The pins of the loaded
        blocks are released. KeyError if ``req_id`` holds no pins (and
        block_ids is not empty); ValueError for more ids than pinned blocks.
        """
        ids = list(block_ids)
        if not ids:
            return 0
        pins = self._pins[req_id]
        n = int(pins.load(self._cache, ids, self.verify))
        failure = pins.failure
        if failure is not None:
            self.last_failure = str(failure)
            log.warning("kvpool: request %r: %s; recomputing from there", req_id, failure)
        if not pins.remaining:
            del self._pins[req_id]
        return n

    def release(self, req_id: Hashable) -> None:
        """Drop the pins ``req_id`` still holds (no-op if none)."""
        pins = self._pins.pop(req_id, None)
        if pins is not None:
            pins.release()

    def close(self) -> None:
        """Release every request's pins."""
        for pins in self._pins.values():
            pins.release()
        self._pins.clear()

    def __enter__(self) -> "PagedKVStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- save ---------------------------------------------------------
    def begin_save(
        self,
        keys: Iterable[Key],
        block_ids: Sequence[int],
        parents: Optional[Sequence[Optional[Key]]] = None,
        *,
        parent: Optional[Key] = None,
        token_ids: Optional[Sequence[Optional[Sequence[int]]]] = None,
    ) -> SaveBatch:
        """Reserve a pool block for each key not yet in the pool.

        ``block_ids[i]`` is the engine block holding ``keys[i]``. Chains: by
        default block i's parent is ``keys[i - 1]`` and the first one's is
        ``parent``; ``parents`` (one key or None per key) sets them all. A
        parent reserved in the same batch is not committed when its child is
        reserved, so libkv does not link them (the child becomes a chain root
        for PREFIX eviction); :meth:`save` reserves block by block and keeps
        the links. ``token_ids`` (one sequence or None per key) are the
        blocks' tokens, recorded with each commit in the pool's change feed
        (KV events for routers). Raises PoolFullError (nothing stays
        reserved) when the pool cannot hold them all even after eviction.
        """
        return SaveBatch(
            _kvpool.SaveBatch(
                self._ns,
                self._cache,
                keys,
                list(block_ids),
                parents,
                parent,
                self.block_size,
                token_ids,
            )
        )

    def save(
        self,
        keys: Iterable[Key],
        block_ids: Sequence[int],
        parents: Optional[Sequence[Optional[Key]]] = None,
        *,
        parent: Optional[Key] = None,
        token_ids: Optional[Sequence[Optional[Sequence[int]]]] = None,
    ) -> int:
        """Store whole engine blocks under ``keys``; returns how many were
        stored (keys already present are skipped).

        Block by block: reserve, gather, commit. Parents and token ids as
        for :meth:`begin_save`. PoolFullError when a block finds no room: the
        blocks before it stay stored (whole, a chain prefix), nothing of it.
        """
        stored = _kvpool.save_blocks(
            self._ns,
            self._cache,
            keys,
            list(block_ids),
            parents,
            parent,
            self.block_size,
            token_ids,
        )
        return sum(1 for s in stored if s)
