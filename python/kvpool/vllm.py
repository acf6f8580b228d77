# SPDX-License-Identifier: MIT
"""kvpool as a vLLM KV connector (the V1 connector contract).

Load it into vLLM with::

    --prefix-caching-hash-algo sha256_cbor
    --kv-transfer-config '{"kv_connector": "KvpoolConnector",
        "kv_connector_module_path": "kvpool.vllm", "kv_role": "kv_both",
        "kv_connector_extra_config": {"pool_path": "/dev/shm/kvpool/default"}}'

and set ``PYTHONHASHSEED`` to the same value in every engine that should
share blocks: vLLM roots its block-hash chains in a ``NONE_HASH`` drawn at
random when it is unset, and such chains are never found by another process.

Keys and identity
-----------------
Each engine block is one kvpool block holding all of that block's layers
(``kvpool.engine.PagedKVStore``). Its key is the request's own vLLM block
hash (``request.block_hashes[i]``) mapped by the project's rule: the last
16 bytes read big-endian (``kvpool.vllm_key``), so vLLM's KV-event form of
the hash (its last 8 bytes) is the key's low 64 bits. Blocks live in the
namespace of a ``kvpool.Manifest`` that records everything that makes two
engines' KV bytes differ for the same key: model name, weights
fingerprint, KV dtype, block size, tensor-parallel rank and world size,
hash scheme and the hash seed (the first 8 bytes of ``NONE_HASH``). Two
engines that differ in any of these get different namespaces and never
share a block.

Scheduler and worker
--------------------
vLLM builds this class twice: once with ``KVConnectorRole.SCHEDULER`` in
the engine-core process and once with ``KVConnectorRole.WORKER`` in each
worker, which may be another process. The two sides share nothing but
the metadata object the scheduler builds each step
(``KvpoolConnectorMetadata``, plain lists of ints, picklable):

- The scheduler attaches the pool on its own and answers
  ``get_num_new_matched_tokens`` with ``Namespace.match_prefix`` over the
  request's keys, taking the smallest answer over the namespaces of all
  TP ranks (a block is only loadable when every rank holds its shard),
  and pins what it reports (below). It never matches the request's last
  token (vLLM must compute at least one token to get logits), and it
  counts only whole blocks after the engine's own prefix-cache hit.
- ``update_state_after_alloc`` records which engine block ids the matched
  blocks go to; ``build_connector_meta`` ships those loads, plus one save
  per scheduled request for the blocks that become full in this step
  (``[num_computed // block_size, (num_computed + num_scheduled) //
  block_size)``, bounded by the block hashes known so far, so decoded
  tokens are saved too once a block of them is full).
- The worker pins the blocks again on its own client when it loads them
  (``PagedKVStore.lookup`` then ``load`` in ``start_load_kv``, before the
  forward pass; the worker may be another process), so its pins live for
  one copy. Loading is synchronous (``get_num_new_matched_tokens``
  answers ``load_async = False``), so ``wait_for_layer_load`` has
  nothing to wait for.
- Saving happens in ``wait_for_save``, after the step's forward pass
  wrote the step's KV: each block that became full is stored by reserve,
  gather of all its layers, commit, one block after the other, each
  naming the block before it as its parent, so kvpool's PREFIX eviction
  sees whole chains and evicts their tails first (``save_mode =
  "per_block"``). With ``save_mode = "per_layer"`` the first
  ``save_kv_layer`` of a step reserves every new block, each call gathers
  that layer, and ``wait_for_save`` commits: the copy of a layer can
  follow its attention, but blocks reserved in one batch are not linked
  to the parents reserved with them. Either way present keys are skipped
  (blocks another engine stored first are not written twice), a process
  killed before a commit leaves reservations that no reader sees and
  kvpoold's reaper frees, and saving is best effort: a full pool stops
  it and the engine goes on.

Pins between the lookup and the load
------------------------------------
vLLM loads what ``get_num_new_matched_tokens`` reported a step later, or
two with async scheduling (more with pipeline stages), and another
engine's eviction could take unpinned blocks in between: the load would
fail and the engine recompute what it was promised. So the scheduler side
pins, on its own client of the pool, the blocks it reports
(``Namespace.match_prefix(pin=True)`` on every TP rank's namespace), one
set per request: vLLM asks again for a request it could not schedule, and
each answer replaces the request's earlier pins. ``update_state_after_alloc``
keeps only the blocks vLLM will load (none for 0 tokens), and the set's
ticket travels with the load (``LoadSpec.pins``). The set is given back
at the first of:

- the worker's report: ``build_connector_worker_meta`` returns the
  tickets whose loads ``start_load_kv`` ran (loaded or failed), which
  vLLM (0.18 and later) hands to the scheduler's
  ``update_connector_output`` as ``kv_connector_worker_meta`` with the
  step's output; the reports of a step's workers aggregate by
  intersection, so a set goes once every worker has loaded its shard;
- ``pin_steps`` ``build_connector_meta`` calls after the one that sent
  the load, for a vLLM without that channel: the scheduler builds step
  N + k only after it has the output of step N, k being the steps in
  flight (1, plus 1 with async scheduling, plus 1 per pipeline stage
  after the first), so the worker has run the load by then;
- ``request_finished`` (finished, aborted) or the request id in a later
  ``finished_req_ids``; a request preempted and asked again replaces its
  set;
- the pool attached anew: the old client is detached with its pins;
- the limits: at most ``max_pinned_blocks`` pins (every rank counted)
  and no set older than ``pin_ttl_ms``, so a request asked for and never
  scheduled holds nothing for long. A lookup that finds no room, or whose
  client runs out of pins (``NoPinsError``), pins and answers fewer
  blocks (a halved prefix) instead of failing.

A process that dies loses its pins to kvpoold's reaper like any client.

Blocks that fail to load
------------------------
``PagedKVStore.load`` verifies each block's checksum before its bytes
reach the engine and stops at the first bad or vanished block (a bad one
is also removed from the pool). The block ids from there to the end of
that request's load are reported by ``get_block_ids_with_load_errors``,
which makes vLLM truncate the request's computed tokens at the first of
them, discard the step's output for it and recompute (vLLM's
``kv_load_failure_policy = "recompute"``). The worker also drops this
step's saves for any request whose blocks include a failed one, since
their KV was computed over bytes that were never loaded.

When kvpoold re-creates the pool
--------------------------------
A process keeps its mapping of the file it attached. When kvpoold is
restarted cold (the region was removed, or rebuilt, and the snapshot is
restored into a new file at the same path), that mapping is an orphan
nobody else sees: blocks saved there are lost and other engines' blocks
are never found. So both sides, each time they use the pool and at most
every ``pool_check_ms``, compare the file the path names with the one
mapped (``Pool.replaced()``: one ``stat``; one attach of a path per
process, shared by the connectors in it). When they differ, the old
client is detached (its pins and reservations given back, the orphan
unmapped once nothing refers to it) and the path attached again; the
scheduler registers its namespaces in the new pool and the worker builds
its ``PagedKVStore`` anew. A path that names no file is a pool that
misses: no loads, no saves, until a file is there again. A warm restart
(the region kept) leaves the file, and the attach, as they are.

The check runs before a step's work on the pool, never inside it, so a
step loads and saves on one mapping. The scheduler ships the file it
matched against in the metadata (``pool_file``); a worker on another file
looks at the path at once, so both sides switch in the same step. A load
planned against the old pool that misses in the new one is reported as
a load error and recomputed, like any block that went away between the
match and the load; a block is copied whole or not at all.

What it needs from the engine
-----------------------------
The KV caches handed to ``register_kv_caches`` must be host (CPU) tensors
in vLLM's FlashAttention layout ``(2, num_blocks, block_size,
num_kv_heads, head_size)`` per layer, or, with ``"layout":
"cross_layer"`` in the extra config, the one tensor ``(num_blocks,
num_layers, 2, block_size, num_kv_heads, head_size)`` given to
``register_cross_layers_kv_cache``. Block hashes must be ``sha256_cbor``
or ``xxhash_cbor``: vLLM's pickle-based ``sha256`` and ``xxhash`` are not
stable across Python versions and have no kvpool hash scheme.

Extra config keys (``kv_connector_extra_config``)
-------------------------------------------------
``pool_path``            pool to attach (default ``/dev/shm/kvpool/default``)
``model_name``           default: ``model_config.model``
``weights_fingerprint``  hex string or bytes; default: SHA-256 of the
                         model name, revision and quantization
``dtype``                KV dtype name; default: ``cache_config.cache_dtype``
                         unless ``"auto"``, else ``model_config.dtype``
``tp_rank``, ``tp_world`` default: vLLM's tensor-parallel rank and size
``hash_algo``            default: ``cache_config.prefix_caching_hash_algo``
``hash_seed``            the ``PYTHONHASHSEED`` string the engine hashes with;
                         default: vLLM's own ``NONE_HASH`` when it is
                         initialized, else ``$PYTHONHASHSEED``, else
                         ``"vllm-none-hash"``
``layout``               ``"per_layer"`` (default) or ``"cross_layer"``
``save_mode``            ``"per_block"`` (default) or ``"per_layer"``, below
``pool_check_ms``        how often at most the pool path is compared with
                         the attached file (default 1000; 0: on every use)
``attach_retry_ms``      how long a failed attach waits before it is tried
                         again on the same file (default 5000)
``max_pinned_blocks``    the most pins the scheduler side holds (default
                         1024; it shares the process's client, and its
                         ``pins_per_client``, with a worker in the process)
``pin_ttl_ms``           the longest the scheduler side keeps a request's
                         pins (default 30000)
``pin_steps``            steps after which a load is taken as run without
                         a worker report (default: the steps in flight)
``remote_fetch``         ``true``: when the local match stops short, ask
                         kvpoold to bring the rest of the chain from the
                         pool's remote tier (doc/remote.md), then match
                         again (default ``false``)
``control_socket``       kvpoold's control socket for ``remote_fetch``
                         (default ``/run/kvpool/control``)
``remote_pool_name``     kvpoold's name of the pool (default: the name of
                         the pool file)
``remote_timeout_ms``    the longest one fetch may hold the scheduler
                         (default 2000)

Fetch on miss
-------------
With ``remote_fetch`` the scheduler side, before pinning, matches the
request's keys in every rank's namespace; where a rank's local run ends
short of the request's usable blocks it calls
``Namespace.remote_fetch(keys, first)`` (the whole chain up to the last
usable block, so each fetched block names its parent), and kvpoold
brings what the remote tier holds into the pool, verified, as committed
blocks. The match that follows sees them like any local block. A fetch
that fails (no tier, kvpoold down, Redis trouble) costs only its time:
the request goes on with what is local. ``stats`` counts
``remote_fetches``, ``remote_blocks`` and ``remote_errors``.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import hashlib
import inspect
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kvpool

_log = logging.getLogger("kvpool.vllm")

DEFAULT_POOL_PATH = "/dev/shm/kvpool/default"
_HASH_SCHEMES = ("sha256_cbor", "xxhash_cbor")
_KEY_MASK = (1 << 128) - 1

try:  # pragma: no cover - vLLM cannot be installed where the tests run
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorBase_V1,
        KVConnectorMetadata,
        KVConnectorRole,
    )

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

    class KVConnectorRole(enum.Enum):  # type: ignore[no-redef]
        """Where a connector instance runs (vLLM's enum, same values)."""

        SCHEDULER = 0
        WORKER = 1

    class KVConnectorMetadata(abc.ABC):  # type: ignore[no-redef]  # noqa: B024
        """What the scheduler-side connector sends the worker side each step."""

    class KVConnectorBase_V1(abc.ABC):  # type: ignore[no-redef]
        """Stand-in for vLLM's ``KVConnectorBase_V1`` when vLLM is absent.

        Same constructor, same metadata binding and the same defaults for
        the optional methods, so a connector written against it runs
        unchanged under vLLM.
        """

        def __init__(self, vllm_config: Any, role: KVConnectorRole,
                     kv_cache_config: Any = None) -> None:
            self._connector_metadata: KVConnectorMetadata | None = None
            self._vllm_config = vllm_config
            self._kv_transfer_config = getattr(vllm_config, "kv_transfer_config", None)
            if self._kv_transfer_config is None:
                raise ValueError("kv_transfer_config must be set for KVConnectorBase_V1")
            self._kv_cache_config = kv_cache_config
            self._role = role

        @property
        def role(self) -> KVConnectorRole:
            """The side this instance runs on."""
            return self._role

        @property
        def prefer_cross_layer_blocks(self) -> bool:
            """Whether the connector wants one tensor holding all layers."""
            return False

        def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
            """Set this step's metadata (the engine calls it before the forward)."""
            self._connector_metadata = connector_metadata

        def clear_connector_metadata(self) -> None:
            """Drop this step's metadata (the engine calls it after the forward)."""
            self._connector_metadata = None

        def _get_connector_metadata(self) -> KVConnectorMetadata:
            assert self._connector_metadata is not None
            return self._connector_metadata

        def has_connector_metadata(self) -> bool:
            """Whether metadata is bound now."""
            return self._connector_metadata is not None

        def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
            """Receive the engine's per-layer KV caches."""

        def register_cross_layers_kv_cache(self, kv_cache: Any, attn_backend: Any) -> None:
            """Receive the engine's one cross-layer KV cache."""

        def handle_preemptions(self, kv_connector_metadata: Any) -> None:
            """Called before preempted requests' blocks are overwritten."""

        @abc.abstractmethod
        def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None: ...

        @abc.abstractmethod
        def wait_for_layer_load(self, layer_name: str) -> None: ...

        @abc.abstractmethod
        def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any,
                          **kwargs: Any) -> None: ...

        @abc.abstractmethod
        def wait_for_save(self) -> None: ...

        def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
            """Requests whose asynchronous transfers finished: none by default."""
            return None, None

        def get_block_ids_with_load_errors(self) -> set[int]:
            """Engine block ids that failed to load in this step."""
            return set()

        def build_connector_worker_meta(self) -> Any:
            """What the worker side reports to the scheduler side: nothing."""
            return None

        def shutdown(self) -> None:
            """Release what the connector holds."""

        def get_kv_connector_stats(self) -> Any:
            """Transfer statistics: none by default."""
            return None

        @abc.abstractmethod
        def get_num_new_matched_tokens(self, request: Any,
                                       num_computed_tokens: int) -> tuple[int | None, bool]: ...

        @abc.abstractmethod
        def update_state_after_alloc(self, request: Any, blocks: Any,
                                     num_external_tokens: int) -> None: ...

        @abc.abstractmethod
        def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata: ...

        def update_connector_output(self, connector_output: Any) -> None:
            """Receive the workers' output of the last step."""

        def request_finished(self, request: Any,
                             block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
            """A request ended: free its blocks now, no transfer params."""
            return False, None

        def take_events(self) -> Iterable[Any]:
            """KV cache events since the last call: none by default."""
            return ()

        @classmethod
        def get_required_kvcache_layout(cls, vllm_config: Any) -> str | None:
            """The KV cache layout the connector needs: any."""
            return None


try:  # pragma: no cover - vLLM with the worker -> scheduler metadata channel
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorWorkerMetadata,
    )
