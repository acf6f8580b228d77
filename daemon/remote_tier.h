// SPDX-License-Identifier: MIT
//
// The remote tier of a pool ([pool.remote], doc/remote.md): write-behind of
// committed blocks to a Redis Cluster and fetch on miss from it.
//
// Threads. The main loop hands the tier the pool's feed events (a FeedSink)
// and fetch requests from the control socket, and collects what the workers
// finished; it never waits on Redis. Each tier runs two workers, each with
// its own ClusterClient (redis_cluster.h, one thread per client):
//  - the uploader takes Stored events off a bounded queue (queue_bytes;
//    events beyond it are dropped and counted), pins each block by its
//    entry and generation and SETs it (remote_io.h upload_blocks), at most
//    bandwidth bytes per second (a token bucket) and with the TTL;
//  - the fetcher runs fetch requests one after the other
//    (remote_io.h fetch_into_pool), in chunks so that a request's
//    timeout_ms is kept, and leaves each answer for the main loop.
// A worker that finishes something writes the wake eventfd; the main loop
// then calls RemoteTiers::collect and sends the answers.
//
// The workers use the daemon's own handle of the pool (libkv allows a
// handle from many threads, as the snapshot jobs do): the tier must be
// stopped before its pool is closed or destroyed (RemoteTiers::stop, which
// joins the workers, each within about one Redis timeout). Blocks the
// fetcher committed come back through the feed as Stored events; they are
// not uploaded again (they came from the tier).
//
// Encryption: a pool with [pool.encryption] hands the tier its keyring
// (Pool::keyring); the workers seal every upload with its current key and
// commit only fetched values sealed under one of its keys (remote_io.h).
// The tier keeps the keyring it started with: a reload that changes the
// keys replaces Pool::keyring, and RemoteTiers::sync restarts the tier.
//
// Counters are relaxed atomics: each is written by one thread and read for
// status, where a value a little behind is fine.
#pragma once

#include "config.h"
#include "feed_event.h"
#include "pool_manager.h"
#include "remote_value.h"
#include "snapshot_jobs.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <expected>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace kv::daemon {

struct RemoteCounters {
    std::atomic<uint64_t> uploads{0}, upload_bytes{0}, upload_errors{0};
    std::atomic<uint64_t> upload_dropped{0}; // queue full
    std::atomic<uint64_t> upload_skipped{0}; // gone or replaced before its turn, or fetched
    std::atomic<uint64_t> upload_corrupt{0}; // failed its own checksum: not uploaded
    std::atomic<uint64_t> fetches{0}, fetched_blocks{0}, fetched_bytes{0};
    std::atomic<uint64_t> fetch_missing{0}, fetch_errors{0}, fetch_present{0};
    std::atomic<uint64_t> rejected[kRejectCount] = {}; // by Reject (remote_value.h)
};

// A fetch request as the control socket decoded it.
struct FetchRequest {
    uint64_t conn_id = 0;
    uint32_t seq = 0;
    uint32_t ns = 0;
    std::vector<kv_key> keys;
    uint32_t first = 0;
    uint32_t timeout_ms = 0;
};

class RemoteTier {
  public:
    // Start the workers on the pool's handle. password: from
    // read_remote_password. Errors name the pool and the cause; a pool with
    // [pool.encryption] but no keyring is refused (it would upload in the
    // clear).
    static std::expected<std::unique_ptr<RemoteTier>, std::string>
    start(const Pool &p, const std::string &password, int wake_fd);
    ~RemoteTier(); // stops and joins the workers; queued fetches are answered ECANCELED
    RemoteTier(const RemoteTier &) = delete;
    RemoteTier &operator=(const RemoteTier &) = delete;

    // Main thread. Queue the Stored events that pass the filter.
    void on_events(std::span<const FeedEvent> events);
    // Main thread. Queue a fetch; EBUSY when kMaxQueuedFetches wait.
    std::expected<void, std::pair<int, std::string>> submit(FetchRequest req);
    // Main thread. Answers of finished fetches, and the blocks uploaded
    // since the last call (for remote-medium Stored events).
    std::vector<JobAnswer> take_answers();
    std::vector<FeedEvent> take_uploaded();

