// SPDX-License-Identifier: MIT
//
// One change of a pool's contents, as the daemon's feed drainer
// (feed_drain.h) hands it to the sinks that consume the region's change
// feed: the KV-event publisher (kv_events.h) and the remote tier's
// write-behind uploader (remote_tier.h).
//
// Contract between the drainer and its sinks:
//  - A sink sees the events of one pool in the order the feed's tickets
//    give them (uapi/PROTOCOL.md section 13): for one key, a commit's event
//    comes before the event of the remove that followed it.
//  - When the drainer lost events (the ring overflowed, a producer died
//    holding a slot, or the drainer just started), it hands a Cleared event
//    and then one Stored event (cause Resync, no token ids) per block the
//    pool holds; a sink rebuilds its view from those. A block may be
//    announced twice (once by the resync, once by its own commit event);
//    a Removed event may name a block the sink never saw. Both are benign
//    for an index.
//  - No Stored event names a block that was never committed.
#pragma once

#include <cstdint>
#include <kv/kv.h>
#include <span>
#include <string>
#include <vector>

namespace kv::daemon {

enum class FeedKind : uint8_t {
    Stored,  // the block was committed (or is held, for a resync)
    Removed, // the block left the pool: removed, evicted or expired
    Cleared, // forget everything known of the pool; Stored events follow
};

enum class FeedCause : uint8_t {
    Commit, // Stored by a commit
    Resync, // Stored by a resync (or Cleared)
    Remove, // Removed by kv_remove (or the daemon's verify --remove)
    Evict,  // Removed to make room, or by the watermark pass / kvctl evict
    Expire, // Removed because its ttl passed
};

struct FeedEvent {
    FeedKind kind = FeedKind::Stored;
    FeedCause cause = FeedCause::Commit;
    uint64_t ticket = 0; // the feed ticket it came from; 0 for resync events
    uint32_t ns = 0;     // namespace id in the pool
    kv_key key{};
    bool has_parent = false; // Stored/Commit: the producer named the chain's previous block
    kv_key parent{};
    uint64_t length = 0;             // Stored: bytes of the block
    uint32_t tokens = 0;             // Stored: token count from kv_meta (0: unknown)
    std::vector<uint32_t> token_ids; // Stored/Commit: when the producer supplied them
    uint64_t time_ns = 0;            // CLOCK_REALTIME the producer recorded (commit_ns for Stored)
    uint32_t entry = KV_NIL32;       // entry index of the block (Stored), to pin that very block
    uint32_t gen = 0;                // the entry's generation at commit
};

// A consumer of a pool's feed. Called from the daemon's main loop only.
class FeedSink {
  public:
    virtual ~FeedSink() = default;
    // events: a batch of the pool's events, in feed order.
    virtual void on_feed(const std::string &pool, kv_pool *handle,
                         std::span<const FeedEvent> events) = 0;
};

} // namespace kv::daemon
