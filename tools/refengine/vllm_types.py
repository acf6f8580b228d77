# SPDX-License-Identifier: MIT
"""vLLM-shaped objects passed to a KV connector.

vLLM cannot be installed on these machines, so the reference engine builds
its own copies of the objects vLLM V1 hands to a ``KVConnectorBase_V1``.
Each class below mirrors the vLLM class named in its docstring: the same
field and method names with the same meaning, reduced to what the connector
contract reads. Fields vLLM has and the connector never needs (multimodal
inputs, LoRA, structured output, speculative decoding, pooling) are either
absent or fixed to their "feature unused" value, which is stated.

A connector written against vLLM's classes therefore runs unchanged on
these. If ``vllm`` itself is importable nothing here is replaced by it: the
reference engine always passes these objects.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch

# vLLM's BlockHash: the bytes digest of one full block (vllm/v1/core/kv_cache_utils.py).
BlockHash = bytes


class KVConnectorRole(enum.Enum):
    """Mirrors vllm.distributed.kv_transfer.kv_connector.v1.base.KVConnectorRole."""

    SCHEDULER = 0
    WORKER = 1


class KVConnectorMetadata:
    """Mirrors vllm...kv_connector.v1.base.KVConnectorMetadata: an opaque object a
    scheduler-side connector builds each step and the worker-side one reads."""


class RequestStatus(enum.IntEnum):
    """Mirrors vllm.v1.request.RequestStatus: anything after PREEMPTED is finished."""

    WAITING = enum.auto()
    WAITING_FOR_FSM = enum.auto()
    WAITING_FOR_REMOTE_KVS = enum.auto()
    RUNNING = enum.auto()
    PREEMPTED = enum.auto()
    FINISHED_STOPPED = enum.auto()
    FINISHED_LENGTH_CAPPED = enum.auto()
    FINISHED_ABORTED = enum.auto()
    FINISHED_IGNORED = enum.auto()
    FINISHED_ERROR = enum.auto()

    @staticmethod
    def is_finished(status: "RequestStatus") -> bool:
        return status > RequestStatus.PREEMPTED


@dataclass
class SamplingParams:
    """Mirrors vllm.SamplingParams, greedy only: ``temperature`` is always 0.

    ``extra_args["kv_transfer_params"]`` becomes ``Request.kv_transfer_params``
    as in vLLM.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    ignore_eos: bool = True
    extra_args: dict[str, Any] | None = None


class ConstantList(Sequence[int]):
    """Mirrors vllm.v1.utils.ConstantList: a read-only view of a list."""

    def __init__(self, x: list[int]) -> None:
        self._x = x

    def __getitem__(self, item):  # type: ignore[no-untyped-def]
        return self._x[item]

    def __len__(self) -> int:
        return len(self._x)

    def __iter__(self) -> Iterator[int]:
        return iter(self._x)

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        return self._x.index(value, start, len(self._x) if stop is None else stop)

    def copy(self) -> list[int]:
        return self._x.copy()

    def __repr__(self) -> str:
        return f"ConstantList({self._x!r})"


