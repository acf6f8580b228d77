# SPDX-License-Identifier: MIT
"""KV connectors the reference engine can drive without kvpool, and the
factory that builds any connector the way vLLM's KVConnectorFactory does.

``DiskConnector`` is an external prefix cache in a directory: one file per
full block, named by the block's vLLM hash, holding the block's K/V of all
layers in the canonical order (num_layers, 2, block_size, num_kv_heads,
head_size). It plays the part of vLLM's ExampleConnector: a simple,
synchronous implementation of the V1 contract, used by the tests to check
cross-process reuse and by the benchmark as a baseline. Loads happen in
``start_load_kv``; saves of the blocks a step completed happen in
``wait_for_save`` (written to a temporary name, then renamed, so a reader
never sees half a block).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .vllm_types import (
    ForwardContext,
    KVCacheBlocks,
    KVConnectorMetadata,
    KVConnectorRole,
    Request,
    SchedulerOutput,
    VllmConfig,
)

# Short names accepted by --connector, as (kv_connector, kv_connector_module_path).
KNOWN_CONNECTORS = {
    "kvpool": ("KvpoolConnector", "kvpool.vllm"),
    "disk": ("DiskConnector", "refengine.connectors"),
}


def resolve_connector(name: str) -> tuple[str, str]:
    """``kvpool``, ``disk`` or ``module.path:ClassName`` -> (class name, module path)."""
    if name in KNOWN_CONNECTORS:
        return KNOWN_CONNECTORS[name]
    if ":" in name:
        module, cls = name.split(":", 1)
        return cls, module
    raise ValueError(f"connector {name!r}: expected none, {', '.join(KNOWN_CONNECTORS)} or module:Class")


def create_connector(vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: Any) -> Any:
    """vLLM's KVConnectorFactory.create_connector: import
    ``kv_connector_module_path`` and build ``kv_connector`` from it with
    (vllm_config, role, kv_cache_config)."""
    ktc = vllm_config.kv_transfer_config
    assert ktc is not None and ktc.kv_connector and ktc.kv_connector_module_path
    cls = getattr(importlib.import_module(ktc.kv_connector_module_path), ktc.kv_connector)
    return cls(vllm_config, role, kv_cache_config)


@dataclass
class DiskConnectorMetadata(KVConnectorMetadata):
    """One step's work: (block hash, engine block id) pairs to load and to save."""

    loads: list[tuple[bytes, int]] = field(default_factory=list)
    saves: list[tuple[bytes, int]] = field(default_factory=list)


class DiskConnector:
    """A synchronous V1 connector over a directory of block files.

    Extra config: ``path`` (directory, created if missing). ``kv_role``
    "kv_consumer" only loads, "kv_producer" only stores.
    """

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        ktc = vllm_config.kv_transfer_config
        assert ktc is not None
        self.role = role
        self.path = str(ktc.kv_connector_extra_config.get("path", "/tmp/refengine-kv"))
        os.makedirs(self.path, exist_ok=True)
        self.block_size = vllm_config.cache_config.block_size
        self._load = ktc.is_kv_consumer
        self._save = ktc.is_kv_producer
        self._connector_metadata: DiskConnectorMetadata | None = None
        # Scheduler side.
        self._requests: dict[str, Request] = {}
        self._block_ids: dict[str, list[int]] = {}
        self._local: dict[str, int] = {}
        self._loads: list[tuple[bytes, int]] = []
        # Worker side.
        self._layers: list[torch.Tensor] = []
        self._errors: set[int] = set()
        self.stats = {"hit_blocks": 0, "loaded_blocks": 0, "failed_blocks": 0, "saved_blocks": 0}

    def _file(self, h: bytes) -> str:
        return os.path.join(self.path, h.hex())

    # ---------------------------------------------------------- scheduler

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        max_blocks = (request.num_tokens - 1) // self.block_size if self._load else 0
        n = 0
        for h in request.block_hashes[:max_blocks]:
            if not os.path.exists(self._file(h)):
                break
            n += 1
        self._local[request.request_id] = num_computed_tokens
        ext = max(0, n * self.block_size - num_computed_tokens)
        return ext, False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        self._requests[request.request_id] = request
        if num_external_tokens == 0:
            return
        ids = blocks.get_block_ids()[0]
        first = self._local.get(request.request_id, 0) // self.block_size
        last = first + num_external_tokens // self.block_size
        self._loads += [(request.block_hashes[i], ids[i]) for i in range(first, last)]
        self.stats["hit_blocks"] += last - first

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> DiskConnectorMetadata:
        meta = DiskConnectorMetadata(loads=self._loads)
        self._loads = []
        steps: list[tuple[str, int]] = []
        for nr in scheduler_output.scheduled_new_reqs:
            self._block_ids[nr.req_id] = list(nr.block_ids[0])
            steps.append((nr.req_id, nr.num_computed_tokens))
        c = scheduler_output.scheduled_cached_reqs
        for i, rid in enumerate(c.req_ids):
            nb = c.new_block_ids[i]
            if rid in c.resumed_req_ids:
                self._block_ids[rid] = list(nb[0]) if nb else []
            elif nb is not None:
                self._block_ids.setdefault(rid, []).extend(nb[0])
            steps.append((rid, c.num_computed_tokens[i]))
        for rid, before in steps:
            req = self._requests.get(rid)
            if req is None or not self._save:
                continue
            after = before + scheduler_output.num_scheduled_tokens[rid]
            ids = self._block_ids[rid]
            for j in range(before // self.block_size, min(after // self.block_size, len(req.block_hashes))):
                h = req.block_hashes[j]
                if not os.path.exists(self._file(h)):
                    meta.saves.append((h, ids[j]))
        return meta

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        rid = request.request_id
        self._requests.pop(rid, None)
        self._block_ids.pop(rid, None)
        self._local.pop(rid, None)
        return False, None

    # ---------------------------------------------------------- worker

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._layers = list(kv_caches.values())

    def register_cross_layers_kv_cache(self, kv_cache: torch.Tensor, attn_backend: type) -> None:
        self._layers = [kv_cache[:, i].transpose(0, 1) for i in range(kv_cache.shape[1])]

    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        assert isinstance(connector_metadata, DiskConnectorMetadata)
        self._connector_metadata = connector_metadata

    def clear_connector_metadata(self) -> None:
        self._connector_metadata = None

    def _block_shape(self) -> tuple[int, ...]:
        kv = self._layers[0]
        return (len(self._layers), 2, kv.shape[2], kv.shape[3], kv.shape[4])

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._connector_metadata
        assert meta is not None
        shape = self._block_shape()
        dtype = self._layers[0].dtype
        for h, bid in meta.loads:
            try:
                with open(self._file(h), "rb") as f:
                    data = f.read()
                t = torch.frombuffer(bytearray(data), dtype=dtype).view(shape)
            except (OSError, RuntimeError, ValueError):
                self._errors.add(bid)
                self.stats["failed_blocks"] += 1
                continue
            for layer, kv in enumerate(self._layers):
                kv[:, bid] = t[layer]
            self.stats["loaded_blocks"] += 1

    def wait_for_layer_load(self, layer_name: str) -> None:
        return

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        return

    def wait_for_save(self) -> None:
        meta = self._connector_metadata
        assert meta is not None
        for h, bid in meta.saves:
            t = torch.stack([kv[:, bid] for kv in self._layers]).contiguous()
            dst = self._file(h)
            tmp = f"{dst}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(t.view(torch.uint8).numpy().tobytes())
            os.replace(tmp, dst)
            self.stats["saved_blocks"] += 1

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        return None, None

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._errors = self._errors, set()
        return errors
