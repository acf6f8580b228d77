// SPDX-License-Identifier: MIT
//
// Eviction policies on a real pool (region.h KV_EVICT_*, PROTOCOL.md
// section 10): for each policy a sequence whose exact victim order is known.
// The pools have a 64-entry table (avg_block_size 1 MiB), which every
// sampled eviction examines whole (it probes up to twice its sample size),
// so the choice is exact and the order deterministic; once the candidate
// pool is well stocked a top-up samples less, which matters only where the
// whole table is committed (PutIntoAFullEntryTableEvictsByThePolicy). Also: time to
// live, pinned blocks under any policy, kv_evict_bytes' accuracy, the
// policy's validation at create and its report in the header.
#include "pool_fixture.h"

#include <cerrno>
#include <chrono>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <thread>
#include <vector>

namespace kvtest {
namespace {

constexpr uint64_t kLen = 4096;

class PolicyTest : public PoolTest {
  protected:
    uint32_t policy_ = KV_EVICT_LRU;
    void customize(kv_create_opts &o) override {
        o.evict_policy = policy_;
        o.avg_block_size = 1 * MiB; // 64 entries: sampled whole
    }
    void SetUp() override {} // each test picks its policy first: start(policy)

    void start(uint32_t policy) {
        policy_ = policy;
        PoolTest::SetUp();
        ASSERT_EQ(kv_pool_header(pool_)->evict_policy, policy);
        ASSERT_LE(kv_pool_header(pool_)->n_entries, 64u);
    }

