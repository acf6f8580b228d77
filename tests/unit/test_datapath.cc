// SPDX-License-Identifier: MIT
//
// The data path: kv_put, kv_get, kv_release, kv_contains, kv_remove,
// kv_reserve / kv_commit / kv_abort, kv_view_verify, kv_match_prefix.
#include "pool_fixture.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <thread>
#include <vector>
#include <xxhash.h>

namespace kvtest {
namespace {

class DatapathTest : public PoolTest {};

TEST_F(DatapathTest, PutThenGet) {
    const auto data = payload(10000, 1);
    const kv_meta meta{.tokens = 16, .priority = 3, .user_tag = 0xfeedfacecafebeefULL};
    ASSERT_EQ(put(1, data, &meta), 0);
    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    EXPECT_TRUE(view_equals(v, data));
    EXPECT_EQ(v.length, 10000u);
    EXPECT_EQ(v.checksum, XXH3_64bits(data.data(), data.size()));
    EXPECT_EQ(v.meta.tokens, 16u);
    EXPECT_EQ(v.meta.priority, 3u);
    EXPECT_EQ(v.meta.user_tag, 0xfeedfacecafebeefULL);
    EXPECT_EQ(kv_view_verify(&v), 0);
    EXPECT_EQ(kv_release(pool_, &v), 0);
}

TEST_F(DatapathTest, NullMetaStoresZeroes) {
    const auto data = payload(4096, 2);
    ASSERT_EQ(put(1, data), 0);
    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    EXPECT_EQ(v.meta.tokens, 0u);
    EXPECT_EQ(v.meta.priority, 0u);
    EXPECT_EQ(v.meta.user_tag, 0u);
    EXPECT_EQ(kv_release(pool_, &v), 0);
}

TEST_F(DatapathTest, ManySizesRoundTrip) {
    const uint64_t slab = opts_.slab_size;
    const uint64_t sizes[] = {1, 7, 4095, 4096, 4097, 8192, 65535, 65536, 300000, slab - 1, slab};
    uint64_t i = 0;
    for (uint64_t len : sizes) {
        SCOPED_TRACE(len);
        const auto data = payload(len, 100 + i);
        ASSERT_EQ(put(100 + i, data), 0);
        kv_view v{};
        ASSERT_EQ(get(100 + i, &v), 0);
        EXPECT_TRUE(view_equals(v, data));
        EXPECT_EQ(v.checksum, XXH3_64bits(data.data(), data.size()));
        // Blocks are multiples of 4 KiB in a page-aligned data area.
        EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % 4096, 0u);
        EXPECT_EQ(kv_view_verify(&v), 0);
        EXPECT_EQ(kv_release(pool_, &v), 0);
        i++;
    }
    EXPECT_EQ(usage().entries_committed, std::size(sizes));
    expect_consistent();
}

TEST_F(DatapathTest, PutSameKeyDedups) {
    const auto first = payload(5000, 1);
    const auto second = payload(5000, 2);
    ASSERT_EQ(put(1, first), 0);
    EXPECT_EQ(put(1, second), KV_DEDUP);
    EXPECT_EQ(put(1, first), KV_DEDUP);
    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    EXPECT_TRUE(view_equals(v, first)) << "a deduplicated put must not overwrite";
    EXPECT_EQ(kv_release(pool_, &v), 0);
    EXPECT_EQ(usage().entries_committed, 1u);
}

TEST_F(DatapathTest, PutBadLengthIsEMSGSIZE) {
    const std::vector<uint8_t> big(opts_.slab_size + 1, 0x11);
    const kv_key k = key_of(1);
    EXPECT_EQ(kv_put(pool_, ns_, &k, big.data(), 0, nullptr), -EMSGSIZE);
    EXPECT_EQ(kv_put(pool_, ns_, &k, big.data(), big.size(), nullptr), -EMSGSIZE);
    EXPECT_EQ(kv_put(pool_, ns_, &k, big.data(), uint64_t{1} << 40, nullptr), -EMSGSIZE);
    kv_reservation r{};
    EXPECT_EQ(kv_reserve(pool_, ns_, &k, 0, nullptr, &r), -EMSGSIZE);
    EXPECT_EQ(kv_reserve(pool_, ns_, &k, big.size(), nullptr, &r), -EMSGSIZE);
    EXPECT_EQ(contains(1), 0);
    EXPECT_EQ(kv_put(pool_, ns_, &k, big.data(), opts_.slab_size, nullptr), 0);
}

TEST_F(DatapathTest, UnknownNamespaceIsENOENT) {
    const uint32_t bad = ns_ + 7;
    const auto data = payload(4096, 1);
    const kv_key k = key_of(1);
    EXPECT_EQ(kv_put(pool_, bad, &k, data.data(), data.size(), nullptr), -ENOENT);
    kv_reservation r{};
    EXPECT_EQ(kv_reserve(pool_, bad, &k, 4096, nullptr, &r), -ENOENT);
    kv_view v{};
    EXPECT_EQ(kv_get(pool_, bad, &k, &v), -ENOENT);
    EXPECT_EQ(kv_contains(pool_, bad, &k), 0);
    EXPECT_EQ(kv_remove(pool_, bad, &k), -ENOENT);
    EXPECT_EQ(kv_put(pool_, 0xffffffffu, &k, data.data(), data.size(), nullptr), -ENOENT);
    EXPECT_EQ(usage().entries_committed, 0u);
}

TEST_F(DatapathTest, GetAbsentIsENOENT) {
    kv_view v{};
    EXPECT_EQ(get(42, &v), -ENOENT);
    ASSERT_EQ(put(1, payload(100, 1)), 0);
    EXPECT_EQ(get(42, &v), -ENOENT);
    EXPECT_EQ(usage().pins, 0u);
}

TEST_F(DatapathTest, ReleaseTwiceIsEINVAL) {
    ASSERT_EQ(put(1, payload(100, 1)), 0);
    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    kv_view copy = v;
    EXPECT_EQ(kv_release(pool_, &v), 0);
    EXPECT_EQ(kv_release(pool_, &copy), -EINVAL);
    EXPECT_EQ(usage().pins, 0u);
    kv_view zero{};
    EXPECT_EQ(kv_release(pool_, &zero), -EINVAL);
}

TEST_F(DatapathTest, ReleaseFromAnotherClientIsEINVAL) {
    ASSERT_EQ(put(1, payload(100, 1)), 0);
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    EXPECT_EQ(kv_release(other, &v), -EINVAL);
    EXPECT_EQ(usage().pins, 1u);
    EXPECT_EQ(kv_release(pool_, &v), 0);
    EXPECT_EQ(usage().pins, 0u);
}

TEST_F(DatapathTest, MultiplePinsOfOneBlock) {
    const auto data = payload(9000, 1);
    ASSERT_EQ(put(1, data), 0);
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    kv_view a{}, b{}, c{};
    ASSERT_EQ(get(1, &a), 0);
    ASSERT_EQ(get(1, &b), 0);
    const kv_key k = key_of(1);
    ASSERT_EQ(kv_get(other, ns_, &k, &c), 0);
    EXPECT_EQ(a.data, b.data) << "one client, one mapping: the same block";
    EXPECT_TRUE(view_equals(a, data));
    EXPECT_TRUE(view_equals(c, data));
    kv_usage u = usage();
    EXPECT_EQ(u.pins, 3u);
    EXPECT_EQ(u.journal_pins, 3u);
    EXPECT_EQ(kv_release(pool_, &a), 0);
    EXPECT_EQ(kv_release(other, &c), 0);
    EXPECT_EQ(kv_release(pool_, &b), 0);
    EXPECT_EQ(usage().pins, 0u);
}

TEST_F(DatapathTest, Contains) {
    EXPECT_EQ(contains(1), 0);
    ASSERT_EQ(put(1, payload(100, 1)), 0);
    EXPECT_EQ(contains(1), 1);
    EXPECT_EQ(contains(2), 0);
    EXPECT_EQ(usage().pins, 0u) << "contains must not leave a pin";
}

TEST_F(DatapathTest, Remove) {
    const kv_key k = key_of(1);
    EXPECT_EQ(kv_remove(pool_, ns_, &k), -ENOENT);
    ASSERT_EQ(put(1, payload(70000, 1)), 0);
    const kv_usage before = usage();
    EXPECT_EQ(kv_remove(pool_, ns_, &k), 0);
    EXPECT_EQ(kv_remove(pool_, ns_, &k), -ENOENT);
    EXPECT_EQ(contains(1), 0);
    kv_view v{};
    EXPECT_EQ(get(1, &v), -ENOENT);
    const kv_usage after = usage();
    EXPECT_EQ(after.entries_committed, 0u);
    EXPECT_EQ(after.entries_dead, 0u);
    EXPECT_EQ(after.blocks_used + 1, before.blocks_used);
    expect_consistent();
    // The key can be stored again, as new.
    const auto again = payload(3000, 2);
    EXPECT_EQ(put(1, again), 0);
    ASSERT_EQ(get(1, &v), 0);
    EXPECT_TRUE(view_equals(v, again));
    EXPECT_EQ(kv_release(pool_, &v), 0);
}

TEST_F(DatapathTest, RemovedWhilePinnedStaysValidUntilRelease) {
    const auto data = payload(MiB / 2, 1);
    ASSERT_EQ(put(1, data), 0);
    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    const kv_key k = key_of(1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
    EXPECT_EQ(contains(1), 0);
    kv_view v2{};
    EXPECT_EQ(get(1, &v2), -ENOENT);
    EXPECT_EQ(usage().entries_dead, 1u);
    EXPECT_TRUE(view_equals(v, data));

    // Storing the key again and filling the pool several times over must not
    // reuse the pinned block.
    const auto replacement = payload(MiB / 2, 2);
    EXPECT_EQ(put(1, replacement), 0);
    const uint64_t rounds = 3 * opts_.size / MiB;
    for (uint64_t i = 0; i < rounds; i++)
        ASSERT_EQ(put(1000 + i, payload(MiB, i)), 0) << i;
    EXPECT_TRUE(view_equals(v, data)) << "pinned memory changed after remove";
    EXPECT_EQ(kv_view_verify(&v), 0);
    EXPECT_EQ(kv_release(pool_, &v), 0);
    EXPECT_EQ(usage().entries_dead, 0u);
    expect_consistent();
}

TEST_F(DatapathTest, ReserveCommitWritesInPlace) {
    const auto data = payload(12000, 1);
    const kv_meta meta{.tokens = 32, .priority = 1, .user_tag = 77};
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, data.size(), &meta, &r), 0);
    ASSERT_NE(r.data, nullptr);
    EXPECT_EQ(r.length, data.size());
    std::memcpy(r.data, data.data(), data.size());

