#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Checks that every C and C++ source is formatted as its .clang-format
# says (the top-level one for C++; uapi/, libkv/include/kv/ and tests/uapi/
# carry the kernel style of the C headers). CI runs it from run_all.sh.
# Usage: tests/check_format.sh [--fix]    (--fix rewrites the files)
set -euo pipefail
cd "$(dirname "$0")/.."

fmt=${CLANG_FORMAT:-clang-format-19}
if ! command -v "$fmt" >/dev/null; then
    echo "check_format: $fmt not found (apt-get install clang-format-19)" >&2
    exit 1
fi

mapfile -d '' files < <(find uapi libkv daemon tools tests fuzz python/src -type f \
    \( -name '*.c' -o -name '*.h' -o -name '*.cc' -o -name '*.hpp' -o -name '*.inc' \) -print0 | sort -z)

if [[ "${1:-}" == "--fix" ]]; then
    "$fmt" -i "${files[@]}"
    exit 0
fi
if ! "$fmt" --dry-run --Werror "${files[@]}"; then
    echo "check_format: the files above differ from .clang-format; run tests/check_format.sh --fix" >&2
    exit 1
fi
echo "check_format: ${#files[@]} files formatted as .clang-format says"
