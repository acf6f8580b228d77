# SPDX-License-Identifier: MIT
"""Reuse across processes: what engine A stores, a fresh engine B loads.

B's first logits must be bit-identical to those B computes when the same
blocks come from its own prefix cache, and its greedy tokens must equal
a full recompute. The largest logit difference against the full
recompute is printed (run with -s to see it) and kept as a test property.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
import torch

from e2e_support import engine, tokens, workdir  # noqa: F401

BLOCK = 16


def check_reuse(r: dict[str, Any], prompt_len: int, record_property: Any) -> float:
    """The checks every reuse scenario shares; returns max |logit - full|."""
    blocks = prompt_len // BLOCK
    assert r["pool"]["external"] == blocks * BLOCK, r["pool"]["stats"]
    assert r["pool"]["local"] == 0
    assert r["pool"]["stats"]["loaded_blocks"] == blocks
    assert r["pool"]["stats"]["failed_blocks"] == 0
    assert r["local"]["local"] == blocks * BLOCK
    assert torch.equal(r["pool"]["logits"], r["local"]["logits"]), \
        "logits after a kvpool load differ from the engine's own prefix-cache hit"
    assert r["pool"]["tokens"] == r["local"]["tokens"]
    assert r["pool"]["tokens"] == r["full"]["tokens"]
    diff = float((r["pool"]["logits"].double() - r["full"]["logits"].double()).abs().max())
    record_property("max_logit_diff_vs_full_recompute", diff)
    print(f"\nmax |logit(kvpool) - logit(full recompute)| = {diff:.3g}")
    assert diff < 1e-3
    return diff


@pytest.mark.parametrize("layout,save_mode", [("per_layer", "per_block"),
                                              ("cross_layer", "per_block"),
                                              ("per_layer", "per_layer")])
def test_b_loads_what_a_stored(workdir: Path, pool_path: str, layout: str, save_mode: str,
                               record_property: Any) -> None:
    prompt, suffix = tokens(5 * BLOCK + 7, 1), tokens(20, 2)
    variant = {"layout": layout, "extra": {"save_mode": save_mode}}
    a = engine("store", workdir, pool_path, [prompt], variant=variant)
    assert a["stats"][0]["saved_blocks"] >= 5
    r = engine("reuse", workdir, pool_path, [prompt], suffix=suffix, variant=variant, max_tokens=6)
    check_reuse(r, len(prompt), record_property)


def test_layouts_share_blocks(workdir: Path, pool_path: str, record_property: Any) -> None:
    """Blocks are stored in one canonical order: cross-layer B loads per-layer A's."""
    prompt, suffix = tokens(4 * BLOCK, 3), tokens(9, 4)
    engine("store", workdir, pool_path, [prompt], variant={"layout": "per_layer"})
    r = engine("reuse", workdir, pool_path, [prompt], suffix=suffix,
               variant={"layout": "cross_layer"})
    check_reuse(r, len(prompt), record_property)


def test_decoded_blocks_are_reused(workdir: Path, pool_path: str, record_property: Any) -> None:
    """A's generated tokens fill blocks that a follow-up turn in B loads.

    A computed those blocks one decode step at a time and B's own prefix
    cache computes them in one prefill, so the two need not agree to the
    bit: the tokens must, and the logits closely.
    """
    prompt = tokens(2 * BLOCK + 3, 5)
    a = engine("store", workdir, pool_path, [prompt], max_tokens=40)
    turn = prompt + a["tokens"][0][:-1]  # what A's KV covers: all but its last token
    r = engine("reuse", workdir, pool_path, [turn], suffix=tokens(5, 6))
    blocks = len(turn) // BLOCK
    assert r["pool"]["external"] == blocks * BLOCK, r["pool"]["stats"]
    assert r["pool"]["stats"]["loaded_blocks"] == blocks
    assert r["pool"]["tokens"] == r["full"]["tokens"]
    diff = float((r["pool"]["logits"].double() - r["full"]["logits"].double()).abs().max())
    record_property("max_logit_diff_vs_full_recompute", diff)
    print(f"\nmax |logit(kvpool, decoded blocks) - logit(full recompute)| = {diff:.3g}")
    assert diff < 1e-3


def test_missing_pool_is_a_miss(workdir: Path, record_property: Any) -> None:
    """No pool at the configured path (kvpoold not started yet): the engine
    serves every request itself, as with an empty cache."""
    prompt, suffix = tokens(3 * BLOCK + 2, 7), tokens(5, 8)
    missing = str(workdir / "no-such-pool")
    r = engine("reuse", workdir, missing, [prompt], suffix=suffix)
    assert r["pool"]["external"] == 0
    assert r["pool"]["stats"]["saved_blocks"] == 0
    assert r["pool"]["tokens"] == r["full"]["tokens"]


def test_concurrent_writers(workdir: Path, pool_path: str, record_property: Any) -> None:
    """Engines storing the same prompts at the same time: neither fails
    (a block another engine is writing is skipped), every block is stored
    once, and a third engine loads them all."""
    prompts = [tokens(6 * BLOCK + 3, 80 + i) for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(engine, "store", workdir, pool_path, prompts) for _ in range(2)]
        stored = [r.result() for r in runs]
    saved = sum(s["stats"][-1]["saved_blocks"] for s in stored)
    assert saved == 3 * 6, [s["stats"] for s in stored]
    assert stored[0]["tokens"] == stored[1]["tokens"]
    for p in prompts:
        r = engine("reuse", workdir, pool_path, [p], suffix=tokens(4, 90))
        check_reuse(r, len(p), record_property)