    const std::string &pool() const { return pool_; }
    const RemoteConfig &config() const { return cfg_; }
    uint64_t pool_id_lo() const { return pool_id_lo_; }
    uint64_t pool_id_hi() const { return pool_id_hi_; }
    const std::shared_ptr<const Keyring> &keyring() const { return keyring_; }
    nlohmann::json status_json() const;
    // The counters at one moment, for the metrics.
    struct Snapshot {
        uint64_t v[11] = {}; // uploads .. fetch_errors, upload_corrupt
        uint64_t rejected[kRejectCount] = {};
        uint64_t queue_blocks = 0, queue_bytes = 0;
        double oldest_s = 0;
    };
    Snapshot snapshot() const;

    static constexpr size_t kMaxQueuedFetches = 64;
    static constexpr uint32_t kDefaultFetchTimeoutMs = 10000;

  private:
    RemoteTier(const Pool &p, kv_pool *own);
    void upload_loop(std::string password);
    void fetch_loop(std::string password);
    bool ns_allowed(uint32_t ns); // main thread: the namespace filter, cached
    void note_error(const std::string &what);
    // Mark (or unmark) blocks as brought in by the fetcher.
    void remember_fetched(uint32_t ns, std::span<const kv_key> keys, bool add_them);

    struct Pending { // one block waiting for upload
        FeedEvent ev;
        uint64_t queued_ns = 0;
    };

    const std::string pool_;
    const RemoteConfig cfg_;
    const std::shared_ptr<const Keyring> keyring_; // null: values in the clear
    kv_pool *own_ = nullptr;                       // the daemon's handle of the pool
    uint64_t pool_id_lo_ = 0, pool_id_hi_ = 0;
    int wake_fd_ = -1;
    RemoteCounters n_;

    mutable std::mutex mu_; // guards everything below up to the threads
    std::condition_variable up_cv_, fetch_cv_;
    bool stop_ = false;
    std::deque<Pending> upq_;
    uint64_t upq_bytes_ = 0;
    std::deque<FetchRequest> fetchq_;
    std::vector<JobAnswer> answers_;
    std::vector<FeedEvent> uploaded_;
    // Blocks the fetcher committed, whose Stored events are not uploaded:
    // (ns, key) in arrival order, bounded by kMaxFetchedMemo.
    std::set<std::tuple<uint32_t, uint64_t, uint64_t>> fetched_;
    std::deque<std::tuple<uint32_t, uint64_t, uint64_t>> fetched_order_;
    static constexpr size_t kMaxFetchedMemo = 65536;
    std::string last_error_;
    uint64_t last_error_ns_ = 0;

    std::map<uint32_t, bool> ns_ok_; // main thread only

    std::thread uploader_, fetcher_;
};

// Every pool's tier, and the feed sink that hands each its events. Main
// thread only.
class RemoteTiers : public FeedSink {
  public:
    explicit RemoteTiers(int wake_fd) : wake_fd_(wake_fd) {}
    // Start tiers for the pools whose config has [pool.remote] and none yet
    // (or a tier on another region of the same name, another [pool.remote]
    // or other keys), stop those of pools that are gone. Failures to start
    // are logged and tried at the next sync.
    void sync(PoolManager &pm);
    RemoteTier *find(const std::string &pool);
    // Before a pool is destroyed: stop its tier (joins its workers).
    void stop(const std::string &pool);
    void on_feed(const std::string &pool, kv_pool *handle,
                 std::span<const FeedEvent> events) override;
    std::vector<JobAnswer> take_answers();
    // Per pool: blocks uploaded since the last call.
    std::vector<std::pair<std::string, std::vector<FeedEvent>>> take_uploaded();
    void stop_all() { tiers_.clear(); }
    const std::map<std::string, std::unique_ptr<RemoteTier>> &tiers() const { return tiers_; }

  private:
    int wake_fd_;
    std::map<std::string, std::unique_ptr<RemoteTier>> tiers_;
    std::map<std::string, uint64_t> failed_logged_ms_; // pool -> last start failure logged
};

// For status and metrics (pool_report.cc): the registry main.cc made, or
// null when the daemon has none (tests that build reports alone).
void set_remote_tiers(RemoteTiers *t);
RemoteTiers *remote_tiers();
// {"enabled": false} for a pool without a tier.
nlohmann::json remote_json(const std::string &pool);
// The kvpool_remote_* families for every tier (Prometheus text).
std::string remote_prometheus_text();

} // namespace kv::daemon
