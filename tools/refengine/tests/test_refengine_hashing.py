# SPDX-License-Identifier: MIT
"""vLLM block hashes: the fixed vectors of issue 17 and incremental hashing."""

import random

import pytest

from refengine import hashing
from refengine.vllm_types import Request, SamplingParams


def test_fixed_vectors() -> None:
    root = hashing.none_hash("sha256_cbor", "vllm-none-hash")
    assert root.hex() == "9bd96a485ad84efdafb72ee48a1d7a69bcead0f8f0433173941b276b9581eef0"
    (b,) = hashing.block_hashes([1, 2, 3, 4], 4, "sha256_cbor", "vllm-none-hash")
    assert b.hex() == "58d0879dff3800f65f8c5fd449d73048c0f7699dd238a03b84b146b151d55111"
    assert int.from_bytes(b[-8:], "big") == 9561501211280363793
    assert hashing.none_hash("sha256_cbor", "0").hex() == (
        "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e")


def test_seed_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    assert hashing.none_hash() == hashing.none_hash("sha256_cbor", "0")
    monkeypatch.delenv("PYTHONHASHSEED")
    assert hashing.none_hash() == hashing.none_hash("sha256_cbor", "vllm-none-hash")


@pytest.mark.parametrize("algo,size", [("sha256_cbor", 32), ("xxhash_cbor", 16)])
def test_request_hashes_grow_with_output(algo: str, size: int) -> None:
    """Hashing a request incrementally (as its output fills blocks) gives the
    same chain as hashing all its tokens at once; only full blocks count."""
    r = random.Random(3)
    prompt = [r.randrange(100000) for _ in range(37)]
    req = Request("a", prompt, SamplingParams(max_tokens=40), block_hasher=hashing.make_block_hasher(16, algo))
    assert len(req.block_hashes) == 2
    for _ in range(30):
        req.append_output_token_ids(r.randrange(100000))
    assert req.num_tokens == 67 and len(req.block_hashes) == 4
    assert req.block_hashes == hashing.block_hashes_py(list(req.all_token_ids), 16, algo)
    assert all(len(h) == size for h in req.block_hashes)


def test_kvpool_hashes_match_python() -> None:
    """When the kvpool package provides vllm_block_hashes, it agrees with cbor2."""
    kvpool = pytest.importorskip("kvpool")
    if not hasattr(kvpool, "vllm_block_hashes"):
        pytest.skip("kvpool.vllm_block_hashes is not built")
    toks = list(range(1000, 1100))
    assert hashing.block_hashes(toks, 16) == hashing.block_hashes_py(toks, 16)