except ImportError:

    class KVConnectorWorkerMetadata(abc.ABC):  # type: ignore[no-redef]
        """What the worker-side connectors report to the scheduler side each
        step (vLLM's ``KVConnectorWorkerMetadata``, absent before it had one)."""

        @abc.abstractmethod
        def aggregate(self, other: Any) -> Any:
            """The report of this worker and ``other``'s together."""


def block_key(block_hash: Any) -> int:
    """The kvpool key of one vLLM block hash.

    ``bytes`` hashes (vLLM >= 0.10.2) map by the project rule, the last 16
    bytes big-endian, equal to ``kvpool.vllm_key``. Older vLLM wrapped an
    integer hash in a ``BlockHash`` named tuple (``hash_value``); its low
    128 bits are the key.
    """
    if isinstance(block_hash, (bytes, bytearray, memoryview)):
        b = bytes(block_hash)
        if len(b) < 16:
            raise ValueError(f"vLLM block hash of {len(b)} bytes; expected 16 or 32")
        return int.from_bytes(b[-16:], "big")
    value = getattr(block_hash, "hash_value", block_hash)
    if isinstance(value, int):
        return value & _KEY_MASK
    raise TypeError(f"unsupported vLLM block hash type {type(block_hash).__name__}")


def _dtype_name(dtype: Any) -> str:
    """A manifest dtype name for a torch dtype or a vLLM dtype string."""
    text = str(dtype).removeprefix("torch.")
    names = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32",
             "float": "fp32", "fp8": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3",
             "float8_e5m2": "fp8_e5m2"}
    return names.get(text, text)


