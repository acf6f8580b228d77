# SPDX-License-Identifier: MIT
"""An engine that stays up while its pool is re-created under it.

kvpoold restarted cold restores its snapshot into a new region file at
the same path; an engine that keeps its mapping of the old, unlinked one
would serve from and save into an orphan no other process sees. The
connector notices that the path names another file, detaches the old
pool and attaches the new one: the running engine A then hits blocks that
only the new region holds (stored there by another process after the
restart, or restored from the snapshot), and what A stores afterwards is
found by a fresh process B. While the path names no file at all, A
misses and goes on. A warm restart (the region kept) changes nothing: A
keeps its attach and keeps hitting.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import kvpool
import kvpool.vllm as kvv

from e2e_support import (  # noqa: F401
    ROOT,
    Kvpoold,
    Session,
    daemon,
    detach_new_attachments,
    engine,
    tokens,
    workdir,
)

sys.path.insert(0, str(ROOT / "tools"))
from refengine.engine import RefEngine  # noqa: E402

BLOCK = 16

# Every test: detach what its connectors attached in this process.
pytestmark = pytest.mark.usefixtures("detach_new_attachments")


# ---- the attachment, alone ----------------------------------------------------

def test_attachment_follows_the_path(pool_factory: Callable[..., str], tmp_path: Path) -> None:
    path = pool_factory(16 << 20)
    att = kvv._Attachment(path)
    try:
        p1 = att.get(3600, 3600)
        assert p1 is not None and att.get(3600, 3600) is p1
        kvpool.create_pool(path, 16 << 20, replace=True)
        assert att.get(3600, 3600) is p1  # not looked at again within check_s
        p2 = att.get(3600, 3600, force=True)
        assert p2 is not None and p2 is not p1
        assert not p1.attached  # the orphan's client is given back
        assert (p2.st_dev, p2.st_ino) == (os.stat(path).st_dev, os.stat(path).st_ino)
        assert att.get(0, 3600) is p2  # same file: kept

        os.unlink(path)  # removed: a pool that misses until it is back
        assert att.get(0, 3600) is None
        assert not p2.attached
        assert att.get(0, 3600) is None
        kvpool.create_pool(path, 16 << 20)
        p3 = att.get(0, 3600)  # back: attached at once, no retry delay
        assert p3 is not None and p3.attached

        os.unlink(path)  # a file that is no pool: retried after retry_s only...
        Path(path).write_bytes(b"\0" * (1 << 20))
        assert att.get(0, 3600) is None
        failed_at = att.failed_at
        assert att.get(0, 3600) is None and att.failed_at == failed_at
        kvpool.create_pool(path, 16 << 20, replace=True)  # ...or on another file
        p4 = att.get(0, 3600)
        assert p4 is not None and p4.attached and att.failed_at is None
    finally:
        if att.pool is not None:
            att.pool.detach()


# ---- a connector in this process, a pool re-created by hand ----------------

def _engine(path: str, **extra: Any) -> RefEngine:
    return RefEngine("tiny", connector="kvpool", extra_config={"pool_path": path, **extra})


@pytest.mark.parametrize("save_mode", ["per_block", "per_layer"])
def test_connector_reattaches(pool_factory: Callable[..., str], save_mode: str) -> None:
    path = pool_factory(64 << 20)
    prompt, s1, s2 = tokens(6 * BLOCK + 1, 51), tokens(9, 52), tokens(9, 53)
    a = _engine(path, pool_check_ms=0, save_mode=save_mode)
    try:
        a.generate(prompt, 1)
        assert a.worker_connector.stats["saved_blocks"] == 6
        kvpool.create_pool(path, 64 << 20, replace=True)  # empty, at the same path
        a.kv_cache_manager.reset_prefix_cache()
        c = a.generate(prompt + s1, 1)
        assert c.external_hit_tokens == 0  # the new pool is empty: no hit from the orphan
        ws = a.worker_connector.stats
        assert a.scheduler_connector.stats["reattaches"] == 1
        assert ws["reattaches"] == 1, ws
        assert ws["saved_blocks"] == 6 + 6, ws
        with kvpool.Pool(path) as fresh:  # what A saved is in the new file
            assert fresh.usage()["entries_committed"] == 6
        a.kv_cache_manager.reset_prefix_cache()
        c = a.generate(prompt + s2, 1)
        assert c.external_hit_tokens == 6 * BLOCK
        assert a.worker_connector.stats["failed_blocks"] == 0
    finally:
        a.worker_connector.shutdown()


def test_worker_follows_the_scheduler(pool_factory: Callable[..., str]) -> None:
    """Scheduler and worker in two processes have two attachments: a worker
    that would look at the path only much later switches in the step the
    scheduler did, because the metadata names the scheduler's file."""
    path = pool_factory(64 << 20)
    p, q, suffix = tokens(6 * BLOCK + 1, 61), tokens(5 * BLOCK + 1, 63), tokens(9, 62)
    a = _engine(path, pool_check_ms=0)
    w = a.worker_connector
    # The same file under another name: an attachment of its own, as in
    # another process; it would look at the path again in an hour.
    w._drop_store()
    w._store_pool = None
    w._pool_path = os.path.join(os.path.dirname(path), ".", os.path.basename(path))
    w._check_s = 3600.0
    try:
        a.generate(p, 1)
        old = kvv._attachments[(w._pool_path, os.getpid())].pool
        kvpool.create_pool(path, 64 << 20, replace=True)
        b = _engine(path, pool_check_ms=0)  # the scheduler's attachment: Q into the new pool
        b.generate(q, 1)
        a.kv_cache_manager.reset_prefix_cache()
        c = a.generate(q + suffix, 1)  # only the new pool holds Q
        assert c.external_hit_tokens == 5 * BLOCK
        assert w.stats["loaded_blocks"] == 5 and w.stats["failed_blocks"] == 0, w.stats
        assert w.stats["reattaches"] == 1 and not old.attached
        b.worker_connector.shutdown()
    finally:
        w.shutdown()


