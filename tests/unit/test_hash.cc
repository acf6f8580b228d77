// SPDX-License-Identifier: MIT
//
// Chained block hashing: kv_hash_block and kv_hash_chain against a reference
// computed here with xxHash directly:
//   key(i) = XXH3-128(seed, key(i-1).lo LE || key(i-1).hi LE || tokens as u32 LE)
#include "pool_fixture.h"

#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <vector>
#include <xxhash.h>

namespace kvtest {
namespace {

void put_le64(std::vector<uint8_t> &b, uint64_t v) {
    for (int i = 0; i < 8; i++)
        b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_le32(std::vector<uint8_t> &b, uint32_t v) {
    for (int i = 0; i < 4; i++)
        b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

kv_key reference(uint64_t seed, kv_key prev, const uint32_t *tokens, size_t n) {
    std::vector<uint8_t> buf;
    put_le64(buf, prev.lo);
    put_le64(buf, prev.hi);
    for (size_t i = 0; i < n; i++)
        put_le32(buf, tokens[i]);
    XXH128_hash_t h = XXH3_128bits_withSeed(buf.data(), buf.size(), seed);
    return kv_key{h.low64, h.high64};
}

std::vector<uint32_t> tokens_of(size_t n, uint32_t salt) {
    std::vector<uint32_t> t(n);
    for (size_t i = 0; i < n; i++)
        t[i] = static_cast<uint32_t>(i * 2654435761u) ^ salt;
    return t;
}

::testing::AssertionResult same_key(const kv_key &a, const kv_key &b) {
    if (key_eq(a, b)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << std::hex << "{" << a.lo << "," << a.hi << "} != {" << b.lo << "," << b.hi << "}";
}

constexpr uint64_t kSeed = 0x0123456789abcdefULL;
constexpr kv_key kZero{0, 0};

TEST(HashBlock, IsDeterministic) {
    const auto t = tokens_of(16, 1);
    const kv_key a = kv_hash_block(kSeed, &kZero, t.data(), t.size());
    const kv_key b = kv_hash_block(kSeed, &kZero, t.data(), t.size());
    EXPECT_TRUE(same_key(a, b));
    EXPECT_NE(a.lo | a.hi, 0u);
}

TEST(HashBlock, MatchesTheReference) {
    const auto t = tokens_of(64, 7);
    for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{16}, size_t{64}}) {
        SCOPED_TRACE(n);
        EXPECT_TRUE(same_key(kv_hash_block(kSeed, &kZero, t.data(), n),
                             reference(kSeed, kZero, t.data(), n)));
        const kv_key prev{0x1111222233334444ULL, 0x5555666677778888ULL};
        EXPECT_TRUE(same_key(kv_hash_block(kSeed, &prev, t.data(), n),
                             reference(kSeed, prev, t.data(), n)));
        EXPECT_TRUE(
            same_key(kv_hash_block(0, &prev, t.data(), n), reference(0, prev, t.data(), n)));
    }
}

TEST(HashBlock, SeedPrevAndTokensAllMatter) {
    const auto t = tokens_of(16, 3);
    const kv_key base = kv_hash_block(kSeed, &kZero, t.data(), t.size());
    EXPECT_FALSE(key_eq(base, kv_hash_block(kSeed + 1, &kZero, t.data(), t.size())));
    const kv_key prev{1, 0};
    EXPECT_FALSE(key_eq(base, kv_hash_block(kSeed, &prev, t.data(), t.size())));
    auto t2 = t;
    t2[15] ^= 1;
    EXPECT_FALSE(key_eq(base, kv_hash_block(kSeed, &kZero, t2.data(), t2.size())));
    EXPECT_FALSE(key_eq(base, kv_hash_block(kSeed, &kZero, t.data(), t.size() - 1)));
}

TEST(HashChain, EqualsIteratedHashBlock) {
    constexpr uint32_t bt = 16;
    const auto t = tokens_of(10 * bt, 11);
    std::vector<kv_key> keys(10);
    ASSERT_EQ(kv_hash_chain(kSeed, t.data(), t.size(), bt, keys.data(), keys.size()), 10u);
    kv_key prev = kZero;
    for (size_t i = 0; i < 10; i++) {
        SCOPED_TRACE(i);
        const kv_key want = reference(kSeed, prev, t.data() + i * bt, bt);
        EXPECT_TRUE(same_key(keys[i], want));
        EXPECT_TRUE(same_key(keys[i], kv_hash_block(kSeed, &prev, t.data() + i * bt, bt)));
        prev = keys[i];
    }
}

TEST(HashChain, CountsFullBlocksOnly) {
    const auto t = tokens_of(1000, 5);
    std::vector<kv_key> keys(100);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 0, 16, keys.data(), keys.size()), 0u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 15, 16, keys.data(), keys.size()), 0u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 16, 16, keys.data(), keys.size()), 1u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 100, 16, keys.data(), keys.size()), 6u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 1000, 16, keys.data(), keys.size()), 62u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 1000, 1, keys.data(), keys.size()), 100u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 1000, 1000, keys.data(), keys.size()), 1u);
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), 999, 1000, keys.data(), keys.size()), 0u);
}