    // Invisible until committed.
    kv_view v{};
    EXPECT_EQ(kv_get(pool_, ns_, &k, &v), -ENOENT);
    EXPECT_EQ(kv_contains(pool_, ns_, &k), 0);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, &k, 1, 0, nullptr), 0);
    EXPECT_EQ(usage().entries_reserved, 1u);

    ASSERT_EQ(kv_commit(pool_, &r, 0, 0), 0);
    ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
    EXPECT_TRUE(view_equals(v, data));
    EXPECT_EQ(v.data, r.data) << "the block is the reserved memory";
    EXPECT_EQ(v.checksum, XXH3_64bits(data.data(), data.size()));
    EXPECT_EQ(v.meta.tokens, 32u);
    EXPECT_EQ(v.meta.priority, 1u);
    EXPECT_EQ(v.meta.user_tag, 77u);
    EXPECT_EQ(kv_view_verify(&v), 0);
    EXPECT_EQ(kv_release(pool_, &v), 0);
    kv_usage u = usage();
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.entries_committed, 1u);
    EXPECT_EQ(u.bytes_committed, data.size());
}

TEST_F(DatapathTest, ReservedKeyIsBusyForOtherClients) {
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, 4096, nullptr, &r), 0);
    kv_reservation r2{};
    EXPECT_EQ(kv_reserve(other, ns_, &k, 4096, nullptr, &r2), -EBUSY);
    const auto data = payload(4096, 1);
    EXPECT_EQ(kv_put(other, ns_, &k, data.data(), data.size(), nullptr), -EBUSY);
    EXPECT_EQ(kv_remove(other, ns_, &k), -EBUSY);
    EXPECT_EQ(kv_remove(pool_, ns_, &k), -EBUSY);
    std::memcpy(r.data, data.data(), data.size());
    ASSERT_EQ(kv_commit(pool_, &r, 0, 0), 0);

    // After the commit the other client deduplicates and *out is untouched.
    kv_reservation sentinel;
    std::memset(&sentinel, 0xab, sizeof sentinel);
    kv_reservation r3 = sentinel;
    EXPECT_EQ(kv_reserve(other, ns_, &k, 4096, nullptr, &r3), KV_DEDUP);
    EXPECT_EQ(std::memcmp(&r3, &sentinel, sizeof r3), 0);
    EXPECT_EQ(kv_reserve(pool_, ns_, &k, 4096, nullptr, &r3), KV_DEDUP);
    EXPECT_EQ(kv_put(other, ns_, &k, data.data(), data.size(), nullptr), KV_DEDUP);
}

