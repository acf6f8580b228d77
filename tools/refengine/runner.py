# SPDX-License-Identifier: MIT
"""The model runner: vLLM V1's GPUModelRunner + KVConnectorModelRunnerMixin
(vllm/v1/worker/gpu_model_runner.py, kv_connector_model_runner_mixin.py),
on the CPU, with the worker-side KV connector called where vLLM calls it.

``initialize_kv_cache``: allocates the paged cache and registers it,
``connector.register_kv_caches({layer_name: (2, num_blocks, block_size, H, D)})``
in the per-layer layout, or
``connector.register_cross_layers_kv_cache(tensor (num_blocks, L, 2, block_size, H, D), RefAttentionBackend)``
in the cross-layer layout.

``execute_model(scheduler_output)``:
  update the persistent request states from the SchedulerOutput;
  connector.bind_connector_metadata(scheduler_output.kv_connector_metadata)
  connector.start_load_kv(forward_context)          # loads complete here
  for each layer i, named model.layers.{i}.self_attn.attn:
      connector.wait_for_layer_load(layer_name)
      write the step's K/V to its slots; attention through block tables
      connector.save_kv_layer(layer_name, kv_cache_of_layer, attn_metadata)
  connector.wait_for_save()
  connector.get_finished(scheduler_output.finished_req_ids)
      -> (finished_sending, finished_recving)
  connector.get_block_ids_with_load_errors()         # -> invalid_block_ids
  connector.build_connector_worker_meta()            # -> kv_connector_worker_meta
  connector.clear_connector_metadata()
  sample (greedy) the requests whose scheduled tokens reach their end.
A step with no tokens scheduled still runs bind, start_load_kv,
wait_for_save, get_finished, get_block_ids_with_load_errors,
build_connector_worker_meta and clear
(vLLM's kv_connector_no_forward).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .kv_cache import allocate_kv_caches
from .model import LlamaModel
from .vllm_types import (
    Attention,
    FlashAttentionMetadata,
    ForwardContext,
    KVConnectorOutput,
    ModelRunnerOutput,
    RefAttentionBackend,
    SchedulerOutput,
)


def layer_name(i: int) -> str:
    """vLLM's attention layer name for decoder layer i of a Llama model."""
    return f"model.layers.{i}.self_attn.attn"


