// SPDX-License-Identifier: MIT
//
// Correctness checks for the paths the benchmarks drove faster:
//  - copy_hash (copy_hash.cc): the one-pass copy + XXH3-64 equals libxxhash's
//    XXH3_64bits for every length and alignment, for each vector width this
//    CPU has, copies exactly len bytes, and the data path stores it;
//  - reserve (store.cc, room.cc): a key found only at the insert gives its
//    entry and block back, and a duplicate put into a full pool evicts
//    nothing;
//  - home slabs (allocator.cc): clients start slabs of their own while the
//    pool has FREE ones, keep to them, adopt a departed client's, and still
//    share every slab when none is FREE.
#include "detail.h"
#include "pool_fixture.h"

#include <algorithm>
#include <thread>
#include <vector>
#include <xxhash.h>

namespace {

using namespace kvtest;

std::vector<unsigned> widths() {
    std::vector<unsigned> w;
    for (unsigned x : {16U, 32U, 64U})
        if (x <= kv::detail::copy_hash_width()) w.push_back(x);
    return w;
}

TEST(CopyHash, EqualsXXH3ForEveryLengthAlignmentAndWidth) {
    constexpr size_t kMax = 5000, kPad = 64;
    std::vector<uint8_t> src = payload(kMax + 2 * kPad, 1);
    std::vector<uint8_t> dst(kMax + 2 * kPad);
    for (unsigned w : widths()) {
        for (size_t len = 0; len <= kMax; len++) {
            for (size_t so : {size_t{0}, size_t{1}, size_t{7}, size_t{63}}) {
                const size_t dofs = kPad + (len % 3); // unaligned destinations too
                std::fill(dst.begin(), dst.end(), uint8_t{0xa5});
                const uint64_t want = XXH3_64bits(src.data() + so, len);
                ASSERT_EQ(kv::detail::copy_hash(dst.data() + dofs, src.data() + so, len, w), want)
                    << "width " << w << " len " << len << " src offset " << so;
                ASSERT_EQ(std::memcmp(dst.data() + dofs, src.data() + so, len), 0)
                    << "width " << w << " len " << len;
                for (size_t i = 0; i < dofs; i++)
                    ASSERT_EQ(dst[i], 0xa5) << "wrote before dst, len " << len;
                for (size_t i = dofs + len; i < dst.size(); i++)
                    ASSERT_EQ(dst[i], 0xa5) << "wrote past len " << len;
                ASSERT_EQ(kv::detail::copy_hash(nullptr, src.data() + so, len, w), want)
                    << "hash only, width " << w << " len " << len;
            }
        }
    }
}

TEST(CopyHash, EqualsXXH3ForLargeBlocks) {
    std::vector<uint8_t> src = payload(2 * MiB + 4096, 2), dst(2 * MiB + 4096);
    for (unsigned w : widths()) {
        for (size_t len :
             {size_t{64 * KiB} - 1, size_t{64 * KiB}, size_t{64 * KiB} + 1, size_t{1 * MiB} + 13,
              size_t{2 * MiB} - 64, size_t{2 * MiB}, size_t{2 * MiB} + 4095}) {
            const uint64_t want = XXH3_64bits(src.data() + 1, len);
            EXPECT_EQ(kv::detail::copy_hash(dst.data(), src.data() + 1, len, w), want)
                << "width " << w << " len " << len;
            EXPECT_EQ(std::memcmp(dst.data(), src.data() + 1, len), 0);
            EXPECT_EQ(kv::detail::copy_hash(nullptr, dst.data(), len, w), want);
        }
    }
}

class DataPathChecksum : public PoolTest {};

TEST_F(DataPathChecksum, PutAndCommitStoreXXH3) {
    uint64_t i = 0;
    for (size_t len : {size_t{1}, size_t{240}, size_t{241}, size_t{1000}, size_t{4096},
                       size_t{65535}, size_t{200 * KiB} + 3, size_t{1 * MiB}}) {
        std::vector<uint8_t> data = payload(len, len);
        const uint64_t want = XXH3_64bits(data.data(), len);
        kv_key k = key_of(++i);
        ASSERT_EQ(kv_put(pool_, ns_, &k, data.data(), len, nullptr), 0) << len;
        kv_view v;
        ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
        EXPECT_EQ(v.checksum, want) << "put, len " << len;
        EXPECT_TRUE(view_equals(v, data));
        EXPECT_EQ(kv_view_verify(&v), 0);
        EXPECT_EQ(kv_release(pool_, &v), 0);

        k = key_of(++i);
        kv_reservation r;
        ASSERT_EQ(kv_reserve(pool_, ns_, &k, len, nullptr, &r), 0);
        std::memcpy(r.data, data.data(), len);
        ASSERT_EQ(kv_commit(pool_, &r, 0, 0), 0); // checksum computed at commit
        ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
        EXPECT_EQ(v.checksum, want) << "commit, len " << len;
        EXPECT_EQ(kv_view_verify(&v), 0);
        static_cast<uint8_t *>(const_cast<void *>(v.data))[len / 2] ^= 1;
        EXPECT_EQ(kv_view_verify(&v), -EBADMSG) << "a flipped bit went unnoticed, len " << len;
        EXPECT_EQ(kv_release(pool_, &v), 0);
    }
}

class Reserve : public PoolTest {};

TEST_F(Reserve, DuplicateGivesEntryAndBlockBack) {
    std::vector<uint8_t> data = payload(100 * KiB, 3);
    kv_key k = key_of(1);
    ASSERT_EQ(kv_put(pool_, ns_, &k, data.data(), data.size(), nullptr), 0);
    kv_usage before, after;
    ASSERT_EQ(kv_pool_usage(pool_, &before), 0);
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ(kv_put(pool_, ns_, &k, data.data(), data.size(), nullptr), KV_DEDUP);
        kv_reservation r;
        ASSERT_EQ(kv_reserve(pool_, ns_, &k, data.size(), nullptr, &r), KV_DEDUP);
    }
    ASSERT_EQ(kv_pool_usage(pool_, &after), 0);
    EXPECT_EQ(after.blocks_used, before.blocks_used);
    EXPECT_EQ(after.entries_free, before.entries_free);
    EXPECT_EQ(after.entries_committed, 1u);
    EXPECT_EQ(after.orphan_blocks, 0u);
}

