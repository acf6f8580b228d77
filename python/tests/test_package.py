# SPDX-License-Identifier: MIT
"""The package's top level: `import kvpool` loads the extension and nothing
heavy (not kvpool.engine, numpy or torch), and kvpool.engine is reachable
as an attribute, imported on first use."""

import subprocess
import sys

import pytest

import kvpool


def run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_loads_no_submodule_or_framework() -> None:
    out = run(
        "import sys, kvpool\n"
        "print(sorted(m for m in ('kvpool.engine', 'numpy', 'torch', 'typing', 'logging')"
        " if m in sys.modules))"
    )
    assert out == "[]"


def test_engine_is_imported_on_first_use() -> None:
    out = run(
        "import sys, kvpool\n"
        "store = kvpool.engine.PagedKVStore\n"
        "print(store.__module__, kvpool.engine is sys.modules['kvpool.engine'], 'torch' in sys.modules)"
    )
    assert out == "kvpool.engine True False"


def test_module_attributes() -> None:
    import kvpool.engine

    assert kvpool.engine is sys.modules["kvpool.engine"]
    assert "engine" in dir(kvpool)
    assert set(kvpool.__all__) <= set(dir(kvpool))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        kvpool.no_such_name  # noqa: B018
