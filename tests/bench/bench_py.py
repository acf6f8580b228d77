#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kvpool from Python, each figure with its baseline from the same run.

  get+release: ns.get(key) + view.release() of a present block, ops/s on
      one thread; baseline: a dict lookup + memoryview of a bytes object +
      memoryview.release() (the least a Python zero-copy get can do).
  match_prefix: kvpool.hash_chain over the tokens of a 1,000-block chain +
      ns.match_prefix of those keys (all present), microseconds; baseline:
      hashlib.blake2b (C) over the same tokens' bytes once, and a
      dict-membership scan of the 1,000 keys.

Run: PYTHONPATH=build/python /usr/bin/python3 tests/bench/bench_py.py
     [--seconds S] [--json]
Targets (issue 17): get+release >= 1M ops/s; match_prefix < 100 us.
"""

import argparse
import array
import gc
import hashlib
import json
import os
import sys
import time
import uuid
from typing import Callable

import kvpool


def best_rate(fn: Callable[[int], None], n: int, seconds: float) -> float:
    """Best ops/s of fn(n) (n operations per call) over runs for ~seconds."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn(n)
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
        if time.perf_counter() > deadline:
            return best


def best_time(fn: Callable[[], object], seconds: float) -> float:
    """Best wall time of one fn() call over runs for ~seconds."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    path = f"/dev/shm/kvpool-bench-py-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    kvpool.create_pool(path, 256 << 20)
    results: dict[str, float] = {}
    try:
        with kvpool.Pool(path) as pool:
            ns = pool.namespace(kvpool.Manifest("bench", 16, dtype="fp16"))
            gc.disable()

            # get + release of one present 16 KiB block.
            key = (0xDEADBEEF << 64) | 0x1234
            ns.put(key, b"\x01" * 16384)

            def kv_get_release(n: int) -> None:
                get = ns.get
                for _ in range(n):
                    get(key).release()

            def kv_get_with(n: int) -> None:
                get = ns.get
                for _ in range(n):
                    with get(key):
                        pass

            table = {key: b"\x01" * 16384}

            def dict_memoryview(n: int) -> None:
                lookup = table.get
                for _ in range(n):
                    memoryview(lookup(key)).release()

            n = 200_000
            results["get_release_ops"] = best_rate(kv_get_release, n, args.seconds)
            results["get_with_ops"] = best_rate(kv_get_with, n, args.seconds)
            results["dict_memoryview_ops"] = best_rate(dict_memoryview, n, args.seconds)

            # match_prefix of a 1,000-block chain, hashing included.
            blocks, bt = 1000, ns.block_tokens
            tokens = list(range(1, blocks * bt + 1))
            keys = ns.hash_chain(tokens)
            assert len(keys) == blocks
            ns.put_many(keys, [b"\x02" * 64] * blocks, chain=True)
            assert ns.match_prefix(keys) == blocks
            seed = ns.seed

            def hash_and_match() -> int:
                return ns.match_prefix(kvpool.hash_chain(tokens, bt, seed))

            tok_arr = array.array("I", tokens)

            def hash_and_match_array() -> int:
                return ns.match_prefix(kvpool.hash_chain(tok_arr, bt, seed))

            key_set = set(keys)
            tok_bytes = tok_arr.tobytes()

            def baseline() -> int:
                hashlib.blake2b(tok_bytes).digest()
                return sum(1 for k in keys if k in key_set)

            results["match_prefix_us"] = best_time(hash_and_match, args.seconds) * 1e6
            results["match_prefix_array_us"] = best_time(hash_and_match_array, args.seconds) * 1e6
            results["hash_chain_us"] = best_time(lambda: kvpool.hash_chain(tokens, bt, seed), args.seconds) * 1e6
            results["match_only_us"] = best_time(lambda: ns.match_prefix(keys), args.seconds) * 1e6
            results["baseline_us"] = best_time(baseline, args.seconds) * 1e6
            gc.enable()
    finally:
        kvpool.destroy_pool(path)

    results["get_release_vs_dict"] = results["get_release_ops"] / results["dict_memoryview_ops"]
    results["match_prefix_vs_baseline"] = results["match_prefix_us"] / results["baseline_us"]
    if args.json:
        print(json.dumps(results))
        return 0
    r = results
    print(f"get+release (present 16 KiB block): {r['get_release_ops'] / 1e6:.2f} M ops/s "
          f"(with-block form {r['get_with_ops'] / 1e6:.2f} M ops/s); baseline dict+memoryview "
          f"{r['dict_memoryview_ops'] / 1e6:.2f} M ops/s; ratio {r['get_release_vs_dict']:.2f}"
          f"  [target >= 1 M ops/s]")
    print(f"match_prefix of 1,000 blocks incl. hash_chain: {r['match_prefix_us']:.1f} us from a list, "
          f"{r['match_prefix_array_us']:.1f} us from array('I') (hash_chain alone {r['hash_chain_us']:.1f} us, "
          f"match_prefix alone {r['match_only_us']:.1f} us); baseline blake2b + set scan "
          f"{r['baseline_us']:.1f} us; ratio {r['match_prefix_vs_baseline']:.2f}  [target < 100 us]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
