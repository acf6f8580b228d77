// SPDX-License-Identifier: MIT
//
// The daemon's drainer of its pools' change feeds (uapi/PROTOCOL.md section
// 13): one kv::detail::FeedReader per pool with a feed, polled from a
// timerfd in the main loop while any sink is registered, its records
// translated to FeedEvents (feed_event.h) and handed to every registered
// FeedSink, one batch per pool per poll.
//
// Threads: main loop only (no locks, no shared-memory orders of its own:
// the reader's are in libkv/feed.cc). A sink must not block: it copies what
// it needs and returns.
#pragma once

#include "feed_event.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kv::detail {
class FeedReader;
}

namespace kv::daemon {

class PoolManager;

// Counters of one pool's drainer (metrics, kvctl status).
struct FeedCounters {
    uint64_t events = 0;  // events handed to the sinks (resync ones included)
    uint64_t records = 0; // feed records read (NOPs included)
    uint64_t resyncs = 0; // resyncs (Cleared + re-announcement), the first included
    uint64_t lost = 0;    // resyncs caused by a loss: overflow, drops, dead or slow producers
    uint64_t head = 0;    // tickets taken by producers so far
    uint64_t lag = 0;     // tickets taken and not yet read
    uint64_t slots = 0;   // ring size
};

class FeedDrainer {
  public:
    FeedDrainer();
    ~FeedDrainer();
    FeedDrainer(const FeedDrainer &) = delete;
    FeedDrainer &operator=(const FeedDrainer &) = delete;

    // Register a sink for the events of every pool (it filters by pool
    // name). The sink must outlive the drainer or be removed first. The
    // first poll of each pool after a sink is added hands it a Cleared
    // event and the pool's blocks (every reader is resynced), so a sink
    // added late still starts from an exact view.
    void add_sink(FeedSink *sink);
    void remove_sink(FeedSink *sink);
    bool active() const { return !sinks_.empty(); }
    // The poll interval the main loop's timer should have: 0 (off) when no
    // sink is registered.
    uint64_t interval_us() const { return active() ? kIntervalUs : 0; }

    // Poll every pool with a feed and hand each pool's events to the
    // sinks. Pools destroyed or re-created since the last call are
    // forgotten or started afresh (a resync). Returns the events handed out.
    size_t poll_all(PoolManager &pm);
    // The same for one pool (poll_all's step; tests call it directly).
    // Returns the events handed out.
    size_t poll_pool(const std::string &name, kv_pool *handle);
    // Forget pools not in names (destroyed since the last poll).
    void forget_others(const std::vector<std::string> &names);

    // Counters of a pool (zero when it has no feed or was never polled),
    // and the sum over pools.
    FeedCounters counters(const std::string &pool) const;
    FeedCounters totals() const;

    // The drainer kvpoold runs, for status and metrics (pool_report.cc);
    // null when none. Main thread only.
    static const FeedDrainer *current();
    static void set_current(const FeedDrainer *d);

    static constexpr uint64_t kIntervalUs = 1000;
    // Records read per pool per poll (a resync may add the pool's blocks):
    // bounds how long one poll keeps the loop away from other work.
    static constexpr size_t kMaxPerPoll = 8192;

  private:
    struct PoolFeed;
    std::vector<FeedSink *> sinks_;
    std::map<std::string, std::unique_ptr<PoolFeed>> pools_;
};

} // namespace kv::daemon
