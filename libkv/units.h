// SPDX-License-Identifier: MIT
//
// Sizes and file modes as people write them in config files and on command
// lines. Internal to kvpool (kvpoold and kvctl link it through libkv's
// objects); not part of the public API and not exported by libkv.so.
//
// None of these functions print or throw; errors come back as a message that
// names the text seen and the form expected, ready to be prefixed with where
// the text came from (a file and key, a command-line option).
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace kv::detail {

// Parse a byte count: decimal digits, optionally a fraction ('.' and
// digits), then optionally spaces or tabs, then optionally a unit. Units are binary multiples and
// case-insensitive:
//   (none) or B           1
//   K, KB, KiB            1024
//   M, MB, MiB            1024^2
//   G, GB, GiB            1024^3
//   T, TB, TiB            1024^4
// "KB" means 1024 here, as it does in free(1) and in most RAM-sizing advice:
// a pool is sized in memory pages, never in decimal units.
// A fraction is rounded down to whole bytes, exactly whatever its length:
// "1.5G" is 1610612736, "0.3K" is 307 (307.2 bytes), "2.5" is 2.
// Rejected: empty text, signs, a fraction without digits on both sides of
// the '.' (".5G", "1.G") or with a ',' ("1,5G"), exponents, trailing text,
// and values past UINT64_MAX bytes.
std::expected<uint64_t, std::string> parse_size(std::string_view s);

// bytes as "0 B", "512 B", "4.0 KiB", "512.0 MiB", "16.0 GiB": whole bytes
// below 1 KiB, else one decimal (rounded half up) in the largest binary unit
// that keeps the number below 1024, up to EiB.
std::string format_size(uint64_t bytes);

// Parse a file mode written in octal: "0660", "660", "0o640" (or "0O640").
// At most 07777 (permission bits plus setuid, setgid and sticky).
std::expected<uint32_t, std::string> parse_mode(std::string_view s);

// s in double quotes for an error message, with '"', '\\' and bytes outside
// printable ASCII escaped (\", \\, \xNN), so a message stays one readable
// line whatever a config file or command line held.
std::string quoted(std::string_view s);

} // namespace kv::detail
