// SPDX-License-Identifier: MIT
//
// Live bytes (kv_pool_live_bytes, accounting.cc): after aborts, reaps,
// evictions, pinned removes and processes killed at each point of a commit
// or a free, the figure equals what a scan of the entry table finds.
#include "detail.h"
#include "pool_fixture.h"

#include <gtest/gtest.h>
#include <kv/kv.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvtest {
namespace {

using kv::detail::AcctPoint;

class LiveBytesTest : public PoolTest {
  protected:
    uint64_t live() {
        uint64_t b = ~0ULL;
        EXPECT_EQ(kv_pool_live_bytes(pool_, &b), 0);
        return b;
    }
    // Blocks committed and not yet freed, counted from the entry table:
    // committed ones, and removed ones still pinned (their memory is held).
    uint64_t scanned() {
        const kv_usage u = usage();
        EXPECT_EQ(u.entries_reserved, 0u) << "scan taken with a reservation open";
        uint64_t dead_bytes = 0;
        const kv_entry *entries = reinterpret_cast<const kv_entry *>(
            reinterpret_cast<const uint8_t *>(kv_pool_header(pool_)) +
            kv_pool_header(pool_)->entry_off);
        for (uint32_t e = 0; e < kv_pool_header(pool_)->n_entries; e++) {
            const uint32_t st =
                kv::detail::Ctl::state(__atomic_load_n(&entries[e].ctl, __ATOMIC_ACQUIRE));
            if (st == KV_ENTRY_DEAD || st == KV_ENTRY_UNLINKED) dead_bytes += entries[e].length;
        }
        return u.bytes_committed + dead_bytes;
    }
    // committed - freed from the event counters: what kvpoold reported
    // as "used" before live bytes existed.
    uint64_t counters() {
        const kv_stats s = stats();
        return s.bytes_committed - s.bytes_freed;
    }

    // Fork a client that attaches, runs body, and is SIGKILLed wherever the
    // crash hook (if armed) stops it, or at the end; then reap it.
    template <typename F>
    void in_killed_child(AcctPoint at, bool armed, F body) {
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            static AcctPoint target;
            target = at;
            kv_pool *p = nullptr;
            if (kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0) != 0) _exit(3);
            if (armed)
                kv::detail::acct_crash_hook = [](AcctPoint now) {
                    if (now == target) raise(SIGKILL);
                };
            body(p);
            raise(SIGKILL);
            _exit(4);
        }
        int st = 0;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "child status " << st;
        ASSERT_EQ(kv_reap(pool_), 1);
    }
};

// After the reproduction (40 reserve+abort of 1 MiB in a 64 MiB
// pool holding 56 MiB made kvpoold report 16 MiB used; aborts counted as
// frees), at the largest block these 1 MiB slabs hold.
TEST_F(LiveBytesTest, AbortsLeaveLiveBytesAlone) {
    for (uint64_t i = 0; i < 100; i++)
        ASSERT_EQ(put(i, payload(512 * KiB - 4096, i)), 0);
    const uint64_t held = scanned();
    for (uint64_t i = 0; i < 40; i++) {
        kv_reservation r{};
        const kv_key k = key_of(1000 + i);
        ASSERT_EQ(kv_reserve(pool_, ns_, &k, 512 * KiB, nullptr, &r), 0);
        ASSERT_EQ(kv_abort(pool_, &r), 0);
    }
    EXPECT_EQ(scanned(), held);
    EXPECT_EQ(live(), held);
    EXPECT_EQ(counters(), held) << "an abort counted as freed bytes";
}

