// SPDX-License-Identifier: MIT
//
// vLLM-format KV events for cache-aware routers (doc/events.md): each pool
// whose config has a [pool.events] table gets a ZeroMQ PUB socket on which
// its change feed (feed_event.h) is published as vLLM publishes its prefix
// cache with --kv-events-config, and optionally a ROUTER socket that
// replays recent batches from a sequence number.
//
// Wire contract (what consumers rely on; doc/events.md has the details):
//  - Every message is 3 frames: topic, the batch's sequence number as 8
//    bytes big-endian (0, 1, 2, ... per pool, kept across reconfiguration
//    of the pool's channel while the daemon runs), the msgpack payload.
//  - The payload is the array [ts, events, data_parallel_rank]: ts the
//    publishing time in seconds (float64), data_parallel_rank 0.
//  - Events are BlockStored, BlockRemoved and AllBlocksCleared, encoded as
//    tagged arrays (vLLM before PR #42892) or as maps tagged by "type"
//    (vLLM after it), by EventsConfig::encoding.
//  - Replay: a REQ or DEALER sends [8-byte big-endian start seq] (REQ adds
//    the empty delimiter); every buffered batch with seq >= start comes back
//    as [seq, payload], then [-1 as 8 bytes, empty].
//  - After a loss (the drainer's resync) or when a channel opens, the
//    stream carries AllBlocksCleared and then a BlockStored for every block
//    the pool holds: a subscriber that applies the events in order holds
//    the pool's exact index afterwards.
//
// Single-threaded: everything is called from the daemon's main loop. No
// call blocks: sends use ZMQ_DONTWAIT (a subscriber past its high-water
// mark loses messages, which ZeroMQ's PUB does by design; the replay
// socket fills such gaps), and the replay socket is read only when ready.
// Nothing here throws past its public functions.
#pragma once

#include "config.h"
#include "feed_event.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kv::daemon {

class PoolManager;

// How events are encoded; independent of sockets so tests reach it.
struct EventEncoder {
    EventEncoding encoding = EventEncoding::Array;
    HashForm hash_form = HashForm::Int;
    // block_size of a namespace (the manifest's block_tokens); 0 if unknown.
    std::function<uint32_t(uint32_t ns)> block_size;

    // One batch payload: [ts, [event, ...], 0]. Consecutive Stored events of
    // one chain (same namespace, each naming the previous as its parent,
    // token ids on all or none) become one BlockStored with several
    // hashes, as vLLM sends a request's new blocks; consecutive Removed
    // events become one BlockRemoved. medium names the tier of every
    // event. *n_out (optional): the vLLM events the batch holds.
    std::string batch(double ts, std::span<const FeedEvent> events, std::string_view medium,
                      size_t *n_out = nullptr) const;
};

// A pool's channel counters, for status and metrics.
struct EventsStats {
    uint64_t next_seq = 0;       // the sequence number of the next batch
    uint64_t batches = 0;        // batches published
    uint64_t events = 0;         // vLLM events in them
    uint64_t feed_events = 0;    // feed events they came from
    uint64_t remote_events = 0;  // of which remote-tier Stored events (publish_remote)
    uint64_t send_errors = 0;    // batches zmq_send refused (not sent; kept for replay)
    uint64_t resyncs = 0;        // AllBlocksCleared published
    uint64_t replays = 0;        // replay requests answered
    uint64_t replay_batches = 0; // batches sent by them
    uint64_t bad_requests = 0;   // replay requests of the wrong shape
    uint64_t buffered = 0;       // batches held for replay now
};

class KvEventPublisher final : public FeedSink {
  public:
    // epfd: the main loop's epoll; replay sockets' ZMQ_FD are added to it.
    explicit KvEventPublisher(int epfd);
    ~KvEventPublisher() override;
    KvEventPublisher(const KvEventPublisher &) = delete;
    KvEventPublisher &operator=(const KvEventPublisher &) = delete;

    // Open, reopen (when its [pool.events] changed) or close the channel of
    // every pool of pm. A new channel starts with a resync of what the pool
    // holds (AllBlocksCleared, then a BlockStored per block). A channel
    // that cannot bind or connect is logged and retried by the next call;
    // its status says why. Cheap when nothing changed: call it on every
    // drain tick and after reloads, creates and destroys.
    void sync(const PoolManager &pm);

    // FeedSink: publish the pool's events (in batches of max_batch).
    void on_feed(const std::string &pool, kv_pool *handle,
                 std::span<const FeedEvent> events) override;

    // Blocks the remote tier has stored (Stored events), published with
    // medium in place of the pool's own. Main thread only.
    void publish_remote(const std::string &pool, std::span<const FeedEvent> events,
                        std::string_view medium);

    // Whether fd is a replay socket's ZMQ_FD, and service it: answer every
    // waiting replay request. service_all() polls every replay socket (the
    // ZMQ_FD signals edges, so a tick also looks).
    bool owns_fd(int fd) const;
    void on_fd(int fd);
    void service_all();
    // Whether any channel is open (the drain timer can stay off otherwise).
    bool active() const { return !channels_.empty(); }

    // The "events" section of a pool's status; null when it has none.
    nlohmann::json status_json(const std::string &pool) const;
    // Prometheus families kvpool_events_* (appended to out).
    void prometheus(std::string &out) const;

    // The publisher the status and metrics code reports (set by main).
    static KvEventPublisher *current();
    static void set_current(KvEventPublisher *p);

  private:
    struct Channel;
    Channel *find(const std::string &pool);
    void publish(Channel &c, std::span<const FeedEvent> events, std::string_view medium);
    void send_batch(Channel &c, std::string payload, size_t n_vllm, size_t n_feed);
    void resync(Channel &c);
    void service(Channel &c);
    void close_channel(Channel &c);

    int epfd_;
    const PoolManager *pm_ = nullptr; // from the last sync(); outlives this object
    void *ctx_ = nullptr;
    std::map<std::string, std::unique_ptr<Channel>> channels_;
    std::map<std::string, uint64_t> next_seq_;      // kept when a channel is reopened
    std::map<std::string, std::string> last_error_; // logged once until it changes
};

} // namespace kv::daemon