TEST_F(DatapathTest, AbortFreesTheReservation) {
    const kv_usage base = usage();
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, 64 * KiB, nullptr, &r), 0);
    std::memset(r.data, 0x33, 64 * KiB);
    EXPECT_EQ(usage().blocks_used, base.blocks_used + 1);
    ASSERT_EQ(kv_abort(pool_, &r), 0);
    EXPECT_EQ(kv_contains(pool_, ns_, &k), 0);
    kv_view v{};
    EXPECT_EQ(kv_get(pool_, ns_, &k, &v), -ENOENT);
    kv_usage u = usage();
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.blocks_used, base.blocks_used);
    EXPECT_EQ(u.entries_free, base.entries_free);
    expect_consistent();

    // The key and the space are reusable, by another client too.
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    const auto data = payload(64 * KiB, 9);
    ASSERT_EQ(kv_reserve(other, ns_, &k, data.size(), nullptr, &r), 0);
    std::memcpy(r.data, data.data(), data.size());
    ASSERT_EQ(kv_commit(other, &r, 0, 0), 0);
    ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
    EXPECT_TRUE(view_equals(v, data));
    EXPECT_EQ(kv_release(pool_, &v), 0);
}

TEST_F(DatapathTest, ManyReserveAbortCyclesDoNotLeak) {
    const kv_usage base = usage();
    for (int i = 0; i < 2000; i++) {
        const kv_key k = key_of(static_cast<uint64_t>(i));
        kv_reservation r{};
        ASSERT_EQ(kv_reserve(pool_, ns_, &k, 256 * KiB, nullptr, &r), 0) << i;
        ASSERT_EQ(kv_abort(pool_, &r), 0) << i;
    }
    kv_usage u = usage();
    EXPECT_EQ(u.blocks_used, base.blocks_used);
    EXPECT_EQ(u.entries_free, base.entries_free);
    EXPECT_EQ(stats().evictions, 0u) << "aborted space must be reused without evicting";
    expect_consistent();
}