class Request:
    """Mirrors vllm.v1.request.Request (the scheduler's view of one request).

    ``block_hashes`` holds the vLLM prefix-cache hash of every *full* block of
    ``all_token_ids`` and grows as output tokens fill blocks, computed by the
    ``block_hasher`` callable exactly as vLLM's ``get_request_block_hasher``
    (refengine.hashing.make_block_hasher). ``num_computed_tokens`` counts the
    tokens whose KV is in the engine's paged cache (local prefix hits, tokens
    loaded by the connector, and tokens computed so far).
    Unused vLLM features: ``mm_features`` is empty, ``lora_request`` None,
    ``spec_token_ids`` empty, ``num_output_placeholders`` 0.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        eos_token_id: int | None = None,
        block_hasher: Callable[["Request"], list[BlockHash]] | None = None,
        arrival_time: float | None = None,
        cache_salt: str | None = None,
        priority: int = 0,
        client_index: int = 0,
    ) -> None:
        self.request_id = request_id
        self.client_index = client_index
        self.priority = priority
        self.sampling_params = sampling_params
        self.pooling_params = None
        self.eos_token_id = eos_token_id
        self.lora_request = None
        self.structured_output_request = None
        self.arrival_time = arrival_time if arrival_time is not None else time.time()
        self.status = RequestStatus.WAITING
        self.stop_reason: int | str | None = None
        self.max_tokens = sampling_params.max_tokens
        self.prompt_token_ids = list(prompt_token_ids)
        self.prompt_embeds = None
        self.num_prompt_tokens = len(self.prompt_token_ids)
        self._output_token_ids: list[int] = []
        self._all_token_ids: list[int] = self.prompt_token_ids.copy()
        self.output_token_ids = ConstantList(self._output_token_ids)
        self.all_token_ids = ConstantList(self._all_token_ids)
        self.spec_token_ids: list[int] = []
        self.num_output_placeholders = 0
        self.num_computed_tokens = 0
        self.cache_salt = cache_salt
        self.mm_features: list[Any] = []
        self.has_encoder_inputs = False
        extra = sampling_params.extra_args
        self.kv_transfer_params: dict[str, Any] | None = (
            None if extra is None else extra.get("kv_transfer_params")
        )
        # Tokens served from the engine's own prefix cache at first schedule
        # (-1 until scheduled), and tokens the connector said it would load.
        self.num_cached_tokens = -1
        self.num_external_computed_tokens = 0
        self.num_preemptions = 0
        self.block_hashes: list[BlockHash] = []
        self._block_hasher = block_hasher
        self.update_block_hashes()

    def update_block_hashes(self) -> None:
        """Hash the blocks that became full since the last call (vLLM name)."""
        if self._block_hasher is not None:
            self.block_hashes.extend(self._block_hasher(self))

    def append_output_token_ids(self, token_ids: int | list[int]) -> None:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        self._output_token_ids.extend(token_ids)
        self._all_token_ids.extend(token_ids)
        self.update_block_hashes()

    @property
    def num_tokens(self) -> int:
        return len(self._all_token_ids)

    @property
    def num_tokens_with_spec(self) -> int:
        return len(self._all_token_ids) + len(self.spec_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self._output_token_ids)

    def is_finished(self) -> bool:
        return RequestStatus.is_finished(self.status)

    def __repr__(self) -> str:
        return (
            f"Request(request_id={self.request_id!r}, num_tokens={self.num_tokens}, "
            f"num_computed_tokens={self.num_computed_tokens}, status={self.status.name})"
        )


class KVCacheBlock:
    """Mirrors vllm.v1.core.kv_cache_utils.KVCacheBlock.

    ``ref_cnt`` counts the running requests holding the block; a block with
    ``ref_cnt == 0`` sits in the free queue and may still carry a
    ``block_hash`` (an evictable prefix-cache entry) until it is reused.
    """

    __slots__ = ("block_id", "ref_cnt", "_block_hash", "is_null")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self._block_hash: BlockHash | None = None
        self.is_null = False

    @property
    def block_hash(self) -> BlockHash | None:
        return self._block_hash

    @block_hash.setter
    def block_hash(self, block_hash: BlockHash) -> None:
        assert self._block_hash is None, "the block already has a hash"
        self._block_hash = block_hash

    def reset_hash(self) -> None:
        self._block_hash = None

    def __repr__(self) -> str:
        h = None if self._block_hash is None else self._block_hash.hex()[:12]
        return f"KVCacheBlock(block_id={self.block_id}, ref_cnt={self.ref_cnt}, block_hash={h})"


@dataclass
class KVCacheBlocks:
    """Mirrors vllm.v1.core.kv_cache_manager.KVCacheBlocks.

    ``blocks[g][j]`` is the j-th block of KV cache group g; the reference
    engine has one group (all layers full attention).
    """

    blocks: tuple[Sequence[KVCacheBlock], ...]

    def __add__(self, other: "KVCacheBlocks") -> "KVCacheBlocks":
        return KVCacheBlocks(tuple(list(a) + list(b) for a, b in zip(self.blocks, other.blocks)))

    @overload
    def get_block_ids(self, allow_none: Literal[False] = False) -> tuple[list[int], ...]: ...

    @overload
    def get_block_ids(self, allow_none: Literal[True] = True) -> tuple[list[int], ...] | None: ...

    def get_block_ids(self, allow_none: bool = False) -> tuple[list[int], ...] | None:
        if allow_none and all(len(g) == 0 for g in self.blocks):
            return None
        return tuple([b.block_id for b in g] for g in self.blocks)

    def get_unhashed_block_ids(self) -> list[int]:
        assert len(self.blocks) == 1, "Only one group is supported"
        return [b.block_id for b in self.blocks[0] if b.block_hash is None]

    def new_empty(self) -> "KVCacheBlocks":
        return KVCacheBlocks(tuple(() for _ in self.blocks))


@dataclass
class NewRequestData:
    """Mirrors vllm.v1.core.sched.output.NewRequestData (first schedule of a request).

    ``num_computed_tokens`` is the count before this step: local prefix hits
    plus the tokens the connector will load. ``block_ids`` holds all the
    request's blocks, hits first.
    """

    req_id: str
    prompt_token_ids: list[int] | None
    mm_features: list[Any]
    sampling_params: SamplingParams | None
    pooling_params: Any
    block_ids: tuple[list[int], ...]
    num_computed_tokens: int
    lora_request: Any
    prompt_embeds: torch.Tensor | None = None
    prefill_token_ids: list[int] | None = None

    @classmethod
    def from_request(cls, request: Request, block_ids: tuple[list[int], ...]) -> "NewRequestData":
        return cls(
            req_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            mm_features=request.mm_features,
            sampling_params=request.sampling_params,
            pooling_params=request.pooling_params,
            block_ids=block_ids,
            num_computed_tokens=request.num_computed_tokens,
            lora_request=request.lora_request,
        )


@dataclass
class CachedRequestData:
    """Mirrors vllm.v1.core.sched.output.CachedRequestData (requests scheduled before).

    For a request not in ``resumed_req_ids``, ``new_block_ids[i]`` is appended
    to its block ids (None: no new block); for a resumed (preempted) one it
    replaces them. ``new_token_ids`` stays empty (vLLM fills it only under
    pipeline parallelism); ``all_token_ids`` has the full token list of
    requests that were not scheduled in the previous step.
    """

    req_ids: list[str]
    resumed_req_ids: set[str]
    new_token_ids: list[list[int]]
    all_token_ids: dict[str, list[int]]
    new_block_ids: list[tuple[list[int], ...] | None]
    num_computed_tokens: list[int]
    num_output_tokens: list[int]

    @property
    def num_reqs(self) -> int:
        return len(self.req_ids)

    @classmethod
    def make_empty(cls) -> "CachedRequestData":
        return cls([], set(), [], {}, [], [], [])


@dataclass
class SchedulerOutput:
    """Mirrors vllm.v1.core.sched.output.SchedulerOutput.

    ``finished_req_ids`` are the requests that finished between the previous
    step and this one (the worker learns of them here, and its connector in
    ``get_finished``). Encoder and speculative fields are always empty.
    """

    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: CachedRequestData
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    scheduled_spec_decode_tokens: dict[str, list[int]]
    scheduled_encoder_inputs: dict[str, list[int]]
    num_common_prefix_blocks: list[int]
    finished_req_ids: set[str]
    free_encoder_mm_hashes: list[str]
    preempted_req_ids: set[str] | None = None
    kv_connector_metadata: KVConnectorMetadata | None = None


@dataclass
class KVConnectorOutput:
    """Mirrors vllm.v1.outputs.KVConnectorOutput (worker connector -> scheduler).

    ``invalid_block_ids``: engine block ids whose load failed
    (``get_block_ids_with_load_errors``); the scheduler recomputes from the
    first of them. ``kv_connector_worker_meta``: what the worker connector's
    ``build_connector_worker_meta`` returned, handed to the scheduler
    connector's ``update_connector_output``.
    """

    finished_sending: set[str] | None = None
    finished_recving: set[str] | None = None
    kv_connector_stats: Any = None
    kv_cache_events: Any = None
    kv_connector_worker_meta: Any = None
    invalid_block_ids: set[int] = field(default_factory=set)

    def is_empty(self) -> bool:
        return not (self.finished_sending or self.finished_recving or self.invalid_block_ids
                    or self.kv_connector_worker_meta)


@dataclass
class ModelRunnerOutput:
    """Mirrors vllm.v1.outputs.ModelRunnerOutput.

    ``sampled_token_ids[i]`` is empty for a request still in (chunked)
    prefill. ``logits`` is refengine-only: the float32 logits row each
    sampled token came from, for the correctness tests.
    """

    req_ids: list[str]
    req_id_to_index: dict[str, int]
    sampled_token_ids: list[list[int]]
    kv_connector_output: KVConnectorOutput | None = None
    logits: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class FlashAttentionMetadata:
    """Mirrors vllm.v1.attention.backends.flash_attn.FlashAttentionMetadata.

    Token i of the step goes to paged-cache slot ``slot_mapping[i]`` =
    block_id * block_size + offset; ``block_table[r]`` lists request r's
    blocks (padded with 0), ``query_start_loc[r]:query_start_loc[r+1]`` are
    its tokens in the step and ``seq_lens[r]`` its context length after it.
    """

    num_actual_tokens: int
    max_query_len: int
    query_start_loc: torch.Tensor
    max_seq_len: int
    seq_lens: torch.Tensor
    block_table: torch.Tensor
    slot_mapping: torch.Tensor


class RefAttentionBackend:
    """Mirrors vLLM's FlashAttention backend class as far as connectors query it."""

    @staticmethod
    def get_name() -> str:
        return "FLASH_ATTN"

    @staticmethod
    def get_kv_cache_shape(
        num_blocks: int, block_size: int, num_kv_heads: int, head_size: int, cache_dtype_str: str = "auto"
    ) -> tuple[int, ...]:
        return (2, num_blocks, block_size, num_kv_heads, head_size)