TEST_F(Reserve, DuplicatePutIntoFullPoolEvictsNothing) {
    std::vector<uint8_t> data = payload(64 * KiB, 4);
    kv_stats st;
    uint64_t n = 0;
    do { // fill the pool until puts start evicting
        kv_key k = key_of(++n);
        ASSERT_EQ(kv_put(pool_, ns_, &k, data.data(), data.size(), nullptr), 0);
        ASSERT_EQ(kv_pool_stats(pool_, &st), 0);
    } while (st.evictions == 0 && n < 100000);
    ASSERT_GT(st.evictions, 0u);
    const uint64_t evictions = st.evictions;
    kv_key last = key_of(n);
    ASSERT_EQ(kv_contains(pool_, ns_, &last), 1);
    for (int i = 0; i < 50; i++)
        ASSERT_EQ(kv_put(pool_, ns_, &last, data.data(), data.size(), nullptr), KV_DEDUP);
    ASSERT_EQ(kv_pool_stats(pool_, &st), 0);
    EXPECT_EQ(st.evictions, evictions) << "a duplicate put evicted a block";
}

// Slab of a reservation's block, from the public layout.
uint64_t slab_of(kv_pool *p, const kv_reservation &r) {
    const kv_region_header *h = kv_pool_header(p);
    const auto *data = reinterpret_cast<const uint8_t *>(h) + h->data_off;
    return uint64_t(static_cast<const uint8_t *>(r.data) - data) / h->slab_size;
}

class HomeSlabs : public PoolTest {};

