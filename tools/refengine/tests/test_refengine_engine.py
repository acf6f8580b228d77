# SPDX-License-Identifier: MIT
"""The engine end to end on the tiny model: reuse is bit-exact, layouts
agree, the connector is called as vLLM calls it, failed loads recompute."""

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import torch

from refengine import RefEngine, hashing
from refengine.connectors import DiskConnector
from refengine.vllm_types import KVCacheBlocks, Request, SchedulerOutput

PREFIX = [(i * 37 + 11) % 500 + 1 for i in range(100)]   # 6 full blocks + 4 tokens
SUFFIX = [7, 8, 9, 10, 11]
TOOLS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serve(eng: RefEngine, prompt: list[int], n: int = 8):
    return eng.generate(prompt, n)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """Prompt P + S served by an engine that has P in its own prefix cache,
    and by one that recomputes everything."""
    eng = RefEngine("tiny")
    _serve(eng, PREFIX)
    local = _serve(eng, PREFIX + SUFFIX)
    assert local.local_hit_tokens == 96 and local.external_hit_tokens == 0
    full = _serve(RefEngine("tiny", enable_prefix_caching=False), PREFIX + SUFFIX)
    assert full.local_hit_tokens == 0
    return {"local": local, "full": full}


def test_in_engine_hit_matches_full_recompute(reference: dict[str, Any], record_property: Any) -> None:
    local, full = reference["local"], reference["full"]
    assert local.output_token_ids == full.output_token_ids
    diff = (local.first_logits - full.first_logits).abs().max().item()
    record_property("max_logit_diff_vs_full_recompute", diff)
    print(f"largest logit difference, prefix hit vs full recompute: {diff:.3g}")
    assert diff < 1e-3


@pytest.mark.parametrize("layout", ["per_layer", "cross_layer"])
def test_layouts_bit_identical(reference: dict[str, Any], layout: str) -> None:
    eng = RefEngine("tiny", layout=layout)
    _serve(eng, PREFIX)
    c = _serve(eng, PREFIX + SUFFIX)
    assert torch.equal(c.first_logits, reference["local"].first_logits)
    assert c.output_token_ids == reference["local"].output_token_ids


@pytest.fixture(params=["disk", "kvpool"])
def store(request: Any, tmp_path: Any) -> Any:
    """(connector name, extra config, PYTHONPATH) of an empty external cache:
    a directory, or a fresh kvpool pool when kvpool.vllm is importable."""
    path = [TOOLS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if request.param == "disk":
        yield "disk", {"path": str(tmp_path)}, os.pathsep.join(path)
        return
    kvpool = pytest.importorskip("kvpool")
    pytest.importorskip("kvpool.vllm")
    pool = f"/dev/shm/refengine-test-{os.getpid()}"
    kvpool.create_pool(pool, 64 << 20, replace=True)
    path.append(os.path.dirname(os.path.dirname(os.path.abspath(kvpool.__file__))))
    try:
        yield "kvpool", {"pool_path": pool}, os.pathsep.join(path)
    finally:
        kvpool.destroy_pool(pool)


@pytest.mark.parametrize("layout_a,layout_b", [("per_layer", "per_layer"), ("cross_layer", "per_layer"),
                                               ("per_layer", "cross_layer")])
def test_prefix_from_another_process_is_bit_identical(
        reference: dict[str, Any], store: Any, layout_a: str, layout_b: str) -> None:
    """Process A serves P and stores its blocks through the connector; this
    process loads them for P + S: logits bit-identical to the in-engine hit,
    greedy tokens equal to the full recompute."""
    connector, extra, pythonpath = store
    code = ("import sys, json, torch; torch.set_num_threads(1); from refengine import RefEngine; "
            f"e = RefEngine('tiny', connector={connector!r}, layout={layout_a!r}, "
            "extra_config=json.loads(sys.argv[1])); "
            f"e.generate({PREFIX!r}, 8)")
    env = dict(os.environ, PYTHONPATH=pythonpath)
    subprocess.run([sys.executable, "-c", code, json.dumps(extra)], check=True, env=env)
    eng = RefEngine("tiny", connector=connector, layout=layout_b, extra_config=extra)
    c = _serve(eng, PREFIX + SUFFIX)
    assert c.external_hit_tokens == 96 and c.local_hit_tokens == 0
    assert torch.equal(c.first_logits, reference["local"].first_logits)
    assert c.output_token_ids == reference["full"].output_token_ids


def test_corrupt_block_is_recomputed(reference: dict[str, Any], tmp_path: Any) -> None:
    a = RefEngine("tiny", connector="disk", extra_config={"path": str(tmp_path)})
    _serve(a, PREFIX)
    b = RefEngine("tiny", connector="disk", extra_config={"path": str(tmp_path)})
    third = hashing.block_hashes(PREFIX, 16)[2]
    with open(tmp_path / third.hex(), "r+b") as f:
        f.truncate(100)                      # the load of block 2 fails
    c = _serve(b, PREFIX + SUFFIX)
    assert b.scheduler.num_load_failures == 1
    assert c.output_token_ids == reference["full"].output_token_ids
    # Blocks 0-1 were loaded; block 2 onward recomputed, then served locally.
    again = _serve(b, PREFIX + SUFFIX + [1])
    assert again.local_hit_tokens == 96


def test_preemption_and_chunked_prefill_keep_outputs(reference: dict[str, Any]) -> None:
    prompts = [PREFIX + SUFFIX, [(i * 13) % 500 + 1 for i in range(90)], [(i * 29) % 500 + 1 for i in range(70)]]
    alone = [_serve(RefEngine("tiny"), p, 12).output_token_ids for p in prompts]
    # 14 blocks of 16 cannot hold the three requests (8 + 7 + 6 blocks) at
    # once: some are preempted and recomputed; prefills go in 48-token chunks.
    small = RefEngine("tiny", num_blocks=14, max_num_batched_tokens=48)
    got = small.generate_many(prompts, 12)
    assert [c.output_token_ids for c in got] == alone
    assert small.scheduler.num_preemptions > 0


# ---------------------------------------------------------------- call order

LOG: list[tuple] = []


class RecordingConnector(DiskConnector):
    """The disk connector, recording each contract call with its arguments."""

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int):
        r = super().get_num_new_matched_tokens(request, num_computed_tokens)
        LOG.append(("get_num_new_matched_tokens", request.request_id, num_computed_tokens, r))
        return r

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        assert isinstance(blocks, KVCacheBlocks)
        LOG.append(("update_state_after_alloc", request.request_id, len(blocks.get_block_ids()[0]),
                    num_external_tokens))
        super().update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, so: SchedulerOutput):
        LOG.append(("build_connector_meta", [n.req_id for n in so.scheduled_new_reqs],
                    list(so.scheduled_cached_reqs.req_ids), dict(so.num_scheduled_tokens),
                    set(so.finished_req_ids)))
        return super().build_connector_meta(so)

    def request_finished(self, request: Request, block_ids: list[int]):
        LOG.append(("request_finished", request.request_id, len(block_ids)))
        return super().request_finished(request, block_ids)

    def register_kv_caches(self, kv_caches):
        LOG.append(("register_kv_caches", list(kv_caches), tuple(next(iter(kv_caches.values())).shape)))
        super().register_kv_caches(kv_caches)

    def bind_connector_metadata(self, m) -> None:
        LOG.append(("bind_connector_metadata",))
        super().bind_connector_metadata(m)

    def start_load_kv(self, fc, **kw) -> None:
        LOG.append(("start_load_kv", sorted(fc.no_compile_layers), fc.attn_metadata is not None))
        super().start_load_kv(fc, **kw)

    def wait_for_layer_load(self, name: str) -> None:
        LOG.append(("wait_for_layer_load", name))

    def save_kv_layer(self, name: str, kv_layer, attn_metadata, **kw) -> None:
        LOG.append(("save_kv_layer", name, tuple(kv_layer.shape), attn_metadata.slot_mapping.numel()))

    def wait_for_save(self) -> None:
        LOG.append(("wait_for_save",))
        super().wait_for_save()

    def get_finished(self, finished_req_ids):
        LOG.append(("get_finished", set(finished_req_ids)))
        return super().get_finished(finished_req_ids)

    def get_block_ids_with_load_errors(self):
        LOG.append(("get_block_ids_with_load_errors",))
        return super().get_block_ids_with_load_errors()

    def clear_connector_metadata(self) -> None:
        LOG.append(("clear_connector_metadata",))
        super().clear_connector_metadata()


