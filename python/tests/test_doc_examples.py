# SPDX-License-Identifier: MIT
"""Every ```python block of doc/python.md, run as written: each is a whole
program, run by this interpreter in a fresh process against a fresh pool.
The examples name their pool /dev/shm/kvpool-doc; each run gets its own
path in its place, so no test touches a pool someone else uses."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

DOC = Path(__file__).resolve().parents[2] / "doc" / "python.md"
PLACEHOLDER = "/dev/shm/kvpool-doc"


def python_blocks() -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of each ```python block."""
    blocks = []
    lines = DOC.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            end = start
            while lines[end].strip() != "```":
                end += 1
            blocks.append((start, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return blocks


BLOCKS = python_blocks()


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 8, f"{DOC}: expected the examples, found {len(BLOCKS)} python blocks"
    # The substitution must cover every pool path an example names.
    for line, code in BLOCKS:
        for path in re.findall(r'"(/dev/shm/[^"]*)"', code):
            assert path.startswith(PLACEHOLDER), f"{DOC}:{line}: pool path {path} is not {PLACEHOLDER}"


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_example(line: int, code: str, pool_factory: Callable[..., str], tmp_path: Path) -> None:
    for module in ("numpy", "torch"):
        if re.search(rf"^import {module}\b", code, re.M) and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed for {sys.executable}")
    path = pool_factory(256 << 20)
    script = tmp_path / f"python_md_line{line}.py"
    script.write_text(code.replace(PLACEHOLDER, path))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    print(proc.stdout, proc.stderr, sep="\n")
    assert proc.returncode == 0, (
        f"{DOC}:{line}: the example exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
