# SPDX-License-Identifier: MIT
"""The README's Python example, run exactly as written, twice: the first run
stores its four blocks, the second finds every one of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
POOL = "/dev/shm/kvpool-py-example"


def example() -> str:
    m = re.search(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)
    assert m, "README.md has no ```python block"
    return m.group(1)


def test_readme_example_reuses_its_blocks(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    if os.path.exists(POOL):
        pytest.fail(f"{POOL} exists: refusing to touch a pool this test did not create")
    script = tmp_path / "example.py"
    script.write_text(example())
    assert POOL in script.read_text(), "the example no longer uses " + POOL
    try:
        outs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               timeout=120, check=True).stdout.strip() for _ in range(2)]
    finally:
        if os.path.exists(POOL):
            os.unlink(POOL)
    assert outs == ["0 of 4 blocks reused", "4 of 4 blocks reused"]
