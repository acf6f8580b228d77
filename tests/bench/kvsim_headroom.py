#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# How much more prefill could any eviction policy save than LRU? For each
# trace family and a grid of generator settings (--items, --zipf,
# --requests), generate a trace, replay it in the exact models of LRU and
# prefix-aware and in the clairvoyant bound (kvsim --policies opt), and
# print, at one cache size, the tokens each saves as a ratio to LRU's. The
# bound is an upper limit for every policy (tools/kvsim.cc, opt_bound), so
# where opt/LRU is under 1.10 no policy can save 10% more than LRU.
#
# usage: kvsim_headroom.py KVSIM [--size PCT] [--engines N --engine-size PCT]
#                          [--families F,F] [--seed N]
# Exit codes: 0 ok, 1 a kvsim run failed, 2 bad arguments.
import argparse
import json
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser(description="prefix-aware and the clairvoyant bound against LRU, over generator settings")
ap.add_argument("kvsim")
ap.add_argument("--size", type=int, default=25, help="cache size, %% of the trace's distinct blocks (default 25)")
ap.add_argument("--engines", type=int, default=0)
ap.add_argument("--engine-size", type=float, default=5)
ap.add_argument("--families", default="multi-turn,system-prompt")
ap.add_argument("--seed", type=int, default=1)
args = ap.parse_args()
if not 1 <= args.size <= 1000:
    ap.error(f"--size {args.size}: expected 1..1000")

GRID = [(items, zipf, reqs) for items in (50, 200, 800) for zipf in (0.6, 1.0, 1.4) for reqs in (2000, 8000)]


def kvsim(*a):
    r = subprocess.run([args.kvsim, *a], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"kvsim {' '.join(a)}: exit {r.returncode}: {r.stderr.strip()}", file=sys.stderr)
        sys.exit(1)
    return r.stdout


print(f"tokens saved at {args.size}% of the distinct blocks, as a ratio to LRU's (exact models)"
      + (f"; {args.engines} engines of {args.engine_size}% in front" if args.engines else ""))
print(f"{'family':<14} {'items':>5} {'zipf':>4} {'requests':>8} {'LRU tokens':>11} {'prefix':>7} {'opt':>7}")
with tempfile.TemporaryDirectory(prefix="kvsim-headroom-") as tmp:
    for family in args.families.split(","):
        for items, zipf, reqs in GRID:
            trace = f"{tmp}/t"
            kvsim("gen", "--family", family, "--requests", str(reqs), "--seed", str(args.seed), "--items", str(items),
                  "--zipf", str(zipf), "--out", trace)
            run = ["run", "--trace", trace, "--policies", "lru,prefix,opt", "--sizes", str(args.size), "--json"]
            if args.engines:
                run += ["--engines", str(args.engines), "--engine-size", str(args.engine_size)]
            rows = {x["policy"]: x["model"]["tokens_saved"] for x in json.loads(kvsim(*run))["rows"]}
            lru = rows["lru"]
            ratio = (lambda v: f"{v / lru:.3f}") if lru else (lambda v: "-")
            print(f"{family:<14} {items:>5} {zipf:>4} {reqs:>8} {lru:>11} {ratio(rows['prefix']):>7} "
                  f"{ratio(rows['opt']):>7}")
