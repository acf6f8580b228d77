# SPDX-License-Identifier: MIT
"""The blocks a lookup reports stay pinned until they are loaded.

vLLM asks the scheduler-side connector how many tokens kvpool holds
(``get_num_new_matched_tokens``) and loads them later, in the worker's
``start_load_kv``: a step later, or two with async scheduling. If another
engine's eviction took the blocks in between, the load would fail and the
engine recompute what it was promised. So the scheduler side pins what it
reports, per request (one set per request however often it is asked),
and gives the pins back when the worker reports the load run, when the
request ends, when the pool is attached anew, or when the pin limits (a
cap and an age) take them back from a request that is never scheduled.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import kvpool
import kvpool.vllm as kvv

from e2e_support import (  # noqa: F401
    ROOT,
    Kvpoold,
    Session,
    daemon,
    detach_new_attachments,
    engine,
    tokens,
    workdir,
)

sys.path.insert(0, str(ROOT / "tools"))
from refengine import hashing  # noqa: E402
from refengine.engine import RefEngine  # noqa: E402
from refengine.vllm_types import (  # noqa: E402
    CacheConfig,
    KVConnectorRole,
    KVTransferConfig,
    ModelConfig,
    ParallelConfig,
    Request,
    SamplingParams,
    VllmConfig,
)

BLOCK = 16

# Every test: detach what its connectors attached in this process.
pytestmark = pytest.mark.usefixtures("detach_new_attachments")


def _client(path: str) -> Any:
    """This process's client of ``path`` (the connectors' shared attachment)."""
    return kvv._attachments[(path, os.getpid())].pool


def _engine(path: str, **extra: Any) -> RefEngine:
    return RefEngine("tiny", connector="kvpool", extra_config={"pool_path": path, **extra})


def _close(*engines: RefEngine) -> None:
    for e in engines:
        e.scheduler_connector.shutdown()
        e.worker_connector.shutdown()


# ---- through the reference engine --------------------------------------------

def test_eviction_between_lookup_and_load(pool_factory: Callable[..., str]) -> None:
    """Another client evicts everything it can right after the lookup: the
    blocks reported are pinned, so they are loaded, not recomputed."""
    path = pool_factory(64 << 20)
    prompt, other, suffix = tokens(6 * BLOCK + 1, 81), tokens(4 * BLOCK + 1, 82), tokens(9, 83)
    a = _engine(path)
    b = _engine(path)
    try:
        a.generate(prompt, 1)
        a.generate(other, 1)
        assert a.worker_connector.stats["saved_blocks"] == 10
        lookup = b.scheduler_connector.get_num_new_matched_tokens
        freed: list[int] = []

        def lookup_then_evict(request: Any, num_computed: int) -> Any:
            answer = lookup(request, num_computed)
            with kvpool.Pool(path) as evictor:  # another client, as another engine
                freed.append(int(evictor.evict_bytes(1 << 40)))
            return answer

        b.scheduler_connector.get_num_new_matched_tokens = lookup_then_evict
        c = b.generate(prompt + suffix, 1)
        assert freed and freed[0] > 0  # the unpinned blocks (other's) went
        ws = b.worker_connector.stats
        assert ws["loaded_blocks"] == 6 and ws["failed_blocks"] == 0, ws
        assert b.stats()["load_failures"] == 0
        assert c.external_hit_tokens == 6 * BLOCK
        assert b.scheduler_connector.pins_held() == 0
        assert _client(path).pins_held() == 0
        local = RefEngine("tiny")  # the same prefix from the engine's own cache
        local.generate(prompt, 1)
        want = local.generate(prompt + suffix, 1)
        assert want.local_hit_tokens == 6 * BLOCK
        assert torch.equal(c.first_logits, want.first_logits)
    finally:
        _close(a, b)


@pytest.mark.parametrize("report", [True, False])
def test_pins_go_once_the_load_ran(pool_factory: Callable[..., str], report: bool) -> None:
    """With the worker's report (vLLM's kv_connector_worker_meta) the pins
    go when the step's output comes back; without it (older vLLM) at the
    next step's build_connector_meta. Either way before the request ends."""
    path = pool_factory(64 << 20)
    prompt, suffix = tokens(6 * BLOCK + 1, 84), tokens(9, 85)
    a = _engine(path)
    b = _engine(path)
    try:
        a.generate(prompt, 1)
        if not report:
            b.worker_connector.build_connector_worker_meta = lambda: None
        b.add_request(prompt + suffix, 3)
        b.step()  # the prefill: loads the 6 blocks
        assert b.worker_connector.stats["loaded_blocks"] == 6
        sched = b.scheduler_connector
        assert sched.pins_held() == (0 if report else 6)
        assert _client(path).pins_held() == (0 if report else 6)
        b.step()  # a decode step: build_connector_meta gives the rest back
        assert sched.pins_held() == 0 and _client(path).pins_held() == 0
        while b.scheduler.has_requests():
            b.step()
        assert _client(path).pins_held() == 0
    finally:
        _close(a, b)


