// SPDX-License-Identifier: MIT
//
// Accounting: kv_pool_stats counters and kv_pool_usage's exact scan.
#include "pool_fixture.h"

#include <cerrno>
#include <gtest/gtest.h>
#include <kv/kv.h>

namespace kvtest {
namespace {

class StatsTest : public PoolTest {};

TEST_F(StatsTest, FreshPoolCountsNothing) {
    kv_stats s = stats();
    EXPECT_EQ(s.gets, 0u);
    EXPECT_EQ(s.hits, 0u);
    EXPECT_EQ(s.misses, 0u);
    EXPECT_EQ(s.puts, 0u);
    EXPECT_EQ(s.dedups, 0u);
    EXPECT_EQ(s.evictions, 0u);
    EXPECT_EQ(s.removes, 0u);
    EXPECT_EQ(s.bytes_committed, 0u);
    EXPECT_EQ(s.bytes_freed, 0u);
    EXPECT_EQ(s.reaps, 0u);

    kv_usage u = usage();
    EXPECT_EQ(u.entries_committed, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.entries_dead, 0u);
    EXPECT_EQ(u.entries_free, kv_pool_header(pool_)->n_entries);
    EXPECT_EQ(u.bytes_committed, 0u);
    EXPECT_EQ(u.blocks_used, 0u);
    EXPECT_EQ(u.block_bytes_used, 0u);
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.journal_pins, 0u);
    EXPECT_EQ(u.slabs_free + u.slabs_active, kv_pool_header(pool_)->n_slabs);
    EXPECT_EQ(u.orphan_blocks, 0u);
    EXPECT_EQ(u.bad_links, 0u);
    EXPECT_EQ(u.unreachable, 0u);
}

TEST_F(StatsTest, CountersFollowOperations) {
    const kv_stats s0 = stats();
    ASSERT_EQ(put(1, payload(1000, 1)), 0);
    ASSERT_EQ(put(2, payload(2000, 2)), 0);
    ASSERT_EQ(put(3, payload(3000, 3)), 0);
    ASSERT_EQ(put(1, payload(1000, 1)), KV_DEDUP);
    kv_reservation r{};
    const kv_key k4 = key_of(4);
    ASSERT_EQ(kv_reserve(pool_, ns_, &k4, 4000, nullptr, &r), 0);
    ASSERT_EQ(kv_commit(pool_, &r, 0, 0), 0);
    ASSERT_EQ(kv_reserve(pool_, ns_, &k4, 4000, nullptr, &r), KV_DEDUP);

    kv_view v{};
    ASSERT_EQ(get(1, &v), 0);
    ASSERT_EQ(kv_release(pool_, &v), 0);
    ASSERT_EQ(get(2, &v), 0);
    ASSERT_EQ(kv_release(pool_, &v), 0);
    ASSERT_EQ(get(99, &v), -ENOENT);

    const kv_key k3 = key_of(3);
    ASSERT_EQ(kv_remove(pool_, ns_, &k3), 0);

    const kv_stats s = stats();
    EXPECT_EQ(s.puts - s0.puts, 4u);
    EXPECT_EQ(s.dedups - s0.dedups, 2u);
    EXPECT_EQ(s.gets - s0.gets, 3u);
    EXPECT_EQ(s.hits - s0.hits, 2u);
    EXPECT_EQ(s.misses - s0.misses, 1u);
    EXPECT_EQ(s.removes - s0.removes, 1u);
    EXPECT_EQ(s.bytes_committed - s0.bytes_committed, 10000u);
    EXPECT_EQ(s.bytes_freed - s0.bytes_freed, 3000u);
    EXPECT_EQ(s.evictions - s0.evictions, 0u);
    EXPECT_EQ(s.gets, s.hits + s.misses);
}

TEST_F(StatsTest, CountersSumOverClients) {
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    ASSERT_EQ(put(1, payload(1000, 1)), 0);
    const auto data = payload(1000, 2);
    const kv_key k2 = key_of(2);
    ASSERT_EQ(kv_put(other, ns_, &k2, data.data(), data.size(), nullptr), 0);
    kv_view v{};
    ASSERT_EQ(kv_get(other, ns_, &k2, &v), 0);
    ASSERT_EQ(kv_release(other, &v), 0);

    kv_stats a{}, b{};
    ASSERT_EQ(kv_pool_stats(pool_, &a), 0);
    ASSERT_EQ(kv_pool_stats(other, &b), 0);
    EXPECT_EQ(a.puts, 2u);
    EXPECT_EQ(a.hits, 1u);
    EXPECT_EQ(a.clients, 2u);
    EXPECT_EQ(a.puts, b.puts) << "both clients see pool totals";
    EXPECT_EQ(a.hits, b.hits);

    // Totals survive a client's departure: counters stay in its slot.
    ASSERT_EQ(detach_other(other), 0);
    EXPECT_EQ(stats().puts, 2u);
    EXPECT_EQ(stats().hits, 1u);
    EXPECT_EQ(stats().clients, 1u);
}

TEST_F(StatsTest, UsageOnAQuiescentPool) {
    const uint64_t n = 50;
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t len = 1000 + i * 997;
        ASSERT_EQ(put(i, payload(len, i)), 0);
        bytes += len;
    }
    // Two removed, one of them still pinned; two pinned (one twice); one reserved.
    kv_view pinned_dead{}, p1{}, p2{}, p3{};
    ASSERT_EQ(get(0, &pinned_dead), 0);
    const kv_key k0 = key_of(0), k1 = key_of(1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k0), 0);
    ASSERT_EQ(kv_remove(pool_, ns_, &k1), 0);
    bytes -= 1000 + 1000 + 997;
    ASSERT_EQ(get(10, &p1), 0);
    ASSERT_EQ(get(10, &p2), 0);
    ASSERT_EQ(get(11, &p3), 0);
    kv_reservation r{};
    const kv_key kr = key_of(1000);
    ASSERT_EQ(kv_reserve(pool_, ns_, &kr, 5000, nullptr, &r), 0);

    kv_usage u = usage();
    EXPECT_EQ(u.entries_committed, n - 2);
    EXPECT_EQ(u.entries_reserved, 1u);
    EXPECT_EQ(u.entries_dead, 1u);
    EXPECT_EQ(u.bytes_committed, bytes);
    EXPECT_EQ(u.entries_committed + u.entries_reserved + u.entries_dead + u.entries_free,
              kv_pool_header(pool_)->n_entries);
    EXPECT_EQ(u.blocks_used, u.entries_committed + u.entries_reserved + u.entries_dead);
    EXPECT_GE(u.block_bytes_used, u.bytes_committed);
    EXPECT_EQ(u.block_bytes_used % 4096, 0u);
    EXPECT_EQ(u.pins, 4u);
    EXPECT_EQ(u.journal_pins, 4u);
    EXPECT_GE(u.slabs_active, 1u);
    EXPECT_EQ(u.slabs_free + u.slabs_active, kv_pool_header(pool_)->n_slabs);
    EXPECT_EQ(u.orphan_blocks, 0u);
    EXPECT_EQ(u.bad_links, 0u);
    EXPECT_EQ(u.unreachable, 0u);

    EXPECT_EQ(kv_release(pool_, &pinned_dead), 0);
    EXPECT_EQ(kv_release(pool_, &p1), 0);
    EXPECT_EQ(kv_release(pool_, &p2), 0);
    EXPECT_EQ(kv_release(pool_, &p3), 0);
    EXPECT_EQ(kv_abort(pool_, &r), 0);
    u = usage();
    EXPECT_EQ(u.entries_dead, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.journal_pins, 0u);
    EXPECT_EQ(u.blocks_used, n - 2);
    expect_consistent();
}

} // namespace
} // namespace kvtest
