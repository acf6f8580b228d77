# SPDX-License-Identifier: MIT
"""kvpoold stopped and started between engine A and engine B.

A cold restart (the daemon persists the pool at stop, the region is gone
as after a reboot, the daemon restores the snapshot at start) and a warm
one (the region survives and is re-attached): either way B still loads
A's blocks, with the same logits as its own prefix cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from e2e_support import Kvpoold, daemon, engine, tokens, workdir  # noqa: F401

BLOCK = 16


@pytest.mark.parametrize("restart", ["cold", "warm"])
def test_b_hits_after_a_daemon_restart(workdir: Path, daemon: Kvpoold, restart: str) -> None:
    prompt, suffix = tokens(6 * BLOCK + 1, 31), tokens(12, 32)
    engine("store", workdir, daemon.pool_path, [prompt])
    assert daemon.stop() == 0, daemon.log.read_text()
    if restart == "cold":
        os.unlink(daemon.pool_path)  # a reboot: the region is gone, the snapshot is not
    daemon.start()
    status: Any = daemon.kvctl("status", "alpha")
    assert status["state"] == ("restored" if restart == "cold" else "reattached"), status
    assert status["entries"] == 6, status
    r = engine("reuse", workdir, daemon.pool_path, [prompt], suffix=suffix)
    assert r["pool"]["external"] == 6 * BLOCK, r["pool"]["stats"]
    assert r["pool"]["stats"]["loaded_blocks"] == 6
    assert r["pool"]["stats"]["failed_blocks"] == 0
    assert torch.equal(r["pool"]["logits"], r["local"]["logits"])
    assert r["pool"]["tokens"] == r["full"]["tokens"]