TEST_F(LiveBytesTest, FollowsRemovesEvictionsAndPins) {
    for (uint64_t i = 0; i < 200; i++)
        ASSERT_EQ(put(i, payload(16 * KiB + i, i)), 0);
    EXPECT_EQ(live(), scanned());
    kv_view v{};
    ASSERT_EQ(get(7, &v), 0);
    const kv_key k7 = key_of(7), k8 = key_of(8);
    ASSERT_EQ(kv_remove(pool_, ns_, &k7), 0);
    ASSERT_EQ(kv_remove(pool_, ns_, &k8), 0);
    EXPECT_EQ(live(), scanned()) << "a removed block still pinned is still held";
    ASSERT_EQ(kv_release(pool_, &v), 0);
    EXPECT_EQ(live(), scanned());
    ASSERT_GT(kv_evict_bytes(pool_, 1 * MiB), 0);
    EXPECT_EQ(live(), scanned());
    // Fill past capacity: puts evict to make room.
    for (uint64_t i = 1000; i < 1400; i++)
        ASSERT_EQ(put(i, payload(256 * KiB - 100, i)), 0);
    EXPECT_GT(stats().evictions, 0u);
    EXPECT_EQ(live(), scanned());
    EXPECT_EQ(counters(), scanned());
}

// A client that dies holding reservations: the reaper aborts them.
TEST_F(LiveBytesTest, ReapedReservationsAreNotFreedBytes) {
    ASSERT_EQ(put(1, payload(100 * KiB, 1)), 0);
    in_killed_child(AcctPoint::CommitDone, false, [](kv_pool *p) {
        uint32_t ns;
        uint64_t seed;
        kv_manifest m;
        kv_manifest_init(&m, "unit-test-model", 16);
        if (kv_ns_register(p, &m, &ns, &seed) != 0) _exit(5);
        for (uint64_t i = 0; i < 8; i++) {
            kv_reservation r{};
            const kv_key k = key_of(500 + i);
            if (kv_reserve(p, ns, &k, 512 * KiB, nullptr, &r) != 0) _exit(6);
        }
    });
    EXPECT_EQ(scanned(), 100 * KiB);
    EXPECT_EQ(live(), 100 * KiB);
    EXPECT_EQ(counters(), 100 * KiB) << "reaped reservations counted as freed bytes";
}

// A process killed at each point of a commit or a free leaves a record
// that its reaper decides from the entry.
class LiveBytesCrashTest : public LiveBytesTest, public ::testing::WithParamInterface<AcctPoint> {};

TEST_P(LiveBytesCrashTest, KilledMidOperation) {
    const AcctPoint at = GetParam();
    const bool freeing = at == AcctPoint::FreeWrittenDown || at == AcctPoint::FreeDone;
    ASSERT_EQ(put(1, payload(100 * KiB, 1)), 0);
    if (freeing) {
        ASSERT_EQ(put(2, payload(300 * KiB, 2)), 0);
    }
    const uint32_t ns = ns_;
    in_killed_child(at, true, [freeing, ns](kv_pool *p) {
        const kv_key k2 = key_of(2);
        if (freeing) {
            kv_remove(p, ns, &k2);
        } else {
            const std::vector<uint8_t> d = payload(200 * KiB, 2);
            kv_put(p, ns, &k2, d.data(), d.size(), nullptr);
        }
    });
    const bool k2_present = contains(2) == 1;
    // Killed before the CAS: nothing happened; after it: it did.
    const bool took_effect = at == AcctPoint::CommitDone || at == AcctPoint::FreeDone;
    // A remove killed before its block is freed leaves the entry FREEING,
    // unlinked: the key is gone either way and the reaper frees the block.
    EXPECT_EQ(k2_present, !freeing && took_effect);
    EXPECT_EQ(live(), scanned());
    EXPECT_EQ(live(), 100 * KiB + (!freeing && took_effect ? 200 * KiB : 0));
    expect_consistent();
}

std::string point_name(const ::testing::TestParamInfo<AcctPoint> &i) {
    static const char *const names[] = {"CommitWrittenDown", "CommitDone", "FreeWrittenDown",
                                        "FreeDone"};
    return names[int(i.param)];
}

INSTANTIATE_TEST_SUITE_P(EveryPoint, LiveBytesCrashTest,
                         ::testing::Values(AcctPoint::CommitWrittenDown, AcctPoint::CommitDone,
                                           AcctPoint::FreeWrittenDown, AcctPoint::FreeDone),
                         point_name);

} // namespace
} // namespace kvtest
