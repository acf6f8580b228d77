// SPDX-License-Identifier: MIT
//
// The region's change feed (libkv/feed.h, uapi/PROTOCOL.md section 13):
// records of commits, removes, evictions and expiries with their fields,
// NOP records for a CAS that lost, token ids, resync on overflow and on a
// producer the reader gave up on, and the invariant the daemon relies on:
// an index rebuilt from the reader's items equals the committed entries.
#include "../../libkv/feed.h"
#include "pool_fixture.h"

#include <functional>
#include <map>
#include <thread>
#include <tuple>

using namespace kvtest;
using kv::detail::FeedItem;
using kv::detail::FeedReader;

namespace {

using IndexKey = std::tuple<uint32_t, uint64_t, uint64_t>; // ns, hi, lo

void index_apply(std::map<IndexKey, uint64_t> &idx, const FeedItem &it) {
    const IndexKey k{it.ns, it.key.hi, it.key.lo};
    switch (it.op) {
    case FeedItem::Op::Cleared:
        idx.clear();
        break;
    case FeedItem::Op::Commit:
    case FeedItem::Op::Resync:
        idx[k] = it.length;
        break;
    default:
        idx.erase(k);
    }
}

std::map<IndexKey, uint64_t> committed(kv_pool *p) {
    std::map<IndexKey, uint64_t> out;
    for (uint32_t e = 0; e < p->hdr->n_entries; e++) {
        const kv_entry &en = p->entries[e];
        if (kv::detail::Ctl::state(en.ctl) != KV_ENTRY_COMMITTED) continue;
        out[{en.ns_id, en.key_hi, en.key_lo}] = en.length;
    }
    return out;
}

class FeedTest : public PoolTest {
  protected:
    uint32_t slots_ = 1024;
    void customize(kv_create_opts &o) override { o.feed_slots = slots_; }
    std::vector<FeedItem> drain(FeedReader &r) {
        std::vector<FeedItem> out;
        while (r.poll(out, 4096) != 0) {
        }
        return out;
    }
    int put(uint64_t i, size_t len, const kv_put_opts *o = nullptr) {
        auto d = payload(len, i);
        const kv_key k = key_of(i);
        return kv_put_ex(pool_, ns_, &k, d.data(), len, o);
    }
};

class SmallFeedTest : public FeedTest {
  protected:
    void customize(kv_create_opts &o) override { o.feed_slots = 64; }
};

// FeedPoint hook for the tests that interleave a step of their own.
std::function<void(kv::detail::FeedPoint)> g_hook;
void hook_trampoline(kv::detail::FeedPoint at) {
    if (g_hook) g_hook(at);
}
struct HookGuard {
    explicit HookGuard(std::function<void(kv::detail::FeedPoint)> f) {
        g_hook = std::move(f);
        kv::detail::feed_crash_hook = hook_trampoline;
    }
    ~HookGuard() {
        kv::detail::feed_crash_hook = nullptr;
        g_hook = nullptr;
    }
};

} // namespace

TEST_F(FeedTest, HeaderAnnouncesFeed) {
    EXPECT_GE(pool_->hdr->abi_minor, 3); // the feed came in 1.3
    EXPECT_TRUE(pool_->hdr->incompat_features & KV_INCOMPAT_F_FEED);
    EXPECT_EQ(pool_->hdr->feed_slots, 1024u);
    EXPECT_EQ(pool_->hdr->feed_slot_size, sizeof(kv_feed_slot));
    EXPECT_EQ(pool_->hdr->feed_off % 4096, 0u);
}

