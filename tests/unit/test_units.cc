// SPDX-License-Identifier: MIT
//
// kv::detail size and mode parsing (libkv/units.h): every unit spelling, the
// uint64 boundary, rejected forms and their messages, and format_size's
// rounding at unit changes.
#include "units.h"

#include <cstdint>
#include <gtest/gtest.h>
#include <limits>
#include <string>

namespace kvtest {
namespace {

using kv::detail::format_size;
using kv::detail::parse_mode;
using kv::detail::parse_size;
using kv::detail::quoted;

constexpr uint64_t KiB = 1ULL << 10, MiB = 1ULL << 20, GiB = 1ULL << 30, TiB = 1ULL << 40;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

uint64_t size_ok(const char *s) {
    auto v = parse_size(s);
    EXPECT_TRUE(v.has_value()) << s << ": " << v.error();
    return v.value_or(~0ULL);
}

std::string size_err(const char *s) {
    auto v = parse_size(s);
    EXPECT_FALSE(v.has_value()) << s << " parsed as " << v.value_or(0);
    return v.has_value() ? std::string() : v.error();
}

TEST(ParseSize, PlainBytes) {
    EXPECT_EQ(size_ok("0"), 0u);
    EXPECT_EQ(size_ok("1048576"), MiB);
    EXPECT_EQ(size_ok("4096B"), 4096u);
    EXPECT_EQ(size_ok("4096b"), 4096u);
    EXPECT_EQ(size_ok("007"), 7u);
}

TEST(ParseSize, EverySuffixSpelling) {
    struct Case {
        const char *unit;
        uint64_t mult;
    };
    const Case cases[] = {
        {"K", KiB},   {"k", KiB},  {"KB", KiB},  {"kb", KiB},  {"KiB", KiB}, {"kib", KiB},
        {"KIB", KiB}, {"M", MiB},  {"m", MiB},   {"MB", MiB},  {"MiB", MiB}, {"mib", MiB},
        {"G", GiB},   {"g", GiB},  {"GB", GiB},  {"GiB", GiB}, {"gib", GiB}, {"T", TiB},
        {"t", TiB},   {"TB", TiB}, {"TiB", TiB}, {"tib", TiB},
    };
    for (const Case &c : cases) {
        std::string s = "3";
        s += c.unit;
        EXPECT_EQ(size_ok(s.c_str()), 3 * c.mult) << s;
    }
}

TEST(ParseSize, Examples) {
    EXPECT_EQ(size_ok("512K"), 512 * KiB);
    EXPECT_EQ(size_ok("512M"), 512 * MiB);
    EXPECT_EQ(size_ok("16G"), 16 * GiB);
    EXPECT_EQ(size_ok("1T"), TiB);
    EXPECT_EQ(size_ok("512MiB"), 512 * MiB);
    EXPECT_EQ(size_ok("16GiB"), 16 * GiB);
    EXPECT_EQ(size_ok("512k"), 512 * KiB);
    EXPECT_EQ(size_ok("2m"), 2 * MiB);
}

TEST(ParseSize, SpaceBeforeUnit) {
    EXPECT_EQ(size_ok("16 GiB"), 16 * GiB);
    EXPECT_EQ(size_ok("4\tK"), 4 * KiB);
    EXPECT_EQ(size_ok("100 B"), 100u);
}

TEST(ParseSize, Uint64Boundary) {
    EXPECT_EQ(size_ok("18446744073709551615"), kMax);
    EXPECT_NE(size_err("18446744073709551616").find("too large"), std::string::npos);
    EXPECT_NE(size_err("99999999999999999999999").find("too large"), std::string::npos);
    // Largest multiple of each unit that fits, and the next one.
    EXPECT_EQ(size_ok("18014398509481983K"), (kMax >> 10) << 10);
    EXPECT_NE(size_err("18014398509481984K").find("too large"), std::string::npos);
    EXPECT_EQ(size_ok("17179869183G"), (kMax >> 30) << 30);
    EXPECT_NE(size_err("17179869184G").find("too large"), std::string::npos);
    EXPECT_EQ(size_ok("16777215T"), (kMax >> 40) << 40);
    EXPECT_NE(size_err("16777216T").find("too large"), std::string::npos);
}

TEST(ParseSize, RejectsGarbage) {
    for (const char *s : {"", " ", "M", "G16", "12Q", "16GG", "16Gi", "16GiBs", "16 G B", " 16G",
                          "16G ", "+16G", "0x10", "1e9", "16P", "abc", "1_000"}) {
        const std::string e = size_err(s);
        EXPECT_NE(e.find("size " + quoted(s)), std::string::npos) << e;
        EXPECT_NE(e.find("expected a number with an optional K, M, G or T suffix"),
                  std::string::npos)
            << e;
    }
    EXPECT_EQ(size_err("12Q"), "size \"12Q\": expected a number with an optional K, M, G or T "
                               "suffix (e.g. 512M, 16G)");
}

TEST(ParseSize, RejectsNegative) {
    const std::string e = size_err("-1");
    EXPECT_NE(e.find("size \"-1\""), std::string::npos) << e;
    EXPECT_NE(e.find("negative"), std::string::npos) << e;
    EXPECT_FALSE(parse_size("-16G").has_value());
}

// A fraction is taken, rounded down to whole bytes, exactly.
TEST(ParseSize, FractionsRoundDownToBytes) {
    EXPECT_EQ(size_ok("1.5G"), GiB + GiB / 2);
    EXPECT_EQ(size_ok("0.5M"), MiB / 2);
    EXPECT_EQ(size_ok("2.0T"), 2 * TiB);
    EXPECT_EQ(size_ok("1.25 GiB"), GiB + GiB / 4);
    EXPECT_EQ(size_ok("0.3K"), 307u);    // 307.2
    EXPECT_EQ(size_ok("0.999K"), 1022u); // 1022.976
    EXPECT_EQ(size_ok("2.9"), 2u);
    EXPECT_EQ(size_ok("2.9B"), 2u);
    EXPECT_EQ(size_ok("0.0000001G"), 107u); // 107.37...
    // More digits than a double holds: still exact. 1 - 2^-40 of a TiB is
    // 1 TiB - 1 byte; a hair less rounds down one more.
    EXPECT_EQ(size_ok("0.999999999999090505298227071762084960937500T"), TiB - 1);
    EXPECT_EQ(size_ok("0.999999999999090505298227071762084960937499T"), TiB - 2);
    // The largest value of each unit plus a fraction still fits.
    EXPECT_EQ(size_ok("17179869183.999999999999G"), (kMax >> 30 << 30) + (GiB - 1));
    EXPECT_NE(size_err("17179869184.5G").find("too large"), std::string::npos);
}

// The forms around a fraction that stay garbage, with the garbage message.
TEST(ParseSize, RejectsMalformedFractions) {
    for (const char *s : {"1.G", ".5G", "1,5G", "1.5.5G", "1..5G", "1.5e3K", "1. 5G", "-1.5G"}) {
        const std::string e = size_err(s);
        EXPECT_NE(e.find("size " + quoted(s)), std::string::npos) << e;
        EXPECT_NE(e.find("expected a number with an optional K, M, G or T suffix"),
                  std::string::npos)
            << e;
    }
}

TEST(ParseSize, QuotesOddBytes) {
    const std::string e = size_err("1\n\"G");
    EXPECT_NE(e.find("\"1\\x0a\\\"G\""), std::string::npos) << e;
}

TEST(FormatSize, Bytes) {
    EXPECT_EQ(format_size(0), "0 B");
    EXPECT_EQ(format_size(1), "1 B");
    EXPECT_EQ(format_size(1023), "1023 B");
}

TEST(FormatSize, OneDecimalBinaryUnits) {
    EXPECT_EQ(format_size(KiB), "1.0 KiB");
    EXPECT_EQ(format_size(4 * KiB), "4.0 KiB");
    EXPECT_EQ(format_size(1536), "1.5 KiB");
    EXPECT_EQ(format_size(512 * MiB), "512.0 MiB");
    EXPECT_EQ(format_size(16 * GiB), "16.0 GiB");
    EXPECT_EQ(format_size(3 * TiB / 2), "1.5 TiB");
    EXPECT_EQ(format_size(1024 * TiB), "1.0 PiB");
    EXPECT_EQ(format_size(1ULL << 60), "1.0 EiB");
    EXPECT_EQ(format_size(kMax), "16.0 EiB");
}

TEST(FormatSize, RoundingCarriesIntoNextUnit) {
    // 1064 B = 1.039 KiB rounds down; 1076 B = 1.051 KiB rounds up.
    EXPECT_EQ(format_size(1064), "1.0 KiB");
    EXPECT_EQ(format_size(1076), "1.1 KiB");
    EXPECT_EQ(format_size(KiB + 1023), "2.0 KiB");
    EXPECT_EQ(format_size(MiB - 1), "1.0 MiB");
    EXPECT_EQ(format_size(GiB - 1), "1.0 GiB");
    EXPECT_EQ(format_size(1023 * MiB + 1), "1023.0 MiB");
}

TEST(FormatSize, RoundTripsWholeUnits) {
    for (const char *s : {"4K", "512M", "16G", "1T"}) {
        const uint64_t v = size_ok(s);
        const std::string f = format_size(v);
        const std::string back = f.substr(0, f.find('.')) + f.substr(f.find(' '));
        EXPECT_EQ(size_ok(back.c_str()), v) << f;
    }
}

TEST(ParseMode, Accepts) {
    EXPECT_EQ(parse_mode("0660").value_or(~0u), 0660u);
    EXPECT_EQ(parse_mode("660").value_or(~0u), 0660u);
    EXPECT_EQ(parse_mode("0o640").value_or(~0u), 0640u);
    EXPECT_EQ(parse_mode("0O640").value_or(~0u), 0640u);
    EXPECT_EQ(parse_mode("0").value_or(~0u), 0u);
    EXPECT_EQ(parse_mode("7777").value_or(~0u), 07777u);
    EXPECT_EQ(parse_mode("07777").value_or(~0u), 07777u);
    EXPECT_EQ(parse_mode("0000000644").value_or(~0u), 0644u);
}

TEST(ParseMode, Rejects) {
    for (const char *s : {"", "0o", "0x1a4", "0999", "8", "rw-rw----", "-660", "66 0", "0660 "}) {
        auto m = parse_mode(s);
        ASSERT_FALSE(m.has_value()) << s;
        EXPECT_NE(m.error().find("mode " + quoted(s)), std::string::npos) << m.error();
        EXPECT_NE(m.error().find("expected octal digits"), std::string::npos) << m.error();
    }
    for (const char *s : {"10000", "17777", "0o77777", "777777777777777777777777"}) {
        auto m = parse_mode(s);
        ASSERT_FALSE(m.has_value()) << s;
        EXPECT_NE(m.error().find("at most 07777"), std::string::npos) << m.error();
    }
}

} // namespace
} // namespace kvtest