TEST_F(DatapathTest, CommitWithProvidedChecksum) {
    const auto data = payload(20000, 1);
    const uint64_t sum = XXH3_64bits(data.data(), data.size());
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, data.size(), nullptr, &r), 0);
    std::memcpy(r.data, data.data(), data.size());
    ASSERT_EQ(kv_commit(pool_, &r, KV_COMMIT_F_CHECKSUM, sum), 0);
    kv_view v{};
    ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
    EXPECT_EQ(v.checksum, sum);
    EXPECT_EQ(kv_view_verify(&v), 0);
    EXPECT_EQ(kv_release(pool_, &v), 0);
}

// The stored checksum is what the writer vouched for; a byte that differs
// from what it hashed is caught by kv_view_verify.
TEST_F(DatapathTest, VerifyDetectsCorruptData) {
    const auto data = payload(20000, 1);
    const uint64_t sum = XXH3_64bits(data.data(), data.size());
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, data.size(), nullptr, &r), 0);
    std::memcpy(r.data, data.data(), data.size());
    static_cast<uint8_t *>(r.data)[12345] ^= 0x01; // flipped after hashing
    ASSERT_EQ(kv_commit(pool_, &r, KV_COMMIT_F_CHECKSUM, sum), 0);
    kv_view v{};
    ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
    EXPECT_EQ(v.checksum, sum);
    EXPECT_EQ(kv_view_verify(&v), -EBADMSG);
    EXPECT_EQ(kv_release(pool_, &v), 0);

    // Same with a wrong checksum over intact data.
    const kv_key k2 = key_of(2);
    ASSERT_EQ(kv_reserve(pool_, ns_, &k2, data.size(), nullptr, &r), 0);
    std::memcpy(r.data, data.data(), data.size());
    ASSERT_EQ(kv_commit(pool_, &r, KV_COMMIT_F_CHECKSUM, sum ^ 0x8000), 0);
    ASSERT_EQ(kv_get(pool_, ns_, &k2, &v), 0);
    EXPECT_EQ(kv_view_verify(&v), -EBADMSG);
    EXPECT_EQ(kv_release(pool_, &v), 0);
}

