# SPDX-License-Identifier: MIT
"""Prompt streams shaped like kvsim's trace families (tools/kvsim.cc).

Each family yields token-id prompts whose prefixes are shared the way real
traffic shares them; sizes are in 16-token blocks as in kvsim, plus a few
tokens so that prompts do not end on a block boundary:
  system-prompt  ``items`` system prompts of 32-128 blocks (Zipf popularity),
                 each followed by a unique question of 4-20 blocks
  multi-turn     ``items`` conversations (Zipf), 8 shared blocks of
                 instructions; each turn appends the previous answer (the
                 engine's own output) and a new question of 4-24 blocks;
                 2-10 turns, then the conversation starts over
  rag            2 blocks of instructions, 1-3 of ``items`` documents of 8-32
                 blocks (Zipf), a question of 1-2 blocks
  mix            the three above, each request from one of them at random
``scale`` multiplies every block count (``serve --scale 0.25`` for quick runs).

What is shared (system prompts, documents, instructions, their lengths) is
drawn from ``content_seed``; ``seed`` draws the request stream (which item,
the questions, the conversations' turns). Engines given different seeds and
the same ``content_seed`` serve different requests over the same shared
prefixes, as the engines of one host behind a load balancer do.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator

FAMILIES = ("system-prompt", "multi-turn", "rag", "mix")
BLOCK = 16


class _Zipf:
    def __init__(self, n: int, s: float) -> None:
        w = [1.0 / (i + 1) ** s for i in range(n)]
        tot = sum(w)
        acc = 0.0
        self.cdf = []
        for x in w:
            acc += x / tot
            self.cdf.append(acc)

    def draw(self, r: random.Random) -> int:
        return min(bisect.bisect_left(self.cdf, r.random()), len(self.cdf) - 1)


class Workload:
    """An iterator of prompts; ``feedback(output_token_ids)`` gives it the
    engine's answer to the last prompt (multi-turn chats append it)."""

    def __init__(self, family: str, vocab_size: int, *, seed: int = 1, items: int = 0, zipf: float = 1.0,
                 scale: float = 1.0, content_seed: int = 0) -> None:
        if family not in FAMILIES:
            raise ValueError(f"workload {family!r}: expected one of {', '.join(FAMILIES)}")
        self.family = family
        self.vocab = vocab_size
        self.seed = seed
        self.content_seed = content_seed
        self.r = random.Random(seed)
        self.scale = scale
        self._unique = 0
        self._last_conv: int | None = None
        self._last: Workload | None = None
        if family == "mix":
            self.parts = [Workload(f, vocab_size, seed=seed * 3 + i, items=items, zipf=zipf, scale=scale,
                                   content_seed=content_seed)
                          for i, f in enumerate(FAMILIES[:-1])]
            return
        self.items = items or {"system-prompt": 8, "multi-turn": 8, "rag": 20}[family]
        self.zipf = _Zipf(self.items, zipf)
        content = random.Random(f"content:{family}:{content_seed}")
        if family == "system-prompt":
            self.sys = [self._text(("sys", i), self._blocks(32, 128, content)) for i in range(self.items)]
        elif family == "multi-turn":
            self.instr = self._text(("instr", 0), self._blocks(8, 8, content))
            self.convs = [self._new_conv() for _ in range(self.items)]
        else:
            self.instr = self._text(("instr", 1), self._blocks(2, 2, content))
            self.docs = [self._text(("doc", i), self._blocks(8, 32, content)) for i in range(self.items)]

    def _blocks(self, lo: int, hi: int, r: random.Random | None = None) -> int:
        return max(1, round((r or self.r).randint(lo, hi) * self.scale)) * BLOCK

    def _text(self, key: tuple[str, int | str], n: int) -> list[int]:
        g = random.Random(f"{key[0]}:{key[1]}:{self.vocab}:{self.content_seed}")
        return [g.randrange(1, self.vocab) for _ in range(n)]

    def _unique_text(self, n: int) -> list[int]:
        self._unique += 1
        return self._text(("q", f"{self.family}.{self.seed}.{self._unique}"), n + self.r.randrange(1, BLOCK))

    def _new_conv(self) -> dict:
        return {"tokens": list(self.instr), "turns_left": self.r.randint(2, 10)}

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        r = self.r
        if self.family == "mix":
            self._last = self.parts[r.randrange(len(self.parts))]
            return next(self._last)
        if self.family == "system-prompt":
            return self.sys[self.zipf.draw(r)] + self._unique_text(self._blocks(4, 20))
        if self.family == "rag":
            p = list(self.instr)
            for _ in range(r.randint(1, 3)):
                p += self.docs[self.zipf.draw(r)]
            return p + self._unique_text(self._blocks(1, 2))
        i = self.zipf.draw(r)
        c = self.convs[i]
        c["tokens"] += self._unique_text(self._blocks(4, 24))
        self._last_conv = i
        return list(c["tokens"])

    def _chats(self) -> Workload | None:
        if self.family == "mix":
            return self.parts[FAMILIES.index("multi-turn")]
        return self if self.family == "multi-turn" else None

    def save_conversations(self) -> list[dict]:
        """The multi-turn conversations so far (prompts and answers), for
        ``load_conversations`` in another process: a client whose next turn
        reaches another engine sends the whole history."""
        w = self._chats()
        return [] if w is None else [{"tokens": list(c["tokens"]), "turns_left": c["turns_left"]} for c in w.convs]

    def load_conversations(self, convs: list[dict]) -> None:
        w = self._chats()
        if w is None:
            return
        if len(convs) != len(w.convs):
            raise ValueError(f"conversations: {len(convs)} saved, this workload has {len(w.convs)}")
        w.convs = [{"tokens": list(c["tokens"]), "turns_left": int(c["turns_left"])} for c in convs]

    def feedback(self, output_token_ids: list[int]) -> None:
        if self._last is not None:
            self._last.feedback(output_token_ids)
            self._last = None
            return
        if self.family != "multi-turn" or self._last_conv is None:
            return
        c = self.convs[self._last_conv]
        c["tokens"] += output_token_ids
        c["turns_left"] -= 1
        if c["turns_left"] == 0:
            self.convs[self._last_conv] = self._new_conv()
        self._last_conv = None