TEST_F(FeedTest, FirstPollResyncsThenCommitRecordHasFields) {
    ASSERT_EQ(put(1, 8 * KiB), 0); // before the reader: announced by its resync
    FeedReader r(pool_);
    auto items = drain(r);
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].op, FeedItem::Op::Cleared);
    EXPECT_EQ(items[1].op, FeedItem::Op::Resync);
    EXPECT_TRUE(key_eq(items[1].key, key_of(1)));
    EXPECT_EQ(items[1].length, 8 * KiB);

    const uint32_t ids[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    kv_put_opts o{};
    o.struct_size = sizeof o;
    o.flags = KV_PUT_F_PARENT;
    o.parent = key_of(1);
    o.meta.tokens = 16;
    o.n_token_ids = 16;
    o.token_ids = ids;
    ASSERT_EQ(put(2, 12 * KiB, &o), 0);
    items = drain(r);
    ASSERT_EQ(items.size(), 1u);
    const FeedItem &c = items[0];
    EXPECT_EQ(c.op, FeedItem::Op::Commit);
    EXPECT_EQ(c.ticket, 2u); // ticket 1 was the first put's
    EXPECT_EQ(c.ns, ns_);
    EXPECT_TRUE(key_eq(c.key, key_of(2)));
    EXPECT_TRUE(c.has_parent);
    EXPECT_TRUE(key_eq(c.parent, key_of(1)));
    EXPECT_EQ(c.length, 12 * KiB);
    EXPECT_EQ(c.tokens, 16u);
    EXPECT_EQ(c.token_ids, std::vector<uint32_t>(ids, ids + 16));
    EXPECT_NE(c.time_ns, 0u);
    EXPECT_LT(c.entry, pool_->hdr->n_entries);
    EXPECT_EQ(kv::detail::Ctl::gen(pool_->entries[c.entry].ctl), c.gen);
}

TEST_F(FeedTest, ReservationCommitExRecordsIdsAndParent) {
    ASSERT_EQ(put(1, 4 * KiB), 0);
    FeedReader r(pool_);
    drain(r);
    kv_put_opts o{};
    o.struct_size = sizeof o;
    o.flags = KV_PUT_F_PARENT;
    o.parent = key_of(1);
    const kv_key k = key_of(2);
    kv_reservation res{};
    ASSERT_EQ(kv_reserve_ex(pool_, ns_, &k, 4 * KiB, &o, &res), 0);
    memset(res.data, 7, 4 * KiB);
    const uint32_t ids[3] = {42, 43, 44};
    ASSERT_EQ(kv_commit_ex(pool_, &res, 0, 0, ids, 3), 0);
    auto items = drain(r);
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].op, FeedItem::Op::Commit);
    EXPECT_TRUE(items[0].has_parent);
    EXPECT_TRUE(key_eq(items[0].parent, key_of(1)));
    EXPECT_EQ(items[0].token_ids, std::vector<uint32_t>(ids, ids + 3));

    // Token ids belong to the commit, not the reservation.
    kv_put_opts bad{};
    bad.struct_size = sizeof bad;
    bad.n_token_ids = 3;
    bad.token_ids = ids;
    const kv_key k3 = key_of(3);
    EXPECT_EQ(kv_reserve_ex(pool_, ns_, &k3, 4 * KiB, &bad, &res), -EINVAL);
    EXPECT_EQ(kv_commit_ex(pool_, &res, 0, 0, nullptr, 2), -EINVAL);
}

TEST_F(FeedTest, TooManyIdsAreOmittedAndSaid) {
    FeedReader r(pool_);
    drain(r);
    std::vector<uint32_t> ids(KV_FEED_MAX_IDS + 1, 9);
    kv_put_opts o{};
    o.struct_size = sizeof o;
    o.n_token_ids = uint32_t(ids.size());
    o.token_ids = ids.data();
    ASSERT_EQ(put(1, 4 * KiB, &o), 0);
    auto items = drain(r);
    ASSERT_EQ(items.size(), 1u);
    EXPECT_TRUE(items[0].ids_omitted);
    EXPECT_TRUE(items[0].token_ids.empty());
}

