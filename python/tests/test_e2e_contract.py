# SPDX-License-Identifier: MIT
"""KvpoolConnector against vLLM's connector contract, in one process.

Built the way vLLM's KVConnectorFactory builds it from the
--kv-transfer-config JSON, for both roles and both constructor
signatures; the scheduler-side lookup gives the same answer twice and
holds one set of pins per request (what it reported, until the load; see
test_e2e_pins.py) and never covers the request's last token; kv_role
limits the connector to loading or saving; wrong configurations fail
with a message that names the fix.
"""

from __future__ import annotations

import collections
import importlib
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import kvpool
import kvpool.vllm as kvv

from e2e_support import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from refengine import hashing  # noqa: E402
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
CLI = ('{"kv_connector":"KvpoolConnector","kv_connector_module_path":"kvpool.vllm",'
       '"kv_role":"kv_both","kv_connector_extra_config":{"pool_path":"%s"}}')


def config(pool: str, role: str = "kv_both", algo: str = "sha256_cbor",
           **extra: Any) -> VllmConfig:
    ktc = json.loads(CLI % pool)
    ktc["kv_role"] = role
    ktc["kv_connector_extra_config"].update(extra)
    return VllmConfig(model_config=ModelConfig("contract-model", torch.float16, 4096),
                      cache_config=CacheConfig(block_size=BLOCK, prefix_caching_hash_algo=algo),
                      parallel_config=ParallelConfig(),
                      kv_transfer_config=KVTransferConfig(**ktc))


def build(cfg: VllmConfig, role: KVConnectorRole, *args: Any) -> Any:
    """What vLLM's KVConnectorFactory does with the config."""
    ktc = cfg.kv_transfer_config
    cls = getattr(importlib.import_module(ktc.kv_connector_module_path), ktc.kv_connector)
    return cls(cfg, role, *args)


def request(rid: str, tokens: list[int]) -> Request:
    return Request(rid, tokens, SamplingParams(max_tokens=1),
                   block_hasher=hashing.make_block_hasher(BLOCK, "sha256_cbor", None))


def test_built_like_vllm_for_both_roles(pool_path: str) -> None:
    cfg = config(pool_path)
    for role in (KVConnectorRole.SCHEDULER, KVConnectorRole.WORKER):
        c = build(cfg, role, None)  # (vllm_config, role, kv_cache_config)
        assert isinstance(c, kvv.KVConnectorBase_V1)
        assert c.role is role
        old = build(cfg, role)  # vLLM before 0.11: (vllm_config, role)
        assert isinstance(old, kvv.KvpoolConnector)
    assert not getattr(kvv.KvpoolConnector, "__abstractmethods__", set())


def test_lookup_pins_once_and_leaves_the_last_token(pool_path: str) -> None:
    tokens = list(range(1, 4 * BLOCK + 1))  # exactly 4 blocks
    sched = build(config(pool_path), KVConnectorRole.SCHEDULER, None)
    req = request("r1", tokens)
    assert sched.get_num_new_matched_tokens(req, 0) == (0, False)
    ns = sched._namespaces()[0]
    for key in [kvv.block_key(h) for h in req.block_hashes]:
        ns.put(key, b"x" * 64)
    with kvpool.Pool(pool_path) as pool:
        pins = pool.usage()["pins"]
        # All 4 blocks are present, but vLLM must compute the last token.
        assert sched.get_num_new_matched_tokens(req, 0) == (3 * BLOCK, False)
        assert sched.get_num_new_matched_tokens(req, 0) == (3 * BLOCK, False)
        assert pool.usage()["pins"] == pins + 3  # one set, not two
        assert sched.get_num_new_matched_tokens(req, BLOCK) == (2 * BLOCK, False)
        assert pool.usage()["pins"] == pins + 2
        sched.request_finished(req, [])
        assert pool.usage()["pins"] == pins
    longer = request("r2", tokens + [7])
    assert sched.get_num_new_matched_tokens(longer, 0) == (4 * BLOCK, False)
    sched.shutdown()
    # A TP world of 2 needs rank 1's shard too: not there, no match.
    tp2 = build(config(pool_path, tp_world=2), KVConnectorRole.SCHEDULER, None)
    assert tp2.get_num_new_matched_tokens(longer, 0) == (0, False)