class Attention:
    """Mirrors vllm.attention.layer.Attention as connectors see it through
    ``ForwardContext.no_compile_layers``: ``layer_name`` and ``kv_cache``
    (one tensor per virtual engine; here one, shape (2, num_blocks,
    block_size, num_kv_heads, head_size), a strided view in the cross-layer
    layout)."""

    def __init__(self, layer_name: str, kv_cache: torch.Tensor) -> None:
        self.layer_name = layer_name
        self.kv_cache = [kv_cache]
        self.attn_backend = RefAttentionBackend


@dataclass
class ForwardContext:
    """Mirrors vllm.forward_context.ForwardContext.

    ``attn_metadata`` maps each layer name to its metadata (vLLM V1 form);
    all layers share one object here.
    """

    no_compile_layers: dict[str, Attention]
    attn_metadata: dict[str, FlashAttentionMetadata] | None
    virtual_engine: int = 0


# ---------------------------------------------------------------- configs


@dataclass
class ModelConfig:
    """Mirrors vllm.config.ModelConfig: ``model`` names the model, ``dtype`` is
    the KV/activation dtype. ``weights_fingerprint`` is refengine-only
    (sha256 of the weights, hex)."""

    model: str
    dtype: torch.dtype
    max_model_len: int
    weights_fingerprint: str = ""
    hf_config: Any = None

    def get_num_layers(self, parallel_config: "ParallelConfig | None" = None) -> int:
        return int(self.hf_config.num_hidden_layers)

    def get_num_kv_heads(self, parallel_config: "ParallelConfig | None" = None) -> int:
        return int(self.hf_config.num_key_value_heads)

    def get_head_size(self) -> int:
        return int(self.hf_config.head_dim)