def test_connector_call_order(tmp_path: Any) -> None:
    LOG.clear()
    eng = RefEngine("tiny", connector=f"{__name__}:RecordingConnector", extra_config={"path": str(tmp_path)})
    L0, L1 = "model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn"
    assert LOG == [("register_kv_caches", [L0, L1], (2, 512, 16, 2, 16))]
    LOG.clear()
    eng.generate(list(range(1, 21)), 2)     # 20 tokens: one full block, then one decode step
    worker_step = [("bind_connector_metadata",), ("start_load_kv", [L0, L1], True),
                   ("wait_for_layer_load", L0), ("save_kv_layer", L0, (2, 512, 16, 2, 16), None),
                   ("wait_for_layer_load", L1), ("save_kv_layer", L1, (2, 512, 16, 2, 16), None),
                   ("wait_for_save",)]
    n = [20, 1]
    expected = [
        ("get_num_new_matched_tokens", "req-0", 0, (0, False)),
        ("update_state_after_alloc", "req-0", 2, 0),
        ("build_connector_meta", ["req-0"], [], {"req-0": 20}, set()),
        *[(c[0], c[1], c[2], n[0]) if c[0] == "save_kv_layer" else c for c in worker_step],
        ("get_finished", set()), ("get_block_ids_with_load_errors",), ("clear_connector_metadata",),
        ("build_connector_meta", [], ["req-0"], {"req-0": 1}, set()),
        *[(c[0], c[1], c[2], n[1]) if c[0] == "save_kv_layer" else c for c in worker_step],
        ("get_finished", set()), ("get_block_ids_with_load_errors",), ("clear_connector_metadata",),
        ("request_finished", "req-0", 2),
        # The step after: no tokens, the finished id reaches the worker.
        ("build_connector_meta", [], [], {}, {"req-0"}),
        ("bind_connector_metadata",), ("start_load_kv", [L0, L1], False), ("wait_for_save",),
        ("get_finished", {"req-0"}), ("get_block_ids_with_load_errors",), ("clear_connector_metadata",),
    ]
    assert LOG == expected
    # A second engine finds the stored block and loads it.
    LOG.clear()
    eng2 = RefEngine("tiny", connector=f"{__name__}:RecordingConnector", extra_config={"path": str(tmp_path)})
    LOG.clear()
    c = eng2.generate(list(range(1, 21)), 1)
    assert c.external_hit_tokens == 16
    assert LOG[0] == ("get_num_new_matched_tokens", "req-0", 0, (16, False))
    assert LOG[1] == ("update_state_after_alloc", "req-0", 2, 16)
