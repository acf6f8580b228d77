# SPDX-License-Identifier: MIT
"""The package's type information is true: mypy's stubtest checks the stub
_kvpool.pyi against the built extension, and mypy checks the package's
Python modules (with that stub) as strictly as it can. Skipped without
mypy (Debian: the mypy package)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed for this interpreter")

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "kvpool"
ALLOWLIST = HERE / "stubtest_allowlist.txt"


def empty_config(tmp_path: Path) -> str:
    """A mypy config of defaults, so that no user or site config applies."""
    path = tmp_path / "mypy.ini"
    path.write_text("[mypy]\n")
    return str(path)


def run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=240
    )
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{out}"


def test_stubtest(tmp_path: Path) -> None:
    """Every name the extension exports is in the stub and the other way
    round, with the same kinds (class, property, method) and, where the
    runtime has a signature, the same parameters."""
    import kvpool._kvpool

    # The extension must come from the build tree (PYTHONPATH), not from an
    # installed copy that may be older.
    assert "PYTHONPATH" in os.environ, "run by meson, which sets PYTHONPATH=build/python"
    args = ["-m", "mypy.stubtest", "--allowlist", str(ALLOWLIST)]
    # 3.12 gives the buffer slot a __buffer__ of its own: the allowlist
    # entries for it go unused there.
    if sys.version_info >= (3, 12):
        args.append("--ignore-unused-allowlist")
    args += ["--mypy-config-file", empty_config(tmp_path), "kvpool._kvpool"]
    print("checking", kvpool._kvpool.__file__)
    run(args, cwd=tmp_path)


def test_mypy_strict(tmp_path: Path) -> None:
    """mypy --strict over the package as written (its .py files and the
    stub), plus --warn-unreachable: code mypy thinks unreachable is code it
    does not check. Two relaxations, both for kvpool.vllm, whose base
    classes come from vLLM when it is importable and are Any otherwise:
    subclassing Any is allowed, and a `type: ignore` that only one of the
    two cases needs is not an error."""
    run(
        [
            "-m",
            "mypy",
            "--strict",
            "--warn-unreachable",
            "--allow-subclassing-any",
            "--no-warn-unused-ignores",
            "--config-file",
            empty_config(tmp_path),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(PACKAGE),
        ],
        cwd=tmp_path,
    )
