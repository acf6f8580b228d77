# SPDX-License-Identifier: MIT
"""Helpers of the end-to-end tests: a private kvpoold, kvctl, engine processes.

Everything made here (daemons, engine processes, pool files, temporary
directories) is owned by a context manager or a pytest fixture that
removes it whether the test passes or fails.
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

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"


def build_root() -> Path:
    """The meson build directory the kvpool package under test comes from."""
    import kvpool

    # <build>/python/kvpool/__init__.py
    return Path(kvpool.__file__).resolve().parents[2]


def tool(env_name: str, rel: str) -> Path:
    """A built binary: $env_name, else <build>/<rel>."""
    value = os.environ.get(env_name)
    return Path(value) if value else build_root() / rel


class Kvpoold:
    """kvpoold on a private config, socket, shm dir and state dir.

    One pool "alpha" (64 MiB, 4 KiB pages) that persists at stop and
    restores at start. ``stop()`` sends SIGTERM and waits, as systemd does;
    ``close()`` also kills a daemon that does not stop and removes the
    directories.
    """

    def __init__(self, workdir: Path, tag: str) -> None:
        self.binary = tool("KVPOOLD", "daemon/kvpoold")
        self.kvctl_binary = tool("KVCTL", "tools/kvctl")
        self.dir = workdir
        self.shm = Path(f"/dev/shm/kvpool-e2e-{tag}")
        self.sock = self.dir / "control"
        self.config = self.dir / "kvpoold.toml"
        self.log = self.dir / "kvpoold.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(
            "[daemon]\n"
            f'control_socket = "{self.sock}"\n'
            f'shm_dir = "{self.shm}"\n'
            f'hugepage_dir = "{self.dir}/huge"\n'
            f'state_dir = "{self.dir}/state"\n'
            'admin_group = "root"\n'
            "reap_interval_ms = 100\nevict_interval_ms = 50\n"
            'log_level = "debug"\n\n'
            "[[pool]]\n"
            'name = "alpha"\nsize = "64M"\nhugepages = "never"\nprefault = false\n'
            'group = "root"\nmode = "0660"\n'
            "persist_on_stop = true\nrestore_on_start = true\n")

    @property
    def pool_path(self) -> str:
        """The pool file kvpoold serves."""
        return str(self.shm / "alpha")

    def start(self) -> None:
        """Start and wait for READY=1 on a private NOTIFY_SOCKET."""
        notify_path = self.dir / "notify"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            notify.bind(str(notify_path))
            notify.settimeout(0.2)
            env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             env=env)
            got = b""
            deadline = time.monotonic() + 30
            while b"READY=1" not in got:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kvpoold exited with {self.proc.returncode}:\n"
                                       + self.log.read_text(errors="replace"))
                if time.monotonic() > deadline:
                    raise RuntimeError("kvpoold sent no READY=1 in 30 s:\n"
                                       + self.log.read_text(errors="replace"))
                try:
                    got += notify.recv(4096) + b"\n"
                except TimeoutError:
                    pass
        finally:
            notify.close()
            notify_path.unlink(missing_ok=True)

    def stop(self) -> int:
        """SIGTERM and wait (it persists the pool); the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kvctl(self, *args: str, ok: tuple[int, ...] = (0,)) -> Any:
        """Run kvctl --json against this daemon; the parsed answer.

        ``ok``: the exit codes that still carry an answer (``health``
        exits 1 for an unhealthy pool).
        """
        r = subprocess.run([str(self.kvctl_binary), "--socket", str(self.sock), "--json", *args],
                           capture_output=True, text=True, timeout=30)
        if r.returncode not in ok:
            raise RuntimeError(f"kvctl {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return json.loads(r.stdout)

    def close(self) -> None:
        """Stop the daemon if it runs and remove its files."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        subprocess.run(["/bin/rm", "-rf", str(self.shm)], check=False)


def run_engine(args: list[str], env: dict[str, str] | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the engine driver (e2e_engine.py) in a fresh interpreter."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "tools"), *sys.path] if p)
    full_env.setdefault("PYTHONHASHSEED", "0")
    if env:
        full_env.update(env)
    cmd = [PYTHON, str(Path(__file__).with_name("e2e_engine.py")), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Fail with the engine's output when it did not exit 0."""
    assert proc.returncode == 0, (f"engine exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                                  f"\n--- stderr\n{proc.stderr}")
    return proc


class Session:
    """An engine process kept running (e2e_engine.py session): ``generate``
    sends it one request and returns its answer; ``close`` ends it (killed
    if it does not quit in 10 s). Its stderr goes to a file in workdir."""

    def __init__(self, workdir: Path, pool: str, variant: Any = None,
                 env: dict[str, str] | None = None) -> None:
        import queue
        import threading

        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in [str(ROOT / "tools"), *sys.path] if p)
        full_env.setdefault("PYTHONHASHSEED", "0")
        if env:
            full_env.update(env)
        self.log = workdir / f"session-{next(_serial)}.log"
        cmd = [PYTHON, str(Path(__file__).with_name("e2e_engine.py")), "session",
               "--pool", pool, "--prompts", "[]", "--variant", json.dumps(variant or {}),
               "--out", str(workdir / "session-unused.pt")]
        with open(self.log, "wb") as log:
            self.proc: subprocess.Popen[str] | None = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                env=full_env)
        self._answers: queue.Queue[str | None] = queue.Queue()
        out = self.proc.stdout

        def read() -> None:  # the answers, then None at EOF
            assert out is not None
            for line in out:
                if line.startswith("@ "):
                    self._answers.put(line[2:])
            self._answers.put(None)

        threading.Thread(target=read, daemon=True).start()

    def generate(self, prompt: list[int], max_tokens: int = 4, *,
                 reset_prefix_cache: bool = True, timeout: float = 120) -> Any:
        """Serve one prompt (after emptying the engine's own prefix cache
        unless told not to, so kvpool is asked); the engine's answer."""
        import queue

        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"prompt": prompt, "max_tokens": max_tokens,
                                          "reset_prefix_cache": reset_prefix_cache}) + "\n")
        self.proc.stdin.flush()
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            answer = None
        if answer is None:
            raise RuntimeError(f"engine session gave no answer (exit {self.proc.poll()}):\n"
                               + self.log.read_text(errors="replace"))
        return json.loads(answer)

    def close(self) -> None:
        """Ask the engine to quit; kill it if it does not within 10 s."""
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            self.proc = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- pytest fixtures (imported by the test modules) -------------------------

