# SPDX-License-Identifier: MIT
"""The scheduler: vLLM V1's Scheduler (vllm/v1/core/sched/scheduler.py),
reduced to one KV cache group, FCFS, greedy sampling and synchronous
connector loads, with the KV connector called where vLLM calls it.

Per step (``schedule``):
  1. running requests: one more token each (or the next prefill chunk);
     blocks from ``allocate_slots``; when the pool is exhausted the last
     running request is preempted (blocks freed, recomputed later).
  2. waiting requests, FCFS, while the token budget and ``max_num_seqs``
     allow: ``kv_cache_manager.get_computed_blocks`` (local prefix hit),
     then ``connector.get_num_new_matched_tokens(request, num_local)``,
     ``allocate_slots(..., num_external_computed_tokens=ext)``, then
     ``connector.update_state_after_alloc(request, kv_cache_manager.get_blocks(id), ext)``.
  3. the SchedulerOutput, then ``connector.build_connector_meta(output)``
     stored in ``output.kv_connector_metadata``; then num_computed_tokens
     advance by the scheduled tokens.
After the worker ran (``update_from_output``): a load failure
(``invalid_block_ids``) sends the request back to recompute from the first
bad block; sampled tokens are appended; a finished request is freed through
``connector.request_finished(request, block_ids)`` (whose True return
delays the free until the worker reports the id in finished_sending).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .kv_cache import KVCacheManager
from .vllm_types import (
    CachedRequestData,
    KVCacheBlocks,
    KVConnectorOutput,
    ModelRunnerOutput,
    NewRequestData,
    Request,
    RequestStatus,
    SchedulerOutput,
)


@dataclass
class EngineCoreOutput:
    """Mirrors vllm.v1.engine.EngineCoreOutput (one request's news from one step)."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    num_external_computed_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Scheduler:
    def __init__(
        self,
        kv_cache_manager: KVCacheManager,
        block_size: int,
        connector: object | None = None,
        max_num_seqs: int = 16,
        max_num_batched_tokens: int = 8192,
        max_model_len: int = 8192,
    ) -> None:
        self.kv_cache_manager = kv_cache_manager
        self.block_size = block_size
        self.connector = connector
        self.max_num_running_reqs = max_num_seqs
        self.max_num_scheduled_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished_req_ids: set[str] = set()
        self.prev_step_scheduled_req_ids: set[str] = set()
        # Requests whose blocks the connector still uses after they finished.
        self.delayed_free: dict[str, Request] = {}
        self.num_load_failures = 0
        self.num_preemptions = 0

    # ------------------------------------------------------------ requests

    def add_request(self, request: Request) -> None:
        assert request.request_id not in self.requests, f"duplicate request id {request.request_id!r}"
        self.waiting.append(request)
        self.requests[request.request_id] = request

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def has_requests(self) -> bool:
        """vLLM's test for one more engine step: unfinished requests, finished
        ids the worker has not been told of, or blocks held for the connector."""
        return self.has_unfinished_requests() or bool(self.finished_req_ids) or bool(self.delayed_free)

    # ------------------------------------------------------------ schedule

    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_scheduled_tokens
        new_reqs: list[Request] = []
        resumed_reqs: list[Request] = []
        running_reqs: list[Request] = []
        preempted: list[Request] = []
        req_to_new_blocks: dict[str, KVCacheBlocks] = {}
        num_scheduled: dict[str, int] = {}
        kvm = self.kv_cache_manager

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens_with_spec - req.num_computed_tokens, budget,
                    self.max_model_len - 1 - req.num_computed_tokens)
            if n <= 0:
                i += 1
                continue
            while True:
                new_blocks = kvm.allocate_slots(req, n)
                if new_blocks is not None:
                    break
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is req:
                    break
            if new_blocks is None:
                break
            running_reqs.append(req)
            req_to_new_blocks[req.request_id] = new_blocks
            num_scheduled[req.request_id] = n
            budget -= n
            i += 1

        skipped: list[Request] = []
        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < self.max_num_running_reqs:
                req = self.waiting[0]
                ext = 0
                if req.num_computed_tokens == 0:
                    computed_blocks, num_local = kvm.get_computed_blocks(req)
                    if self.connector is not None:
                        ext_tokens, load_async = self.connector.get_num_new_matched_tokens(req, num_local)
                        if ext_tokens is None:
                            # The connector needs more time: ask again next step.
                            skipped.append(self.waiting.popleft())
                            continue
                        if load_async:
                            raise NotImplementedError(
                                "refengine loads synchronously: get_num_new_matched_tokens must return "
                                "load_kv_async=False")
                        ext = ext_tokens
                        req.num_external_computed_tokens = ext
                    num_computed = num_local + ext
                else:
                    computed_blocks, num_local = kvm.empty_kv_cache_blocks, 0
                    num_computed = req.num_computed_tokens
                n = req.num_tokens - num_computed
                assert n > 0, (f"request {req.request_id}: {num_computed} computed tokens leave none of "
                               f"its {req.num_tokens} to compute (a connector must leave the last token)")
                n = min(n, budget)
                new_blocks = kvm.allocate_slots(req, n, num_new_computed_tokens=num_local,
                                                new_computed_blocks=computed_blocks,
                                                num_external_computed_tokens=ext)
                if new_blocks is None:
                    break
                if self.connector is not None:
                    self.connector.update_state_after_alloc(req, kvm.get_blocks(req.request_id), ext)
                self.waiting.popleft()
                self.running.append(req)
                (new_reqs if req.status == RequestStatus.WAITING else resumed_reqs).append(req)
                req_to_new_blocks[req.request_id] = kvm.get_blocks(req.request_id)
                num_scheduled[req.request_id] = n
                budget -= n
                req.status = RequestStatus.RUNNING
                req.num_computed_tokens = num_computed
                if req.num_cached_tokens < 0:
                    req.num_cached_tokens = num_computed
        self.waiting.extendleft(reversed(skipped))

        out = SchedulerOutput(
            scheduled_new_reqs=[NewRequestData.from_request(r, req_to_new_blocks[r.request_id].get_block_ids())
                                for r in new_reqs],
            scheduled_cached_reqs=self._make_cached_request_data(running_reqs, resumed_reqs, req_to_new_blocks),
            num_scheduled_tokens=num_scheduled,
            total_num_scheduled_tokens=sum(num_scheduled.values()),
            scheduled_spec_decode_tokens={},
            scheduled_encoder_inputs={},
            num_common_prefix_blocks=[0],
            finished_req_ids=self.finished_req_ids,
            free_encoder_mm_hashes=[],
            preempted_req_ids={r.request_id for r in preempted},
        )
        if self.connector is not None:
            out.kv_connector_metadata = self.connector.build_connector_meta(out)
        self.prev_step_scheduled_req_ids = set(num_scheduled)
        for rid, n in num_scheduled.items():
            self.requests[rid].num_computed_tokens += n
        self.finished_req_ids = set()
        return out

    def _make_cached_request_data(
        self, running: list[Request], resumed: list[Request], req_to_new_blocks: dict[str, KVCacheBlocks]
    ) -> CachedRequestData:
        data = CachedRequestData.make_empty()
        for idx, req in enumerate(running + resumed):
            rid = req.request_id
            data.req_ids.append(rid)
            if idx >= len(running):
                data.resumed_req_ids.add(rid)
            if rid not in self.prev_step_scheduled_req_ids:
                data.all_token_ids[rid] = list(req.all_token_ids)
            data.new_block_ids.append(req_to_new_blocks[rid].get_block_ids(allow_none=True))
            data.num_computed_tokens.append(req.num_computed_tokens)
            data.num_output_tokens.append(req.num_output_tokens)
        return data

    def _preempt(self, req: Request) -> None:
        self.kv_cache_manager.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    # ------------------------------------------------------------ outputs

    def update_from_output(self, sched: SchedulerOutput, out: ModelRunnerOutput) -> list[EngineCoreOutput]:
        kvo = out.kv_connector_output
        failed = self._handle_invalid_blocks(kvo.invalid_block_ids) if kvo and kvo.invalid_block_ids else set()
        results = []
        stopped: list[Request] = []
        for rid in sched.num_scheduled_tokens:
            if rid in failed:
                continue
            req = self.requests.get(rid)
            if req is None or req.is_finished():
                continue
            idx = out.req_id_to_index[rid]
            new = out.sampled_token_ids[idx] if out.sampled_token_ids else []
            reason = None
            for t in new:
                req.append_output_token_ids(t)
                if req.num_output_tokens >= req.max_tokens or req.num_tokens >= self.max_model_len:
                    req.status = RequestStatus.FINISHED_LENGTH_CAPPED
                    reason = "length"
                elif (not req.sampling_params.ignore_eos and req.eos_token_id is not None
                      and t == req.eos_token_id):
                    req.status = RequestStatus.FINISHED_STOPPED
                    reason = "stop"
                if reason:
                    break
            if reason:
                stopped.append(req)
                self._free_request(req)
            if new or reason:
                results.append(EngineCoreOutput(rid, list(new), reason, max(req.num_cached_tokens, 0),
                                                req.num_external_computed_tokens))
        if stopped:
            self.running = [r for r in self.running if r not in stopped]
        if kvo is not None:
            self._update_from_kv_xfer_finished(kvo)
        return results

    def _handle_invalid_blocks(self, invalid: set[int]) -> set[str]:
        """Send every request holding a block that failed to load back to
        recompute from the first such block; those blocks leave the prefix
        cache. Returns the affected request ids (their step output is void)."""
        affected = set()
        kvm = self.kv_cache_manager
        for req in self.running:
            ids = kvm.get_block_ids(req.request_id)[0]
            bad = [j for j, b in enumerate(ids) if b in invalid]
            if not bad:
                continue
            first = bad[0]
            kvm.uncache_blocks_from(req, first)
            req.num_computed_tokens = min(req.num_computed_tokens, first * self.block_size)
            req.num_external_computed_tokens = 0
            affected.add(req.request_id)
            self.num_load_failures += 1
        return affected

    def _free_request(self, req: Request) -> None:
        delay = False
        if self.connector is not None:
            delay, _params = self.connector.request_finished(req, self.kv_cache_manager.get_block_ids(req.request_id)[0])
        self.finished_req_ids.add(req.request_id)
        if delay:
            self.delayed_free[req.request_id] = req
        else:
            self._free_blocks(req)

    def _free_blocks(self, req: Request) -> None:
        self.kv_cache_manager.free(req)
        self.requests.pop(req.request_id, None)

    def _update_from_kv_xfer_finished(self, kvo: KVConnectorOutput) -> None:
        if self.connector is not None and hasattr(self.connector, "update_connector_output"):
            self.connector.update_connector_output(kvo)
        for rid in kvo.finished_sending or ():
            req = self.delayed_free.pop(rid, None)
            if req is not None:
                self._free_blocks(req)
