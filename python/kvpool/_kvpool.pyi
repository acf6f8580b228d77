# SPDX-License-Identifier: MIT
"""Type stubs of kvpool._kvpool, the C++ core of the kvpool package.

Checked against the built module by python/tests/test_typing.py (mypy's
stubtest); what stubtest cannot see (pybind11 and METH_* functions carry no
inspectable signature) follows the bindings in python/src/*.cc.
"""

from types import TracebackType
from typing import Iterable, Optional, Sequence, SupportsIndex, Union, final, overload

# ReadableBuffer is what typeshed's own stubs take for "any buffer": the
# Buffer protocol (__buffer__) in current typeshed, a union of the buffer
# types in older ones (Debian's mypy 1.0.1 has no typing_extensions.Buffer).
from _typeshed import ReadableBuffer
from typing_extensions import Literal, Self

# A key: an int in [0, 2**128) (numpy integers too), or a bytes-like of 16
# or 32 bytes (an engine block hash: the int of its last 16 bytes,
# big-endian). Private names: stub-only aliases, absent at runtime.
_Key = Union[int, SupportsIndex, ReadableBuffer]
# Token ids, each in [0, 2**32): an iterable of ints, or a C-contiguous
# buffer of 4- or 8-byte integers (array('I'), numpy int32/int64/uint32).
_Tokens = Union[Iterable[SupportsIndex], ReadableBuffer]
# One block's extra keys for vLLM's hash: None, or what libkv's canonical
# CBOR encoder takes, nested (tuples and lists are CBOR arrays).
_ExtraKey = Union[None, bool, int, str, bytes, bytearray, tuple["_ExtraKey", ...], list["_ExtraKey"]]
# A vLLM hash scheme: "sha256_cbor" or "xxhash_cbor", or its manifest code
# (2, 3). Names are str, not Literal: engines pass them from configuration.
_VllmAlgo = Union[str, int]

# ---- errors ---------------------------------------------------------------

class Error(OSError):
    """An error libkv returned. An OSError: .errno is the code, str() carries
    libkv's description and, where libkv gave one, its detailed message."""

class PoolFullError(Error):
    """ENOSPC: no space even after evicting every unpinned block, or the
    namespace table is full."""

class NotFoundError(Error):
    """ENOENT: no such block, namespace or pool file."""

class BusyError(Error):
    """EBUSY: another client holds a reservation on the key."""

class NoPinsError(Error):
    """ENOBUFS: this client holds pins_per_client pins; release some."""

class TooLargeError(Error):
    """EMSGSIZE: a block of 0 bytes or larger than the slab size."""

class BadRegionError(Error):
    """EPROTO, EBADMSG or ENODATA: the file is not a valid pool, or a block
    failed its checksum."""

class TooManyClientsError(Error):
    """EUSERS: the pool's client table is full."""

# ---- pools ----------------------------------------------------------------

def create_pool(
    path: str,
    size: int,
    *,
    slab_size: int = 0,
    avg_block_size: int = 0,
    max_clients: int = 0,
    pins_per_client: int = 0,
    max_namespaces: int = 0,
    max_entries: int = 0,
    evict_policy: Union[str, int] = "prefix",
    hugepages: Union[str, int] = "never",
    numa_node: int = -1,
    mode: int = 0,
    replace: bool = False,
    prefault: bool = False,
    feed_slots: int = 0,
    secure_erase: bool = False,
) -> None:
    """Create a pool of ``size`` bytes backed by the file at ``path``.
    ``feed_slots``: records in its change feed (0: none; else a power of
    two, 64..1048576). ``secure_erase``: zero a block's bytes before its
    space can be reused (remove, eviction, expiry, abort, a reaped
    reservation); libkv before ABI v1.4 cannot attach such a pool.

    Zero options take libkv's defaults (4 MiB slabs, 16 KiB average blocks,
    64 clients, 4096 pins per client, 64 namespaces). ``evict_policy``:
    'clock', 'lru', 'lfu', 'fifo', 'priority' or 'prefix'. An existing file
    raises Error (EEXIST) unless ``replace``.
    """

