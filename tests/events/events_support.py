# SPDX-License-Identifier: MIT
"""A KV-event subscriber as vLLM's consumers write one, and a kvpoold with
[pool.events], for the events suite and the latency bench.

The subscriber decodes with python3-zmq and python3-msgpack only: frames
(topic, 8-byte big-endian seq, msgpack payload); payload [ts, events,
dp_rank]; each event a tagged array ["BlockStored", hashes, parent, ...]
or a map {"type": "BlockStored", ...} (llm-d's indexer accepts both). It
keeps the index of held blocks: BlockStored adds, BlockRemoved drops,
AllBlocksCleared empties. A gap in seq is filled from the replay socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python" / "tests"))

from e2e_support import Kvpoold, tool  # noqa: E402

END_SEQ = (-1).to_bytes(8, "big", signed=True)

STORED_FIELDS = ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                 "medium", "lora_name"]
REMOVED_FIELDS = ["block_hashes", "medium"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decode_event(raw: Any) -> dict[str, Any]:
    """One event in either encoding as a dict with "type"."""
    if isinstance(raw, dict):
        assert isinstance(raw.get("type"), str), raw
        return raw
    assert isinstance(raw, list) and raw and isinstance(raw[0], str), raw
    names = {"BlockStored": STORED_FIELDS, "BlockRemoved": REMOVED_FIELDS}.get(raw[0], [])
    out: dict[str, Any] = {"type": raw[0]}
    for name, value in zip(names, raw[1:]):
        out[name] = value
    return out


class Subscriber:
    """SUB (and REQ for replay) on a pool's events; an index of held blocks."""

    def __init__(self, endpoint: str, topic: str, replay: str | None = None,
                 medium: str = "CPU", bind: bool = False) -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if bind:  # the publisher connects (llm-d's indexer in local mode)
            self.sub.bind(endpoint)
        else:
            self.sub.connect(endpoint)
        self.replay_ep = replay
        self.medium = medium
        self.index: set[Any] = set()
        self.remote: set[Any] = set()
        self.next_seq: int | None = None
        self.encodings: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.gaps = 0
        self.replayed = 0
        self.drop_next = 0  # test hook: drop this many live messages
        self.recv_times: dict[Any, float] = {}

    def close(self) -> None:
        self.sub.close(0)
        self.ctx.term()

    def apply(self, seq: int, payload: bytes) -> None:
        batch = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        assert isinstance(batch, list) and len(batch) >= 2, batch
        ts, events = batch[0], batch[1]
        assert isinstance(ts, float)
        now = time.time()
        for raw in events:
            self.encodings.add("map" if isinstance(raw, dict) else "array")
            e = decode_event(raw)
            self.events.append(e)
            kind = e["type"]
            if kind == "AllBlocksCleared":
                self.index.clear()
                self.remote.clear()
            elif kind == "BlockStored":
                target = self.index if e.get("medium") == self.medium else self.remote
                bs = e["block_size"]
                toks = e["token_ids"]
                assert len(toks) in (0, bs * len(e["block_hashes"])), e
                for h in e["block_hashes"]:
                    target.add(h)
                    self.recv_times.setdefault(h, now)
            elif kind == "BlockRemoved":
                target = self.index if e.get("medium") == self.medium else self.remote
                for h in e["block_hashes"]:
                    target.discard(h)
            else:
                raise AssertionError(f"unknown event {e}")
        self.next_seq = seq + 1

    def replay_from(self, start: int) -> int:
        """Ask the replay socket for the batches from start; apply them."""
        assert self.replay_ep, "no replay endpoint"
        # A DEALER sending REQ's empty delimiter: the request vLLM's REQ
        # sends, but a DEALER takes every message of the answer (a REQ
        # only the first).
        req = self.ctx.socket(zmq.DEALER)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self.replay_ep)
        req.send_multipart([b"", start.to_bytes(8, "big")])
        n = 0
        try:
            while True:
                if not req.poll(5000):
                    raise TimeoutError("replay: no answer in 5 s")
                empty, seq_b, payload = req.recv_multipart()
                assert empty == b""
                if seq_b == END_SEQ:
                    break
                seq = int.from_bytes(seq_b, "big")
                if self.next_seq is not None and seq < self.next_seq:
                    continue
                self.apply(seq, payload)
                n += 1
        finally:
            req.close(0)
        self.replayed += n
        return n

    def pump(self, seconds: float) -> int:
        """Read live messages for up to seconds; returns how many."""
        n = 0
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sub.poll(max(1, int(left * 1000))):
                return n
            topic, seq_b, payload = self.sub.recv_multipart()
            assert len(seq_b) == 8
            seq = int.from_bytes(seq_b, "big")
            n += 1
            if self.drop_next > 0:
                self.drop_next -= 1
                continue
            if self.next_seq is not None and seq < self.next_seq:
                continue
            if self.next_seq is not None and seq > self.next_seq:
                self.gaps += 1
                self.replay_from(self.next_seq)
                if seq < (self.next_seq or 0):
                    continue
            self.apply(seq, payload)