TEST_F(HomeSlabs, ClientsKeepToSlabsOfTheirOwn) {
    kv_pool *b = attach_another();
    ASSERT_NE(b, nullptr);
    constexpr uint64_t kLen = 300 * KiB; // 3 blocks per 1 MiB slab
    kv_reservation ra, rb;
    kv_key ka = key_of(1), kb = key_of(2);
    ASSERT_EQ(kv_reserve(pool_, ns_, &ka, kLen, nullptr, &ra), 0);
    ASSERT_EQ(kv_reserve(b, ns_, &kb, kLen, nullptr, &rb), 0);
    const uint64_t sa = slab_of(pool_, ra), sb = slab_of(b, rb);
    EXPECT_NE(sa, sb) << "the second client joined the first one's slab while FREE slabs remained";
    for (uint64_t i = 0; i < 20; i++) { // turn blocks over: each stays home
        ASSERT_EQ(kv_abort(pool_, &ra), 0);
        ASSERT_EQ(kv_abort(b, &rb), 0);
        ka = key_of(100 + 2 * i);
        kb = key_of(101 + 2 * i);
        ASSERT_EQ(kv_reserve(pool_, ns_, &ka, kLen, nullptr, &ra), 0);
        ASSERT_EQ(kv_reserve(b, ns_, &kb, kLen, nullptr, &rb), 0);
        EXPECT_EQ(slab_of(pool_, ra), sa);
        EXPECT_EQ(slab_of(b, rb), sb);
    }
    ASSERT_EQ(kv_abort(b, &rb), 0);
    ASSERT_EQ(kv_abort(pool_, &ra), 0);

    // A client that leaves hands its home to the next one that needs the class.
    kv_usage u0, u1;
    ASSERT_EQ(kv_pool_usage(pool_, &u0), 0);
    ASSERT_EQ(kv_pool_detach(b), 0);
    others_.clear();
    kv_pool *c = attach_another();
    ASSERT_NE(c, nullptr);
    kv_reservation rc;
    kv_key kc = key_of(999);
    ASSERT_EQ(kv_reserve(c, ns_, &kc, kLen, nullptr, &rc), 0);
    ASSERT_EQ(kv_pool_usage(pool_, &u1), 0);
    EXPECT_EQ(u1.slabs_active, u0.slabs_active)
        << "started a slab although a departed client's was free";
    EXPECT_NE(slab_of(c, rc), sa) << "adopted a live client's home";
    ASSERT_EQ(kv_abort(c, &rc), 0);
}

TEST_F(HomeSlabs, FullPoolIsSharedAsBefore) {
    // Two clients alternately take blocks until nothing is left: every block
    // of the pool must be usable, whoever's home its slab is.
    kv_pool *b = attach_another();
    ASSERT_NE(b, nullptr);
    const kv_region_header *h = kv_pool_header(pool_);
    constexpr uint64_t kLen = 256 * KiB;
    const uint64_t capacity = h->n_slabs * (h->slab_size / kLen);
    std::vector<kv_reservation> rs;
    uint64_t i = 0;
    for (;; i++) {
        kv_reservation r;
        kv_key k = key_of(i);
        kv_pool *p = i % 2 ? b : pool_;
        int rc = kv_reserve(p, ns_, &k, kLen, nullptr, &r);
        if (rc == -ENOSPC) break;
        ASSERT_EQ(rc, 0) << i;
        rs.push_back(r);
    }
    EXPECT_EQ(rs.size(), capacity) << "-ENOSPC while blocks were free";
    for (uint64_t j = 0; j < rs.size(); j++)
        EXPECT_EQ(kv_abort(j % 2 ? b : pool_, &rs[j]), 0);
}

// A full pool, either of its two kinds below, and the checks both share:
// a remove's entry and block are hints for the next puts, so the put after
// them goes on with the short search (room.h, "Hints"), and hints
// lost to a ring's overflow end it. The path is read from the process-local
// streak: a search that finds nothing and evicts restarts it at 1.
class FullPool : public PoolTest {
  protected:
    virtual uint64_t len() const = 0;
    virtual uint32_t streak() = 0;
    virtual void expect_shape() = 0; // which limit filled
    // Put blocks 0, 1, ... until puts evict, then extra more; returns the
    // next unused id.
    uint64_t fill(uint64_t extra) {
        uint64_t i = 0;
        for (; stats().evictions == 0 && i < 100000; i++)
            EXPECT_EQ(put(i, payload(len(), i)), 0) << i;
        for (uint64_t j = 0; j < extra; j++, i++)
            EXPECT_EQ(put(i, payload(len(), i)), 0) << i;
        expect_shape();
        return i;
    }
    // Rounds of: remove the newest block, put (takes what the remove freed:
    // no eviction, streak unchanged), put (short search, evicts: streak + 1).
    void expect_removes_keep_the_streak() {
        uint64_t next = fill(4);
        const uint32_t st0 = streak();
        ASSERT_GE(st0, 4u) << "the puts into the full pool did not keep a streak";
        const uint64_t ev0 = stats().evictions;
        for (uint64_t r = 0; r < 8; r++) {
            kv_key k = key_of(next - 1); // the newest block: still there
            ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
            EXPECT_EQ(streak(), st0 + r) << "kv_remove ended the streak";
            ASSERT_EQ(put(next, payload(len(), next)), 0);
            next++;
            EXPECT_EQ(stats().evictions, ev0 + r)
                << "the put after a remove evicted instead of taking what it freed";
            ASSERT_EQ(put(next, payload(len(), next)), 0);
            next++;
            EXPECT_EQ(streak(), st0 + r + 1)
                << "the second put searched in full (streak restarted)";
        }
        expect_consistent();
    }
    // More removes than a ring of `slots` holds: the streak ends, and the
    // searches that follow find everything the removes freed.
    void expect_lost_hints_end_the_streak(uint32_t slots) {
        uint64_t next = fill(4);
        ASSERT_GT(streak(), 0u);
        const uint32_t n = slots + 4;
        for (uint32_t r = 0; r < n; r++) {
            kv_key k = key_of(next - 1 - r);
            ASSERT_EQ(kv_remove(pool_, ns_, &k), 0) << r;
        }
        EXPECT_EQ(streak(), 0u);
        const uint64_t ev0 = stats().evictions;
        for (uint32_t r = 0; r < n; r++, next++)
            ASSERT_EQ(put(next, payload(len(), next)), 0) << r;
        EXPECT_EQ(stats().evictions, ev0) << "puts evicted while room freed by removes was FREE";
        expect_consistent();
    }
};

