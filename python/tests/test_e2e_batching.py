# SPDX-License-Identifier: MIT
"""The connector under the scheduler's harder paths.

Several requests sharing a prefix in one batch, prefill chunks that end
inside a block, preemption (too few engine blocks for every request),
and metadata that reaches the worker as a pickled copy (as it does when
vLLM's worker is another process): every request's greedy tokens equal
its full recompute, and the pool ends up holding every full block the
engines computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kvpool

from e2e_support import engine, tokens, workdir  # noqa: F401

BLOCK = 16


def test_batches_chunks_and_preemption(workdir: Path, pool_path: str) -> None:
    prefix = tokens(4 * BLOCK + 5, 61)
    first = [prefix + tokens(n, 62 + n) for n in (9, 21, 30)]
    second = [prefix + tokens(n, 72 + n) for n in (3, 17, 40)] + [first[1]]
    variant: dict[str, Any] = {"max_batched": 40, "pickle_meta": True}
    a = engine("serve", workdir, pool_path, first, variant=variant, max_tokens=20)
    assert a["stats"]["saved_blocks"] > 0
    want_a = engine("recompute", workdir, pool_path, first, max_tokens=20)
    assert a["tokens"] == want_a["tokens"]

    # B: few engine blocks (preemptions), chunks of 24 tokens.
    variant = {"max_batched": 24, "num_blocks": 12, "pickle_meta": True}
    b = engine("serve", workdir, pool_path, second, variant=variant, max_tokens=20)
    want_b = engine("recompute", workdir, pool_path, second, max_tokens=20)
    print(f"\nB: {b['preemptions']} preemptions, external hits {b['external']}, {b['stats']}")
    assert b["tokens"] == want_b["tokens"]
    assert b["preemptions"] > 0, b
    assert b["external"][0] >= 4 * BLOCK, b  # the prefix came from kvpool
    assert b["stats"]["failed_blocks"] == 0, b["stats"]

    # Every full block of every prompt is in the pool (and sound).
    info = engine("keys", workdir, pool_path, [prefix])
    m = info["manifest"]
    with kvpool.Pool(pool_path) as pool:
        ns = pool.namespace(kvpool.Manifest(m["model_name"], m["block_tokens"],
                                            weights_fingerprint=m["weights_fingerprint"],
                                            dtype=m["dtype"], hash_scheme=m["hash_scheme"],
                                            hash_seed=m["hash_seed"]))
        for p in first + second:
            keys = [kvpool.vllm_key(h) for h in kvpool.vllm_block_hashes(p, BLOCK, seed="0")]
            assert all(ns.contains_many(keys)), p
            for v in ns.get_many(keys):
                assert v is not None
                with v:
                    assert v.verify()
