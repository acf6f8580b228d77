// SPDX-License-Identifier: MIT
//
// Size, mode and quoting helpers for config files and command lines.
// g++ 12's libstdc++ has no <format>, so messages are built by concatenation
// and numbers by snprintf.
#include "units.h"

#include <array>
#include <cstdio>
#include <limits>

namespace kv::detail {
namespace {

constexpr std::string_view kSizeForm =
    "expected a number with an optional K, M, G or T suffix (e.g. 512M, 16G)";

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
}

// Shift for a unit spelled in lower case, or -1 when it is not a unit.
int unit_shift(std::string_view u) {
    struct Unit {
        std::string_view a, b, c;
        int shift;
    };
    static constexpr std::array<Unit, 5> kUnits{{
        {"", "b", "b", 0},
        {"k", "kb", "kib", 10},
        {"m", "mb", "mib", 20},
        {"g", "gb", "gib", 30},
        {"t", "tb", "tib", 40},
    }};
    for (const Unit &x : kUnits)
        if (u == x.a || u == x.b || u == x.c) return x.shift;
    return -1;
}

// floor(0.DIGITS * 2^shift), exactly for any number of digits: each
// doubling of the decimal fraction carries out the next binary digit.
uint64_t fraction_bytes(std::string_view digits, int shift) {
    std::string d(digits);
    uint64_t v = 0;
    for (int b = 0; b < shift; b++) {
        int carry = 0;
        for (size_t k = d.size(); k-- > 0;) {
            const int x = (d[k] - '0') * 2 + carry;
            d[k] = char('0' + x % 10);
            carry = x / 10;
        }
        v = v << 1 | uint64_t(carry);
    }
    return v;
}

} // namespace

std::string quoted(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u >= 0x7f) {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

std::expected<uint64_t, std::string> parse_size(std::string_view s) {
    auto fail = [&](std::string_view why) {
        return std::unexpected("size " + quoted(s) + ": " + std::string(why));
    };
    size_t i = 0;
    if (!s.empty() && s[0] == '-')
        return fail("a size cannot be negative; " + std::string(kSizeForm));
    if (s.empty() || !is_digit(s[0])) return fail(kSizeForm);

    // Too many digits is the same "too large" as too large a product: keep
    // scanning so trailing garbage is still reported as garbage.
    uint64_t v = 0;
    bool overflow = false;
    constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
    for (; i < s.size() && is_digit(s[i]); i++) {
        const auto d = uint64_t(s[i] - '0');
        if (v > (kMax - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    // A fraction: '.' and at least one digit, rounded down to whole bytes.
    std::string_view fraction;
    if (i + 1 < s.size() && s[i] == '.' && is_digit(s[i + 1])) {
        const size_t from = ++i;
        while (i < s.size() && is_digit(s[i]))
            i++;
        fraction = s.substr(from, i - from);
    }
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t'))
        i++;

    std::string unit;
    for (; i < s.size(); i++)
        unit += lower(s[i]);
    const int shift = unit_shift(unit);
    if (shift < 0) return fail(kSizeForm);
    if (overflow || v > (kMax >> shift))
        return fail("too large; expected at most 18446744073709551615 bytes (16 EiB - 1)");
    // Below 2^shift, so (kMax >> shift << shift) + it still fits.
    return (v << shift) + fraction_bytes(fraction, shift);
}

std::string format_size(uint64_t bytes) {
    if (bytes < 1024) return std::to_string(bytes) + " B";
    static constexpr std::array<std::string_view, 6> kNames{"KiB", "MiB", "GiB",
                                                            "TiB", "PiB", "EiB"};
    // Integer arithmetic keeps every digit exact up to 16 EiB; rem * 10 stays
    // below 10 * 2^60 < 2^64. Rounding can carry into 1024.0, which moves the
    // value to the next unit ("1.0 MiB", not "1024.0 KiB").
    for (size_t k = 0; k < kNames.size(); k++) {
        const int shift = 10 * int(k + 1);
        const uint64_t unit = uint64_t(1) << shift;
        uint64_t whole = bytes >> shift;
        const uint64_t rem = bytes & (unit - 1);
        uint64_t tenths = (rem * 10 + unit / 2) >> shift;
        if (tenths == 10) {
            whole++;
            tenths = 0;
        }
        if (whole < 1024 || k + 1 == kNames.size())
            return std::to_string(whole) + "." + std::to_string(tenths) + " " +
                   std::string(kNames[k]);
    }
    return {}; // not reached: the EiB step always returns
}

std::expected<uint32_t, std::string> parse_mode(std::string_view s) {
    auto fail = [&](std::string_view why) {
        return std::unexpected("mode " + quoted(s) + ": " + std::string(why));
    };
    std::string_view digits = s;
    if (digits.size() >= 2 && digits[0] == '0' && (digits[1] == 'o' || digits[1] == 'O'))
        digits.remove_prefix(2);
    if (digits.empty()) return fail("expected octal digits such as 0660, 660 or 0o640");
    uint32_t v = 0;
    bool too_large = false;
    for (char c : digits) {
        if (c < '0' || c > '7') return fail("expected octal digits such as 0660, 660 or 0o640");
        // Stop accumulating once past the limit so a long string cannot wrap.
        if (!too_large) v = v * 8 + uint32_t(c - '0');
        if (v > 07777) too_large = true;
    }
    if (too_large)
        return fail("expected at most 07777 (permission, setuid, setgid and sticky bits)");
    return v;
}

} // namespace kv::detail
