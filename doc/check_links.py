#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check the links of the documentation: every relative Markdown link
[text](path#anchor) of README.md, CONTRIBUTING.md, doc/**.md and the other
Markdown files of the tree names a file or directory that exists and, with
an anchor, a heading of that file (GitHub's anchor rules); every repository
path quoted in backticks (`tests/run_all.sh`) exists.

Usage: check_links.py SOURCE_ROOT. Prints each broken link as
FILE:LINE: message; exit status 1 when there is one, else 0.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
FENCE = re.compile(r"^\s*```")
# Top-level directories a backticked path must start with to be checked.
TOP = ("doc/", "libkv/", "daemon/", "tools/", "tests/", "uapi/", "fuzz/", "python/",
       "systemd/", ".ci/")
# Placeholders and generated or run-time paths in backticks, not files.
PLACEHOLDER = re.compile(r"[<>*{}$@]|NAME|POOL|FILE|PATH|DIR\b|\.\.\.")


def anchors(md: Path) -> set[str]:
    """The anchors GitHub derives from a Markdown file's headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in md.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


# Made at run time, not in the tree.
RUNTIME = ("fuzz/artifacts/",)


def built(root: Path, rel: str) -> bool:
    """Paths of a build or a run: build/tools/kvsim, a program named after its
    source (`tools/kvsim` for tools/kvsim.cc), fuzz/artifacts/."""
    return (rel.startswith(("build/", "build-")) or rel in RUNTIME
            or any((root / (rel + ext)).exists() for ext in (".cc", ".c")))


def check(root: Path, md: Path) -> list[str]:
    errors = []
    in_fence = False
    for no, line in enumerate(md.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        where = f"{md.relative_to(root)}:{no}"
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:, man:
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                errors.append(f"{where}: link to {target}: no such file")
            elif anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
                errors.append(f"{where}: link to {target}: no heading with that anchor")
        for quoted in CODE.findall(line):
            rel = quoted.split(":")[0].rstrip(".,;")
            if not rel.startswith(TOP) or PLACEHOLDER.search(rel) or built(root, rel):
                continue
            if not (root / rel).exists():
                errors.append(f"{where}: `{quoted}`: no such file in the tree")
    return errors


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    files = [root / "README.md", root / "CONTRIBUTING.md", root / "uapi" / "PROTOCOL.md",
             root / "tests" / "BAD_INPUT.md", root / "tools" / "refengine" / "README.md"]
    files += sorted((root / "doc").rglob("*.md"))
    errors = []
    for md in files:
        if md.exists():
            errors += check(root, md)
    for e in errors:
        print(e)
    print(f"{len(files)} files checked, {len(errors)} broken links")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
