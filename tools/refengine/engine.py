# SPDX-License-Identifier: MIT
"""The engine: a scheduler and a model runner in one process, as vLLM's
EngineCore with an in-process executor, each with its own connector
instance (role SCHEDULER and role WORKER), built by the factory from a
vLLM-shaped VllmConfig."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from . import hashing
from .connectors import create_connector, resolve_connector
from .kv_cache import KVCacheManager
from .model import PRESETS, LlamaModel, ModelSpec
from .runner import ModelRunner, layer_name
from .scheduler import EngineCoreOutput, Scheduler
from .vllm_types import (
    CacheConfig,
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    KVCacheTensor,
    KVConnectorRole,
    KVTransferConfig,
    ModelConfig,
    ParallelConfig,
    Request,
    SamplingParams,
    VllmConfig,
)

_MODEL_CACHE: dict[tuple[str, torch.dtype], LlamaModel] = {}


def load_model(name: str, dtype: torch.dtype = torch.float32) -> LlamaModel:
    """The preset's model (weights built once per process and dtype)."""
    key = (name, dtype)
    if key not in _MODEL_CACHE:
        if name not in PRESETS:
            raise ValueError(f"model {name!r}: expected one of {', '.join(PRESETS)}")
        _MODEL_CACHE[key] = LlamaModel(PRESETS[name], dtype)
    return _MODEL_CACHE[key]


@dataclass
class Completion:
    """One served request: its output and where its prefix came from."""

    request_id: str
    prompt_len: int
    output_token_ids: list[int]
    ttft_s: float
    total_s: float
    local_hit_tokens: int
    external_hit_tokens: int
    first_logits: torch.Tensor | None = field(default=None, repr=False)
    # The first token's step: seconds in start_load_kv, the forward pass, the
    # connector's end of step (ModelRunner.last_times).
    first_step_times: dict[str, float] = field(default_factory=dict, repr=False)