# ---- kvpoold restarted under a running engine process -----------------------

def _file(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_dev, st.st_ino]


@pytest.mark.parametrize("restart", ["cold", "cold_serving", "warm"])
def test_running_engine_after_a_daemon_restart(workdir: Path, daemon: Kvpoold,
                                               restart: str) -> None:
    pool = daemon.pool_path
    p, q, r = tokens(6 * BLOCK + 1, 71), tokens(5 * BLOCK + 1, 72), tokens(4 * BLOCK + 1, 73)
    s1, s2, s3 = tokens(9, 74), tokens(9, 75), tokens(9, 76)
    with Session(workdir, pool, {"extra": {"pool_check_ms": 0}}) as a:
        first = a.generate(p)
        assert first["stats"]["saved_blocks"] == 6, first
        before = first["pool_file"]
        assert before == _file(pool)

        assert daemon.stop() == 0, daemon.log.read_text()
        if restart != "warm":
            os.unlink(pool)  # as after a reboot: the snapshot is all that is left
        if restart == "cold_serving":
            gone = a.generate(p + s1)  # no pool: misses, saves nothing, no error
            assert gone["external"] == 0, gone
            assert gone["pool_file"] is None
            assert gone["stats"]["failed_blocks"] == 0
            assert gone["stats"]["saved_blocks"] == 6
        if restart == "warm":
            down = a.generate(p + s1)  # kvpoold down, region kept: still a pool
            assert down["external"] == 6 * BLOCK, down
        daemon.start()
        status: Any = daemon.kvctl("status", "alpha")
        assert status["state"] == ("reattached" if restart == "warm" else "restored"), status

        # R exists only in the region kvpoold serves now.
        engine("store", workdir, pool, [r])
        got_r = a.generate(r + s2)
        assert got_r["external"] == 4 * BLOCK, got_r
        got_p = a.generate(p + s3)  # restored from the snapshot (or kept)
        assert got_p["external"] == 6 * BLOCK, got_p
        assert got_p["stats"]["failed_blocks"] == 0, got_p
        stored_q = a.generate(q)
        assert stored_q["pool_file"] == _file(pool)
        if restart == "warm":
            assert stored_q["pool_file"] == before
            assert stored_q["stats"].get("reattaches", 0) == 0, stored_q
        else:
            assert stored_q["pool_file"] != before
            assert stored_q["stats"]["reattaches"] == 2, stored_q  # scheduler + worker

    # What A stored after the restart is there for a fresh process.
    b = engine("reuse", workdir, pool, [q], suffix=s1)
    assert b["pool"]["external"] == 5 * BLOCK, b["pool"]["stats"]
    assert b["pool"]["stats"]["failed_blocks"] == 0
    assert torch.equal(b["pool"]["logits"], b["local"]["logits"])
    assert b["pool"]["tokens"] == b["full"]["tokens"]
    want = engine("recompute", workdir, pool, [r + s2, p + s3])["tokens"]
    assert [got_r["tokens"], got_p["tokens"]] == want