@dataclasses.dataclass
class LoadSpec:
    """Blocks to copy from kvpool into one request's engine blocks."""

    req_id: str
    keys: list[int]
    block_ids: list[int]
    pins: int = 0  # the scheduler's pin set for these blocks (0: none)


@dataclasses.dataclass
class SaveSpec:
    """Blocks of one request that become full in this step.

    ``prefix_block_ids`` are all the request's engine blocks up to the
    last one saved: a save is dropped when one of them failed to load.
    """

    req_id: str
    keys: list[int]
    block_ids: list[int]
    parent: int | None
    prefix_block_ids: list[int]
    # Per block, its token ids (empty when the request does not expose
    # them): recorded with the commit in the pool's change feed, so KV
    # events carry them as vLLM's do.
    token_ids: list[list[int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class KvpoolConnectorMetadata(KVConnectorMetadata):
    """One step's work for the worker side (ints and lists only: picklable).

    ``hash_seed`` is the manifest seed the scheduler keyed the blocks
    with; the worker opens its namespace with the same one. ``pool_file``
    is ``(st_dev, st_ino)`` of the pool the scheduler matched against
    (None without one): a worker attached to another file looks at the
    pool path at once instead of at its next ``pool_check_ms``.
    """

    hash_seed: int = 0
    pool_file: tuple[int, int] | None = None
    loads: list[LoadSpec] = dataclasses.field(default_factory=list)
    saves: list[SaveSpec] = dataclasses.field(default_factory=list)
    finished: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class KvpoolWorkerMetadata(KVConnectorWorkerMetadata):
    """What a worker reports back after a step: the scheduler pin sets
    (``LoadSpec.pins``) whose loads it has run, successful or not.

    Workers of one step are aggregated by intersection: a pin set is done
    with only once every worker that reports has loaded its shard.
    """

    loaded: set[int] = dataclasses.field(default_factory=set)

    def aggregate(self, other: Any) -> "KvpoolWorkerMetadata":
        if not isinstance(other, KvpoolWorkerMetadata):
            return self
        return KvpoolWorkerMetadata(self.loaded & other.loaded)


@dataclasses.dataclass
class _PinSet:
    """The blocks the scheduler side holds pinned for one request's load."""

    ticket: int
    req_id: str
    views: list[list[Any]]  # per TP rank, the same leading blocks
    taken: float  # time.monotonic() of the lookup
    shipped: int | None = None  # the build_connector_meta step that sent the load

    @property
    def blocks(self) -> int:
        return len(self.views[0]) if self.views else 0

    @property
    def pins(self) -> int:
        return sum(len(v) for v in self.views)

    def trim(self, n: int) -> None:
        """Keep the first ``n`` blocks pinned on every rank."""
        for views in self.views:
            for v in views[n:]:
                _release_view(v)
            del views[n:]

    def release(self) -> None:
        self.trim(0)


def _release_view(view: Any) -> None:
    try:
        view.release()
    except (ValueError, kvpool.Error):  # its pool was detached: the pin went with it
        pass


MAX_PINNED_BLOCKS = 1024
"""Default ``max_pinned_blocks``: the most pins the scheduler side holds."""
PIN_TTL_S = 30.0
"""Default ``pin_ttl_ms`` / 1000: the longest the scheduler side keeps a pin set."""

RETRY_ATTACH_S = 5.0
"""Default ``attach_retry_ms`` / 1000: how long an attach that failed on an
existing file waits before it is tried again on that same file."""
CHECK_POOL_S = 1.0
"""Default ``pool_check_ms`` / 1000: how often at most the pool path is
compared with the attached file."""


def _file_of(pool: Any) -> tuple[int, int]:
    return int(pool.st_dev), int(pool.st_ino)


class _Attachment:
    """This process's client of one pool path, shared by its connectors.

    ``get`` hands out the attached ``kvpool.Pool``; every ``check_s`` at
    most it also checks that the path still names the file mapped
    (``Pool.replaced``, one ``stat``). When it does not (kvpoold
    re-created the region, restored a snapshot into a new file, or the
    file is gone), the old client is detached, which gives back its pins
    and reservations and, once the last view over it is released, unmaps
    an orphan no other process sees; a new attach is tried at once. While
    nothing can be attached ``get`` returns None: the path is stat'ed at
    the same pace, and an attach that failed on a file is retried on that
    same file only after ``retry_s`` (at once on another file).

    Connectors keep the pool object they built their namespaces or store
    on and rebuild them when ``get`` returns another one; the one that
    first notices a change detaches the pool for all of them.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.pool: Any = None
        self.checked_at = -math.inf
        self.failed_at: float | None = None
        self.failed_file: tuple[int, int] | None = None
        self.missing = False  # the path was absent at the last look (logged once)
        self.attaches = 0

    def get(self, check_s: float, retry_s: float, force: bool = False) -> Any:
        """The pool, or None while it cannot be attached. ``force``: look now."""
        now = time.monotonic()
        if not force and now - self.checked_at < check_s:
            return self.pool
        self.checked_at = now
        if self.pool is not None:
            try:
                if not self.pool.replaced():
                    return self.pool
            except OSError:  # cannot tell (a directory lost its x bit): keep it
                return self.pool
            old, self.pool = self.pool, None
            _log.warning("kvpool: %s no longer names the pool this process attached "
                         "(kvpoold re-created or removed it); detaching it", self.path)
            old.detach()
        return self._try_attach(now, retry_s)

    def _try_attach(self, now: float, retry_s: float) -> Any:
        try:
            st = os.stat(self.path)
        except OSError as e:
            if not self.missing:
                _log.warning("kvpool: cannot attach %s (%s); serving without it until "
                             "it is back", self.path, e)
            self.missing = True
            return None
        file = (int(st.st_dev), int(st.st_ino))
        if (self.failed_at is not None and file == self.failed_file
                and now - self.failed_at < retry_s):
            return None
        try:
            pool = kvpool.Pool(self.path)
        except OSError as e:
            if self.failed_at is None:
                _log.warning("kvpool: cannot attach %s (%s); serving without it and "
                             "retrying every %.0f s", self.path, e, retry_s)
            self.failed_at, self.failed_file = now, file
            return None
        if self.attaches or self.missing or self.failed_at is not None:
            _log.warning("kvpool: attached %s again", self.path)
        self.failed_at = self.failed_file = None
        self.missing = False
        self.attaches += 1
        self.pool = pool
        return pool


_attachments: dict[tuple[str, int], _Attachment] = {}


def _attachment(path: str) -> _Attachment:
    """The attachment of ``path`` in this process (a forked child attaches anew)."""
    key = (path, os.getpid())
    att = _attachments.get(key)
    if att is None:
        att = _attachments[key] = _Attachment(path)
    return att


def _detached(ns: Any) -> bool:
    """Whether namespace ``ns`` lives on a detached pool (another connector
    of this process saw the pool replaced while this one was using it)."""
    return not bool(ns.pool.attached)


class KvpoolConnector(KVConnectorBase_V1):
    """vLLM KV connector V1 over a kvpool pool (see the module docstring)."""

    def __init__(self, vllm_config: Any, role: KVConnectorRole,
                 kv_cache_config: Any = None) -> None:
        base_params = inspect.signature(KVConnectorBase_V1.__init__).parameters
        if "kv_cache_config" in base_params:
            super().__init__(vllm_config, role, kv_cache_config)
        else:  # vLLM before 0.11: (vllm_config, role)
            super().__init__(vllm_config, role)  # type: ignore[call-arg]
        ktc = vllm_config.kv_transfer_config
        extra = dict(getattr(ktc, "kv_connector_extra_config", None) or {})
        self._extra = extra
        kv_role = getattr(ktc, "kv_role", "kv_both") or "kv_both"
        self._do_load = kv_role in ("kv_both", "kv_consumer")
        self._do_save = kv_role in ("kv_both", "kv_producer")
        self._block_size = int(vllm_config.cache_config.block_size)
        self._pool_path = str(extra.get("pool_path", DEFAULT_POOL_PATH))
        self._layout = str(extra.get("layout", "per_layer"))
        if self._layout not in ("per_layer", "cross_layer"):
            raise ValueError(f"kvpool connector: layout {self._layout!r}; "
                             "expected 'per_layer' or 'cross_layer'")
        self._check_s = float(extra.get("pool_check_ms", CHECK_POOL_S * 1000)) / 1000
        self._retry_s = float(extra.get("attach_retry_ms", RETRY_ATTACH_S * 1000)) / 1000
        if self._check_s < 0 or self._retry_s < 0:
            raise ValueError(f"kvpool connector: pool_check_ms {self._check_s * 1000:g} and "
                             f"attach_retry_ms {self._retry_s * 1000:g} must be >= 0")
        self._max_pins = int(extra.get("max_pinned_blocks", MAX_PINNED_BLOCKS))
        self._pin_ttl_s = float(extra.get("pin_ttl_ms", PIN_TTL_S * 1000)) / 1000
        self._pin_steps = int(extra.get("pin_steps", self._steps_in_flight(vllm_config)))
        if self._max_pins < 0 or self._pin_ttl_s < 0 or self._pin_steps < 1:
            raise ValueError(f"kvpool connector: max_pinned_blocks {self._max_pins} and "
                             f"pin_ttl_ms {self._pin_ttl_s * 1000:g} must be >= 0, "
                             f"pin_steps {self._pin_steps} >= 1")
        self._remote = bool(extra.get("remote_fetch", False))
        self._control_socket = extra.get("control_socket")
        self._remote_pool = extra.get("remote_pool_name")
        self._remote_timeout_ms = int(extra.get("remote_timeout_ms", 2000))
        if self._remote_timeout_ms < 0:
            raise ValueError(f"kvpool connector: remote_timeout_ms {self._remote_timeout_ms} "
                             "must be >= 0")
        self._save_mode = str(extra.get("save_mode", "per_block"))
        if self._save_mode not in ("per_block", "per_layer"):
            raise ValueError(f"kvpool connector: save_mode {self._save_mode!r}; "
                             "expected 'per_block' or 'per_layer'")

        model_config = vllm_config.model_config
        self._model_name = str(extra.get("model_name", model_config.model))
        self._fingerprint = self._weights_fingerprint(model_config, extra)
        cache_dtype = getattr(vllm_config.cache_config, "cache_dtype", "auto")
        if "dtype" in extra:
            self._dtype = _dtype_name(extra["dtype"])
        elif cache_dtype and cache_dtype != "auto":
            self._dtype = _dtype_name(cache_dtype)
        else:
            self._dtype = _dtype_name(model_config.dtype)
        parallel = getattr(vllm_config, "parallel_config", None)
        self._tp_world = int(extra.get("tp_world",
                                        getattr(parallel, "tensor_parallel_size", 1) or 1))
        self._hash_algo = str(extra.get("hash_algo",
                                        getattr(vllm_config.cache_config,
                                                "prefix_caching_hash_algo", "sha256_cbor")))
        if self._hash_algo not in _HASH_SCHEMES:
            raise ValueError(
                f"kvpool connector: prefix_caching_hash_algo is {self._hash_algo!r}; "
                f"expected one of {', '.join(_HASH_SCHEMES)} "
                "(start vLLM with --prefix-caching-hash-algo sha256_cbor)")

        # Scheduler side.
        self._sched_namespaces: list[Any] | None = None
        self._sched_pool: Any = None  # the pool they were built on
        self._hash_seed: int | None = None
        self._requests: dict[str, Any] = {}
        self._keys: dict[str, list[int]] = {}
        self._local_tokens: dict[str, int] = {}
        self._pending_loads: dict[str, LoadSpec] = {}
        self._block_ids: dict[str, list[int]] = {}
        self._pins: dict[str, _PinSet] = {}  # by request id
        self._pins_held = 0  # pins in self._pins, all ranks counted
        self._next_ticket = 1
        self._step = 0  # build_connector_meta calls so far

        # Worker side.
        self._kv_caches: Any = None
        self._layer_index: dict[str, int] = {}
        self._num_layers = 0
        self._store: Any = None
        self._store_seed: int | None = None
        self._store_pool: Any = None  # the pool it was built on
        self._tp_rank: int | None = None
        self._save: Any = None
        self._save_begun = False  # this step's reservations were attempted
        self._saved_layers: set[int] = set()
        self._skip_save_reqs: set[str] = set()
        self._load_errors: set[int] = set()
        self._loaded_pins: set[int] = set()  # LoadSpec.pins run since the last report
        self.stats: dict[str, int] = {"lookups": 0, "hit_blocks": 0, "loaded_blocks": 0,
                                      "failed_blocks": 0, "saved_blocks": 0,
                                      "save_failures": 0, "reattaches": 0,
                                      "pin_shortfalls": 0, "pins_expired": 0,
                                      "remote_fetches": 0, "remote_blocks": 0,
                                      "remote_errors": 0}

    @staticmethod
    def _steps_in_flight(vllm_config: Any) -> int:
        """How many steps the scheduler may build before it has the output of
        the first: one, plus one with async scheduling, plus one per extra
        pipeline stage (vLLM's batch queue)."""
        sched = getattr(vllm_config, "scheduler_config", None)
        parallel = getattr(vllm_config, "parallel_config", None)
        pp = int(getattr(parallel, "pipeline_parallel_size", 1) or 1)
        return pp + (1 if getattr(sched, "async_scheduling", False) else 0)

    # ------------------------------------------------------------------
    # Identity
    # ------------------------------------------------------------------
    @staticmethod
    def _weights_fingerprint(model_config: Any, extra: Mapping[str, Any]) -> bytes:
        fp = extra.get("weights_fingerprint")
        if isinstance(fp, (bytes, bytearray)):
            return bytes(fp)
        if isinstance(fp, str):
            return bytes.fromhex(fp)
        ident = "\0".join(str(getattr(model_config, f, "") or "")
                          for f in ("model", "revision", "quantization"))
        return hashlib.sha256(ident.encode()).digest()

    def _seed_id(self) -> int:
        """The manifest hash seed: the first 8 bytes of NONE_HASH, big-endian."""
        if self._hash_seed is None:
            seed = self._extra.get("hash_seed")
            none_hash = None
            if seed is None and HAVE_VLLM:  # pragma: no cover - needs vLLM
                try:
                    from vllm.v1.core import kv_cache_utils  # type: ignore

                    none_hash = getattr(kv_cache_utils, "NONE_HASH", None)
                except ImportError:
                    none_hash = None
            if isinstance(none_hash, (bytes, bytearray)) and len(none_hash) >= 8:
                self._hash_seed = int.from_bytes(bytes(none_hash[:8]), "big")
            else:
                if seed is None and "PYTHONHASHSEED" not in os.environ and HAVE_VLLM:
                    _log.warning("PYTHONHASHSEED is not set: vLLM's block hashes are "
                                 "unique to this process and no other engine can reuse "
                                 "its blocks")
                self._hash_seed = int(kvpool.vllm_seed_id(
                    self._hash_algo, None if seed is None else str(seed)))
        return self._hash_seed

    def manifest(self, tp_rank: int, hash_seed: int) -> Any:
        """The namespace manifest of this engine's blocks for one TP rank."""
        return kvpool.Manifest(self._model_name, self._block_size,
                               weights_fingerprint=self._fingerprint, dtype=self._dtype,
                               tp_rank=tp_rank, tp_world=self._tp_world,
                               hash_scheme=self._hash_algo, hash_seed=hash_seed)

    # ------------------------------------------------------------------
    # Scheduler side
    # ------------------------------------------------------------------
    def _namespaces(self) -> list[Any] | None:
        """Every TP rank's namespace, or None while the pool is unreachable.

        Built again (the namespaces registered anew) on a pool that was
        attached again because its path names another file now.
        """
        pool = _attachment(self._pool_path).get(self._check_s, self._retry_s)
        if pool is None or pool is not self._sched_pool:
            # Pins on a detached pool went with its client; forget them.
            self._drop_pins()
        if pool is None:
            self._sched_namespaces = None
            return None
        if self._sched_namespaces is None or pool is not self._sched_pool:
            if self._sched_pool is not None and pool is not self._sched_pool:
                self.stats["reattaches"] += 1
            seed = self._seed_id()
            self._sched_namespaces = [pool.namespace(self.manifest(r, seed))
                                      for r in range(self._tp_world)]
            self._sched_pool = pool
        return self._sched_namespaces

    def _request_keys(self, request: Any) -> list[int]:
        """The request's block keys, extended as its block hashes grow."""
        req_id = request.request_id
        hashes = request.block_hashes
        limit = getattr(request, "num_publishable_block_hashes", None)
        n = len(hashes) if limit is None else min(len(hashes), int(limit))
        keys = self._keys.setdefault(req_id, [])
        if len(keys) > n:
            del keys[n:]
        for i in range(len(keys), n):
            keys.append(block_key(hashes[i]))
        return keys

    def get_num_new_matched_tokens(self, request: Any,
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        """Tokens after ``num_computed_tokens`` whose blocks kvpool holds, pinned.

        Whole blocks only, never the request's last token, and only the
        leading run present on every TP rank. The blocks reported stay
        pinned for the request (replacing what an earlier call for it
        pinned) until their load is done, the request ends, or the pin
        limits take them back; fewer pins available means fewer tokens.
        """
        req_id = request.request_id
        self._release_pins(req_id)
        self._expire_pins()
        if not self._do_load or getattr(request, "skip_reading_prefix_cache", False):
            return 0, False
        namespaces = self._namespaces()
        if namespaces is None:
            return 0, False
        bs = self._block_size
        self._local_tokens[req_id] = num_computed_tokens
        if num_computed_tokens % bs:
            return 0, False
        keys = self._request_keys(request)
        usable = min(len(keys), (int(request.num_tokens) - 1) // bs)
        start = num_computed_tokens // bs
        if usable <= start:
            return 0, False
        room = (self._max_pins - self._pins_held) // len(namespaces)
        want = keys[start:usable]
        if room < len(want):
            self.stats["pin_shortfalls"] += 1
            want = want[:max(room, 0)]
        if self._remote and want:
            self._fetch_missing(namespaces, keys[:start + len(want)], start)
        views = self._pin_prefix(namespaces, want)
        self.stats["lookups"] += 1
        if not views:
            return 0, False
        pins = _PinSet(self._next_ticket, req_id, views, time.monotonic())
        self._next_ticket += 1
        self._pins[req_id] = pins
        self._pins_held += pins.pins
        return pins.blocks * bs, False

    def _fetch_missing(self, namespaces: list[Any], chain: list[int], start: int) -> None:
        """Ask kvpoold to bring, for each rank whose local run of ``chain``
        from ``start`` stops short, the rest from the remote tier."""
        for ns in namespaces:
            try:
                have = start + int(ns.match_prefix(chain[start:]))
            except ValueError:
                return  # detached under us: the match below finds nothing
            if have >= len(chain):
                continue
            self.stats["remote_fetches"] += 1
            try:
                r = ns.remote_fetch(chain, have, timeout_ms=self._remote_timeout_ms,
                                    socket=self._control_socket,
                                    pool_name=self._remote_pool)
            except (kvpool.Error, OSError, ValueError) as e:
                self.stats["remote_errors"] += 1
                _log.debug("kvpool connector: remote fetch: %s", e)
                return  # the other ranks' fetches would not make a longer match
            self.stats["remote_blocks"] += int(r.get("fetched", 0))
            if have + int(r.get("committed", 0)) < len(chain):
                return  # this rank stops short: the match is bounded by it

    def _pin_prefix(self, namespaces: list[Any], keys: list[int]) -> list[list[Any]]:
        """Pins of the leading ``keys`` present on every rank (one list of
        views per rank, all of one length), or [] for none."""
        per_rank: list[list[Any]] = []
        hit = len(keys)
        for ns in namespaces:
            views = self._pin_one(ns, keys[:hit]) if hit else []
            per_rank.append(views)
            hit = min(hit, len(views))
        if hit == 0:
            for views in per_rank:
                for v in views:
                    _release_view(v)
            return []
        for views in per_rank:
            for v in views[hit:]:
                _release_view(v)
            del views[hit:]
        return per_rank

    def _pin_one(self, ns: Any, keys: list[int]) -> list[Any]:
        """Views pinning the leading present ``keys`` in ``ns``; when this
        client's pins run out, as many of them as it can still pin."""
        n = len(keys)
        while n > 0:
            try:
                return list(ns.match_prefix(keys[:n], pin=True))
            except kvpool.NoPinsError:
                self.stats["pin_shortfalls"] += 1
                if n == len(keys):  # pin no more than is there
                    try:
                        n = min(n, int(ns.match_prefix(keys)))
                    except ValueError:
                        return []
                n //= 2
            except ValueError:
                if not _detached(ns):
                    raise
                return []  # replaced under us: the next call uses the new pool
        return []

    def _release_pins(self, req_id: str) -> None:
        pins = self._pins.pop(req_id, None)
        if pins is not None:
            self._pins_held -= pins.pins
            pins.release()

    def _drop_pins(self) -> None:
        for req_id in list(self._pins):
            self._release_pins(req_id)

    def _expire_pins(self) -> None:
        """Give back pin sets older than ``pin_ttl_ms`` (a request asked for
        and never scheduled, a load whose report never came)."""
        if not self._pins:
            return
        old = time.monotonic() - self._pin_ttl_s
        for req_id in [r for r, p in self._pins.items() if p.taken <= old]:
            self.stats["pins_expired"] += 1
            self._release_pins(req_id)

    def pins_held(self) -> int:
        """Pins the scheduler side holds now (every rank's counted)."""
        return self._pins_held

    def update_state_after_alloc(self, request: Any, blocks: Any,
                                 num_external_tokens: int) -> None:
        """Remember the engine blocks the matched kvpool blocks go to."""
        req_id = request.request_id
        self._requests[req_id] = request
        if num_external_tokens <= 0:
            self._pending_loads.pop(req_id, None)
            self._release_pins(req_id)
            return
        bs = self._block_size
        start = self._local_tokens.get(req_id, 0) // bs
        n = num_external_tokens // bs
        pins = self._pins.get(req_id)
        if pins is not None and pins.blocks > n:
            self._pins_held -= pins.pins
            pins.trim(n)
            self._pins_held += pins.pins
        block_ids = list(blocks.get_block_ids()[0])
        keys = self._request_keys(request)
        if start + n > len(block_ids) or start + n > len(keys):
            raise ValueError(f"kvpool connector: request {req_id} has {len(block_ids)} "
                             f"blocks and {len(keys)} hashes; {start + n} needed to load "
                             f"{n} blocks after {start}")
        self._pending_loads[req_id] = LoadSpec(req_id, keys[start:start + n],
                                               block_ids[start:start + n],
                                               pins.ticket if pins is not None else 0)
        self.stats["hit_blocks"] += n

    def build_connector_meta(self, scheduler_output: Any) -> KvpoolConnectorMetadata:
        """This step's loads, the blocks that become full, the finished requests."""
        self._step += 1
        self._release_loaded_pins()
        self._expire_pins()
        meta = KvpoolConnectorMetadata(hash_seed=self._seed_id())
        if self._sched_namespaces is not None:
            meta.pool_file = _file_of(self._sched_pool)
        num_scheduled: Mapping[str, int] = scheduler_output.num_scheduled_tokens
        steps: list[tuple[str, int]] = []
        for new in scheduler_output.scheduled_new_reqs:
            self._block_ids[new.req_id] = list(new.block_ids[0])
            steps.append((new.req_id, int(new.num_computed_tokens)))
        cached = scheduler_output.scheduled_cached_reqs
        resumed_ids = getattr(cached, "resumed_req_ids", None)
        resumed_flags = getattr(cached, "resumed_from_preemption", None)
        for i, req_id in enumerate(cached.req_ids):
            if resumed_ids is not None:
                resumed = req_id in resumed_ids
            else:
                resumed = bool(resumed_flags[i]) if resumed_flags is not None else False
            new_ids = cached.new_block_ids[i]
            if resumed or req_id not in self._block_ids:
                self._block_ids[req_id] = list(new_ids[0]) if new_ids is not None else []
            elif new_ids is not None:
                self._block_ids[req_id].extend(new_ids[0])
            steps.append((req_id, int(cached.num_computed_tokens[i])))

        for req_id, spec in self._pending_loads.items():
            meta.loads.append(spec)
            pins = self._pins.get(req_id)
            if pins is not None and pins.ticket == spec.pins:
                pins.shipped = self._step
        self._pending_loads.clear()

        if self._do_save:
            bs = self._block_size
            for req_id, computed in steps:
                request = self._requests.get(req_id)
                if request is None:
                    continue
                keys = self._request_keys(request)
                block_ids = self._block_ids[req_id]
                lo = computed // bs
                hi = min((computed + int(num_scheduled.get(req_id, 0))) // bs,
                         len(keys), len(block_ids))
                if hi <= lo:
                    continue
                tokens = getattr(request, "all_token_ids", None)
                if tokens is None:
                    tokens = getattr(request, "prompt_token_ids", None) or []
                block_tokens = [list(tokens[i * bs:(i + 1) * bs]) for i in range(lo, hi)]
                meta.saves.append(SaveSpec(req_id, keys[lo:hi], block_ids[lo:hi],
                                           keys[lo - 1] if lo > 0 else None,
                                           block_ids[:hi], block_tokens))

        for req_id in getattr(scheduler_output, "finished_req_ids", ()) or ():
            meta.finished.append(req_id)
            self._forget(req_id)
        return meta

    def _release_loaded_pins(self) -> None:
        """Give back the pins of loads sent ``pin_steps`` steps ago or more:
        the worker has run them by now even when no report comes."""
        done = self._step - self._pin_steps
        for req_id in [r for r, p in self._pins.items()
                       if p.shipped is not None and p.shipped <= done]:
            self._release_pins(req_id)

    def _forget(self, req_id: str) -> None:
        for table in (self._requests, self._keys, self._local_tokens,
                      self._pending_loads, self._block_ids):
            table.pop(req_id, None)
        self._release_pins(req_id)

    def request_finished(self, request: Any,
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        """Saves are synchronous: the engine may free the blocks at once.
        Pins the request still holds are given back."""
        self._forget(request.request_id)
        return False, None

    def update_connector_output(self, connector_output: Any) -> None:
        """Give back the pins of the loads the workers report as run."""
        meta = getattr(connector_output, "kv_connector_worker_meta", None)
        if not isinstance(meta, KvpoolWorkerMetadata) or not meta.loaded:
            return
        for req_id in [r for r, p in self._pins.items()
                       if p.shipped is not None and p.ticket in meta.loaded]:
            self._release_pins(req_id)

    # ------------------------------------------------------------------
    # Worker side
    # ------------------------------------------------------------------
    @property
    def prefer_cross_layer_blocks(self) -> bool:
        """True when the extra config asks for the cross-layer layout."""
        return self._layout == "cross_layer"

    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        """Per-layer caches ``(2, num_blocks, block_size, H, D)``, in layer order."""
        self._kv_caches = list(kv_caches.values())
        self._layer_index = {name: i for i, name in enumerate(kv_caches)}
        self._num_layers = len(self._kv_caches)
        self._layout = "per_layer"
        self._store = None
        self._check_caches(self._kv_caches)

    def register_cross_layers_kv_cache(self, kv_cache: Any, attn_backend: Any = None) -> None:
        """One cache ``(num_blocks, num_layers, 2, block_size, H, D)``."""
        self._kv_caches = kv_cache
        self._layer_index = {}
        self._num_layers = int(kv_cache.shape[1])
        self._layout = "cross_layer"
        self._store = None
        self._check_caches([kv_cache])

    def _check_caches(self, tensors: list[Any]) -> None:
        """Fail at engine start, not mid-serving, on caches the store cannot use.

        Host tensors only (the copy loops read and write them in place),
        and geometry and dtype are checked against the manifest by opening
        the store now when the pool is reachable.
        """
        for t in tensors:
            device = getattr(t, "device", None)
            if device is not None and getattr(device, "type", "cpu") != "cpu":
                raise ValueError(f"kvpool connector: the KV cache is on {device}; it needs "
                                 "host tensors (a GPU cache needs a staging copy, which "
                                 "this connector does not make)")
        self._worker_store(self._seed_id())

    def _rank(self) -> int:
        if self._tp_rank is None:
            rank = self._extra.get("tp_rank")
            if rank is None and HAVE_VLLM and self._tp_world > 1:  # pragma: no cover
                from vllm.distributed.parallel_state import (  # type: ignore
                    get_tensor_model_parallel_rank,
                )

                rank = get_tensor_model_parallel_rank()
            self._tp_rank = int(rank or 0)
        return self._tp_rank

    def _worker_store(self, hash_seed: int, pool_file: tuple[int, int] | None = None) -> Any:
        """The store over this worker's caches, or None while the pool is unreachable.

        ``pool_file``: the file the scheduler matched against; when the
        worker's pool is another one, the path is looked at now. On a pool
        attached anew the store is built again and the old one closed.
        """
        if self._kv_caches is None:
            raise RuntimeError("kvpool connector: no KV caches registered")
        att = _attachment(self._pool_path)
        force = pool_file is not None and (att.pool is None
                                           or _file_of(att.pool) != tuple(pool_file))
        pool = att.get(self._check_s, self._retry_s, force=force)
        if pool is None:
            self._drop_store()
            return None
        if self._store is None or pool is not self._store_pool or self._store_seed != hash_seed:
            from kvpool.engine import PagedKVStore

            if self._store_pool is not None and pool is not self._store_pool:
                self.stats["reattaches"] += 1
            self._drop_store()
            ns = pool.namespace(self.manifest(self._rank(), hash_seed))
            self._store = PagedKVStore(ns, self._kv_caches, layout=self._layout)
            self._store_seed = hash_seed
            self._store_pool = pool
        return self._store

    def _drop_store(self) -> None:
        """Give back what the store holds on its pool (pins, an open save)."""
        if self._save is not None:
            self._save.abort()
            self._save = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _meta(self) -> KvpoolConnectorMetadata | None:
        if not self.has_connector_metadata():
            return None
        meta = self._get_connector_metadata()
        assert isinstance(meta, KvpoolConnectorMetadata)
        return meta

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        """Pin, checksum-verify and scatter this step's blocks; report failures."""
        meta = self._meta()
        if meta is None:
            return
        self._skip_save_reqs = set()
        if not meta.loads:
            return
        store = self._worker_store(meta.hash_seed, meta.pool_file)
        failed: set[int] = set()
        for spec in meta.loads:
            loaded = 0
            if store is not None:
                try:
                    found = int(store.lookup(spec.req_id, spec.keys))
                    if found:
                        loaded = int(store.load(spec.req_id, spec.block_ids[:found]))
                except kvpool.Error as e:  # out of pins, pool gone bad: recompute
                    _log.warning("kvpool: loading request %s: %s", spec.req_id, e)
                except ValueError:
                    if not _detached(store.namespace):
                        raise
                    # Another connector of this process detached the pool
                    # (replaced) between the lookup and the load, which
                    # then copied nothing: recompute.
                    _log.warning("kvpool: request %s: the pool was replaced; recomputing",
                                 spec.req_id)
                finally:
                    store.release(spec.req_id)
            if spec.pins:
                self._loaded_pins.add(spec.pins)
            self.stats["loaded_blocks"] += loaded
            if loaded < len(spec.block_ids):
                bad = spec.block_ids[loaded:]
                failed.update(bad)
                self.stats["failed_blocks"] += len(bad)
                _log.warning("kvpool: request %s loaded %d of %d blocks; the engine "
                             "recomputes the rest", spec.req_id, loaded, len(spec.block_ids))
        if failed:
            self._load_errors |= failed
            for save in meta.saves:
                if failed.intersection(save.prefix_block_ids):
                    self._skip_save_reqs.add(save.req_id)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Loads finish in ``start_load_kv``: nothing to wait for."""

    def _save_plan(self, meta: KvpoolConnectorMetadata) -> tuple[
            list[int], list[int], list[int | None], list[list[int] | None]]:
        """This step's blocks to store: keys, engine block ids, chain parents,
        token ids (None where unknown).

        A key two requests computed in the same step is stored once;
        requests whose blocks failed to load store nothing.
        """
        keys: list[int] = []
        block_ids: list[int] = []
        parents: list[int | None] = []
        token_ids: list[list[int] | None] = []
        seen: set[int] = set()
        for spec in meta.saves:
            if spec.req_id in self._skip_save_reqs:
                continue
            parent = spec.parent
            for i, (key, block_id) in enumerate(zip(spec.keys, spec.block_ids)):
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
                    block_ids.append(block_id)
                    parents.append(parent)
                    ids = spec.token_ids[i] if i < len(spec.token_ids) else None
                    token_ids.append(ids or None)
                parent = key
        return keys, block_ids, parents, token_ids

    def _begin_save(self, meta: KvpoolConnectorMetadata) -> Any:
        keys, block_ids, parents, token_ids = self._save_plan(meta)
        store = self._worker_store(meta.hash_seed, meta.pool_file) if keys else None
        if store is None:
            return None
        try:
            return store.begin_save(keys, block_ids, parents=parents, token_ids=token_ids)
        except kvpool.Error as e:
            self.stats["save_failures"] += 1
            _log.warning("kvpool: cannot reserve %d blocks: %s", len(keys), e)
            return None

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any,
                      **kwargs: Any) -> None:
        """With ``save_mode`` "per_layer": gather one layer of this step's new
        blocks into their reservations (the first call reserves them)."""
        if self._save_mode != "per_layer" or self._layout != "per_layer":
            return
        meta = self._meta()
        if meta is None or not meta.saves:
            return
        if not self._save_begun:
            self._save_begun = True
            self._save = self._begin_save(meta)
            self._saved_layers = set()
        if self._save is None:
            return
        layer = self._layer_index.get(layer_name)
        if layer is None or layer in self._saved_layers:
            return
        try:
            self._save.write_layer(layer)
        except ValueError:
            if self._store is None or not _detached(self._store.namespace):
                raise
            self._save_lost()
            return
        self._saved_layers.add(layer)

    def _save_lost(self) -> None:
        """Another connector of this process detached the pool mid-save."""
        if self._save is not None:
            self._save.abort()
            self._save = None
        self.stats["save_failures"] += 1
        _log.warning("kvpool: the pool was replaced while saving; this step's blocks "
                     "are not stored")

    def wait_for_save(self) -> None:
        """Store this step's new blocks (per layer: finish and commit them)."""
        meta = self._meta()
        if meta is None or not meta.saves:
            return
        if self._save_mode == "per_block":
            self._save_blocks(meta)
            return
        if not self._save_begun:
            self._save = self._begin_save(meta)
            self._saved_layers = set()
        save, self._save, self._save_begun = self._save, None, False
        if save is None:
            return
        try:
            if not self._saved_layers or self._layout != "per_layer":
                save.write_all()
            else:
                for layer in range(self._num_layers):
                    if layer not in self._saved_layers:
                        save.write_layer(layer)
            self.stats["saved_blocks"] += int(save.commit())
        except kvpool.Error as e:
            save.abort()
            self.stats["save_failures"] += 1
            _log.warning("kvpool: saving a step's blocks failed: %s", e)
        except ValueError:
            save.abort()
            if self._store is None or not _detached(self._store.namespace):
                raise
            self._save_lost()
        except BaseException:
            save.abort()
            raise

    def _save_blocks(self, meta: KvpoolConnectorMetadata) -> None:
        """Block by block: reserve, gather every layer, commit (chains kept)."""
        keys, block_ids, parents, token_ids = self._save_plan(meta)
        store = self._worker_store(meta.hash_seed, meta.pool_file) if keys else None
        if store is None:
            return
        try:
            self.stats["saved_blocks"] += int(
                store.save(keys, block_ids, parents=parents, token_ids=token_ids))
        except kvpool.Error as e:  # the blocks before the one that failed stay
            self.stats["save_failures"] += 1
            _log.warning("kvpool: saving a step's blocks stopped: %s", e)
        except ValueError:
            if not _detached(store.namespace):
                raise
            self._save_lost()

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        """Drop any pin a finished request still holds; no async transfers."""
        if self._store is not None:
            for req_id in finished_req_ids:
                self._store.release(req_id)
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Engine blocks that failed to load since the last call."""
        errors, self._load_errors = self._load_errors, set()
        return errors

    def build_connector_worker_meta(self) -> KvpoolWorkerMetadata | None:
        """The scheduler pin sets whose loads ran since the last call."""
        if not self._loaded_pins:
            return None
        loaded, self._loaded_pins = self._loaded_pins, set()
        return KvpoolWorkerMetadata(loaded)

    def shutdown(self) -> None:
        """Abort an open save, forget the store and give back the scheduler
        side's pins (the pool stays attached)."""
        self._drop_store()
        self._save_begun = False
        self._drop_pins()


__all__ = ["KvpoolConnector", "KvpoolConnectorMetadata", "KvpoolWorkerMetadata", "LoadSpec",
           "SaveSpec", "KVConnectorWorkerMetadata",
           "KVConnectorBase_V1", "KVConnectorMetadata", "KVConnectorRole", "block_key",
           "HAVE_VLLM", "DEFAULT_POOL_PATH"]