TEST(HashChain, CappedAtMaxKeysWithoutOverrun) {
    const auto t = tokens_of(160, 9);
    std::vector<kv_key> keys(5, kv_key{0xaaaa, 0xbbbb});
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), t.size(), 16, keys.data(), 3), 3u);
    EXPECT_TRUE(same_key(keys[3], kv_key{0xaaaa, 0xbbbb})) << "wrote past max_keys";
    EXPECT_TRUE(same_key(keys[4], kv_key{0xaaaa, 0xbbbb}));
    std::vector<kv_key> full(10);
    ASSERT_EQ(kv_hash_chain(kSeed, t.data(), t.size(), 16, full.data(), 10), 10u);
    for (size_t i = 0; i < 3; i++)
        EXPECT_TRUE(same_key(keys[i], full[i]));
    EXPECT_EQ(kv_hash_chain(kSeed, t.data(), t.size(), 16, keys.data(), 0), 0u);
}

TEST(HashChain, ChangingTokenZeroChangesEveryKey) {
    constexpr uint32_t bt = 16;
    const auto t = tokens_of(8 * bt, 2);
    auto t2 = t;
    t2[0] += 1;
    std::vector<kv_key> a(8), b(8);
    ASSERT_EQ(kv_hash_chain(kSeed, t.data(), t.size(), bt, a.data(), 8), 8u);
    ASSERT_EQ(kv_hash_chain(kSeed, t2.data(), t2.size(), bt, b.data(), 8), 8u);
    for (size_t i = 0; i < 8; i++)
        EXPECT_FALSE(key_eq(a[i], b[i])) << i;
}

TEST(HashChain, SharedPrefixGivesSharedKeys) {
    constexpr uint32_t bt = 16;
    const auto t = tokens_of(8 * bt, 4);
    auto t2 = t;
    t2[3 * bt + 5] ^= 0x80000000u; // diverge inside block 3
    std::vector<kv_key> a(8), b(8);
    ASSERT_EQ(kv_hash_chain(kSeed, t.data(), t.size(), bt, a.data(), 8), 8u);
    ASSERT_EQ(kv_hash_chain(kSeed, t2.data(), t2.size(), bt, b.data(), 8), 8u);
    for (size_t i = 0; i < 3; i++)
        EXPECT_TRUE(same_key(a[i], b[i])) << i;
    for (size_t i = 3; i < 8; i++)
        EXPECT_FALSE(key_eq(a[i], b[i])) << i;

    // A longer sequence with the same first blocks shares their keys too.
    auto longer = t;
    longer.resize(12 * bt, 77);
    std::vector<kv_key> c(12);
    ASSERT_EQ(kv_hash_chain(kSeed, longer.data(), longer.size(), bt, c.data(), 12), 12u);
    for (size_t i = 0; i < 8; i++)
        EXPECT_TRUE(same_key(a[i], c[i])) << i;
}

// The keys a namespace's seed gives are the ones match_prefix finds.
class HashPoolTest : public PoolTest {};

TEST_F(HashPoolTest, ChainKeysDriveMatchPrefix) {
    constexpr uint32_t bt = 16;
    const auto prompt = tokens_of(5 * bt + 3, 8);
    std::vector<kv_key> keys(8);
    const size_t n = kv_hash_chain(seed_, prompt.data(), prompt.size(), bt, keys.data(), 8);
    ASSERT_EQ(n, 5u);
    for (size_t i = 0; i < n; i++) {
        const auto d = payload(4096, i);
        ASSERT_EQ(kv_put(pool_, ns_, &keys[i], d.data(), d.size(), nullptr), 0);
    }
    // A prompt that shares the first two blocks reuses exactly two.
    auto other = prompt;
    other[2 * bt] ^= 1;
    std::vector<kv_key> okeys(8);
    ASSERT_EQ(kv_hash_chain(seed_, other.data(), other.size(), bt, okeys.data(), 8), 5u);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, okeys.data(), 5, 0, nullptr), 2);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys.data(), 5, 0, nullptr), 5);
}

} // namespace
} // namespace kvtest