TEST_F(DatapathTest, CommitAndAbortRejectDeadReservations) {
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, 4096, nullptr, &r), 0);
    kv_reservation copy = r;
    ASSERT_EQ(kv_commit(pool_, &r, 0, 0), 0);
    EXPECT_EQ(kv_commit(pool_, &copy, 0, 0), -EINVAL);
    copy = r;
    EXPECT_EQ(kv_abort(pool_, &copy), -EINVAL);
    EXPECT_EQ(contains(1), 1) << "abort of a committed reservation must not remove it";

    const kv_key k2 = key_of(2);
    ASSERT_EQ(kv_reserve(pool_, ns_, &k2, 4096, nullptr, &r), 0);
    copy = r;
    ASSERT_EQ(kv_abort(pool_, &r), 0);
    EXPECT_EQ(kv_abort(pool_, &copy), -EINVAL);
    copy = r;
    EXPECT_EQ(kv_commit(pool_, &copy, 0, 0), -EINVAL);
    EXPECT_EQ(contains(2), 0);

    kv_reservation zero{};
    EXPECT_EQ(kv_commit(pool_, &zero, 0, 0), -EINVAL);
    EXPECT_EQ(kv_abort(pool_, &zero), -EINVAL);
    expect_consistent();
}

TEST_F(DatapathTest, OtherClientCannotCommitOrAbortMyReservation) {
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    const kv_key k = key_of(1);
    kv_reservation r{};
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, 4096, nullptr, &r), 0);
    kv_reservation copy = r;
    EXPECT_EQ(kv_commit(other, &copy, 0, 0), -EINVAL);
    copy = r;
    EXPECT_EQ(kv_abort(other, &copy), -EINVAL);
    EXPECT_EQ(contains(1), 0);
    EXPECT_EQ(kv_commit(pool_, &r, 0, 0), 0);
    EXPECT_EQ(contains(1), 1);
}

// ---- match_prefix ----------------------------------------------------------

class MatchPrefixTest : public PoolTest {
  protected:
    static constexpr size_t kN = 6;
    void SetUp() override {
        PoolTest::SetUp();
        if (HasFatalFailure()) return;
        std::vector<uint32_t> tokens(kN * 16);
        for (size_t i = 0; i < tokens.size(); i++)
            tokens[i] = static_cast<uint32_t>(i * 31 + 7);
        ASSERT_EQ(kv_hash_chain(seed_, tokens.data(), tokens.size(), 16, keys_, kN), kN);
        for (size_t i = 0; i < kN; i++)
            data_.push_back(payload(8192 + i, i));
    }
    int put_block(size_t i) {
        return kv_put(pool_, ns_, &keys_[i], data_[i].data(), data_[i].size(), nullptr);
    }
    kv_key keys_[kN];
    std::vector<std::vector<uint8_t>> data_;
};

