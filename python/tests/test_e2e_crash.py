# SPDX-License-Identifier: MIT
"""An engine SIGKILLed in the middle of a save or a load.

Engine A runs against a private kvpoold. Killed after gathering one
layer of a step's blocks, it leaves reservations that nobody can read:
the next engine never loads those blocks, and kvpoold's reaper aborts
them. Killed while holding pins on blocks it was about to load, its pins
are released by the reaper and the blocks stay usable.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from e2e_support import Kvpoold, daemon, engine, tokens, workdir  # noqa: F401

BLOCK = 16


def reaped(d: Kvpoold, pid: int, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until pid has no client slot and the pool is healthy; its usage."""
    deadline = time.monotonic() + timeout
    while True:
        clients = d.kvctl("clients", "alpha")["clients"]
        health = d.kvctl("health", "alpha", ok=(0, 1))
        if all(c["pid"] != pid for c in clients) and health["healthy"]:
            return health["usage"]
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} not reaped: clients {clients}, health {health}")
        time.sleep(0.1)


@pytest.mark.parametrize("save_mode", ["per_layer", "per_block"])
def test_killed_while_saving(workdir: Path, daemon: Kvpoold, save_mode: str) -> None:
    """per_layer: killed with 4 reservations of which one layer is written;
    per_block: killed after the first of 4 blocks was committed."""
    first = tokens(3 * BLOCK, 11)
    second = first + tokens(4 * BLOCK + 2, 12)  # shares first's 3 blocks
    variant = {"extra": {"save_mode": save_mode}}
    proc = engine("store", workdir, daemon.pool_path, [first, second], variant=variant,
                  kill_at="save")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    usage = reaped(daemon, _engine_pid(daemon, proc))
    assert usage["entries_reserved"] == 0
    assert usage["pins"] == 0
    assert usage["orphan_blocks"] == 0
    # The first prompt's blocks, and per block the one committed before the kill.
    stored = 3 if save_mode == "per_layer" else 4
    assert usage["entries_committed"] == stored
    r = engine("reuse", workdir, daemon.pool_path, [second], suffix=tokens(5, 13),
               variant=variant)
    assert r["pool"]["external"] == stored * BLOCK
    assert r["pool"]["stats"]["loaded_blocks"] == stored
    assert r["pool"]["stats"]["failed_blocks"] == 0
    assert r["pool"]["tokens"] == r["full"]["tokens"]
    assert r["pool"]["tokens"] == r["local"]["tokens"]


def test_killed_holding_pins(workdir: Path, daemon: Kvpoold) -> None:
    prompt = tokens(4 * BLOCK + 5, 21)
    proc = engine("store", workdir, daemon.pool_path, [prompt, prompt + tokens(3, 22)],
                  kill_at="load")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    usage = reaped(daemon, _engine_pid(daemon, proc))
    assert usage["pins"] == 0
    assert usage["entries_reserved"] == 0
    assert usage["entries_committed"] == 4
    r = engine("reuse", workdir, daemon.pool_path, [prompt], suffix=tokens(7, 23))
    assert r["pool"]["external"] == 4 * BLOCK
    assert r["pool"]["tokens"] == r["full"]["tokens"]


def _engine_pid(d: Kvpoold, proc: Any) -> int:
    """The killed engine's pid, which it printed before serving."""
    for line in proc.stdout.splitlines():
        if line.startswith("pid "):
            return int(line.split()[1])
    pytest.fail(f"the engine did not print its pid:\n{proc.stdout}\n{proc.stderr}")
