# SPDX-License-Identifier: MIT
"""Workloads: the seed picks the requests, the content seed the shared
prefixes, so engines with different seeds share prefixes and not questions."""

from itertools import islice

import pytest

from refengine.workloads import BLOCK, FAMILIES, Workload


def _prompts(family: str, seed: int, n: int = 12, content_seed: int = 0) -> list[list[int]]:
    wl = Workload(family, 512, seed=seed, items=3, scale=0.25, content_seed=content_seed)
    out = []
    for p in islice(wl, n):
        out.append(p)
        wl.feedback([7, 8, 9])
    return out


def _blocks(p: list[int]) -> set[tuple[int, ...]]:
    # Chained block identities: a block counts as shared only with its whole prefix.
    return {tuple(p[:i + BLOCK]) for i in range(0, len(p) - BLOCK + 1, BLOCK)}


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_stream(family: str) -> None:
    assert _prompts(family, 5) == _prompts(family, 5)


@pytest.mark.parametrize("family", ["system-prompt", "rag", "mix"])
def test_seeds_share_prefixes_not_questions(family: str) -> None:
    a, b = _prompts(family, 1), _prompts(family, 2)
    assert a != b
    shared = set().union(*map(_blocks, a)) & set().union(*map(_blocks, b))
    assert shared, "engines with different seeds share no prefix block"
    # The last (partial) block of every prompt is its own question.
    assert not {tuple(p) for p in a} & {tuple(p) for p in b}


def test_content_seed_changes_the_shared_prefixes() -> None:
    a, b = _prompts("system-prompt", 1), _prompts("system-prompt", 1, content_seed=1)
    assert not set().union(*map(_blocks, a)) & set().union(*map(_blocks, b))


def test_mix_draws_every_family() -> None:
    wl = Workload("mix", 512, seed=3, items=2, scale=0.25)
    seen = set()
    for _ in islice(wl, 30):
        seen.add(wl._last.family)
        wl.feedback([1])
    assert seen == {"system-prompt", "multi-turn", "rag"}


@pytest.mark.parametrize("family", ["multi-turn", "mix"])
def test_conversations_continue_in_another_workload(family: str) -> None:
    a = Workload(family, 512, seed=1, items=2, scale=0.25)
    for _ in islice(a, 6):
        a.feedback([7, 8])
    saved = a.save_conversations()
    assert len(saved) == 2 and all(len(c["tokens"]) > 0 for c in saved)
    b = Workload(family, 512, seed=9, items=2, scale=0.25)
    b.load_conversations(saved)
    histories = {tuple(c["tokens"]) for c in saved}
    nxt = []
    for p in islice(b, 6):
        nxt.append(p)
        b.feedback([7, 8])
    # Each conversation's next turn starts with its whole saved history.
    assert any(tuple(p[:len(h)]) == h for p in nxt for h in histories)


def test_conversations_count_must_match() -> None:
    with pytest.raises(ValueError, match="2 saved, this workload has 3"):
        Workload("multi-turn", 512, items=3).load_conversations(
            Workload("multi-turn", 512, items=2).save_conversations())
