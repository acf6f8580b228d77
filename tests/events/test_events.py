# SPDX-License-Identifier: MIT
"""Suite events: kvpoold's vLLM-format KV events, read by a subscriber that
decodes as vLLM's consumers and llm-d's indexer do (events_support.py).

Each test starts its own kvpoold (free loopback ports, private socket, shm
and state directories) and checks that the subscriber's index of held
blocks equals `kvctl entries` after each kind of change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from events_support import ROOT, EventsDaemon, Subscriber, converge

import kvpool

HAS_FEED = (ROOT / "daemon" / "feed_drain.h").exists()
needs_feed = pytest.mark.skipif(not HAS_FEED, reason="no change feed (daemon/feed_drain.h) yet")

BLOCK = 16 * 1024


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventsDaemon]:
    params = getattr(request, "param", {})
    d = EventsDaemon(tmp_path, f"ev-{os.getpid()}-{time.monotonic_ns()}", **params)
    try:
        d.start()
        yield d
    finally:
        d.close()


def namespace(d: EventsDaemon) -> "kvpool.Namespace":
    pool = kvpool.Pool(d.pool_path)
    return pool.namespace(kvpool.Manifest("events-test", 16))


_IDS: list[bool] = []  # whether put() takes token_ids (the feed's Python side)


def put_chain(ns: "kvpool.Namespace", n: int, start: int = 0, ttl_ms: int = 0) -> list[int]:
    """A chain of n blocks of 16 tokens, each naming its parent, with its
    token ids when this build's put() takes them."""
    tokens = list(range(start, start + 16 * n))
    keys = ns.hash_chain(tokens)
    parent = None
    for i, k in enumerate(keys):
        kw = {"tokens": 16, "parent": parent, "ttl_ms": ttl_ms}
        if not _IDS or _IDS[0]:
            try:
                ns.put(k, bytes(BLOCK), token_ids=tokens[16 * i:16 * i + 16], **kw)
                _IDS[:] = [True]
                parent = k
                continue
            except TypeError:
                _IDS[:] = [False]
        ns.put(k, bytes(BLOCK), **kw)
        parent = k
    return keys


