# SPDX-License-Identifier: MIT
"""Command line: ``python -m refengine serve|bench-ttft ...`` (see --help)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

from .engine import RefEngine, load_model
from .kv_cache import LAYOUTS
from .model import PRESETS
from .workloads import FAMILIES, Workload

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--connector", default="none",
                   help="none, disk, kvpool, or module.path:ClassName (default none)")
    p.add_argument("--pool", help="kvpool pool path (extra config pool_path)")
    p.add_argument("--kv-dir", help="directory of the disk connector")
    p.add_argument("--extra", default="{}", help="kv_connector_extra_config as JSON")
    p.add_argument("--layout", choices=LAYOUTS, default="per_layer")
    p.add_argument("--num-blocks", type=int, default=1024, help="paged-cache blocks (16 tokens each)")
    p.add_argument("--no-prefix-caching", action="store_true", help="disable the in-engine prefix cache")
    p.add_argument("--hash-algo", choices=("sha256_cbor", "xxhash_cbor"), default="sha256_cbor")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def _make_engine(a: argparse.Namespace, connector: str | None = None, kv_role: str = "kv_both") -> RefEngine:
    extra: dict[str, Any] = json.loads(a.extra)
    if a.pool:
        extra.setdefault("pool_path", a.pool)
    if a.kv_dir:
        extra.setdefault("path", a.kv_dir)
    return RefEngine(a.model, connector=connector or a.connector, extra_config=extra, layout=a.layout,
                     num_blocks=a.num_blocks, dtype=DTYPES[a.dtype],
                     enable_prefix_caching=not a.no_prefix_caching, hash_algo=a.hash_algo, kv_role=kv_role)


def cmd_serve(a: argparse.Namespace) -> int:
    eng = _make_engine(a)
    vocab = eng.model.spec.vocab_size
    wl = Workload(a.workload, vocab, seed=a.seed, items=a.items, scale=a.scale, content_seed=a.content_seed)
    if a.conversations and os.path.exists(a.conversations):
        with open(a.conversations) as f:
            wl.load_conversations(json.load(f))
    for k in range(a.warmup):
        # Unique tokens (no prefix shared with anything): the first forward
        # passes pay torch's one-time costs outside the measured requests.
        eng.generate(_tokens(f"warmup.{a.seed}", k, 48, vocab), 1)
    if not a.json:
        print(f"# model {eng.model.spec.name} ({a.dtype}, {a.layout}), connector {a.connector}, "
              f"workload {a.workload}, {a.requests} requests, batch {a.batch}")
        print(f"{'request':>8} {'prompt':>7} {'local':>7} {'external':>8} {'computed':>8} {'ttft_ms':>9} "
              f"{'total_ms':>9}")
    rows = []
    done = 0
    t0 = time.perf_counter()
    while done < a.requests:
        n = min(a.batch, a.requests - done)
        prompts = [next(wl) for _ in range(n)]
        for c in eng.generate_many(prompts, a.max_tokens):
            wl.feedback(c.output_token_ids)
            computed = c.prompt_len - c.local_hit_tokens - c.external_hit_tokens
            if not a.json:
                print(f"{c.request_id:>8} {c.prompt_len:>7} {c.local_hit_tokens:>7} {c.external_hit_tokens:>8} "
                      f"{computed:>8} {c.ttft_s * 1e3:>9.1f} {c.total_s * 1e3:>9.1f}")
            rows.append(c)
        done += n
    wall = time.perf_counter() - t0
    if a.conversations:
        with open(a.conversations, "w") as f:
            json.dump(wl.save_conversations(), f)
    tokens = sum(c.prompt_len for c in rows)
    local = sum(c.local_hit_tokens for c in rows)
    ext = sum(c.external_hit_tokens for c in rows)
    ttft = [c.ttft_s * 1e3 for c in rows]
    if a.json:
        print(json.dumps({
            "model": eng.model.spec.name, "connector": a.connector, "workload": a.workload, "seed": a.seed,
            "requests": len(rows), "prompt_tokens": tokens, "local_hit_tokens": local,
            "external_hit_tokens": ext, "computed_tokens": tokens - local - ext,
            "ttft_ms": [round(x, 2) for x in ttft], "ttft_mean_ms": round(statistics.mean(ttft), 2),
            "ttft_p50_ms": round(statistics.median(ttft), 2), "wall_s": round(wall, 3),
            "engine_stats": eng.stats()}))
        return 0
    print(f"# prompt tokens {tokens}, in-engine hits {local} ({100 * local / max(tokens, 1):.1f}%), "
          f"connector hits {ext} ({100 * ext / max(tokens, 1):.1f}%), "
          f"mean TTFT {statistics.mean(ttft):.1f} ms")
    print(f"# engine stats {eng.stats()}")
    return 0


# ------------------------------------------------------------------ bench-ttft


def _tokens(tag: str, k: int, n: int, vocab: int) -> list[int]:
    g = random.Random(f"{tag}:{k}")
    return [g.randrange(1, vocab) for _ in range(n)]


def _producer(a: argparse.Namespace) -> int:
    eng = _make_engine(a)
    vocab = eng.model.spec.vocab_size
    for k in range(a.trials):
        eng.generate(_tokens("prefix", k, a.prefix, vocab) + _tokens("s0", k, a.suffix, vocab), 1)
    print(json.dumps({"producer_stats": eng.stats()}))
    return 0


def _connector_choice(a: argparse.Namespace) -> str:
    if a.connector != "auto":
        return a.connector
    try:
        import kvpool.vllm  # noqa: F401, PLC0415
        return "kvpool"
    except ImportError:
        return "disk"


def cmd_bench_ttft(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    if a.role == "producer":
        return _producer(a)
    a.connector = _connector_choice(a)
    cleanup: list[Any] = []
    try:
        if a.connector == "kvpool" and not a.pool:
            import kvpool  # noqa: PLC0415

            a.pool = f"/dev/shm/refengine-bench-{os.getpid()}"
            kvpool.create_pool(a.pool, a.pool_mib << 20, replace=True)
            cleanup.append(lambda: kvpool.destroy_pool(a.pool))
        if a.connector == "disk" and not a.kv_dir:
            a.kv_dir = tempfile.mkdtemp(prefix="refengine-kv-")
            cleanup.append(lambda: shutil.rmtree(a.kv_dir, ignore_errors=True))
        return _bench(a)
    finally:
        for f in reversed(cleanup):
            f()


def _bench(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    model = load_model(a.model, DTYPES[a.dtype])
    t_weights = time.perf_counter() - t0
    vocab = model.spec.vocab_size
    res: dict[str, Any] = {"model": model.spec.name, "dtype": a.dtype, "layout": a.layout,
                           "connector": a.connector, "threads": a.threads, "prefix": a.prefix,
                           "suffix": a.suffix, "trials": a.trials, "weights_s": round(t_weights, 2)}
    ext_ttft: list[float] = []
    ext_load: list[float] = []
    if a.connector != "none":
        # Process A stores the shared prefixes through the connector.
        argv = [sys.executable, "-m", "refengine", "bench-ttft", "--role", "producer",
                "--model", a.model, "--dtype", a.dtype, "--connector", a.connector, "--layout", a.layout,
                "--trials", str(a.trials), "--prefix", str(a.prefix), "--suffix", str(a.suffix),
                "--threads", str(a.threads), "--num-blocks", str(a.num_blocks), "--extra", a.extra]
        if a.pool:
            argv += ["--pool", a.pool]
        if a.kv_dir:
            argv += ["--kv-dir", a.kv_dir]
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
        res["producer_s"] = round(time.perf_counter() - t0, 2)
    # Process B (this one): warm up, then per trial a full recompute, a hit
    # from the connector (prefix stored by A), an in-engine hit.
    eng = _make_engine(a, a.connector)
    eng.generate(_tokens("warm", 0, 64, vocab), 2)
    full, local = [], []
    for k in range(a.trials):
        p = _tokens("prefix", k, a.prefix, vocab)
        c = eng.generate(_tokens("other", k, a.prefix, vocab) + _tokens("s1", k, a.suffix, vocab), 1)
        assert c.local_hit_tokens == 0 and c.external_hit_tokens == 0, c
        full.append(c.ttft_s)
        if a.connector != "none":
            c = eng.generate(p + _tokens("s1", k, a.suffix, vocab), 1)
            assert c.external_hit_tokens >= a.prefix // 16 * 16, f"expected a connector hit: {c}"
            ext_ttft.append(c.ttft_s)
            ext_load.append(c.first_step_times.get("load_s", 0.0))
        else:
            eng.generate(p + _tokens("s0", k, a.suffix, vocab), 1)
        c = eng.generate(p + _tokens("s2", k, a.suffix, vocab), 1)
        assert c.local_hit_tokens >= a.prefix // 16 * 16, f"expected an in-engine hit: {c}"
        local.append(c.ttft_s)
    # Correctness of what was timed, on the last trial's prefix (still in
    # this engine's cache) + a suffix never served:
    # loaded from A's blocks by a fresh engine whose connector only loads
    # (so that it stores no suffix block B could then hit), served from B's
    # own cache, and recomputed from scratch.
    last = a.trials - 1
    prompt = _tokens("prefix", last, a.prefix, vocab) + _tokens("s3", last, a.suffix, vocab)
    ref = None
    if a.connector != "none":
        ref = _make_engine(a, a.connector, kv_role="kv_consumer").generate(prompt, 1)
        assert ref.external_hit_tokens == a.prefix // 16 * 16, ref
    hit = eng.generate(prompt, 1)
    assert hit.local_hit_tokens == a.prefix // 16 * 16 and hit.external_hit_tokens == 0, hit
    if ref is not None:
        res["connector_hit_bit_identical"] = bool(torch.equal(ref.first_logits, hit.first_logits))
    a.no_prefix_caching = True
    full_c = _make_engine(a, "none").generate(prompt, 1)
    res["max_logit_diff_vs_recompute"] = float((full_c.first_logits - hit.first_logits).abs().max())
    res["same_token_as_recompute"] = full_c.output_token_ids == hit.output_token_ids
    med = statistics.median
    res["full_ms"] = [round(x * 1e3, 1) for x in full]
    res["in_engine_hit_ms"] = [round(x * 1e3, 1) for x in local]
    res["full_over_in_engine"] = round(med(full) / med(local), 2)
    if ext_ttft:
        res["connector_hit_ms"] = [round(x * 1e3, 1) for x in ext_ttft]
        res["connector_load_ms"] = [round(x * 1e3, 1) for x in ext_load]
        res["connector_over_in_engine"] = round(med(ext_ttft) / med(local), 3)
        res["full_over_connector"] = round(med(full) / med(ext_ttft), 2)
    res["engine_stats"] = eng.stats()
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"# {res['model']} {a.dtype} {a.layout}, {a.threads} thread(s), prefix {a.prefix} + suffix {a.suffix} "
          f"tokens, {a.trials} trials (median), connector {a.connector}")
    print(f"full recompute        {1e3 * med(full):9.1f} ms  {res['full_ms']}")
    print(f"in-engine prefix hit  {1e3 * med(local):9.1f} ms  {res['in_engine_hit_ms']}")
    if ext_ttft:
        label = f"{a.connector} hit (from A)"
        print(f"{label:<21} {1e3 * med(ext_ttft):9.1f} ms  {res['connector_hit_ms']}")
        print(f"  of which start_load_kv {1e3 * med(ext_load):5.1f} ms  {res['connector_load_ms']}")
        print(f"{a.connector} hit / in-engine hit = {res['connector_over_in_engine']:.3f}  (target <= 1.25)")
        print(f"full recompute / {a.connector} hit = {res['full_over_connector']:.1f}  (target >= 10)")
    print(f"full recompute / in-engine hit = {res['full_over_in_engine']:.1f}")
    if "connector_hit_bit_identical" in res:
        print(f"{a.connector} hit logits bit-identical to the in-engine hit: {res['connector_hit_bit_identical']}")
    print(f"largest logit difference, prefix hit vs full recompute: {res['max_logit_diff_vs_recompute']:.3g} "
          f"(same greedy token: {res['same_token_as_recompute']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m refengine", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a workload and print per-request TTFT and hits")
    _engine_args(s)
    s.add_argument("--workload", choices=FAMILIES, default="system-prompt")
    s.add_argument("--requests", type=int, default=20)
    s.add_argument("--max-tokens", type=int, default=16)
    s.add_argument("--batch", type=int, default=1, help="requests served together (default 1)")
    s.add_argument("--items", type=int, default=0, help="system prompts / conversations / documents")
    s.add_argument("--scale", type=float, default=1.0, help="multiply the workload's block counts")
    s.add_argument("--seed", type=int, default=1, help="the request stream (questions, which item, turns)")
    s.add_argument("--content-seed", type=int, default=0,
                   help="the shared prompts, documents and instructions (same value: same prefixes)")
    s.add_argument("--warmup", type=int, default=0, help="unrelated prompts served first, not reported")
    s.add_argument("--json", action="store_true", help="one JSON summary line instead of the table")
    s.add_argument("--conversations", metavar="FILE",
                   help="multi-turn chats: continue those saved in FILE if it exists, save them there at the end")
    b = sub.add_parser("bench-ttft", help="TTFT: full recompute vs in-engine hit vs connector hit")
    _engine_args(b)
    b.set_defaults(model="bench", connector="auto")
    b.add_argument("--prefix", type=int, default=2000)
    b.add_argument("--suffix", type=int, default=32)
    b.add_argument("--trials", type=int, default=3)
    b.add_argument("--pool-mib", type=int, default=1024, help="size of the temporary pool (kvpool)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--role", choices=("consumer", "producer"), default="consumer", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        torch.set_num_threads(a.threads)
        return cmd_serve(a)
    return cmd_bench_ttft(a)


if __name__ == "__main__":
    sys.exit(main())