TEST_F(MatchPrefixTest, FullChain) {
    for (size_t i = 0; i < kN; i++)
        ASSERT_EQ(put_block(i), 0);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, kN, 0, nullptr), static_cast<int>(kN));
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, 3, 0, nullptr), 3);
    EXPECT_EQ(usage().pins, 0u);
}

TEST_F(MatchPrefixTest, StopsAtTheFirstGap) {
    for (size_t i = 0; i < kN; i++) {
        if (i != 3) {
            ASSERT_EQ(put_block(i), 0);
        }
    }
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, kN, 0, nullptr), 3);
    // Missing head: nothing matches even though later blocks exist.
    EXPECT_EQ(kv_remove(pool_, ns_, &keys_[0]), 0);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, kN, 0, nullptr), 0);
}

TEST_F(MatchPrefixTest, EmptyInputAndEmptyPool) {
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, kN, 0, nullptr), 0);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, 0, 0, nullptr), 0);
    kv_view views[kN];
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, 0, KV_MATCH_F_PIN, views), 0);
    ASSERT_EQ(put_block(0), 0);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, 0, 0, nullptr), 0);
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys_, 0, KV_MATCH_F_PIN, views), 0);
    EXPECT_EQ(usage().pins, 0u);
}

TEST_F(MatchPrefixTest, PinReturnsValidViews) {
    for (size_t i = 0; i < kN; i++) {
        if (i != 4) {
            ASSERT_EQ(put_block(i), 0);
        }
    }
    kv_view views[kN] = {};
    ASSERT_EQ(kv_match_prefix(pool_, ns_, keys_, kN, KV_MATCH_F_PIN, views), 4);
    EXPECT_EQ(usage().pins, 4u);
    EXPECT_EQ(usage().journal_pins, 4u);
    // Pinned views survive removal.
    EXPECT_EQ(kv_remove(pool_, ns_, &keys_[1]), 0);
    for (size_t i = 0; i < 4; i++) {
        SCOPED_TRACE(i);
        EXPECT_TRUE(view_equals(views[i], data_[i]));
        EXPECT_EQ(kv_view_verify(&views[i]), 0);
        EXPECT_EQ(kv_release(pool_, &views[i]), 0);
    }
    EXPECT_EQ(usage().pins, 0u);
    expect_consistent();
}

TEST_F(MatchPrefixTest, OtherNamespaceDoesNotMatch) {
    for (size_t i = 0; i < kN; i++)
        ASSERT_EQ(put_block(i), 0);
    kv_manifest m;
    kv_manifest_init(&m, "another-model", 16);
    uint32_t other_ns = 0;
    ASSERT_EQ(kv_ns_register(pool_, &m, &other_ns, nullptr), 0);
    ASSERT_NE(other_ns, ns_);
    EXPECT_EQ(kv_match_prefix(pool_, other_ns, keys_, kN, 0, nullptr), 0);
}

// ---- Many threads on one client ------------------------------------------------

TEST_F(DatapathTest, ThreadsShareOneClient) {
    constexpr int kThreads = 4;
    constexpr uint64_t kPerThread = 300;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
        threads.emplace_back([&, t] {
            for (uint64_t i = 0; i < kPerThread; i++) {
                // Half the keys are shared between threads, to race on dedup.
                const uint64_t id = (i % 2) ? i : (uint64_t(t) << 32) | i;
                const auto data = payload(4096 + (id % 7) * 1000, id);
                const kv_key k = key_of(id);
                int rc = kv_put(pool_, ns_, &k, data.data(), data.size(), nullptr);
                if (rc != 0 && rc != KV_DEDUP && rc != -EBUSY) failures++;
                kv_view v{};
                rc = kv_get(pool_, ns_, &k, &v);
                if (rc == 0) {
                    if (!view_equals(v, data)) failures++;
                    if (kv_release(pool_, &v) != 0) failures++;
                } else if (rc != -ENOENT) {
                    failures++;
                }
            }
        });
    }
    for (auto &th : threads)
        th.join();
    EXPECT_EQ(failures.load(), 0);
    kv_usage u = usage();
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    expect_consistent();
}

} // namespace
} // namespace kvtest
