# SPDX-License-Identifier: MIT
"""A byte flipped in the pool under a stored block.

Engine B's worker verifies each block's checksum before its bytes reach
the engine: the bad block is not used, it is removed from the pool, the
connector reports it (and every later block of that load) as a load
error, and the engine recomputes from there. B's output equals a full
recompute (its logits bit for bit when the first block was the bad one:
then B recomputed everything); B's recomputed block replaces the bad one
in the pool. The flipped bit is an exponent bit of a float32 value, so a
block used in spite of it would change the logits far beyond rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kvpool

from e2e_support import engine, tokens, workdir  # noqa: F401

BLOCK = 16


@pytest.mark.parametrize("bad", [0, 3])
def test_flipped_byte_is_recomputed(workdir: Path, pool_path: str, bad: int) -> None:
    prompt, suffix = tokens(5 * BLOCK + 4, 51), tokens(10, 52)
    engine("store", workdir, pool_path, [prompt])
    info = engine("keys", workdir, pool_path, [prompt])
    assert all(w is not None for w in info["where"])
    offset, length = info["where"][bad]
    at = offset + (length // 2 & ~3) + 3  # the high byte of a little-endian float32
    with open(pool_path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    r = engine("reuse", workdir, pool_path, [prompt], suffix=suffix)
    stats = r["pool"]["stats"]
    assert stats["loaded_blocks"] == bad, stats
    assert stats["failed_blocks"] == 5 - bad, stats
    assert stats["load_failures"] >= 1, stats
    assert r["pool"]["tokens"] == r["full"]["tokens"]
    assert r["pool"]["tokens"] == r["local"]["tokens"]
    if bad == 0:
        assert torch.equal(r["pool"]["logits"], r["full"]["logits"])
    diff = float((r["pool"]["logits"].double() - r["full"]["logits"].double()).abs().max())
    assert diff < 1e-3, diff
    # B saved its own recomputation of the bad block: present and sound.
    m = info["manifest"]
    with kvpool.Pool(pool_path) as pool:
        ns = pool.namespace(kvpool.Manifest(m["model_name"], m["block_tokens"],
                                            weights_fingerprint=m["weights_fingerprint"],
                                            dtype=m["dtype"], tp_rank=0, tp_world=1,
                                            hash_scheme=m["hash_scheme"],
                                            hash_seed=m["hash_seed"]))
        for key in info["keys"]:
            v = ns.get(key)
            assert v is not None
            with v:
                assert v.verify()
