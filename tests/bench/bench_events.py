# SPDX-License-Identifier: MIT
"""KV-event latency: from a block's commit (kv_put returning in an engine
process) to a subscriber receiving the BlockStored that names it.

    PYTHONPATH=build/python KVPOOLD=build/daemon/kvpoold KVCTL=build/tools/kvctl \
        /usr/bin/python3 tests/bench/bench_events.py [--blocks N] [--interval-ms MS]

A private kvpoold (pool "alpha", [pool.events] on a free loopback port),
one putter process committing N blocks of 16 KiB, one every interval, and
the subscriber in this process (python3-zmq + python3-msgpack, as
tests/events/events_support.py). Both sides read CLOCK_REALTIME. Prints
median, p90, p99 and max in microseconds, and the events per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "events"))

from events_support import EventsDaemon  # noqa: E402

PUTTER = r"""
import json, sys, time, kvpool
path, n, interval, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ns = kvpool.Pool(path).namespace(kvpool.Manifest("bench-events", 16))
keys = ns.hash_chain(list(range(16 * n)))
data = bytes(16 * 1024)
times = {}
parent = None
next_t = time.monotonic()
for k in keys:
    ns.put(k, data, tokens=16, parent=parent)
    times[str(k & (2**64 - 1))] = time.time()
    parent = k
    next_t += interval
    d = next_t - time.monotonic()
    if d > 0:
        time.sleep(d)
json.dump(times, open(out, "w"))
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--interval-ms", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = EventsDaemon(Path(tmp), f"bench-{os.getpid()}")
        try:
            d.start()
            sub = d.subscriber()
            time.sleep(0.5)
            sub.replay_from(0)
            out = Path(tmp) / "commits.json"
            env = dict(os.environ)
            proc = subprocess.Popen([sys.executable, "-c", PUTTER, d.pool_path, str(args.blocks),
                                     str(args.interval_ms / 1000), str(out)], env=env)
            deadline = time.monotonic() + 60 + args.blocks * args.interval_ms / 1000
            batches = 0
            while time.monotonic() < deadline:
                batches += sub.pump(0.2)
                if proc.poll() is not None and len(sub.recv_times) >= args.blocks:
                    break
            proc.wait(timeout=30)
            commits = json.loads(out.read_text())
            lat = [(sub.recv_times[int(k)] - t) * 1e6 for k, t in commits.items()
                   if int(k) in sub.recv_times]
            st = d.status()["events"]
            sub.close()
        finally:
            d.close()
    if not lat:
        print("no events received (is the change feed in this build?)")
        return 1
    print(f"blocks {args.blocks}, one every {args.interval_ms} ms; received {len(lat)}")
    print(f"commit -> subscriber latency (us): median {statistics.median(lat):.0f}  "
          f"p90 {pct(lat, 90):.0f}  p99 {pct(lat, 99):.0f}  max {max(lat):.0f}")
    print(f"batches {st['batches']}, events {st['events']}, feed events {st['feed_events']}, "
          f"resyncs {st['resyncs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
