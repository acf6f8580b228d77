#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The README's C and C++ examples, compiled and run exactly as written
# (each ```c and ```cpp block is a whole program), against this build's
# libkv. Both use /dev/shm/kvpool-example: run twice, the second run
# must find the first run's blocks; the file is removed at exit.
# Usage: readme_examples.sh README.md SOURCE_ROOT LIBKV_SO [SANITIZE_FLAGS]
set -euo pipefail
readme=$1 src=$2 lib=$3 san=${4:-}
libdir=$(dirname "$lib")
work=$(mktemp -d)
pool=/dev/shm/kvpool-example
[[ -e $pool ]] && { echo "readme_examples: $pool exists; refusing to touch it" >&2; exit 1; }
trap 'rm -rf "$work"; rm -f "$pool"' EXIT

extract() { # language, output file: the first block of that language
    awk -v lang="$1" '$0 == "```" lang {f = 1; next} f && $0 == "```" {exit} f' "$readme" >"$2"
    [[ -s $2 ]] || { echo "readme_examples: no \`\`\`$1 block in $readme" >&2; exit 1; }
}
extract c "$work/example.c"
extract cpp "$work/example.cc"

flags=(-I"$src/libkv/include" -I"$src/uapi" -Wall -Wextra -Werror -L"$libdir" -Wl,-rpath,"$libdir" -lkv)
[[ -n $san ]] && flags+=(-fsanitize="$san")
cc -std=c11 "$work/example.c" "${flags[@]}" -o "$work/c_example"
c++ -std=c++23 "$work/example.cc" "${flags[@]}" -o "$work/cxx_example"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
out1=$("$work/c_example")
out2=$("$work/c_example")
echo "C example, first run: $out1; second run: $out2"
[[ $out1 == "0 of 4 blocks reused" && $out2 == "4 of 4 blocks reused" ]] ||
    { echo "readme_examples: the C example did not reuse its blocks on the second run" >&2; exit 1; }
rm -f "$pool"
"$work/cxx_example"
out=$("$work/cxx_example")
echo "C++ example, second run: $out"
[[ $out == "hit: 32768 bytes" ]] ||
    { echo "readme_examples: the C++ example did not find its block on the second run" >&2; exit 1; }
echo "1 passed, 0 failed"