// The entry table fills first: 4 KiB blocks, one entry per 64 KiB of data,
// so every put into the full table takes the entry-table path (room.h:
// short rolling scans while the entry streak is non-zero, the entries this
// process's removes freed first). A remove must not end the short scans:
// else a loop of one remove and two puts would scan kEntryScan entries
// every second put.
class EntryTableFull : public FullPool {
  protected:
    static constexpr uint64_t kLen = 4 * KiB;
    void customize(kv_create_opts &o) override { o.avg_block_size = 64 * KiB; }
    uint64_t len() const override { return kLen; }
    uint32_t streak() override { return pool_->room.entry_streak(); }
    void expect_shape() override {
        EXPECT_LT(usage().block_bytes_used, stats().capacity / 4)
            << "the data area filled, not the entry table";
    }
};

TEST_F(EntryTableFull, ARemoveKeepsTheShortScans) {
    expect_removes_keep_the_streak();
}

TEST_F(EntryTableFull, HintsLostToTheRingEndTheShortScans) {
    expect_lost_hints_end_the_streak(kv::detail::FreedEntries::kSlots);
}

// The data area fills first (64 KiB blocks; one entry per 16 KiB): the
// block streak (room.h), whose puts try only their home slabs before they
// evict, and the blocks a remove frees while the class is in a streak (the
// block hints). A remove must not end the streak: else the next put would
// read every slab's line.
class DataAreaFull : public FullPool {
  protected:
    static constexpr uint64_t kLen = 64 * KiB;
    uint64_t len() const override { return kLen; }
    uint32_t streak() override {
        return pool_->room.block_streak(kv::detail::class_for(pool_, kLen));
    }
    void expect_shape() override {
        EXPECT_EQ(pool_->room.entry_streak(), 0u) << "the entry table filled, not the data area";
    }
};

TEST_F(DataAreaFull, ARemoveKeepsTheStreak) {
    expect_removes_keep_the_streak();
}

// Paths that give room back without a remove keep it known: a put of a
// key already there gives its claimed entry and block back, kv_abort frees
// a reservation's; either may have been a remove's hint. Then the next put
// takes the room instead of evicting.
TEST_F(DataAreaFull, DuplicatePutAndAbortKeepTheHints) {
    uint64_t next = fill(4);
    ASSERT_GE(streak(), 4u);
    for (int round = 0; round < 4; round++) {
        SCOPED_TRACE(round);
        kv_key k = key_of(next - 1);
        ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
        const uint64_t ev0 = stats().evictions;
        if (round % 2 == 0) {
            ASSERT_EQ(put(next - 2, payload(kLen, next - 2)), KV_DEDUP); // still there
        } else {
            kv_key rk = key_of(next + 1000000);
            kv_reservation r;
            ASSERT_EQ(kv_reserve(pool_, ns_, &rk, kLen, nullptr, &r), 0);
            ASSERT_EQ(kv_abort(pool_, &r), 0);
        }
        ASSERT_EQ(put(next, payload(kLen, next)), 0);
        next++;
        EXPECT_EQ(stats().evictions, ev0) << "the put evicted though a block was free";
        ASSERT_EQ(put(next, payload(kLen, next)), 0); // full again: evicts
        next++;
    }
    expect_consistent();
}