    int put_ex(uint64_t i, const kv_put_opts &o) {
        kv_key k = key_of(i);
        std::vector<uint8_t> d = payload(kLen, i);
        return kv_put_ex(pool_, ns_, &k, d.data(), d.size(), &o);
    }
    int put_child(uint64_t i, uint64_t parent) {
        kv_put_opts o{};
        o.struct_size = sizeof o;
        o.flags = KV_PUT_F_PARENT;
        o.parent = key_of(parent);
        return put_ex(i, o);
    }
    void touch(uint64_t i) {
        kv_view v{};
        ASSERT_EQ(get(i, &v), 0) << "block " << i;
        ASSERT_EQ(kv_release(pool_, &v), 0);
        // Ranks are CPU ticks; the get path skips a re-stamp within ~0.2 us.
        std::this_thread::sleep_for(std::chrono::microseconds(5));
    }
    // Evict one block at a time (count times, default: all of ids) and
    // return which of ids went, in order.
    std::vector<uint64_t> victims(const std::vector<uint64_t> &ids, size_t count = 0) {
        std::vector<uint64_t> order;
        for (size_t n = 0; n < (count ? count : ids.size()); n++) {
            int64_t got = kv_evict_bytes(pool_, 1);
            EXPECT_EQ(got, int64_t(kLen)) << "eviction " << n;
            if (got <= 0) break;
            for (uint64_t i : ids)
                if (contains(i) == 0 && std::find(order.begin(), order.end(), i) == order.end())
                    order.push_back(i);
            EXPECT_EQ(order.size(), n + 1)
                << "eviction " << n << " removed no (or more than one) block";
        }
        return order;
    }
    void put_all(const std::vector<uint64_t> &ids) {
        for (uint64_t i : ids) {
            ASSERT_EQ(put(i, payload(kLen, i)), 0) << i;
            std::this_thread::sleep_for(std::chrono::microseconds(5));
        }
    }
};

using V = std::vector<uint64_t>;

TEST_F(PolicyTest, LruEvictsLeastRecentlyUsed) {
    start(KV_EVICT_LRU);
    put_all({0, 1, 2, 3, 4, 5, 6, 7});
    touch(4);
    touch(0);
    touch(2);
    EXPECT_EQ(victims({0, 1, 2, 3, 4, 5, 6, 7}), (V{1, 3, 5, 6, 7, 4, 0, 2}));
    expect_consistent();
}

TEST_F(PolicyTest, FifoIgnoresReads) {
    start(KV_EVICT_FIFO);
    put_all({0, 1, 2, 3, 4, 5});
    touch(0);
    touch(1);
    touch(0);
    EXPECT_EQ(victims({0, 1, 2, 3, 4, 5}), (V{0, 1, 2, 3, 4, 5}));
}

TEST_F(PolicyTest, LfuEvictsLeastFrequentlyUsed) {
    start(KV_EVICT_LFU);
    put_all({0, 1, 2, 3, 4});
    // Reads: 0 x4, 1 x0, 2 x2, 3 x1, 4 x3.
    for (auto [id, n] : {std::pair{0, 4}, {2, 2}, {3, 1}, {4, 3}})
        for (int r = 0; r < n; r++)
            touch(uint64_t(id));
    EXPECT_EQ(victims({0, 1, 2, 3, 4}), (V{1, 3, 2, 4, 0}));
}

// Dynamic ageing: each victim's count becomes the floor new blocks start
// from, so a block that was hot long ago is eventually worth less than a
// block read once recently.
TEST_F(PolicyTest, LfuAgesOldHotBlocks) {
    start(KV_EVICT_LFU);
    put_all({0});
    for (int r = 0; r < 3; r++)
        touch(0); // count 4
    for (uint64_t k = 1; k <= 3; k++) {
        put_all({100 + k}); // starts at floor + 1 = k
        EXPECT_EQ(victims({0, 100 + k}, 1), (V{100 + k})) << "round " << k;
    }
    EXPECT_EQ(kv_pool_header(pool_)->evict_policy, uint32_t(KV_EVICT_LFU));
    put_all({104}); // starts at 4, ties with block 0
    touch(104);     // 5: read once, recently
    EXPECT_EQ(victims({0, 104}), (V{0, 104})) << "the old hot block did not fade";
}

TEST_F(PolicyTest, PriorityLowestFirstLruAmongEquals) {
    start(KV_EVICT_PRIORITY);
    const uint32_t prio[] = {3, 1, 2, 1, 3, 2};
    for (uint64_t i = 0; i < 6; i++) {
        kv_meta m{};
        m.priority = prio[i];
        ASSERT_EQ(put(i, payload(kLen, i), &m), 0);
        std::this_thread::sleep_for(std::chrono::microseconds(5));
    }
    touch(3);
    touch(1);
    touch(0);
    EXPECT_EQ(victims({0, 1, 2, 3, 4, 5}), (V{3, 1, 2, 5, 4, 0}));
}

// Chains A0 -> A1 -> A2 and B0 -> B1, A read more recently: tails first,
// LRU among tails, so a parent goes only after its children.
TEST_F(PolicyTest, PrefixEvictsChainTailsFirst) {
    start(KV_EVICT_PREFIX);
    put_all({10});
    ASSERT_EQ(put_child(11, 10), 0);
    ASSERT_EQ(put_child(12, 11), 0);
    put_all({20});
    ASSERT_EQ(put_child(21, 20), 0);
    touch(10);
    touch(11);
    touch(12);
    EXPECT_EQ(victims({10, 11, 12, 20, 21}), (V{21, 20, 12, 11, 10}));
    expect_consistent();
}

// The same sequence under LRU evicts the roots first, which makes every
// later block of their chains useless.
TEST_F(PolicyTest, LruEvictsChainRootsFirst) {
    start(KV_EVICT_LRU);
    put_all({10});
    ASSERT_EQ(put_child(11, 10), 0);
    ASSERT_EQ(put_child(12, 11), 0);
    put_all({20});
    ASSERT_EQ(put_child(21, 20), 0);
    touch(10);
    touch(11);
    touch(12);
    EXPECT_EQ(victims({10, 11, 12, 20, 21}), (V{20, 21, 10, 11, 12}));
}

// A shared parent S1 with two children X and Y: S1 becomes a tail only once
// both are gone; removing a child (not only evicting it) uncounts it.
TEST_F(PolicyTest, PrefixSharedParentWaitsForEveryChild) {
    start(KV_EVICT_PREFIX);
    put_all({0});
    ASSERT_EQ(put_child(1, 0), 0);
    ASSERT_EQ(put_child(2, 1), 0);
    ASSERT_EQ(put_child(3, 1), 0);
    touch(0);
    touch(1);
    touch(3);
    touch(2);
    kv_key k3 = key_of(3);
    ASSERT_EQ(kv_remove(pool_, ns_, &k3), 0);
    EXPECT_EQ(victims({0, 1, 2}), (V{2, 1, 0}));
}

// Inline eviction (a put into a full pool) makes the same choice.
TEST_F(PolicyTest, InlineEvictionUsesThePolicy) {
    policy_ = KV_EVICT_PREFIX;
    opts_ = small_opts();
    path_ = unique_pool_path("inline");
    kv_create_opts o = small_opts(8 * MiB, 1 * MiB);
    o.evict_policy = KV_EVICT_PREFIX;
    o.avg_block_size = 1 * MiB;
    char msg[256] = "";
    ASSERT_EQ(kv_pool_create(path_.c_str(), &o, msg, sizeof msg), 0) << msg;
    created_ = true;
    ASSERT_EQ(kv_pool_attach(path_.c_str(), 0, &pool_, msg, sizeof msg), 0) << msg;
    kv_manifest m;
    kv_manifest_init(&m, "unit-test-model", 16);
    ASSERT_EQ(kv_ns_register(pool_, &m, &ns_, &seed_), 0);
    const uint64_t n_slabs = kv_pool_header(pool_)->n_slabs;
    ASSERT_GE(n_slabs, 3u);
    const uint64_t len = 1 * MiB;
    // Chain 0 -> 1 -> ... -> n-1 fills the pool; 0 is read last (most recent).
    for (uint64_t i = 0; i < n_slabs; i++) {
        kv_key k = key_of(i);
        std::vector<uint8_t> d = payload(len, i);
        kv_put_opts po{};
        po.struct_size = sizeof po;
        if (i) {
            po.flags = KV_PUT_F_PARENT;
            po.parent = key_of(i - 1);
        }
        ASSERT_EQ(kv_put_ex(pool_, ns_, &k, d.data(), d.size(), &po), 0) << i;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(5));
    touch(0);
    EXPECT_EQ(stats().evictions, 0u);
    ASSERT_EQ(put(1000, payload(len, 1000)), 0);
    EXPECT_EQ(stats().evictions, 1u);
    EXPECT_EQ(contains(n_slabs - 1), 0)
        << "the chain's tail should have gone, not its most recent root";
    for (uint64_t i = 0; i + 1 < n_slabs; i++)
        EXPECT_EQ(contains(i), 1) << i;
}

// A pool whose entry table fills before its data area (blocks smaller than
// avg_block_size: here 4 KiB blocks and 64 entries). A put into the full
// table evicts the policy's victim, exactly one per put, and takes its entry
// (store.cc, claim_with_eviction); a pinned block stays, also once the puts
// scan only a few entries (from the second evicting put in a row on);
// an entry freed by this process's kv_remove is taken by its next put,
// which then evicts nothing. FIFO, because its top-up sample (32, probing
// up to 64 entries) covers this table whole even when every entry is
// committed, so the order is exact; LRU's top-up of 8 is approximate there.
TEST_F(PolicyTest, PutIntoAFullEntryTableEvictsByThePolicy) {
    start(KV_EVICT_FIFO);
    const uint64_t n = kv_pool_header(pool_)->n_entries;
    ASSERT_GE(n, 16u);
    std::vector<uint64_t> ids(n);
    for (uint64_t i = 0; i < n; i++)
        ids[i] = i;
    put_all(ids);
    ASSERT_EQ(stats().evictions, 0u);
    kv_view pinned{};
    ASSERT_EQ(get(2, &pinned), 0);
    // Insertion order, less the pinned block 2, then the new blocks.
    std::vector<uint64_t> order;
    for (uint64_t i = 0; i < n; i++)
        if (i != 2) order.push_back(i);
    const uint64_t puts = n + 8;
    for (uint64_t j = 0; j < puts; j++)
        order.push_back(1000 + j);
    for (uint64_t j = 0; j < puts; j++) {
        ASSERT_EQ(put(1000 + j, payload(kLen, 1000 + j)), 0) << "put " << j;
        ASSERT_EQ(stats().evictions, j + 1) << "put " << j << " evicted no block, or more than one";
        EXPECT_EQ(contains(order[j]), 0)
            << "put " << j << ": block " << order[j] << " is the oldest";
        EXPECT_EQ(contains(order[j + 1]), 1)
            << "put " << j << " evicted block " << order[j + 1] << " too";
    }
    EXPECT_EQ(contains(2), 1) << "a pinned block was evicted";
    EXPECT_TRUE(view_equals(pinned, payload(kLen, 2)));
    EXPECT_EQ(kv_release(pool_, &pinned), 0);
    // A remove frees an entry: the next put takes it and evicts nothing.
    kv_key k = key_of(1000 + puts - 1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
    ASSERT_EQ(put(5000, payload(kLen, 5000)), 0);
    EXPECT_EQ(stats().evictions, puts) << "a put evicted although a remove had freed an entry";
    expect_consistent();
}

// ---- Time to live ------------------------------------------------------------

TEST_F(PolicyTest, ExpiredBlocksAreNotFoundAndGoFirst) {
    start(KV_EVICT_LRU);
    put_all({1, 2});
    kv_put_opts o{};
    o.struct_size = sizeof o;
    // Long enough that a stall of the test (ASan, a loaded 2-core VM) does
    // not expire a block between its put and the check that it is there.
    o.ttl_ms = 1000;
    ASSERT_EQ(put_ex(3, o), 0);
    ASSERT_EQ(put_ex(4, o), 0);
    kv_view v{};
    ASSERT_EQ(get(3, &v), 0) << "not expired yet";
    touch(4);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    EXPECT_EQ(contains(4), 0);
    kv_view v2{};
    EXPECT_EQ(get(4, &v2), -ENOENT);
    kv_key keys[2] = {key_of(4), key_of(1)};
    EXPECT_EQ(kv_match_prefix(pool_, ns_, keys, 2, 0, nullptr), 0);
    // 4 is the most recently used and still goes first; 3 is pinned: never.
    EXPECT_EQ(victims({1, 2, 4}), (V{4, 1, 2}));
    EXPECT_TRUE(view_equals(v, payload(kLen, 3))) << "a view pinned before expiry stays valid";
    EXPECT_EQ(kv_release(pool_, &v), 0);
    // A put of an expired key replaces it.
    ASSERT_EQ(put_ex(3, o), 0) << "put over an expired block must store, not dedup";
    ASSERT_EQ(get(3, &v), 0);
    EXPECT_EQ(kv_release(pool_, &v), 0);
    EXPECT_EQ(put_ex(3, o), KV_DEDUP) << "unexpired: dedup as usual";
    expect_consistent();
}

TEST_F(PolicyTest, PutOptsValidation) {
    start(KV_EVICT_PREFIX);
    kv_put_opts o{};
    o.struct_size = sizeof o;
    o.flags = 1U << 7;
    EXPECT_EQ(put_ex(1, o), -EINVAL) << "unknown flag";
    o.flags = 0;
    o.n_token_ids = 1; // and no ids
    EXPECT_EQ(put_ex(1, o), -EINVAL) << "token ids without a pointer";
    o.n_token_ids = 0;
    o.struct_size = 4;
    EXPECT_EQ(put_ex(1, o), -EINVAL) << "struct_size too small";
    o.struct_size = 24; // an older, shorter struct: meta only
    o.meta.priority = 9;
    EXPECT_EQ(put_ex(1, o), 0);
    EXPECT_EQ(put_child(2, 999), 0) << "an absent parent makes a root";
    kv_key k = key_of(5);
    std::vector<uint8_t> d = payload(kLen, 5);
    EXPECT_EQ(kv_put_ex(pool_, ns_, &k, d.data(), d.size(), nullptr), 0) << "opts may be NULL";
}

// ---- Every policy ---------------------------------------------------------------

class EveryPolicyTest : public PolicyTest, public ::testing::WithParamInterface<uint32_t> {};

// Pinned blocks survive any amount of pressure, inline and explicit.
TEST_P(EveryPolicyTest, PinnedBlocksSurvivePressure) {
    start(GetParam());
    const uint64_t len = 64 * KiB;
    std::vector<kv_view> pinned(8);
    for (uint64_t i = 0; i < pinned.size(); i++) {
        ASSERT_EQ(put(i, payload(len, i)), 0);
        ASSERT_EQ(get(i, &pinned[i]), 0);
    }
    const uint64_t n = 3 * stats().capacity / len;
    for (uint64_t i = 0; i < n; i++) {
        kv_put_opts o{};
        o.struct_size = sizeof o;
        o.flags = i % 4 ? KV_PUT_F_PARENT : 0;
        o.parent = key_of(100 + i - 1);
        o.meta.priority = uint32_t(i % 3);
        kv_key k = key_of(100 + i);
        std::vector<uint8_t> d = payload(len, 100 + i);
        ASSERT_EQ(kv_put_ex(pool_, ns_, &k, d.data(), d.size(), &o), 0) << i;
        kv_view v{};
        if (i % 7 == 0 && get(100 + i / 2, &v) == 0) {
            EXPECT_EQ(kv_release(pool_, &v), 0);
        }
    }
    EXPECT_GT(stats().evictions, 0u);
    EXPECT_GT(kv_evict_bytes(pool_, uint64_t{1} << 40), 0);
    kv_usage u = usage();
    EXPECT_EQ(u.entries_committed, pinned.size()) << "only the pinned blocks are left";
    for (uint64_t i = 0; i < pinned.size(); i++) {
        EXPECT_TRUE(view_equals(pinned[i], payload(len, i))) << i;
        EXPECT_EQ(kv_view_verify(&pinned[i]), 0);
        EXPECT_EQ(kv_release(pool_, &pinned[i]), 0);
    }
    expect_consistent();
}

// kv_evict_bytes(N) frees at least N and less than N plus one block.
TEST_P(EveryPolicyTest, EvictBytesIsAccurateToOneBlock) {
    start(GetParam());
    const uint64_t len = 64 * KiB;
    for (uint64_t i = 0; i < 100; i++)
        ASSERT_EQ(put(i, payload(len, i)), 0);
    for (uint64_t want : {uint64_t{1}, len, 10 * len + 1, 33 * len - 5}) {
        uint64_t before = usage().bytes_committed;
        int64_t got = kv_evict_bytes(pool_, want);
        ASSERT_GT(got, 0);
        EXPECT_GE(uint64_t(got), want);
        EXPECT_LT(uint64_t(got), want + len);
        EXPECT_EQ(before - usage().bytes_committed, uint64_t(got));
    }
}

INSTANTIATE_TEST_SUITE_P(Policies, EveryPolicyTest,
                         ::testing::Values(KV_EVICT_CLOCK, KV_EVICT_LRU, KV_EVICT_LFU,
                                           KV_EVICT_FIFO, KV_EVICT_PRIORITY, KV_EVICT_PREFIX),
                         [](const auto &info) {
                             return std::string(kv_evict_policy_name(info.param));
                         });

TEST(PolicyNames, RoundTripAndRejectUnknown) {
    for (uint32_t p = 0; p <= KV_EVICT_MAX; p++)
        EXPECT_EQ(kv_evict_policy_parse(kv_evict_policy_name(p)), int(p));
    EXPECT_EQ(kv_evict_policy_name(KV_EVICT_MAX + 1), nullptr);
    EXPECT_EQ(kv_evict_policy_parse("random"), -EINVAL);
    EXPECT_EQ(kv_evict_policy_parse(nullptr), -EINVAL);
}

TEST(PolicyCreate, UnknownPolicyIsRefusedWithAMessage) {
    kv_create_opts o = small_opts();
    o.evict_policy = 42;
    char msg[256] = "";
    std::string path = unique_pool_path("badpolicy");
    EXPECT_EQ(kv_pool_create(path.c_str(), &o, msg, sizeof msg), -EINVAL);
    EXPECT_TRUE(mentions_any(msg, {"evict_policy"})) << msg;
    EXPECT_NE(std::string(msg).find("42"), std::string::npos) << msg;
    EXPECT_FALSE(path_exists(path));
}

TEST(PolicyCreate, OldOptsStructGetsClock) {
    kv_create_opts o = small_opts();
    o.struct_size = offsetof(kv_create_opts, evict_policy); // a v1 caller
    o.evict_policy = 77;                                    // past its struct: not read
    std::string path = unique_pool_path("oldopts");
    char msg[256] = "";
    ASSERT_EQ(kv_pool_create(path.c_str(), &o, msg, sizeof msg), 0) << msg;
    kv_pool *p = nullptr;
    ASSERT_EQ(kv_pool_attach(path.c_str(), 0, &p, msg, sizeof msg), 0) << msg;
    EXPECT_EQ(kv_pool_header(p)->evict_policy, uint32_t(KV_EVICT_CLOCK));
    EXPECT_EQ(kv_pool_header(p)->abi_minor, KV_ABI_MINOR);
    EXPECT_TRUE(kv_pool_header(p)->compat_features & KV_COMPAT_F_EVICT_POLICY);
    EXPECT_EQ(kv_pool_detach(p), 0);
    EXPECT_EQ(kv_pool_destroy(path.c_str()), 0);
}

} // namespace
} // namespace kvtest