TEST_F(FeedTest, RemoveEvictExpireRecords) {
    FeedReader r(pool_);
    drain(r);
    ASSERT_EQ(put(1, 4 * KiB), 0);
    ASSERT_EQ(put(2, 4 * KiB), 0);
    kv_put_opts o{};
    o.struct_size = sizeof o;
    o.ttl_ms = 1;
    ASSERT_EQ(put(3, 4 * KiB, &o), 0);
    const kv_key k1 = key_of(1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k1), 0);
    usleep(5000);
    ASSERT_EQ(put(3, 4 * KiB), 0); // replaces the expired block
    ASSERT_GT(kv_evict_bytes(pool_, 1), 0);
    auto items = drain(r);
    std::vector<FeedItem::Op> ops;
    for (auto &it : items)
        ops.push_back(it.op);
    using Op = FeedItem::Op;
    ASSERT_EQ(ops, (std::vector<Op>{Op::Commit, Op::Commit, Op::Commit, Op::Remove, Op::Expire,
                                    Op::Commit, Op::Evict}));
    EXPECT_TRUE(key_eq(items[3].key, key_of(1)));
    EXPECT_EQ(items[3].length, 4 * KiB);
    EXPECT_TRUE(key_eq(items[4].key, key_of(3)));
    for (size_t i = 1; i < items.size(); i++)
        EXPECT_EQ(items[i].ticket, items[i - 1].ticket + 1);
    std::map<IndexKey, uint64_t> idx;
    for (auto &it : items)
        index_apply(idx, it);
    EXPECT_EQ(idx, committed(pool_));
}

TEST_F(FeedTest, LostCasPublishesNop) {
    FeedReader r(pool_);
    ASSERT_EQ(put(1, 4 * KiB), 0);
    drain(r);
    kv_pool *other = attach_another();
    const kv_key k = key_of(1);
    bool once = false;
    {
        // Between our kill's ticket and its CAS, another client removes the
        // block: our CAS fails and must publish a NOP in its ticket.
        HookGuard g([&](kv::detail::FeedPoint at) {
            if (at != kv::detail::FeedPoint::Claimed || once) return;
            once = true;
            EXPECT_EQ(kv_remove(other, ns_, &k), 0);
        });
        EXPECT_EQ(kv_remove(pool_, ns_, &k), -ENOENT);
    }
    auto items = drain(r);
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].op, FeedItem::Op::Remove);
    EXPECT_EQ(items[0].ticket, 3u); // ticket 2 was the NOP
    EXPECT_EQ(r.stats().nops, 1u);
    EXPECT_EQ(r.stats().resyncs, 1u);
}

TEST_F(SmallFeedTest, OverflowResyncsToTheExactIndex) {
    FeedReader r(pool_);
    std::map<IndexKey, uint64_t> idx;
    for (auto &it : drain(r))
        index_apply(idx, it);
    for (uint64_t i = 0; i < 300; i++)
        ASSERT_EQ(put(i, 4 * KiB), 0);
    for (uint64_t i = 0; i < 300; i += 3) {
        const kv_key k = key_of(i);
        ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
    }
    auto items = drain(r);
    ASSERT_FALSE(items.empty());
    EXPECT_EQ(items[0].op, FeedItem::Op::Cleared);
    EXPECT_GE(r.stats().lost_laps, 1u);
    EXPECT_EQ(r.stats().resyncs, 2u);
    for (auto &it : items)
        index_apply(idx, it);
    EXPECT_EQ(idx, committed(pool_));
    EXPECT_EQ(idx.size(), 200u);
}

// F3: a producer whose ticket the reader abandons (it resynchronized between
// the producer's ticket and its CAS) counts a drop, so the reader resyncs
// again and sees the block its first scan missed.
TEST_F(FeedTest, AbandonedTicketReportsItself) {
    FeedReader r(pool_);
    std::map<IndexKey, uint64_t> idx;
    for (auto &it : drain(r))
        index_apply(idx, it);
    {
        HookGuard g([&](kv::detail::FeedPoint at) {
            if (at != kv::detail::FeedPoint::Claimed) return;
            r.request_resync();
            std::vector<FeedItem> mid;
            r.poll(mid, 16);
            for (auto &it : mid)
                index_apply(idx, it);
        });
        ASSERT_EQ(put(1, 4 * KiB), 0);
    }
    EXPECT_TRUE(idx.empty()) << "the mid-put scan ran before the commit";
    for (auto &it : drain(r))
        index_apply(idx, it);
    EXPECT_EQ(idx, committed(pool_));
    EXPECT_EQ(idx.size(), 1u);
    EXPECT_EQ(r.stats().lost_drops, 1u);
}