// A removed block a reader still pins is freed by its release, later: no
// hint can name it, so the remove ends the streak and the searches that
// follow find the block once it is free.
TEST_F(DataAreaFull, RemoveOfAPinnedBlockEndsTheStreak) {
    uint64_t next = fill(4);
    ASSERT_GE(streak(), 4u);
    kv_view v{};
    ASSERT_EQ(get(next - 1, &v), 0);
    kv_key k = key_of(next - 1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
    EXPECT_EQ(streak(), 0u);
    ASSERT_EQ(kv_release(pool_, &v), 0);
    const uint64_t ev0 = stats().evictions;
    ASSERT_EQ(put(next, payload(kLen, next)), 0);
    EXPECT_EQ(stats().evictions, ev0) << "the put evicted though the released block was free";
    expect_consistent();
}

TEST_F(DataAreaFull, HintsLostToTheRingEndTheStreak) {
    expect_lost_hints_end_the_streak(kv::detail::FreedBlocks::kSlots);
}

// RoomFinder's entry hints (FreedEntries, room.h): the hints of entries this process's
// removes freed, which its next puts take before scanning the entry table.
TEST(FreedEntries, NewestFirstAndTheLast64Kept) {
    kv::detail::FreedEntries f;
    EXPECT_EQ(f.pop(), KV_NIL32);
    for (uint32_t e : {7u, 8u, 9u})
        f.push(e);
    EXPECT_EQ(f.pop(), 9u);
    EXPECT_EQ(f.pop(), 8u);
    EXPECT_EQ(f.pop(), 7u);
    EXPECT_EQ(f.pop(), KV_NIL32);
    // Past kSlots pushes the oldest hints are overwritten: the newest 64
    // come back, newest first, and then nothing (the count re-syncs).
    const uint32_t n = kv::detail::FreedEntries::kSlots;
    for (uint32_t e = 0; e < n + 36; e++)
        f.push(e);
    for (uint32_t k = 0; k < n; k++)
        EXPECT_EQ(f.pop(), n + 35 - k) << k;
    EXPECT_EQ(f.pop(), KV_NIL32);
    EXPECT_EQ(f.pop(), KV_NIL32);
    f.push(0); // entry 0 is a hint like any other (slots hold entry + 1)
    EXPECT_EQ(f.pop(), 0u);
    // push says when it overwrote a hint not yet taken: the caller then
    // ends its short scans, so a full scan finds the lost entry.
    for (uint32_t e = 0; e < n; e++)
        EXPECT_FALSE(f.push(e)) << e;
    EXPECT_TRUE(f.push(n));
    EXPECT_EQ(f.pop(), n);
    while (f.pop() != KV_NIL32) {
    }
    EXPECT_FALSE(f.push(n + 1)) << "the ring was drained";
}

// Threads of one process share it: a hint may be lost, but none is made
// up and none comes back twice.
TEST(FreedEntries, ThreadsNeverPopAHintTwiceOrOneNeverPushed) {
    kv::detail::FreedEntries f;
    constexpr uint32_t kPerThread = 20000;
    std::vector<uint32_t> got[2];
    std::vector<std::thread> ts;
    for (uint32_t t = 0; t < 2; t++)
        ts.emplace_back([&f, &got, t] {
            for (uint32_t i = 0; i < kPerThread; i++) {
                f.push(t * kPerThread + i);
                if (i % 3 != 0)
                    if (uint32_t e = f.pop(); e != KV_NIL32) got[t].push_back(e);
            }
        });
    for (std::thread &t : ts)
        t.join();
    std::vector<uint32_t> all = got[0];
    all.insert(all.end(), got[1].begin(), got[1].end());
    for (uint32_t e = f.pop(); e != KV_NIL32; e = f.pop())
        all.push_back(e);
    std::sort(all.begin(), all.end());
    EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end())
        << "a hint came back twice";
    EXPECT_TRUE(all.empty() || all.back() < 2 * kPerThread)
        << "a hint nobody pushed: " << all.back();
    EXPECT_GT(all.size(), kPerThread) << "most hints should come back";
}

} // namespace
