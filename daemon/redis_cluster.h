// SPDX-License-Identifier: MIT
//
// A synchronous Redis Cluster client for the remote tier, on hiredis.
//
// What it does, as the Redis Cluster specification asks of a client:
//  - learns the slot map with CLUSTER SLOTS from any reachable node (the
//    seeds first time, then the nodes it knows), and maps a key to its hash
//    slot with CRC16 mod 16384, honouring {hash tags};
//  - follows -MOVED (records the slot's new owner and refreshes the map
//    before the next round) and -ASK (sends ASKING then the command to the
//    node named, without changing the map), at most max_redirects times a
//    key;
//  - refreshes the map after a connection error, and retries a key once if
//    the refreshed map names another node for it;
//  - keeps at most max_connections connections open, to all nodes
//    together, closing the least recently used;
//  - AUTHs each new connection (AUTH user password when a user is given);
//  - bounds every blocking step by timeout_ms: connect, and each send or
//    receive that makes no progress for that long fails the node's pending
//    keys and drops its connection. A call thus returns within about
//    timeout_ms per unresponsive node (plus one more for the map refresh);
//    call_timeout_ms and set_deadline() bound a whole call, however slowly
//    a node trickles its replies: past it, the keys not done fail.
//
// Batches are pipelined: get_many / set_many group the keys by node, send
// every node's commands, then read the replies. They send one GET or SET
// per key, never MGET/MSET: those only work when every key hashes to one
// slot, and a chain's blocks spread over all slots.
//
// Results are per key (Ok / Missing / Error with a reason); nothing throws
// and no error outlives its call but in the counters.
//
// Concurrency: not thread-safe. One thread at a time uses a client (the
// remote tier gives its uploader and its fetcher a client each).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;

namespace kv::daemon {

inline constexpr uint32_t kClusterSlots = 16384;

// The hash slot of key: CRC16-XMODEM of the key, or of the text between the
// first '{' and the next '}' when that is not empty, mod 16384.
uint16_t key_slot(std::string_view key);

struct ClusterOptions {
    std::vector<std::string> seeds; // "host:port" (IPv4, IPv6 in [brackets], or a name)
    std::string username;           // ACL user; "": AUTH with the password alone
    std::string password;           // "": no AUTH
    uint32_t max_connections = 8;   // to all nodes together; 0 counts as 1
    uint32_t timeout_ms = 2000;     // connect, and each send/receive without progress
    uint32_t max_redirects = 5;     // MOVED/ASK/TRYAGAIN hops a key may take
    uint32_t call_timeout_ms = 0;   // a whole get_many/set_many/refresh; 0: no bound
};

enum class KeyStatus : uint8_t {
    Ok,      // GET: the value is in reply; SET: stored
    Missing, // GET: no such key
    Error,   // the node was unreachable, slow, refused, or redirects ran out
};

struct ReplyDeleter {
    void operator()(redisReply *r) const;
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

struct GetResult {
    KeyStatus status = KeyStatus::Error;
    std::string error; // Error: why, with the node's address
    ReplyPtr reply;    // Ok: the string reply that holds the value
    // The value's bytes (empty unless Ok); valid while reply is.
    std::span<const uint8_t> value() const;
};

// One SET: the value is head followed by body, sent without joining them,
// so a block can go from its pinned view straight into the send buffer.
struct SetItem {
    std::string_view key;
    std::span<const uint8_t> head;
    std::span<const uint8_t> body;
};

struct SetResult {
    KeyStatus status = KeyStatus::Error; // Ok or Error
    std::string error;
};

// Counters since the client was made. Plain integers: one thread at a time.
struct ClusterStats {
    uint64_t commands = 0;       // GETs and SETs sent (redirected ones count again)
    uint64_t moved = 0;          // -MOVED replies followed
    uint64_t ask = 0;            // -ASK replies followed
    uint64_t tryagain = 0;       // -TRYAGAIN replies retried
    uint64_t refreshes = 0;      // slot-map refreshes that succeeded
    uint64_t refresh_errors = 0; // refreshes that found no node answering
    uint64_t connects = 0;       // connections opened (and authenticated)
    uint64_t connect_errors = 0; // connections that failed to open or AUTH
    uint64_t io_errors = 0;      // connections dropped on an error or timeout
    uint64_t resends = 0;        // ops sent again after a stale connection was closed
    uint64_t key_errors = 0;     // keys that ended in KeyStatus::Error
};

class ClusterClient {
  public:
    explicit ClusterClient(ClusterOptions opts);
    ~ClusterClient();
    ClusterClient(const ClusterClient &) = delete;
    ClusterClient &operator=(const ClusterClient &) = delete;

    // GET each key; results[i] is keys[i]'s. max_bytes > 0 reads at most
    // that many bytes of each value (GETRANGE key 0 max_bytes-1), so that a
    // value written huge by someone else costs no more than that; an empty
    // value then reads as Missing. A value of exactly max_bytes may have
    // been cut: the caller sets max_bytes one above what it accepts.
    std::vector<GetResult> get_many(std::span<const std::string> keys, uint64_t max_bytes = 0);

    // SET each item (with EX ttl_s when ttl_s > 0); results[i] is items[i]'s.
    std::vector<SetResult> set_many(std::span<const SetItem> items, uint32_t ttl_s);

    // Calls end by t at the latest (with call_timeout_ms, whichever comes
    // first) until set_deadline(time_point::max()).
    void set_deadline(std::chrono::steady_clock::time_point t);

    // Load the slot map now. "" on success, else why no node answered.
    std::string refresh();

    // The address ("host:port") the map names for key's slot, "" if none.
    std::string node_for(std::string_view key) const;

    const ClusterStats &stats() const;
    size_t open_connections() const;
    const ClusterOptions &options() const;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

} // namespace kv::daemon
