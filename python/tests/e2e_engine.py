# SPDX-License-Identifier: MIT
"""Engine processes of the end-to-end tests (run by e2e_support.run_engine).

Each subcommand is one engine process (tools/refengine, the "tiny" model)
with kvpool.vllm.KvpoolConnector as its KV connector, and writes what it
saw to --out (torch.save of a dict) for the test to check:

  store    serve the prompts one after another, storing their blocks;
           --kill-at save|load SIGKILLs the process in the middle of the
           last prompt's first save (save_mode per_layer: after one layer
           of the step's reservations is gathered; per_block: after the
           first block is committed) or right after the worker pinned the
           blocks it is about to load.
  reuse    serve prompt + suffix three ways in this one process: through
           kvpool (fresh engine), from the engine's own prefix cache (the
           prompt served first), and recomputed from scratch.
  serve    serve the prompts together (one batch as the scheduler allows).
  recompute  serve each prompt alone, no prefix cache, no connector.
  probe    for each engine variant (identity fields changed), serve
           prompt + suffix and report how many tokens kvpool matched.
  keys     the kvpool keys of a prompt's blocks, where each present block
           lies in the pool file, and the namespace manifest fields.
  session  one engine kept running: serves the requests read from stdin,
           one JSON object a line ({"prompt": [...], "max_tokens": n,
           "reset_prefix_cache": bool}; {"quit": true} ends it), and
           answers each with a line "@ " + JSON (tokens, kvpool hits,
           connector counters, the pool file the worker saves into).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
from typing import Any

import torch

import kvpool
import kvpool.engine
from refengine.engine import RefEngine

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_engine(pool: str, variant: dict[str, Any] | None = None,
                connector: str | None = "kvpool", prefix_caching: bool = True) -> RefEngine:
    """A tiny engine. variant: dtype, block_size, hash_seed, layout, extra
    (connector config), num_blocks, max_batched (tokens per step: chunked
    prefill below the prompt length), pickle_meta (the worker gets a
    pickled copy of each step's metadata, as a worker process would)."""
    v = dict(variant or {})
    extra = {"pool_path": pool, **v.get("extra", {})}
    engine = RefEngine("tiny", connector=connector, extra_config=extra if connector else None,
                       layout=v.get("layout", "per_layer"), block_size=int(v.get("block_size", 16)),
                       dtype=DTYPES[v.get("dtype", "fp32")], hash_seed=v.get("hash_seed"),
                       enable_prefix_caching=prefix_caching,
                       num_blocks=int(v.get("num_blocks", 512)),
                       max_num_batched_tokens=int(v.get("max_batched", 8192)))
    worker = engine.worker_connector
    if v.get("pickle_meta") and worker is not None:
        bind = worker.bind_connector_metadata
        worker.bind_connector_metadata = lambda meta: bind(pickle.loads(pickle.dumps(meta)))
    return engine


def connector_stats(engine: RefEngine) -> dict[str, int]:
    """Counters of both connector roles, summed."""
    out: dict[str, int] = {}
    for c in (engine.scheduler_connector, engine.worker_connector):
        for k, v in getattr(c, "stats", {}).items():
            out[k] = out.get(k, 0) + int(v)
    out["load_failures"] = int(engine.scheduler.num_load_failures)
    return out


def kill_self() -> None:
    """SIGKILL, as an OOM kill or a crash would: no cleanup runs."""
    os.kill(os.getpid(), signal.SIGKILL)


def cmd_store(a: argparse.Namespace) -> dict[str, Any]:
    prompts: list[list[int]] = json.loads(a.prompts)
    engine = make_engine(a.pool, json.loads(a.variant))
    out: dict[str, Any] = {"tokens": [], "stats": []}
    for i, prompt in enumerate(prompts):
        last = i == len(prompts) - 1
        if last and a.kill_at == "save" and engine.worker_connector._save_mode == "per_layer":
            worker = engine.worker_connector
            original = worker.save_kv_layer

            def save_then_die(layer_name: str, *args: Any, **kw: Any) -> None:
                original(layer_name, *args, **kw)
                if worker._save is not None:  # reservations open, one layer written
                    kill_self()

            worker.save_kv_layer = save_then_die
        elif last and a.kill_at == "save":
            original_save = kvpool.engine.PagedKVStore.save

            def save_one_then_die(self: Any, keys: list[int], block_ids: list[int],
                                  parents: Any = None, **kw: Any) -> int:
                n = original_save(self, keys[:1], block_ids[:1], parents[:1] if parents else None)
                if len(keys) > 1:
                    kill_self()
                return n

            kvpool.engine.PagedKVStore.save = save_one_then_die  # type: ignore[method-assign]
        if last and a.kill_at == "load":
            # A fresh engine (empty prefix cache) so the prompt is loaded
            # from kvpool; die once the worker holds the pins.
            engine = make_engine(a.pool, json.loads(a.variant))
            original_lookup = kvpool.engine.PagedKVStore.lookup

            def lookup_then_die(self: Any, req_id: str, keys: list[int]) -> int:
                n = original_lookup(self, req_id, keys)
                if n:
                    kill_self()
                return n

            kvpool.engine.PagedKVStore.lookup = lookup_then_die  # type: ignore[method-assign]
        c = engine.generate(prompt, a.max_tokens)
        out["tokens"].append(c.output_token_ids)
        out["stats"].append(connector_stats(engine))
    return out


def cmd_reuse(a: argparse.Namespace) -> dict[str, Any]:
    prompt: list[int] = json.loads(a.prompts)[0]
    suffix: list[int] = json.loads(a.suffix)
    variant = json.loads(a.variant)
    full = prompt + suffix
    via_pool = make_engine(a.pool, variant)
    c_pool = via_pool.generate(full, a.max_tokens)
    pool_stats = connector_stats(via_pool)
    local = make_engine(a.pool, variant, connector=None)
    local.generate(prompt, 1)
    c_local = local.generate(full, a.max_tokens)
    scratch = make_engine(a.pool, variant, connector=None, prefix_caching=False)
    c_full = scratch.generate(full, a.max_tokens)
    return {
        "pool": {"tokens": c_pool.output_token_ids, "logits": c_pool.first_logits,
                 "external": c_pool.external_hit_tokens, "local": c_pool.local_hit_tokens,
                 "stats": pool_stats},
        "local": {"tokens": c_local.output_token_ids, "logits": c_local.first_logits,
                  "local": c_local.local_hit_tokens},
        "full": {"tokens": c_full.output_token_ids, "logits": c_full.first_logits},
    }


def cmd_serve(a: argparse.Namespace) -> dict[str, Any]:
    prompts: list[list[int]] = json.loads(a.prompts)
    engine = make_engine(a.pool, json.loads(a.variant))
    preempted: list[str] = []
    preempt = engine.scheduler._preempt

    def count_preempt(req: Any) -> None:
        preempted.append(req.request_id)
        preempt(req)

    engine.scheduler._preempt = count_preempt  # type: ignore[method-assign]
    done = engine.generate_many(prompts, a.max_tokens)
    return {"tokens": [c.output_token_ids for c in done],
            "external": [c.external_hit_tokens for c in done],
            "stats": connector_stats(engine), "preemptions": len(preempted)}


def cmd_recompute(a: argparse.Namespace) -> dict[str, Any]:
    prompts: list[list[int]] = json.loads(a.prompts)
    engine = make_engine(a.pool, json.loads(a.variant), connector=None, prefix_caching=False)
    return {"tokens": [engine.generate(p, a.max_tokens).output_token_ids for p in prompts]}


def cmd_probe(a: argparse.Namespace) -> dict[str, Any]:
    prompt: list[int] = json.loads(a.prompts)[0]
    suffix: list[int] = json.loads(a.suffix)
    out: dict[str, Any] = {}
    for name, variant in json.loads(a.variant).items():
        engine = make_engine(a.pool, variant)
        c = engine.generate(prompt + suffix, a.max_tokens)
        out[name] = {"external": c.external_hit_tokens, "stats": connector_stats(engine)}
    return out


def cmd_keys(a: argparse.Namespace) -> dict[str, Any]:
    prompt: list[int] = json.loads(a.prompts)[0]
    engine = make_engine(a.pool, json.loads(a.variant))
    conn = engine.scheduler_connector
    hashes = kvpool.vllm_block_hashes(prompt, engine.block_size, engine.hash_algo,
                                      engine.hash_seed)
    m = conn.manifest(0, conn._seed_id())
    ns = conn._namespaces()[0]
    keys = [kvpool.vllm_key(h) for h in hashes]
    where = []  # (offset in the pool file, length) of each present block
    for key in keys:
        v = ns.get(key)
        if v is None:
            where.append(None)
            continue
        with v:
            where.append((v.address - ns.pool.base_address, v.length))
    return {"keys": keys, "where": where,
            "manifest": {"model_name": conn._model_name, "block_tokens": engine.block_size,
                         "weights_fingerprint": conn._fingerprint, "dtype": conn._dtype,
                         "tp_rank": 0, "tp_world": conn._tp_world,
                         "hash_scheme": conn._hash_algo, "hash_seed": conn._seed_id()},
            "namespace_id": conn._namespaces()[0].id, "manifest_repr": repr(m)}


def cmd_session(a: argparse.Namespace) -> dict[str, Any]:
    import sys

    engine = make_engine(a.pool, json.loads(a.variant))
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("quit"):
            break
        if req.get("reset_prefix_cache"):
            assert engine.kv_cache_manager.reset_prefix_cache()
        c = engine.generate(req["prompt"], int(req.get("max_tokens", a.max_tokens)))
        store = engine.worker_connector._store
        pool = store.namespace.pool if store is not None else None
        reply = {"tokens": c.output_token_ids, "external": c.external_hit_tokens,
                 "local": c.local_hit_tokens, "stats": connector_stats(engine),
                 "pool_file": [pool.st_dev, pool.st_ino] if pool is not None else None}
        print("@ " + json.dumps(reply), flush=True)
    return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("command", choices=["store", "reuse", "serve", "recompute", "probe", "keys",
                                       "session"])
    p.add_argument("--pool", required=True)
    p.add_argument("--prompts", required=True, help="JSON list of token lists")
    p.add_argument("--suffix", default="[]", help="JSON token list")
    p.add_argument("--variant", default="{}", help="JSON engine variant (probe: name -> variant)")
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--kill-at", choices=["save", "load"])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"pid {os.getpid()}", flush=True)
    commands = {"store": cmd_store, "reuse": cmd_reuse, "serve": cmd_serve,
                "recompute": cmd_recompute, "probe": cmd_probe, "keys": cmd_keys,
                "session": cmd_session}
    result = commands[a.command](a)
    torch.save(result, a.out)


if __name__ == "__main__":
    main()
