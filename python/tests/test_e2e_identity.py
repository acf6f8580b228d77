# SPDX-License-Identifier: MIT
"""Engines of another model identity never load each other's blocks.

Engine A stores a prompt; engines that differ from A in one identity
field (weights fingerprint, KV dtype, block size, tensor-parallel rank or
world, hash seed) serve the same prompt and must match nothing, while an
engine identical to A matches every block. The seed is tested both ways:
an engine hashing with another PYTHONHASHSEED, and an engine whose
hashes equal A's but whose manifest names another seed (a namespace of
its own even so).
"""

from __future__ import annotations

from pathlib import Path

import kvpool

from e2e_support import engine, tokens, workdir  # noqa: F401

BLOCK = 16


def test_other_identities_never_hit(workdir: Path, pool_path: str) -> None:
    prompt, suffix = tokens(4 * BLOCK + 3, 41), tokens(6, 42)
    engine("store", workdir, pool_path, [prompt])
    keys = engine("keys", workdir, pool_path, [prompt])
    fp = keys["manifest"]["weights_fingerprint"].hex()
    variants = {
        "same": {},
        "weights": {"extra": {"weights_fingerprint": "00" * 32}},
        "dtype": {"dtype": "bf16", "extra": {"weights_fingerprint": fp}},
        "block_size": {"block_size": 32},
        "tp_world": {"extra": {"tp_world": 2}},
        "tp_rank": {"extra": {"tp_world": 2, "tp_rank": 1}},
        "seed_of_hashes": {"hash_seed": "1"},
        "seed_of_manifest": {"extra": {"hash_seed": "1"}},
    }
    # The blocks are A's: present in A's namespace, absent from rank 1's
    # (checked before the probes, which save into their own namespaces).
    m = keys["manifest"]
    with kvpool.Pool(pool_path) as pool:
        ns0 = pool.namespace(kvpool.Manifest(m["model_name"], m["block_tokens"],
                                             weights_fingerprint=m["weights_fingerprint"],
                                             dtype=m["dtype"], tp_rank=0, tp_world=1,
                                             hash_scheme=m["hash_scheme"],
                                             hash_seed=m["hash_seed"]))
        assert all(ns0.contains_many(keys["keys"]))
        ns1 = pool.namespace(kvpool.Manifest(m["model_name"], m["block_tokens"],
                                             weights_fingerprint=m["weights_fingerprint"],
                                             dtype=m["dtype"], tp_rank=1, tp_world=2,
                                             hash_scheme=m["hash_scheme"],
                                             hash_seed=m["hash_seed"]))
        assert not any(ns1.contains_many(keys["keys"]))
    got = engine("probe", workdir, pool_path, [prompt], suffix=suffix, variant=variants)
    assert got["same"]["external"] == 4 * BLOCK, got["same"]
    for name in variants:
        if name != "same":
            assert got[name]["external"] == 0, (name, got[name])
            assert got[name]["stats"]["loaded_blocks"] == 0, (name, got[name])