// A ticket whose producer never publishes (it stopped between its ticket
// and its slot) is given up after the grace time: the reader does not wedge.
TEST_F(FeedTest, UnpublishedTicketIsGivenUpAfterGrace) {
    FeedReader r(pool_, 20'000'000);
    drain(r);
    kv::detail::feed_claim(pool_); // a producer that claimed and vanished
    ASSERT_EQ(put(1, 4 * KiB), 0);
    std::vector<FeedItem> items;
    r.poll(items, 16);
    EXPECT_TRUE(items.empty()) << "waits for ticket 1";
    usleep(30000);
    std::map<IndexKey, uint64_t> idx;
    for (auto &it : drain(r))
        index_apply(idx, it);
    EXPECT_EQ(r.stats().lost_grace, 1u);
    EXPECT_EQ(idx, committed(pool_));
}

TEST_F(FeedTest, ConcurrentProducersAndReaderAgree) {
    FeedReader r(pool_);
    std::map<IndexKey, uint64_t> idx;
    std::atomic<bool> stop{false};
    std::thread reader([&] {
        std::vector<FeedItem> items;
        while (!stop.load(std::memory_order_acquire)) {
            items.clear();
            r.poll(items, 256);
            for (auto &it : items)
                index_apply(idx, it);
        }
    });
    std::vector<std::thread> th;
    for (int t = 0; t < 3; t++)
        th.emplace_back([&, t] {
            kv_pool *p = pool_;
            for (uint64_t i = 0; i < 3000; i++) {
                const uint64_t id = (i * 7 + t) % 500;
                const kv_key k = key_of(id);
                if (i % 3 == 2) {
                    kv_remove(p, ns_, &k);
                } else {
                    auto d = payload(4 * KiB, id);
                    kv_put(p, ns_, &k, d.data(), d.size(), nullptr);
                }
            }
        });
    for (auto &t : th)
        t.join();
    stop.store(true, std::memory_order_release);
    reader.join();
    for (auto &it : drain(r))
        index_apply(idx, it);
    EXPECT_EQ(idx, committed(pool_));
}

TEST_F(FeedTest, NoFeedPoolHasNoReader) {
    kv_create_opts o = small_opts();
    std::string path = unique_pool_path("nofeed");
    char msg[256] = "";
    ASSERT_EQ(kv_pool_create(path.c_str(), &o, msg, sizeof msg), 0) << msg;
    kv_pool *p = nullptr;
    ASSERT_EQ(kv_pool_attach(path.c_str(), 0, &p, msg, sizeof msg), 0) << msg;
    EXPECT_FALSE(p->hdr->incompat_features & KV_INCOMPAT_F_FEED);
    FeedReader r(p);
    EXPECT_FALSE(r.enabled());
    kv_pool_detach(p);
    kv_pool_destroy(path.c_str());
    o.feed_slots = 100;
    EXPECT_EQ(kv_pool_create(path.c_str(), &o, msg, sizeof msg), -EINVAL);
    EXPECT_TRUE(mentions_any(msg, {"feed_slots"})) << msg;
    o.feed_slots = 32;
    EXPECT_EQ(kv_pool_create(path.c_str(), &o, msg, sizeof msg), -EINVAL);
}

// A client that detaches cleanly has no change half recorded: its
// subscribers must not be told the pool was cleared each time an engine
// exits. Only the reclaim of a dead client may count a drop.
TEST_F(FeedTest, CleanDetachIsNoLoss) {
    FeedReader r(pool_);
    drain(r); // the reader's first resync
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    const kv_key k = key_of(7);
    auto d = payload(8 * KiB, 7);
    ASSERT_EQ(kv_put(other, ns_, &k, d.data(), d.size(), nullptr), 0);
    const uint64_t dropped = pool_->feed_hdr->dropped;
    ASSERT_EQ(detach_other(other), 0);
    EXPECT_EQ(pool_->feed_hdr->dropped, dropped);
    auto items = drain(r);
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].op, FeedItem::Op::Commit);
    EXPECT_TRUE(key_eq(items[0].key, k));
}