def test_preemption_and_chunks_leave_no_pins(pool_factory: Callable[..., str]) -> None:
    """Few engine blocks (preemptions: requests asked again) and 24-token
    chunks: loads still succeed and no pin outlives the run."""
    path = pool_factory(64 << 20)
    prefix = tokens(4 * BLOCK + 5, 61)
    first = [prefix + tokens(n, 62 + n) for n in (9, 21, 30)]
    second = [prefix + tokens(n, 72 + n) for n in (3, 17, 40)] + [first[1]]
    a = _engine(path)
    b = RefEngine("tiny", connector="kvpool", extra_config={"pool_path": path},
                  num_blocks=12, max_num_batched_tokens=24)
    try:
        a.generate_many(first, 20)
        held: list[int] = []
        step = b.step

        def step_and_count() -> Any:
            out = step()
            held.append(b.scheduler_connector.pins_held())
            return out

        b.step = step_and_count  # type: ignore[method-assign]
        done = b.generate_many(second, 20)
        assert b.scheduler.num_preemptions > 0
        assert done[0].external_hit_tokens >= 4 * BLOCK
        assert b.worker_connector.stats["failed_blocks"] == 0, b.worker_connector.stats
        assert max(held) <= 4 * 4  # at most the 4 prefix blocks of each request
        assert b.scheduler_connector.pins_held() == 0 and _client(path).pins_held() == 0
    finally:
        _close(a, b)


def test_a_running_engine_holds_no_pins_after_serving(workdir: Path, daemon: Kvpoold) -> None:
    """kvpoold's view: an engine process that loaded a prefix and answered
    holds no pins while it stays up."""
    prompt, suffix = tokens(5 * BLOCK + 1, 96), tokens(9, 97)
    engine("store", workdir, daemon.pool_path, [prompt])
    with Session(workdir, daemon.pool_path) as a:
        got = a.generate(prompt + suffix)
        assert got["external"] == 5 * BLOCK, got
        assert got["stats"]["loaded_blocks"] == 5 and got["stats"]["failed_blocks"] == 0
        health = daemon.kvctl("health", "alpha")
        assert health["usage"]["pins"] == 0, health
        mine = [c for c in daemon.kvctl("clients", "alpha")["clients"]
                if c["pid"] == a.proc.pid]  # type: ignore[union-attr]
        assert len(mine) == 1 and mine[0]["pins"] == 0, mine


# ---- the scheduler side alone --------------------------------------------------

def _config(pool: str, **extra: Any) -> VllmConfig:
    return VllmConfig(model_config=ModelConfig("pins-model", torch.float16, 4096),
                      cache_config=CacheConfig(block_size=BLOCK,
                                               prefix_caching_hash_algo="sha256_cbor"),
                      parallel_config=ParallelConfig(),
                      kv_transfer_config=KVTransferConfig(
                          kv_connector="KvpoolConnector", kv_connector_module_path="kvpool.vllm",
                          kv_role="kv_both",
                          kv_connector_extra_config={"pool_path": pool, **extra}))


def _request(rid: str, n_blocks: int, seed: int) -> Request:
    """A request whose first n_blocks blocks are matchable (one token more)."""
    return Request(rid, tokens(n_blocks * BLOCK + 1, seed), SamplingParams(max_tokens=1),
                   block_hasher=hashing.make_block_hasher(BLOCK, "sha256_cbor", None))


def _scheduler(path: str, **extra: Any) -> Any:
    return kvv.KvpoolConnector(_config(path, **extra), KVConnectorRole.SCHEDULER, None)


def _store(sched: Any, *requests: Request) -> None:
    ns = sched._namespaces()[0]
    for req in requests:
        for h in req.block_hashes:
            ns.put(kvv.block_key(h), b"z" * 256)


def test_asked_twice_holds_one_set(pool_path: str) -> None:
    sched = _scheduler(pool_path)
    r = _request("r", 3, 86)
    _store(sched, r)
    assert sched.get_num_new_matched_tokens(r, 0) == (3 * BLOCK, False)
    assert sched.get_num_new_matched_tokens(r, 0) == (3 * BLOCK, False)
    assert sched.pins_held() == 3 and _client(pool_path).pins_held() == 3
    assert sched.get_num_new_matched_tokens(r, BLOCK) == (2 * BLOCK, False)
    assert sched.pins_held() == 2 and _client(pool_path).pins_held() == 2
    sched.request_finished(r, [])
    assert sched.pins_held() == 0 and _client(pool_path).pins_held() == 0