def held_keys(d: Kvpoold, pool: str = "alpha") -> list[str]:
    doc = d.kvctl("entries", pool)
    return sorted(r["key"] for r in doc["entries"] if r["state"] == "committed")


def as_hashes(keys: list[str], form: str) -> set[Any]:
    if form == "int":
        return {int(k[16:], 16) for k in keys}
    return {bytes.fromhex(k) for k in keys}


class EventsDaemon(Kvpoold):
    """Kvpoold (e2e_support) whose pool "alpha" publishes events."""

    def __init__(self, workdir: Path, tag: str, *, encoding: str = "array",
                 hash_form: str = "int", feed_slots: int | None = None,
                 size: str = "64M", extra: str = "", connect: bool = False) -> None:
        super().__init__(workdir, tag)
        self.port = free_port()
        self.replay_port = free_port()
        self.metrics_port = free_port()
        self.encoding = encoding
        self.hash_form = hash_form
        self.feed_slots = feed_slots
        self.size = size
        self.extra = extra
        self.connect = connect  # kvpoold connects to a subscriber that binds
        self.max_batch = 512
        self.write_config()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def replay(self) -> str:
        return f"tcp://127.0.0.1:{self.replay_port}"

    def write_config(self) -> None:
        text = self.config.read_text()
        head = text.split("[[pool]]")[0]
        if "metrics =" not in head:
            head = head.replace("[daemon]\n",
                                f'[daemon]\nmetrics = "tcp:127.0.0.1:{self.metrics_port}"\n')
        pool = ("[[pool]]\n"
                f'name = "alpha"\nsize = "{self.size}"\nhugepages = "never"\nprefault = false\n'
                'group = "root"\nmode = "0660"\n'
                "persist_on_stop = true\nrestore_on_start = true\n")
        if self.feed_slots is not None:
            pool += f"feed_slots = {self.feed_slots}\n"
        pool += self.extra
        endpoint = (f"tcp://127.0.0.1:{self.port}" if self.connect
                    else f"tcp://*:{self.port}")
        pool += ("\n[pool.events]\n"
                 f'endpoint = "{endpoint}"\n'
                 f'replay_endpoint = "tcp://*:{self.replay_port}"\n'
                 f'topic = "kv@test@alpha"\nencoding = "{self.encoding}"\n'
                 f'hash_form = "{self.hash_form}"\nmax_batch = {self.max_batch}\n')
        self.config.write_text(head + pool)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def reopen(self, max_batch: int | None = None) -> None:
        """Change the events table (max_batch) and reload: the channel
        reopens and publishes a resync of what the pool holds. Waits for it."""
        before = self.status()["events"]["next_seq"]
        self.max_batch = max_batch or (511 if self.max_batch == 512 else 512)
        self.write_config()
        self.reload()
        deadline = time.monotonic() + 10
        while self.status()["events"]["next_seq"] <= before:
            if time.monotonic() > deadline:
                raise TimeoutError("no resync after the reload")
            time.sleep(0.02)

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            return r.read().decode()

    def status(self) -> dict[str, Any]:
        doc = self.kvctl("status", "alpha")
        if "pools" in doc:
            doc = doc["pools"][0]
        return doc

    def subscriber(self) -> Subscriber:
        return Subscriber(self.endpoint, "kv@test@alpha", self.replay)


def converge(sub: Subscriber, d: Kvpoold, form: str, timeout: float = 10.0) -> tuple[set, set]:
    """Pump until the index equals the pool's committed keys (or timeout)."""
    deadline = time.monotonic() + timeout
    want: set[Any] = set()
    while time.monotonic() < deadline:
        sub.pump(0.2)
        want = as_hashes(held_keys(d), form)
        if sub.index == want:
            return sub.index, want
        # A message lost at the tail is noticed only by the next one: ask.
        if sub.replay_ep and sub.next_seq is not None:
            sub.replay_from(sub.next_seq)
            if sub.index == want:
                return sub.index, want
    return sub.index, want