def destroy_pool(path: str) -> None:
    """Remove the pool file at path (NotFoundError if there is none).
    Attached processes keep their mapping."""

class Pool:
    """One client of a pool: a slot in its client table, given back by
    detach(), the end of a ``with`` block, or collection."""

    def __init__(self, path: str, *, no_reap: bool = False) -> None:
        """Attach (reaping dead clients first unless ``no_reap``).
        BadRegionError, TooManyClientsError, NotFoundError."""
    def detach(self) -> None:
        """Give the client slot back (idempotent); every later call raises
        ValueError. Live Views, Reservations and exported buffers keep the
        mapping until they are gone."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def attached(self) -> bool:
        """False once detach() was called."""
    @property
    def st_dev(self) -> int:
        """st_dev of the file this client maps (fixed at attach)."""
    @property
    def st_ino(self) -> int:
        """st_ino of the file this client maps (fixed at attach)."""
    def replaced(self) -> bool:
        """True when path no longer names the file this client maps."""
    @property
    def base_address(self) -> int:
        """The address the region is mapped at in this process."""
    @property
    def mapping_size(self) -> int:
        """The length of the mapping in bytes."""
    @property
    def slab_size(self) -> int:
        """The pool's slab size: also the largest block."""
    @property
    def evict_policy(self) -> str: ...
    @property
    def client_index(self) -> int:
        """This client's slot in the pool's client table."""
    def namespace(self, manifest: Union[Manifest, int]) -> Namespace:
        """The namespace of a Manifest (registered if new; PoolFullError when
        the table is full) or a registered one by id (NotFoundError)."""
    def stats(self) -> dict[str, int]:
        """Counter totals over every client and the pool's geometry."""
    def usage(self) -> dict[str, int]:
        """Exact accounting by a full scan of the pool."""
    def live_bytes(self) -> int:
        """Bytes of the blocks committed and not yet freed."""
    def clients(self) -> list[dict[str, int]]:
        """One dict per occupied client slot (slot, pid, state, alive,
        start_time, attach_ns, pins, reservations, bytes_reserved)."""
    def pins_held(self) -> int:
        """The pins this client holds, as the pool's client table says."""
    def reap(self) -> int:
        """Reap clients whose process is gone; returns how many."""
    def evict_bytes(self, bytes: int) -> int:
        """Evict unpinned blocks until at least ``bytes`` are freed; returns
        the bytes freed."""

# ---- keys -----------------------------------------------------------------

def to_key(key: _Key) -> int:
    """The int form of a key: an int as is, 16 or 32 bytes as the int of
    their last 16 bytes, big-endian."""

def hash_chain(tokens: _Tokens, block_tokens: int, seed: int) -> list[int]:
    """kvpool's chained keys of the full blocks of tokens:
    key[i] = XXH3-128(seed, key[i-1] || tokens of block i)."""

def hash_block(seed: int, prev: Optional[_Key], tokens: _Tokens) -> int:
    """One link of kvpool's chain: XXH3-128(seed, prev || tokens); prev None
    (or 0) for the first block."""

def vllm_block_hashes(
    tokens: Iterable[SupportsIndex],
    block_size: int,
    algo: _VllmAlgo = "sha256_cbor",
    seed: Optional[str] = None,
    extra_keys: Optional[Sequence[_ExtraKey]] = None,
    parent: Optional[ReadableBuffer] = None,
) -> list[bytes]:
    """vLLM's prefix-cache block hashes of the full blocks of ``tokens``
    (32 bytes each for sha256_cbor, 16 for xxhash_cbor).

    ``seed`` None means $PYTHONHASHSEED when set, else "vllm-none-hash".
    ``extra_keys``: None or one entry per full block. ``parent``: the last
    hash of the chain so far (None or b"": NONE_HASH). ValueError, TypeError.
    """