class RefEngine:
    """A reference inference engine.

    connector: None (no external cache), "disk", "kvpool", or
    "module.path:ClassName"; ``extra_config`` becomes
    ``kv_connector_extra_config``; ``kv_role`` is vLLM's ("kv_both",
    "kv_producer": store only, "kv_consumer": load only). The engine adds ``weights_fingerprint``
    (hex) and ``layout`` to it unless given.
    """

    def __init__(
        self,
        model: str | LlamaModel = "tiny",
        *,
        connector: str | None = None,
        extra_config: dict[str, Any] | None = None,
        layout: str = "per_layer",
        num_blocks: int = 512,
        block_size: int = 16,
        dtype: torch.dtype = torch.float32,
        enable_prefix_caching: bool = True,
        hash_algo: str = "sha256_cbor",
        hash_seed: str | None = None,
        max_num_seqs: int = 16,
        max_num_batched_tokens: int = 8192,
        kv_role: str = "kv_both",
    ) -> None:
        self.model = model if isinstance(model, LlamaModel) else load_model(model, dtype)
        spec: ModelSpec = self.model.spec
        self.block_size = block_size
        self.hash_algo = hash_algo
        self.hash_seed = hash_seed
        self._block_hasher = hashing.make_block_hasher(block_size, hash_algo, hash_seed)
        ktc = None
        if connector is not None and connector != "none":
            cls, module = resolve_connector(connector)
            extra = dict(extra_config or {})
            extra.setdefault("weights_fingerprint", self.model.fingerprint().hex())
            extra.setdefault("layout", layout)
            if hash_seed is not None:
                extra.setdefault("hash_seed", hash_seed)
            ktc = KVTransferConfig(kv_connector=cls, kv_connector_module_path=module, kv_role=kv_role,
                                   kv_connector_extra_config=extra)
        self.vllm_config = VllmConfig(
            model_config=ModelConfig(model=spec.name, dtype=self.model.dtype, max_model_len=spec.max_position,
                                     weights_fingerprint=self.model.fingerprint().hex() if ktc else "",
                                     hf_config=spec.hf_config()),
            cache_config=CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching,
                                     prefix_caching_hash_algo=hash_algo, num_gpu_blocks=num_blocks),
            parallel_config=ParallelConfig(),
            kv_transfer_config=ktc,
        )
        names = [layer_name(i) for i in range(spec.num_layers)]
        kv_spec = FullAttentionSpec(block_size, spec.num_kv_heads, spec.head_dim, self.model.dtype)
        self.kv_cache_config = KVCacheConfig(
            num_blocks=num_blocks,
            kv_cache_tensors=[KVCacheTensor(kv_spec.page_size_bytes * num_blocks, [n]) for n in names],
            kv_cache_groups=[KVCacheGroupSpec(names, kv_spec)],
        )
        self.scheduler_connector = None
        self.worker_connector = None
        if ktc is not None:
            self.scheduler_connector = create_connector(self.vllm_config, KVConnectorRole.SCHEDULER,
                                                        self.kv_cache_config)
            self.worker_connector = create_connector(self.vllm_config, KVConnectorRole.WORKER,
                                                     self.kv_cache_config)
        self.kv_cache_manager = KVCacheManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.kv_cache_manager, block_size, self.scheduler_connector,
                                   max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                   max_model_len=spec.max_position)
        self.runner = ModelRunner(self.model, num_blocks, block_size, layout, self.worker_connector)
        self.runner.initialize_kv_cache()
        self._ids = itertools.count()
        self.last_logits: dict[str, torch.Tensor] = {}

    def add_request(self, prompt_token_ids: list[int], max_tokens: int = 1, request_id: str | None = None) -> str:
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        self.scheduler.add_request(Request(rid, list(prompt_token_ids), SamplingParams(max_tokens=max_tokens),
                                           block_hasher=self._block_hasher))
        return rid

    def step(self) -> list[EngineCoreOutput]:
        """One EngineCore step: schedule, execute, update."""
        so = self.scheduler.schedule()
        out = self.runner.execute_model(so)
        self.last_logits = out.logits
        return self.scheduler.update_from_output(so, out)

    def generate_many(self, prompts: list[list[int]], max_tokens: int = 1) -> list[Completion]:
        """Serve prompts together (batched as the scheduler allows)."""
        t0 = time.perf_counter()
        rids = [self.add_request(p, max_tokens) for p in prompts]
        state: dict[str, dict[str, Any]] = {
            r: {"tokens": [], "ttft": None, "end": None, "out": None, "logits": None, "times": {}} for r in rids}
        while self.scheduler.has_requests():
            outs = self.step()
            now = time.perf_counter()
            for o in outs:
                s = state.get(o.request_id)
                if s is None:
                    continue
                if o.new_token_ids and s["ttft"] is None:
                    s["ttft"] = now - t0
                    s["logits"] = self.last_logits.get(o.request_id)
                    s["times"] = dict(self.runner.last_times)
                s["tokens"] += o.new_token_ids
                s["out"] = o
                if o.finished:
                    s["end"] = now - t0
        res = []
        for r, p in zip(rids, prompts):
            s = state[r]
            o = s["out"]
            ext = o.num_external_computed_tokens if o else 0
            res.append(Completion(r, len(p), s["tokens"], s["ttft"] or 0.0, s["end"] or 0.0,
                                  (o.num_cached_tokens - ext) if o else 0, ext, s["logits"], s["times"]))
        return res

    def generate(self, prompt: list[int], max_tokens: int = 1) -> Completion:
        """Serve one prompt alone; TTFT counts from the request's arrival."""
        return self.generate_many([prompt], max_tokens)[0]

    def stats(self) -> dict[str, Any]:
        st = self.kv_cache_manager.prefix_cache_stats
        out: dict[str, Any] = {"prefix_cache_queries": st.queries, "prefix_cache_hits": st.hits,
                               "kv_usage": self.kv_cache_manager.usage,
                               "evictions": self.kv_cache_manager.block_pool.num_evictions,
                               "load_failures": self.scheduler.num_load_failures,
                               "preemptions": self.scheduler.num_preemptions}
        for c in (self.scheduler_connector, self.worker_connector):
            if c is not None and isinstance(getattr(c, "stats", None), dict):
                for k, v in c.stats.items():
                    out[f"connector_{k}"] = out.get(f"connector_{k}", 0) + v
        return out