import itertools  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

_serial = itertools.count()


@pytest.fixture
def detach_new_attachments() -> Any:
    """Detach what the connectors of a test attached in this process (the
    connectors share one attachment per pool path, kvpool.vllm._attachments)."""
    import kvpool.vllm as kvv  # noqa: PLC0415

    before = set(kvv._attachments)
    yield
    for key in set(kvv._attachments) - before:
        att = kvv._attachments.pop(key)
        if att.pool is not None:
            att.pool.detach()


@pytest.fixture
def workdir() -> Any:
    """A private temporary directory, removed after the test."""
    d = Path(tempfile.mkdtemp(prefix="kvpool-e2e-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(workdir: Path) -> Any:
    """A private kvpoold (see Kvpoold), stopped and removed after the test."""
    d = Kvpoold(workdir, f"{os.getpid()}-{next(_serial)}")
    if not d.binary.exists() or not d.kvctl_binary.exists():
        pytest.skip(f"no kvpoold at {d.binary} or kvctl at {d.kvctl_binary} (build them first)")
    try:
        d.start()
        yield d
    finally:
        d.close()


def tokens(n: int, seed: int) -> list[int]:
    """n token ids of the tiny model's vocabulary (512), reproducibly."""
    rng = random.Random(seed)
    return [rng.randrange(1, 512) for _ in range(n)]


def engine(command: str, workdir: Path, pool: str, prompts: list[list[int]], *,
           suffix: list[int] | None = None, variant: Any = None, max_tokens: int = 4,
           kill_at: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Run one e2e_engine.py command; its result dict, or the process when killed."""
    import torch

    out = workdir / f"{command}-{next(_serial)}.pt"
    args = [command, "--pool", pool, "--prompts", json.dumps(prompts),
            "--suffix", json.dumps(suffix or []), "--variant", json.dumps(variant or {}),
            "--max-tokens", str(max_tokens), "--out", str(out)]
    if kill_at:
        args += ["--kill-at", kill_at]
    proc = run_engine(args, env)
    if kill_at:
        return proc
    check(proc)
    return torch.load(out)