@dataclass
class CacheConfig:
    """Mirrors vllm.config.CacheConfig."""

    block_size: int = 16
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: str = "sha256_cbor"
    num_gpu_blocks: int | None = None
    cache_dtype: str = "auto"


@dataclass
class ParallelConfig:
    """Mirrors vllm.config.ParallelConfig (``rank`` = this worker's TP rank)."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    rank: int = 0

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


@dataclass
class KVTransferConfig:
    """Mirrors vllm.config.KVTransferConfig (the ``--kv-transfer-config`` JSON)."""

    kv_connector: str | None = None
    kv_connector_module_path: str | None = None
    kv_role: str = "kv_both"
    kv_connector_extra_config: dict[str, Any] = field(default_factory=dict)
    engine_id: str = "refengine"
    kv_load_failure_policy: str = "recompute"

    @property
    def is_kv_transfer_instance(self) -> bool:
        return self.kv_connector is not None

    @property
    def is_kv_producer(self) -> bool:
        return self.kv_role in ("kv_producer", "kv_both")

    @property
    def is_kv_consumer(self) -> bool:
        return self.kv_role in ("kv_consumer", "kv_both")

    def get_from_extra_config(self, key: str, default: Any) -> Any:
        return self.kv_connector_extra_config.get(key, default)


@dataclass
class VllmConfig:
    """Mirrors vllm.config.VllmConfig, the fields a connector reads."""

    model_config: ModelConfig
    cache_config: CacheConfig
    parallel_config: ParallelConfig
    kv_transfer_config: KVTransferConfig | None = None


@dataclass
class FullAttentionSpec:
    """Mirrors vllm.v1.kv_cache_interface.FullAttentionSpec."""

    block_size: int
    num_kv_heads: int
    head_size: int
    dtype: torch.dtype

    @property
    def page_size_bytes(self) -> int:
        """Bytes of one block of one layer (K and V)."""
        elem = torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.block_size * self.num_kv_heads * self.head_size * elem


@dataclass
class KVCacheGroupSpec:
    """Mirrors vllm.v1.kv_cache_interface.KVCacheGroupSpec."""

    layer_names: list[str]
    kv_cache_spec: FullAttentionSpec


@dataclass
class KVCacheTensor:
    """Mirrors vllm.v1.kv_cache_interface.KVCacheTensor."""

    size: int
    shared_by: list[str]


@dataclass
class KVCacheConfig:
    """Mirrors vllm.v1.kv_cache_interface.KVCacheConfig."""

    num_blocks: int
    kv_cache_tensors: list[KVCacheTensor]
    kv_cache_groups: list[KVCacheGroupSpec]