def vllm_none_hash(algo: _VllmAlgo = "sha256_cbor", seed: Optional[str] = None) -> bytes:
    """vLLM's NONE_HASH, the parent of a sequence's first block: H(seed)."""

def vllm_key(hash: ReadableBuffer) -> int:
    """The kvpool key of a 16- or 32-byte vLLM block hash:
    int.from_bytes(hash[-16:], "big"). Its low 64 bits are vLLM's KV-event
    form of the hash."""

def vllm_seed_id(algo: _VllmAlgo = "sha256_cbor", seed: Optional[str] = None) -> int:
    """The manifest hash_seed of a vLLM scheme and seed: the first 8 bytes of
    NONE_HASH, big-endian."""

# ---- namespaces -----------------------------------------------------------

class Manifest:
    """A model identity: blocks are shared only between clients whose
    manifests are equal byte for byte."""

    def __init__(
        self,
        model_name: str,
        block_tokens: int,
        *,
        weights_fingerprint: bytes = b"",
        dtype: object = 0,
        kv_layout: int = 0,
        tp_rank: int = 0,
        tp_world: int = 1,
        hash_scheme: Union[str, int] = 1,
        hash_seed: int = 0,
    ) -> None:
        """``dtype``: an int (KV_DTYPE_*, engine-defined above 1024), a name
        ('fp16', 'bf16', 'fp32', 'fp8_e4m3', 'fp8_e5m2', 'int8') or a torch
        dtype; ``hash_scheme``: an int or 'kvpool' (1), 'sha256_cbor' (2),
        'xxhash_cbor' (3). ValueError names the field out of range."""
    @property
    def model_name(self) -> str: ...
    @property
    def block_tokens(self) -> int: ...
    @property
    def weights_fingerprint(self) -> bytes:
        """32 bytes, zero-padded."""
    @property
    def dtype(self) -> int: ...
    @property
    def kv_layout(self) -> int: ...
    @property
    def tp_rank(self) -> int: ...
    @property
    def tp_world(self) -> int: ...
    @property
    def hash_scheme(self) -> int: ...
    @property
    def hash_seed(self) -> int: ...
    @property
    def seed(self) -> int:
        """The chain seed this manifest yields (Namespace.seed)."""
    def to_bytes(self) -> bytes:
        """The 160-byte struct kv_manifest as stored in the pool."""
    def as_dict(self) -> dict[str, object]:
        """The fields, as the constructor's keyword arguments."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

class Namespace:
    """The blocks of one model identity in one pool (Pool.namespace; not
    constructible)."""

    @property
    def id(self) -> int: ...
    @property
    def seed(self) -> int:
        """The chain seed of kvpool's own keys (hash_chain)."""
    @property
    def manifest(self) -> Manifest: ...
    @property
    def pool(self) -> Pool: ...
    @property
    def block_tokens(self) -> int: ...
    def put(
        self,
        key: _Key,
        data: ReadableBuffer,
        *,
        tokens: int = 0,
        priority: int = 0,
        user_tag: int = 0,
        parent: Optional[_Key] = None,
        ttl_ms: int = 0,
        token_ids: Optional[Sequence[int]] = None,
    ) -> bool:
        """Copy ``data`` (C-contiguous) into the pool under ``key`` and commit
        it: True if stored, False if already committed. ``token_ids`` go to
        the pool's change feed. PoolFullError, BusyError, TooLargeError."""
    def reserve(
        self,
        key: _Key,
        length: int,
        *,
        tokens: int = 0,
        priority: int = 0,
        user_tag: int = 0,
        parent: Optional[_Key] = None,
        ttl_ms: int = 0,
    ) -> Optional[Reservation]:
        """Reserve ``length`` bytes under ``key`` to write in place; None if
        the key is already committed. Errors as put()."""
    def get(self, key: _Key, /) -> Optional[View]:
        """Pin the committed block under ``key``: a zero-copy View, or None.
        NoPinsError when this client's pins run out."""
    def contains(self, key: _Key, /) -> bool: ...
    def __contains__(self, key: _Key, /) -> bool: ...
    def remove(self, key: _Key) -> bool:
        """True if removed, False if there was none; BusyError while it is
        reserved. Views of it stay valid until released."""
    @overload
    def match_prefix(self, keys: Iterable[_Key], pin: Literal[False] = False) -> int: ...
    @overload
    def match_prefix(self, keys: Iterable[_Key], pin: Literal[True]) -> list[View]: ...
    @overload
    def match_prefix(self, keys: Iterable[_Key], pin: bool) -> Union[int, list[View]]:
        """How many leading keys are committed; with pin=True, Views of those
        blocks (all pinned, or NoPinsError and none)."""
    def get_many(self, keys: Iterable[_Key]) -> list[Optional[View]]: ...
    def remote_fetch(
        self,
        keys: Iterable[_Key],
        first: int = 0,
        *,
        timeout_ms: int = 0,
        socket: Optional[str] = None,
        pool_name: Optional[str] = None,
    ) -> dict[str, int]:
        """Ask kvpoold to bring keys[first:] from the pool's remote tier into
        the pool; 'committed' of them are there now (doc/remote.md)."""
    def contains_many(self, keys: Iterable[_Key]) -> list[bool]: ...
    def put_many(
        self,
        keys: Iterable[_Key],
        datas: Sequence[ReadableBuffer],
        *,
        tokens: int = 0,
        priority: int = 0,
        user_tag: int = 0,
        parent: Optional[_Key] = None,
        chain: bool = False,
        ttl_ms: int = 0,
    ) -> list[bool]:
        """put() of each pair, in order; chain=True makes each block's parent
        the key before it. The first error is raised; earlier blocks stay."""
    def hash_chain(self, tokens: _Tokens) -> list[int]:
        """hash_chain(tokens, self.block_tokens, self.seed)."""