def test_kv_role_limits_the_direction(pool_path: str) -> None:
    tokens = list(range(1, 3 * BLOCK + 2))
    producer = build(config(pool_path, role="kv_producer"), KVConnectorRole.SCHEDULER, None)
    req = request("p", tokens)
    ns = build(config(pool_path), KVConnectorRole.SCHEDULER, None)._namespaces()[0]
    for key in [kvv.block_key(h) for h in req.block_hashes]:
        ns.put(key, b"y" * 64)
    assert producer.get_num_new_matched_tokens(req, 0) == (0, False)
    consumer = build(config(pool_path, role="kv_consumer"), KVConnectorRole.SCHEDULER, None)
    assert consumer.get_num_new_matched_tokens(req, 0) == (3 * BLOCK, False)


def test_metadata_pickles() -> None:
    meta = kvv.KvpoolConnectorMetadata(
        hash_seed=7, loads=[kvv.LoadSpec("a", [1, 2], [5, 6])],
        saves=[kvv.SaveSpec("b", [3], [9], 2, [4, 9])], finished=["c"])
    assert isinstance(meta, kvv.KVConnectorMetadata)
    assert pickle.loads(pickle.dumps(meta)) == meta


def test_block_key_is_the_project_rule() -> None:
    h32 = bytes(range(32))
    h16 = bytes(range(100, 116))
    assert kvv.block_key(h32) == kvpool.vllm_key(h32) == int.from_bytes(h32[16:], "big")
    assert kvv.block_key(h16) == kvpool.vllm_key(h16)
    assert kvv.block_key(h32) & (2**64 - 1) == int.from_bytes(h32, "big") & (2**64 - 1)
    # vLLM before 0.10.2: BlockHash(hash_value: int, token_ids, extra_keys)
    old = collections.namedtuple("BlockHash", "hash_value token_ids extra_keys")
    assert kvv.block_key(old(2**130 + 5, (1,), None)) == 5
    with pytest.raises(ValueError, match="8 bytes"):
        kvv.block_key(b"12345678")


@pytest.mark.parametrize("bad,message", [
    ({"algo": "sha256"}, "--prefix-caching-hash-algo sha256_cbor"),
    ({"layout": "interleaved"}, "'per_layer' or 'cross_layer'"),
    ({"save_mode": "later"}, "'per_block' or 'per_layer'"),
])
def test_wrong_configurations_say_why(pool_path: str, bad: dict[str, Any], message: str) -> None:
    algo = bad.pop("algo", "sha256_cbor")
    with pytest.raises(ValueError, match=message.replace("-", "\\-")):
        build(config(pool_path, algo=algo, **bad), KVConnectorRole.SCHEDULER, None)


def test_manifest_names_the_identity(pool_path: str) -> None:
    c = build(config(pool_path, weights_fingerprint="ab" * 32, hash_seed="3"),
              KVConnectorRole.SCHEDULER, None)
    m = c.manifest(0, c._seed_id()).as_dict()
    assert m["model_name"] == "contract-model"
    assert m["block_tokens"] == BLOCK
    assert bytes(m["weights_fingerprint"]) == bytes.fromhex("ab" * 32)
    assert m["dtype"] == kvpool.Manifest("x", 1, dtype="fp16").dtype
    assert m["hash_scheme"] == 2
    assert m["hash_seed"] == kvpool.vllm_seed_id("sha256_cbor", "3")
    assert (m["tp_rank"], m["tp_world"]) == (0, 1)


def test_unusable_caches_fail_at_start(pool_path: str) -> None:
    """A worker refuses caches of another dtype than the manifest's, or
    of the wrong geometry, when they are registered, not mid-serving."""
    worker = build(config(pool_path), KVConnectorRole.WORKER, None)
    good = {f"model.layers.{i}.self_attn.attn": torch.zeros(2, 8, BLOCK, 2, 8, dtype=torch.float16)
            for i in range(2)}
    worker.register_kv_caches(good)
    fp32 = {k: v.float() for k, v in good.items()}
    with pytest.raises(ValueError, match="dtype"):
        build(config(pool_path), KVConnectorRole.WORKER, None).register_kv_caches(fp32)
    other_block = {k: torch.zeros(2, 8, 2 * BLOCK, 2, 8, dtype=torch.float16) for k in good}
    with pytest.raises(ValueError):
        build(config(pool_path), KVConnectorRole.WORKER, None).register_kv_caches(other_block)
