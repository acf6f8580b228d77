# SPDX-License-Identifier: MIT
"""The command line on the tiny model: serve reports hits, bench-ttft's
correctness checks hold."""

import json
import re
from typing import Any

import pytest

from refengine.__main__ import main


@pytest.mark.parametrize("workload", ["system-prompt", "multi-turn", "rag"])
def test_serve_reports_prefix_hits(workload: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "tiny", "--workload", workload, "--requests", "8", "--items", "2",
                 "--scale", "0.25", "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.strip().startswith("req-")]
    assert len(rows) == 8
    m = re.search(r"in-engine hits (\d+)", out)
    assert m and int(m.group(1)) > 0, out


def test_bench_ttft_disk(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench-ttft", "--model", "tiny", "--connector", "disk", "--kv-dir", str(tmp_path),
                 "--prefix", "160", "--suffix", "8", "--trials", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["connector_hit_bit_identical"] is True
    assert res["same_token_as_recompute"] is True
    assert res["max_logit_diff_vs_recompute"] < 1e-3
    assert len(res["connector_hit_ms"]) == 1 and len(res["in_engine_hit_ms"]) == 1


def test_serve_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "tiny", "--workload", "mix", "--requests", "6", "--items", "2",
                 "--scale", "0.25", "--max-tokens", "2", "--warmup", "1", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    res = json.loads(lines[0])
    assert res["requests"] == 6 and len(res["ttft_ms"]) == 6
    assert res["computed_tokens"] == res["prompt_tokens"] - res["local_hit_tokens"] - res["external_hit_tokens"]
    assert res["external_hit_tokens"] == 0 and res["connector"] == "none"
    assert res["ttft_p50_ms"] > 0 and res["engine_stats"]["prefix_cache_queries"] > 0


def test_serve_continues_saved_conversations(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    conv = str(tmp_path / "conv.json")
    args = ["serve", "--model", "tiny", "--workload", "multi-turn", "--requests", "4", "--items", "1",
            "--scale", "0.25", "--max-tokens", "2", "--json", "--conversations", conv]
    assert main(args + ["--seed", "1"]) == 0
    capsys.readouterr()
    with open(conv) as f:
        history = json.load(f)[0]["tokens"]
    # A fresh engine (no cache) continues the chat: its first prompt is the history + a new turn.
    assert main(args + ["--seed", "2", "--requests", "1"]) == 0
    res = json.loads(capsys.readouterr().out.strip())
    assert res["prompt_tokens"] > len(history)