def release_all(views: Iterable[Optional[View]]) -> None:
    """View.release() of each View (None items skipped)."""

# ---- views and reservations -----------------------------------------------

@final
class View:
    """A pinned, read-only, zero-copy view of a committed block. Buffer
    protocol: memoryview(v), numpy.frombuffer(v, dtype), torch.frombuffer(v,
    dtype=...) read the pool in place; the block stays pinned while any of
    them is alive."""

    # Python >= 3.12 exposes the buffer slot as __buffer__; typeshed's Buffer
    # protocol checks for it on every version.
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...
    def release(self) -> None:
        """Give up this View's pin (idempotent); exported buffers keep it."""
    def verify(self) -> bool:
        """Read the block and check it against its checksum."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> Literal[False]: ...
    @property
    def address(self) -> int:
        """The block's address in this process (ValueError once released)."""
    @property
    def length(self) -> int: ...
    @property
    def checksum(self) -> int:
        """The XXH3-64 checksum recorded at commit."""
    @property
    def tokens(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def user_tag(self) -> int: ...
    @property
    def key(self) -> int: ...
    @property
    def released(self) -> bool: ...

@final
class Reservation:
    """Space reserved for one block: write .buffer, then commit() or abort();
    ``with r:`` commits on a normal exit, aborts on an exception."""

    def commit(
        self, checksum: Optional[int] = None, *, token_ids: Optional[Sequence[int]] = None
    ) -> None:
        """Publish the block (``token_ids`` go to the pool's change feed). BufferError while a buffer over it is alive;
        ValueError if already committed or aborted."""
    def abort(self) -> None:
        """Drop the reservation (idempotent); ValueError if committed."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        /,
    ) -> Literal[False]: ...
    @property
    def buffer(self) -> memoryview:
        """A new writable memoryview over the reserved bytes at each access."""
    @property
    def address(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def key(self) -> int: ...
    @property
    def state(self) -> Literal["open", "committing", "committed", "aborted"]: ...

@final
class BlockMemory:
    """The exporter behind a View's or Reservation's buffers (their .obj):
    it holds the pin or the uncommitted reservation. Not constructible."""

    def __buffer__(self, flags: int, /) -> memoryview: ...

# ---- the paged-KV core (kvpool.engine builds on these) --------------------

class PagedCache:
    """An engine's paged KV cache as addresses (kvpool.engine.layout_of)."""

    def __init__(
        self,
        layers: Sequence[tuple[int, int, int]],
        frag_bytes: int,
        num_blocks: int,
        owner: object,
    ) -> None:
        """``layers``: per layer (K address of block 0, K-to-V byte stride,
        block byte stride); ``frag_bytes``: the contiguous bytes of one
        layer's K (or V) of one block; ``owner``: kept alive (the tensors)."""
    @property
    def block_bytes(self) -> int:
        """num_layers * 2 * frag_bytes: one pool block."""
    @property
    def frag_bytes(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def num_blocks(self) -> int: ...

class SaveBatch:
    """Reservations for engine blocks, written by layer or whole, committed
    with the checksum taken during the copy."""

    def __init__(
        self,
        ns: Namespace,
        cache: PagedCache,
        keys: Iterable[_Key],
        block_ids: Sequence[int],
        parents: Optional[Sequence[Optional[_Key]]] = None,
        parent: Optional[_Key] = None,
        tokens: int = 0,
        token_ids: Optional[Sequence[Optional[Sequence[int]]]] = None,
    ) -> None:
        """Reserve a block per key not yet in the pool (PoolFullError and
        nothing reserved when they do not all fit)."""
    def write_layer(self, layer: int) -> None: ...
    def write_all(self) -> None: ...
    def commit(self) -> int:
        """Publish the blocks; how many were stored."""
    def abort(self) -> None: ...
    @property
    def present(self) -> list[bool]:
        """Per key: reserved here (False: present, or another client's)."""
    @property
    def pending(self) -> int: ...
    @property
    def committed(self) -> int: ...

def save_blocks(
    ns: Namespace,
    cache: PagedCache,
    keys: Iterable[_Key],
    block_ids: Sequence[int],
    parents: Optional[Sequence[Optional[_Key]]] = None,
    parent: Optional[_Key] = None,
    tokens: int = 0,
    token_ids: Optional[Sequence[Optional[Sequence[int]]]] = None,
) -> list[bool]:
    """Reserve, gather and commit each block in turn; one flag per key
    (stored here). PoolFullError stops it: earlier blocks stay stored."""

class PinnedBlocks:
    """The pinned leading blocks of a key chain (match_prefix with pins),
    scattered into an engine's blocks by load()."""

    def __init__(self, ns: Namespace, keys: Iterable[_Key]) -> None: ...
    def load(self, cache: PagedCache, block_ids: Sequence[int], verify: bool = True) -> int:
        """Copy the next len(block_ids) pinned blocks into those engine
        blocks; returns how many were loaded. The first bad block (length,
        or checksum: then removed from the pool) stops the load and drops
        every remaining pin; ``failure`` says why."""
    def release(self) -> None:
        """Release the pins not yet loaded."""
    @property
    def pinned(self) -> int:
        """Blocks pinned by the constructor (the matched prefix)."""
    @property
    def remaining(self) -> int:
        """Pins not yet loaded or released."""
    @property
    def loaded(self) -> int: ...
    @property
    def failure(self) -> Optional[str]: ...

def _bench_memcpy(pieces: ReadableBuffer) -> None:
    """memcpy(dst, src, n) for each (dst, src, n) uint64 triple of
    ``pieces`` (e.g. ``array.array("Q")``), without the GIL: the baseline of
    tests/bench/bench_paged.py. Addresses are not checked."""

def paged_simd_width(width: Optional[int] = None) -> int:
    """The vector width (bytes) of the paged copy loops; with ``width``, cap
    it (0: the widest the CPU has) and return the width now in use."""
