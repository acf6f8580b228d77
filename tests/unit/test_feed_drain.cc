// SPDX-License-Identifier: MIT
//
// kvpoold's feed drainer (daemon/feed_drain.h): what its sinks receive for
// a pool's changes, in feed order, and the resync a late sink gets.
#include "../../daemon/feed_drain.h"
#include "../../libkv/feed.h"
#include "pool_fixture.h"

using namespace kvtest;
using kv::daemon::FeedCause;
using kv::daemon::FeedDrainer;
using kv::daemon::FeedEvent;
using kv::daemon::FeedKind;

namespace {

struct RecordingSink : kv::daemon::FeedSink {
    std::vector<FeedEvent> got;
    std::vector<std::string> pools;
    void on_feed(const std::string &pool, kv_pool *, std::span<const FeedEvent> ev) override {
        pools.push_back(pool);
        got.insert(got.end(), ev.begin(), ev.end());
    }
};

class FeedDrainTest : public PoolTest {
  protected:
    void customize(kv_create_opts &o) override { o.feed_slots = 256; }
    int put(uint64_t i, const uint32_t *ids = nullptr, uint32_t n = 0) {
        auto d = payload(4 * KiB, i);
        const kv_key k = key_of(i);
        kv_put_opts o{};
        o.struct_size = sizeof o;
        o.token_ids = ids;
        o.n_token_ids = n;
        return kv_put_ex(pool_, ns_, &k, d.data(), d.size(), &o);
    }
};

} // namespace

TEST_F(FeedDrainTest, SinksGetTranslatedEventsInOrder) {
    FeedDrainer d;
    EXPECT_EQ(d.interval_us(), 0u) << "no sink: no timer";
    EXPECT_EQ(d.poll_pool("p", pool_), 0u);
    RecordingSink s;
    d.add_sink(&s);
    EXPECT_EQ(d.interval_us(), FeedDrainer::kIntervalUs);
    ASSERT_EQ(put(1), 0);
    d.poll_pool("p", pool_); // the first poll resyncs: Cleared + the block
    ASSERT_EQ(s.got.size(), 2u);
    EXPECT_EQ(s.got[0].kind, FeedKind::Cleared);
    EXPECT_EQ(s.got[1].kind, FeedKind::Stored);
    EXPECT_EQ(s.got[1].cause, FeedCause::Resync);
    EXPECT_TRUE(key_eq(s.got[1].key, key_of(1)));
    EXPECT_EQ(s.pools, std::vector<std::string>{"p"});

    s.got.clear();
    const uint32_t ids[4] = {5, 6, 7, 8};
    ASSERT_EQ(put(2, ids, 4), 0);
    const kv_key k1 = key_of(1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k1), 0);
    ASSERT_GT(kv_evict_bytes(pool_, 1), 0);
    d.poll_pool("p", pool_);
    ASSERT_EQ(s.got.size(), 3u);
    EXPECT_EQ(s.got[0].kind, FeedKind::Stored);
    EXPECT_EQ(s.got[0].cause, FeedCause::Commit);
    EXPECT_EQ(s.got[0].token_ids, std::vector<uint32_t>(ids, ids + 4));
    EXPECT_EQ(s.got[0].length, 4 * KiB);
    EXPECT_GT(s.got[0].ticket, 0u);
    EXPECT_EQ(s.got[1].kind, FeedKind::Removed);
    EXPECT_EQ(s.got[1].cause, FeedCause::Remove);
    EXPECT_TRUE(key_eq(s.got[1].key, key_of(1)));
    EXPECT_EQ(s.got[2].kind, FeedKind::Removed);
    EXPECT_EQ(s.got[2].cause, FeedCause::Evict);
    EXPECT_LT(s.got[1].ticket, s.got[2].ticket);

    const auto c = d.counters("p");
    EXPECT_EQ(c.events, 5u);
    EXPECT_EQ(c.resyncs, 1u);
    EXPECT_EQ(c.lost, 0u);
    EXPECT_EQ(c.lag, 0u);
    EXPECT_EQ(c.slots, 256u);
}

TEST_F(FeedDrainTest, LateSinkStartsFromAResync) {
    FeedDrainer d;
    RecordingSink a, b;
    d.add_sink(&a);
    ASSERT_EQ(put(1), 0);
    d.poll_pool("p", pool_);
    ASSERT_EQ(put(2), 0);
    d.add_sink(&b); // knows nothing: every reader resyncs
    d.poll_pool("p", pool_);
    ASSERT_FALSE(b.got.empty());
    EXPECT_EQ(b.got[0].kind, FeedKind::Cleared);
    size_t stored = 0;
    for (const FeedEvent &e : b.got)
        stored += e.kind == FeedKind::Stored;
    EXPECT_EQ(stored, 2u);
    d.remove_sink(&a);
    d.remove_sink(&b);
    EXPECT_FALSE(d.active());
    d.forget_others({});
    EXPECT_EQ(d.counters("p").events, 0u);
}