def wait_status(d: EventsDaemon, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = d.status()
        if pred(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


@pytest.mark.parametrize("daemon", [{"encoding": "array", "hash_form": "int"},
                                    {"encoding": "map", "hash_form": "bytes"}], indirect=True)
def test_open_resync_matches_entries(daemon: EventsDaemon) -> None:
    """A channel that opens announces what the pool holds: AllBlocksCleared,
    then BlockStored for each block. Reopening it (a reload that changes
    the encoding) does it again in the new encoding, and again on the way
    back; the replay socket gives the batches the subscriber joined too
    late for."""
    ns = namespace(daemon)
    put_chain(ns, 20)
    ev = daemon.status()["events"]
    assert ev["topic"] == "kv@test@alpha" and ev["encoding"] == daemon.encoding
    sub = daemon.subscriber()
    try:
        # Joined after the opening resync: the replay socket has it.
        sub.replay_from(0)
        assert sub.encodings == {daemon.encoding}
        assert sub.events[0]["type"] == "AllBlocksCleared"
        first = daemon.encoding
        other = "map" if first == "array" else "array"
        for enc in (other, first):
            daemon.encoding = enc
            daemon.write_config()
            seq_before = daemon.status()["events"]["next_seq"]
            daemon.reload()
            wait_status(daemon, lambda s: s["events"]["encoding"] == enc and
                        s["events"]["next_seq"] > seq_before)
            got, want = converge(sub, daemon, daemon.hash_form)
            assert got == want and len(want) == 20
            assert enc in sub.encodings
            stored = [e for e in sub.events if e["type"] == "BlockStored"]
            assert stored and all(e["block_size"] == 16 and e["medium"] == "CPU"
                                  for e in stored)
        assert sub.encodings == {"array", "map"}
    finally:
        sub.close()


def test_replay_fills_gap(daemon: EventsDaemon) -> None:
    """Messages the subscriber loses are asked again from the replay socket
    (vLLM's protocol: 8-byte start seq; [seq, payload] ... then END_SEQ)."""
    ns = namespace(daemon)
    put_chain(ns, 6)
    sub = daemon.subscriber()
    try:
        sub.replay_from(0)
        time.sleep(0.3)  # the SUB has connected
        # A resync in batches of 2 events: 1 Cleared + 6 Stored = 4 batches;
        # the subscriber loses the first two of them.
        sub.drop_next = 2
        daemon.reopen(max_batch=2)
        got, want = converge(sub, daemon, "int")
        assert got == want and len(want) == 6
        assert sub.gaps >= 1 and sub.replayed >= 2
    finally:
        sub.close()


def test_replay_longer_than_a_high_water_mark(daemon: EventsDaemon) -> None:
    """A replay of more batches than ZeroMQ's default high-water mark (1000)
    arrives whole, END_SEQ included."""
    ns = namespace(daemon)
    put_chain(ns, 1500)
    daemon.reopen(max_batch=1)  # 1 + 1500 batches
    sub = daemon.subscriber()
    try:
        n = sub.replay_from(0)
        assert n >= 1501
        got, want = converge(sub, daemon, "int")
        assert got == want and len(want) == 1500
    finally:
        sub.close()


def test_kvctl_events_tail(daemon: EventsDaemon) -> None:
    """kvctl events tail decodes the stream: --from replays, --json prints
    one object per event, --count stops."""
    ns = namespace(daemon)
    keys = put_chain(ns, 3)
    daemon.reopen()  # a resync that names the blocks (the feed may be off)
    r = subprocess.run([str(daemon.kvctl_binary), "--socket", str(daemon.sock), "events", "tail",
                        "alpha", "--json", "--from", "1", "--count", "2", "--timeout", "10"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["type"] for x in lines] == ["AllBlocksCleared", "BlockStored"]
    assert lines[0]["seq"] >= 1
    assert set(lines[1]["block_hashes"]) <= {kvpool.to_key(k) & (2**64 - 1) for k in keys}
    r = subprocess.run([str(daemon.kvctl_binary), "--socket", str(daemon.sock), "events", "tail",
                        "alpha", "--from", "0", "--count", "1", "--timeout", "10"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "AllBlocksCleared" in r.stdout, r.stderr


def test_status_and_metrics(daemon: EventsDaemon) -> None:
    ev = daemon.status()["events"]
    for k in ("endpoint", "replay_endpoint", "topic", "encoding", "next_seq", "batches", "events",
              "send_errors"):
        assert k in ev
    assert ev["open"] is True and ev["error"] == ""
    text = daemon.metrics()
    for fam in ("kvpool_events_batches_total", "kvpool_events_total",
                "kvpool_events_resyncs_total", "kvpool_events_next_seq"):
        assert f'{fam}{{pool="alpha"}} ' in text, fam


# ---- With the change feed: every change reaches the index ----------------


@needs_feed
@pytest.mark.parametrize("daemon", [{"encoding": "array", "hash_form": "int"},
                                    {"encoding": "map", "hash_form": "bytes"}], indirect=True)
def test_index_follows_changes(daemon: EventsDaemon) -> None:
    """Puts, removes, kvctl evict, expiries and a restore."""
    form = daemon.hash_form
    sub = daemon.subscriber()
    try:
        time.sleep(0.3)
        sub.replay_from(0)
        ns = namespace(daemon)
        keys = put_chain(ns, 30)
        got, want = converge(sub, daemon, form)
        assert got == want and len(want) == 30
        stored = [e for e in sub.events if e["type"] == "BlockStored" and e["token_ids"]]
        if _IDS and _IDS[0]:  # put() passed the ids: commits carry them
            assert stored and all(len(e["token_ids"]) == 16 * len(e["block_hashes"])
                                  for e in stored)
        # Commits name their parent: a chain comes as BlockStored events with
        # several hashes, or continuing a parent (split across drain polls).
        chained = [e for e in sub.events if e["type"] == "BlockStored" and
                   (e["parent_block_hash"] is not None or len(e["block_hashes"]) > 1)]
        assert chained

        for k in keys[:5]:
            assert ns.remove(k)
        got, want = converge(sub, daemon, form)
        assert got == want and len(want) == 25

        daemon.kvctl("evict", "alpha", "--percent", "50")
        got, want = converge(sub, daemon, form)
        assert got == want and len(want) < 25

        put_chain(ns, 5, start=100000, ttl_ms=200)
        time.sleep(0.5)
        ns.contains(keys[-1])  # expiry is noticed by the next lookups / evict pass
        got, want = converge(sub, daemon, form)
        assert got == want

        daemon.kvctl("persist", "alpha")
        put_chain(ns, 3, start=200000)
        daemon.kvctl("restore", "alpha", ok=(0, 8))
        got, want = converge(sub, daemon, form)
        assert got == want
    finally:
        sub.close()


@needs_feed
def test_connects_to_a_binding_subscriber(tmp_path: Path) -> None:
    """An endpoint without a wildcard host is connected to, as vLLM does:
    a subscriber that binds (llm-d's indexer in local mode) receives."""
    d = EventsDaemon(tmp_path, f"evc-{os.getpid()}-{time.monotonic_ns()}", connect=True)
    sub = Subscriber(d.endpoint, "kv@test@alpha", d.replay, bind=True)
    try:
        d.start()
        assert d.status()["events"]["open"] is True
        time.sleep(0.5)  # kvpoold has connected and seen the subscription
        sub.replay_from(0)
        put_chain(namespace(d), 12)
        got, want = converge(sub, d, "int")
        assert got == want and len(want) == 12
    finally:
        sub.close()
        d.close()


@needs_feed
@pytest.mark.parametrize("daemon", [{"size": "16M"}], indirect=True)
def test_full_pool_evictions(daemon: EventsDaemon) -> None:
    sub = daemon.subscriber()
    try:
        time.sleep(0.3)
        sub.replay_from(0)
        ns = namespace(daemon)
        put_chain(ns, 1600)  # 25 MiB into a 16 MiB pool: puts evict
        got, want = converge(sub, daemon, "int")
        assert got == want
        assert any(e["type"] == "BlockRemoved" for e in sub.events)
    finally:
        sub.close()


@needs_feed
@pytest.mark.parametrize("daemon", [{"feed_slots": 64}], indirect=True)
def test_ring_overflow_resyncs(daemon: EventsDaemon) -> None:
    """The daemon stopped while 500 puts go through a 64-slot ring: the
    drainer loses events, and the subscriber sees AllBlocksCleared then the
    re-announcement; its index is exact."""
    sub = daemon.subscriber()
    try:
        time.sleep(0.3)
        sub.replay_from(0)
        ns = namespace(daemon)
        put_chain(ns, 10)
        converge(sub, daemon, "int")
        n_clear = sum(e["type"] == "AllBlocksCleared" for e in sub.events)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            put_chain(ns, 500, start=50000)
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        got, want = converge(sub, daemon, "int", timeout=20)
        assert got == want and len(want) == 510
        assert sum(e["type"] == "AllBlocksCleared" for e in sub.events) > n_clear
        # The drainer says why: a lost record, counted in status and metrics.
        feed = daemon.status()["feed"]
        assert feed["slots"] == 64 and feed["drained"] is True
        assert feed["lost"] >= 1 and feed["resyncs"] > feed["lost"]
        assert feed["head"] >= 510
        text = daemon.metrics()
        for fam in ("kvpool_feed_records_total", "kvpool_feed_lost_total", "kvpool_feed_lag"):
            assert f'{fam}{{pool="alpha"}} ' in text, fam
    finally:
        sub.close()