@dataclass
class CachedRequestState:
    """Mirrors vllm.v1.worker.gpu_input_batch.CachedRequestState."""

    req_id: str
    prompt_token_ids: list[int]
    block_ids: list[int]
    num_computed_tokens: int
    output_token_ids: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token(self, i: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[i] if i < n else self.output_token_ids[i - n]


class ModelRunner:
    def __init__(self, model: LlamaModel, num_blocks: int, block_size: int, layout: str = "per_layer",
                 connector: object | None = None) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.layout = layout
        self.connector = connector
        self.requests: dict[str, CachedRequestState] = {}
        self.kv_caches: list[torch.Tensor] = []
        self.cross_layer_kv_cache: torch.Tensor | None = None
        self.layers: dict[str, Attention] = {}
        # Seconds spent by the last step in start_load_kv, the forward pass
        # (including the per-layer connector calls) and the connector's end
        # of step (wait_for_save .. clear_connector_metadata).
        self.last_times: dict[str, float] = {}

    def initialize_kv_cache(self) -> None:
        s = self.model.spec
        self.kv_caches, self.cross_layer_kv_cache = allocate_kv_caches(
            self.layout, s.num_layers, self.num_blocks, self.block_size, s.num_kv_heads, s.head_dim,
            self.model.dtype)
        self.layers = {layer_name(i): Attention(layer_name(i), kv) for i, kv in enumerate(self.kv_caches)}
        if self.connector is None:
            return
        if self.cross_layer_kv_cache is not None:
            self.connector.register_cross_layers_kv_cache(self.cross_layer_kv_cache, RefAttentionBackend)
        else:
            self.connector.register_kv_caches({n: a.kv_cache[0] for n, a in self.layers.items()})

    def _update_states(self, so: SchedulerOutput) -> None:
        for rid in so.finished_req_ids:
            self.requests.pop(rid, None)
        for rid in so.preempted_req_ids or ():
            self.requests.pop(rid, None)
        for nr in so.scheduled_new_reqs:
            assert nr.prompt_token_ids is not None
            self.requests[nr.req_id] = CachedRequestState(
                nr.req_id, list(nr.prompt_token_ids), list(nr.block_ids[0]), nr.num_computed_tokens)
        c = so.scheduled_cached_reqs
        for i, rid in enumerate(c.req_ids):
            st = self.requests.get(rid)
            if rid in c.resumed_req_ids or st is None:
                # A preempted request comes back with all its tokens and a
                # fresh block list; its tokens all count as prompt here.
                st = CachedRequestState(rid, list(c.all_token_ids[rid]), [], 0)
                self.requests[rid] = st
                if c.new_block_ids[i] is not None:
                    st.block_ids = list(c.new_block_ids[i][0])
            elif c.new_block_ids[i] is not None:
                st.block_ids.extend(c.new_block_ids[i][0])
            st.num_computed_tokens = c.num_computed_tokens[i]
            # The scheduler discards outputs (e.g. after a failed KV load).
            del st.output_token_ids[c.num_output_tokens[i]:]

    def _build(self, so: SchedulerOutput) -> tuple[list[str], torch.Tensor, torch.Tensor, FlashAttentionMetadata]:
        bs = self.block_size
        req_ids = [nr.req_id for nr in so.scheduled_new_reqs] + list(so.scheduled_cached_reqs.req_ids)
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        qsl = [0]
        seq_lens = []
        max_blocks = 0
        for rid in req_ids:
            st = self.requests[rid]
            n = so.num_scheduled_tokens[rid]
            a = st.num_computed_tokens
            for p in range(a, a + n):
                ids.append(st.token(p))
                pos.append(p)
                slots.append(st.block_ids[p // bs] * bs + p % bs)
            qsl.append(qsl[-1] + n)
            seq_lens.append(a + n)
            max_blocks = max(max_blocks, len(st.block_ids))
        table = torch.zeros(len(req_ids), max(max_blocks, 1), dtype=torch.long)
        for r, rid in enumerate(req_ids):
            b = self.requests[rid].block_ids
            table[r, :len(b)] = torch.tensor(b, dtype=torch.long)
        meta = FlashAttentionMetadata(
            num_actual_tokens=len(ids), max_query_len=max((qsl[i + 1] - qsl[i] for i in range(len(req_ids))), default=0),
            query_start_loc=torch.tensor(qsl, dtype=torch.long), max_seq_len=max(seq_lens, default=0),
            seq_lens=torch.tensor(seq_lens, dtype=torch.long), block_table=table,
            slot_mapping=torch.tensor(slots, dtype=torch.long))
        return req_ids, torch.tensor(ids, dtype=torch.long), torch.tensor(pos, dtype=torch.long), meta

    def _forward_context(self, meta: FlashAttentionMetadata | None) -> ForwardContext:
        return ForwardContext(self.layers, None if meta is None else {n: meta for n in self.layers})

    def _connector_begin(self, so: SchedulerOutput, fc: ForwardContext) -> None:
        c = self.connector
        assert so.kv_connector_metadata is not None, "a connector step needs kv_connector_metadata"
        c.bind_connector_metadata(so.kv_connector_metadata)
        c.start_load_kv(fc)

    def _connector_end(self, so: SchedulerOutput) -> KVConnectorOutput:
        c = self.connector
        c.wait_for_save()
        sending, recving = c.get_finished(so.finished_req_ids)
        out = KVConnectorOutput(finished_sending=sending, finished_recving=recving,
                                invalid_block_ids=set(c.get_block_ids_with_load_errors()))
        if hasattr(c, "build_connector_worker_meta"):  # vLLM >= 0.18
            out.kv_connector_worker_meta = c.build_connector_worker_meta()
        c.clear_connector_metadata()
        return out

    @torch.inference_mode()
    def execute_model(self, so: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(so)
        if so.total_num_scheduled_tokens == 0:
            kvo = None
            if self.connector is not None:
                self._connector_begin(so, self._forward_context(None))
                kvo = self._connector_end(so)
            return ModelRunnerOutput([], {}, [], kvo)
        req_ids, ids, pos, meta = self._build(so)
        fc = self._forward_context(meta)
        kvo = None
        t0 = time.perf_counter()
        if self.connector is not None:
            c = self.connector
            names = list(self.layers)
            self._connector_begin(so, fc)
            t1 = time.perf_counter()
            hidden = self.model.forward(
                ids, pos, self.kv_caches, meta,
                before_attn=lambda i: c.wait_for_layer_load(names[i]),
                after_attn=lambda i: c.save_kv_layer(names[i], self.kv_caches[i], fc.attn_metadata[names[i]]))
            t2 = time.perf_counter()
            kvo = self._connector_end(so)
        else:
            t1 = t0
            hidden = self.model.forward(ids, pos, self.kv_caches, meta)
            t2 = time.perf_counter()
        self.last_times = {"load_s": t1 - t0, "forward_s": t2 - t1, "save_s": time.perf_counter() - t2}
        # Sample where the scheduled tokens reach the end of the known tokens.
        rows, sample_ids = [], []
        qsl = meta.query_start_loc.tolist()
        for r, rid in enumerate(req_ids):
            st = self.requests[rid]
            if st.num_computed_tokens + so.num_scheduled_tokens[rid] >= st.num_tokens:
                rows.append(qsl[r + 1] - 1)
                sample_ids.append(rid)
        sampled: list[list[int]] = [[] for _ in req_ids]
        logits_out: dict[str, torch.Tensor] = {}
        if rows:
            logits = self.model.logits(hidden[torch.tensor(rows, dtype=torch.long)])
            toks = torch.argmax(logits, dim=-1).tolist()
            for j, rid in enumerate(sample_ids):
                sampled[req_ids.index(rid)] = [toks[j]]
                self.requests[rid].output_token_ids.append(toks[j])
                logits_out[rid] = logits[j]
        for rid in req_ids:
            st = self.requests[rid]
            st.num_computed_tokens += so.num_scheduled_tokens[rid]
        return ModelRunnerOutput(req_ids, {r: i for i, r in enumerate(req_ids)}, sampled, kvo, logits_out)