def test_request_finished_and_aborted_release(pool_path: str) -> None:
    """request_finished (finished, aborted, or a preempted request vLLM gives
    up on) and finished_req_ids in the next build_connector_meta release."""
    sched = _scheduler(pool_path)
    r1, r2 = _request("r1", 2, 87), _request("r2", 2, 88)
    _store(sched, r1, r2)
    sched.get_num_new_matched_tokens(r1, 0)
    sched.get_num_new_matched_tokens(r2, 0)
    assert _client(pool_path).pins_held() == 4
    sched.request_finished(r1, [])
    assert _client(pool_path).pins_held() == 2

    class Output:  # a SchedulerOutput that only finishes r2
        scheduled_new_reqs: list[Any] = []
        num_scheduled_tokens: dict[str, int] = {}
        finished_req_ids = {"r2"}

        class scheduled_cached_reqs:  # noqa: N801
            req_ids: list[str] = []
            new_block_ids: list[Any] = []
            num_computed_tokens: list[int] = []

    sched.build_connector_meta(Output())
    assert sched.pins_held() == 0 and _client(pool_path).pins_held() == 0


def test_limits_bound_the_pins(pool_factory: Callable[..., str]) -> None:
    """A cap (max_pinned_blocks) and an age (pin_ttl_ms) bound what requests
    that are never scheduled hold; when pins run out, fewer tokens."""
    path = pool_factory(64 << 20)
    sched = _scheduler(path, max_pinned_blocks=4, pin_ttl_ms=200)
    r1, r2, r3 = _request("r1", 3, 89), _request("r2", 3, 90), _request("r3", 3, 91)
    _store(sched, r1, r2, r3)
    assert sched.get_num_new_matched_tokens(r1, 0) == (3 * BLOCK, False)
    assert sched.get_num_new_matched_tokens(r2, 0) == (1 * BLOCK, False)  # the cap
    assert sched.pins_held() == 4
    assert sched.get_num_new_matched_tokens(r3, 0) == (0, False)
    assert sched.stats["pin_shortfalls"] >= 2
    time.sleep(0.3)
    # r1 and r2 were never scheduled: their pins are past the age limit.
    assert sched.get_num_new_matched_tokens(r3, 0) == (3 * BLOCK, False)
    assert sched.pins_held() == 3 and _client(path).pins_held() == 3
    assert sched.stats["pins_expired"] == 2
    time.sleep(0.3)
    sched._expire_pins()
    assert sched.pins_held() == 0 and _client(path).pins_held() == 0


def test_out_of_pins_answers_fewer_tokens(pool_factory: Callable[..., str]) -> None:
    """The pool's own per-client limit (NoPinsError): fewer tokens, no error."""
    path = pool_factory(64 << 20, pins_per_client=4)
    sched = _scheduler(path)
    r1, r2 = _request("r1", 3, 92), _request("r2", 3, 93)
    _store(sched, r1, r2)
    assert sched.get_num_new_matched_tokens(r1, 0) == (3 * BLOCK, False)
    got, _ = sched.get_num_new_matched_tokens(r2, 0)
    assert got == BLOCK  # 1 pin left of the client's 4
    assert _client(path).pins_held() == 4
    assert sched.stats["pin_shortfalls"] >= 1
    sched.request_finished(r1, [])
    assert sched.get_num_new_matched_tokens(r2, 0) == (3 * BLOCK, False)


def test_reattach_drops_the_pins(pool_factory: Callable[..., str]) -> None:
    path = pool_factory(64 << 20)
    sched = _scheduler(path, pool_check_ms=0)
    r1, r2 = _request("r1", 3, 94), _request("r2", 2, 95)
    _store(sched, r1)
    assert sched.get_num_new_matched_tokens(r1, 0) == (3 * BLOCK, False)
    old = _client(path)
    assert old.pins_held() == 3
    kvpool.create_pool(path, 64 << 20, replace=True)  # kvpoold re-created it
    assert sched.get_num_new_matched_tokens(r2, 0) == (0, False)  # looks at the path
    assert not old.attached  # its client, and with it the pins, given back
    assert sched.pins_held() == 0 and sched.stats["reattaches"] == 1
    assert _client(path).pins_held() == 0
    sched.request_finished(r1, [])  # releasing views of the detached pool is harmless


def test_worker_reports_aggregate_by_intersection() -> None:
    a = kvv.KvpoolWorkerMetadata({1, 2, 3})
    b = kvv.KvpoolWorkerMetadata({2, 3, 4})
    assert a.aggregate(b).loaded == {2, 3}
    assert isinstance(a, kvv.KVConnectorWorkerMetadata)
