#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# tools/kvsim on small traces: argument errors exit 2 with a message, the
# table is sane (hit ratios in range, the exact LRU model never loses hits
# when the cache grows, a cache as large as the trace evicts nothing), no
# sampled in-pool policy falls more than 10 points of hit ratio below its
# exact model (it may do better: not a failure), prefix-aware saves no fewer prefill tokens than LRU in the exact
# models, the clairvoyant bound (--policies opt) is never beaten and is
# right on a trace worked by hand, the engine tier (--engines) behaves, and
# --plot writes a PNG when gnuplot is installed.
#
# usage: test_kvsim.py KVSIM
import json
import os
import shutil
import subprocess
import sys
import tempfile

KVSIM = sys.argv[1]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(*args):
    return subprocess.run([KVSIM, *args], capture_output=True, text=True, timeout=120)


tmp = tempfile.mkdtemp(prefix="kvsim-test-")
try:
    # Bad input: exit 2 and a message naming the problem.
    r = run("gen", "--family", "chat", "--out", f"{tmp}/x")
    check(r.returncode == 2 and "chat" in r.stderr and "multi-turn" in r.stderr, "unknown family refused")
    r = run("run", "--trace", f"{tmp}/missing")
    check(r.returncode == 2 and "missing" in r.stderr, "missing trace refused")
    with open(f"{tmp}/bad.trace", "w") as f:
        f.write("# kvsim-trace v1 family=zipf block_tokens=16\nR 0 3 1 2\n")
    r = run("run", "--trace", f"{tmp}/bad.trace")
    check(r.returncode == 2 and "bad.trace:2" in r.stderr, "short request line refused with its line number")
    r = run("run", "--trace", f"{tmp}/bad.trace", "--policies", "lru,random")
    check(r.returncode == 2 and "random" in r.stderr, "unknown policy refused")

    solo_rows = {}  # family -> rows of the run with every policy and the bound
    for family in ("multi-turn", "system-prompt"):
        trace = f"{tmp}/{family}.trace"
        r = run("gen", "--family", family, "--requests", "500", "--seed", "7", "--out", trace)
        check(r.returncode == 0, f"gen {family}: {r.stderr.strip()}")
        r = run("run", "--trace", trace, "--policies", "all,opt", "--sizes", "10,25,100", "--pool", "--json")
        check(r.returncode == 0, f"run {family}: {r.stderr.strip()}")
        doc = json.loads(r.stdout)
        all_rows = doc["rows"]
        check(len(all_rows) == 6 * 3, f"{family}: 5 policies and the bound x 3 sizes")
        rows = [x for x in all_rows if x["policy"] != "opt"]
        solo_rows[family] = all_rows
        by = {(x["policy"], x["size_pct"]): x for x in rows}
        for x in rows:
            m, p = x["model"], x["pool"]
            tag = f"{family} {x['policy']} {x['size_pct']}%"
            check(0 <= m["hit_ratio"] <= 1 and 0 <= p["hit_ratio"] <= 1, f"{tag}: hit ratios in [0, 1]")
            # A sampled policy that works follows its exact model; one that
            # is broken (wrong order, random victims) falls far behind. The
            # issue's 2-point target is a measurement, made by kvsim on full
            # traces and reported in doc/perf/, not asserted here: the
            # pool's ranks are clock ticks, so its order (and these small
            # traces' ratios) move with timing: under ASan, multi-turn LFU
            # at 25% came out 2.3 points below its model once.
            check(p["hit_ratio"] >= m["hit_ratio"] - 0.10,
                  f"{tag}: pool {100 * p['hit_ratio']:.2f}% at most 10 points below model {100 * m['hit_ratio']:.2f}%")
            if x["size_pct"] == 100:
                check(m["evictions"] == 0 and p["evictions"] == 0, f"{tag}: the whole trace fits, no evictions")
        check(by[("lru", 10)]["model"]["hit_ratio"] <= by[("lru", 25)]["model"]["hit_ratio"]
              <= by[("lru", 100)]["model"]["hit_ratio"], f"{family}: exact LRU gains hits with size")
        check(by[("prefix", 25)]["model"]["tokens_saved"] >= by[("lru", 25)]["model"]["tokens_saved"],
              f"{family}: exact prefix-aware saves at least LRU's tokens at 25%")

    # The clairvoyant bound (--policies opt, Belady's MIN on blocks counted
    # one by one): no policy, exact model or pool, saves more tokens at the
    # same capacity; it has no pool row; large enough, it serves every
    # block asked for a second time, a count made here from the trace.
    for family in ("multi-turn", "system-prompt"):
        trace = f"{tmp}/{family}.trace"
        for extra in ([], ["--engines", "3"]):
            tag = f"{family}{' + 3 engines' if extra else ''}"
            if extra:  # a smaller run: the pool replays are slow under ASan
                r = run("run", "--trace", trace, "--policies", "lru,prefix,opt", "--sizes", "25", "--pool", "--json",
                        *extra)
                check(r.returncode == 0, f"run opt {tag}: {r.stderr.strip()}")
                rows = json.loads(r.stdout)["rows"] if r.returncode == 0 else []
            else:
                rows = solo_rows[family]
            opt = {x["size_pct"]: x for x in rows if x["policy"] == "opt"}
            if not extra:
                solo_opt = opt
            check(len(opt) == (1 if extra else 3) and all("pool" not in x for x in opt.values()),
                  f"{tag}: opt rows, no pool row")
            for x in rows:
                if x["policy"] == "opt":
                    continue
                o = opt[x["size_pct"]]
                check(o["blocks"] == x["blocks"], f"{tag} {x['policy']} {x['size_pct']}%: opt sized as the pool")
                best = max(x["model"]["tokens_saved"], x["pool"]["tokens_saved"])
                check(o["model"]["tokens_saved"] >= best,
                      f"{tag} {x['policy']} {x['size_pct']}%: bound {o['model']['tokens_saved']} >= {best}")
        ids, block_tokens = [], 0
        with open(trace) as f:
            for line in f:
                if line.startswith("#"):
                    block_tokens = int(line.split("block_tokens=")[1].split()[0])
                elif line.startswith("R "):
                    ids += line.split()[3:]
        again = (len(ids) - len(set(ids))) * block_tokens
        o = solo_opt[100]["model"]
        check(o["tokens_saved"] == again and o["evictions"] == 0,
              f"{family}: opt at 100% serves every repeated block ({o['tokens_saved']} == {again})")

    # MIN by hand: A B C A B C, one block a request, room for 2. LRU always
    # evicts the block asked next: no hit. MIN keeps A and B (C is asked
    # for later than both, then never): 2 hits, no eviction.
    with open(f"{tmp}/abc.trace", "w") as f:
        f.write("# kvsim-trace v1 family=zipf block_tokens=16\n" + "".join(f"R 0 1 {i}\n" for i in (1, 2, 3) * 2))
    r = run("run", "--trace", f"{tmp}/abc.trace", "--policies", "lru,opt", "--sizes", "67", "--json")
    rows = {x["policy"]: x for x in json.loads(r.stdout)["rows"]} if r.returncode == 0 else {}
    check(rows.get("opt", {}).get("blocks") == 2 and rows["lru"]["model"]["tokens_saved"] == 0
          and rows["opt"]["model"]["tokens_saved"] == 2 * 16 and rows["opt"]["model"]["evictions"] == 0,
          f"opt on A B C A B C with room for 2: 2 hits, LRU none{'' if rows else ': ' + r.stderr.strip()}")

    # The engine tier: engines serve what they hold, so the cache is asked
    # for fewer blocks and saves no more tokens than without engines; the
    # pool still follows its model; the routing is seeded (same answer twice).
    trace = f"{tmp}/multi-turn.trace"
    r = run("run", "--trace", trace, "--policies", "lru,prefix", "--sizes", "25", "--engines", "3", "--json")
    solo = json.loads(run("run", "--trace", trace, "--policies", "lru,prefix", "--sizes", "25", "--json").stdout)
    check(r.returncode == 0, f"run --engines 3: {r.stderr.strip()}")
    doc = json.loads(r.stdout)
    check(doc["engines"] == 3 and doc["engine_blocks"] == max(1, doc["distinct_blocks"] * 5 // 100),
          "engine tier: 3 engines of 5% of the distinct blocks by default")
    for x, y in zip(doc["rows"], solo["rows"]):
        check(x["model"]["tokens_saved"] < y["model"]["tokens_saved"],
              f"engine tier {x['policy']}: the cache saves fewer tokens when engines hold prefixes")
    again = run("run", "--trace", trace, "--policies", "lru,prefix", "--sizes", "25", "--engines", "3", "--json")
    check(json.loads(again.stdout)["rows"] == doc["rows"], "engine tier: seeded routing gives the same models twice")
    r = run("run", "--trace", trace, "--policies", "prefix", "--sizes", "25", "--engines", "3", "--pool", "--json")
    x = json.loads(r.stdout)["rows"][0]
    check(r.returncode == 0 and x["pool"]["hit_ratio"] >= x["model"]["hit_ratio"] - 0.10,
          "engine tier: prefix pool at most 10 points below its model")
    r = run("run", "--trace", trace, "--engines", "many")
    check(r.returncode == 2 and "--engines" in r.stderr, "--engines with a non-number refused")
    r = run("run", "--trace", trace, "--engines", "2", "--engine-size", "0")
    check(r.returncode == 2 and "--engine-size" in r.stderr, "--engine-size 0 refused")

    r = run("run", "--trace", f"{tmp}/multi-turn.trace", "--policies", "lru", "--sizes", "50")
    check(r.returncode == 0 and "lru" in r.stdout and "model hit" in r.stdout, "text table")
    if shutil.which("gnuplot"):
        png = f"{tmp}/plot.png"
        r = run("run", "--trace", f"{tmp}/multi-turn.trace", "--policies", "lru,prefix", "--sizes", "25,50",
                "--plot", png)
        ok = r.returncode == 0 and os.path.exists(png)
        check(ok and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"--plot writes a PNG: {r.stderr.strip()}")
    else:
        print("skip --plot: gnuplot is not installed (apt-get install gnuplot-nox)")
finally:
    shutil.rmtree(tmp)

if failures:
    print(f"{len(failures)} failed")
    sys.exit(1)
print("all passed")
