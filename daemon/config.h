// SPDX-License-Identifier: MIT
//
// kvpoold's configuration: the TOML file parsed into plain structs. Parsing
// is strict, since a typo silently taking a default is how a pool ends up on
// 4 KiB pages or readable by everyone:
//   - unknown keys at any level are errors (the message lists the known ones);
//   - wrong types are errors ("expected a boolean, got string "yes"");
//   - every path must be absolute; numbers must be in range.
// Every error names the file, the line:column when toml++ knows it, the key
// path (daemon.metrics, pool[1].size), the value seen and what is expected.
// Only the first error is reported.
//
// Layout:
//   [daemon]            optional; every key optional
//   control_socket, shm_dir, hugepage_dir, state_dir, admin_group, metrics,
//   reap_interval_ms, evict_interval_ms, log_level
//
//   [[pool]]            zero or more
//   name, size          required
//   hugepages, numa_node, eviction, group, mode, prefault, high_watermark,
//   low_watermark, slab_size, avg_block_size, max_clients, snapshot_dir,
//   persist_on_stop, restore_on_start
//
// Nothing here throws, prints or touches the system beyond reading the file
// in load_config (and the password file in read_remote_password): groups are not resolved and
// directories not checked here; the daemon does that when it applies the config.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace kv::daemon {

// Same values as KV_HUGEPAGES_* in <kv/kv.h>, so a cast fills kv_create_opts.
enum class HugepageMode : uint32_t { Never = 0, Prefer = 1, Require = 2 };

// syslog priorities, the <N> prefix journald reads from stderr.
enum class LogLevel { Error = 3, Warning = 4, Notice = 5, Info = 6, Debug = 7 };

inline constexpr int kNumaNone = -1;  // no NUMA binding
inline constexpr int kNumaLocal = -2; // the node the daemon runs on when it creates the pool

inline constexpr uint64_t kMinPoolSize = 16ULL << 20;

// [pool.remote]: the Redis Cluster tier the daemon uploads committed blocks
// to and fetches missed ones from (remote_tier.h). Absent: no remote tier.
enum class WritePolicy { None, WriteBehind }; // "none" | "write-behind"
struct RemoteConfig {
    bool enabled = false;           // the table is present
    std::vector<std::string> seeds; // cluster seed nodes, "host:port"; at least one
    std::string key_prefix = "kvpool:";
    WritePolicy write = WritePolicy::WriteBehind;
    std::vector<std::string> namespaces; // model names uploaded and fetched; empty: all
    uint64_t bandwidth = 0;              // upload cap in bytes per second; 0: none
    uint32_t ttl_s = 0;                  // 0: values never expire; else SET ... EX ttl_s
    std::string username;                // ACL user for AUTH; "": AUTH with the password alone
    std::string password_file;       // AUTH password from a file (root-owned, not world-readable)
    std::string password_credential; // or from a systemd credential ($CREDENTIALS_DIRECTORY)
    uint32_t max_connections = 8;    // to all nodes together, 1..64
    uint32_t timeout_ms = 2000;      // connect and command timeout, 10..60000
    uint64_t queue_bytes = 256ULL << 20; // write-behind backlog; beyond it uploads are dropped
    std::string medium = "REDIS";        // the "medium" of this tier in KV events
    bool operator==(const RemoteConfig &) const = default; // a reload changed it
};

// vLLM's two msgpack encodings of the events inside a batch (kv_events.h).
enum class EventEncoding { Array, Map }; // "array" | "map"
// How a block hash is published: vLLM's int form (the last 8 bytes of the
// hash, big-endian) or its bytes form (the key's 16 bytes).
enum class HashForm { Int, Bytes }; // "int" | "bytes"

// [pool.events]: vLLM-format KV events on ZeroMQ (kv_events.h). Absent: none.
struct EventsConfig {
    bool enabled = false;        // the table is present
    std::string endpoint;        // PUB socket: "tcp://*:5557", "tcp://127.0.0.1:5557", "ipc://PATH"
    std::string replay_endpoint; // ROUTER socket for replay; "": none
    std::string topic;           // first frame of every message; "": the pool's name
    EventEncoding encoding = EventEncoding::Array;
    HashForm hash_form = HashForm::Int;
    uint32_t buffer_steps = 10000; // batches kept for replay
    uint32_t hwm = 100000;         // PUB send high-water mark
    uint32_t max_batch = 512;      // events per batch
    std::string medium = "CPU";    // the "medium" of the pool's own blocks
};

// One key of [pool.encryption]: where its 32 bytes come from (keyring.h).
struct KeyConfig {
    std::string id;         // 1..31 of [A-Za-z0-9_.-], unique in the pool
    std::string file;       // absolute path of a root-owned key file, or
    std::string credential; // the name of a systemd credential; exactly one is set
    bool operator==(const KeyConfig &) const = default;
};

// [pool.encryption]: snapshots and remote values of the pool are sealed
// with AES-256-GCM (uapi/kvpool/keywrap.h). Absent: written in the clear.
struct EncryptionConfig {
    bool enabled = false;        // the table is present
    std::string key;             // the id of the key that seals; one of keys
    std::vector<KeyConfig> keys; // [[pool.encryption.keys]]: at least one
    bool operator==(const EncryptionConfig &) const = default;
};

struct PoolConfig {
    std::string name;  // [A-Za-z0-9_.-]{1,63}, not "." or "..", unique across pools
    uint64_t size = 0; // >= kMinPoolSize; "512M" or an integer byte count
    HugepageMode hugepages = HugepageMode::Prefer; // "require" | "prefer" | "never"
    int numa_node = kNumaNone;                     // node >= 0, kNumaLocal or kNumaNone
    std::string eviction =
        "prefix";         // a kv_evict_policy_name(): clock, lru, lfu, fifo, priority, prefix
    std::string group;    // owner group of the pool file; "" = DaemonConfig::admin_group
    uint32_t mode = 0660; // file mode; the file gives it as a quoted octal string
    bool prefault = true;
    double high_watermark = 0.95; // fractions of capacity, 0 < low < high <= 1
    double low_watermark = 0.85;
    uint64_t slab_size = 0;      // 0 = libkv default; else a power of two, 64 KiB..1 GiB
    uint64_t avg_block_size = 0; // 0 = libkv default; else 4 KiB..slab size
    uint32_t max_clients = 0;    // 0 = libkv default; else 1..KV_MAX_CLIENTS (4095)
    uint32_t max_entries = 0;    // 0 = sized by avg_block_size alone; else a cap, 64..0xfffffff0
    std::string snapshot_dir;    // parse_config fills in DaemonConfig::state_dir when absent
    bool persist_on_stop = false;
    bool restore_on_start = false;
    // Change-feed slots in the region (uapi/kvpool/region.h): 0 or a power
    // of two, 64..1048576. 0: no feed, so no events and no write-behind.
    uint32_t feed_slots = 4096;
    RemoteConfig remote;
    EventsConfig events;
    EncryptionConfig encryption;
    // Zero a block's bytes before its space can be reused (remove, eviction,
    // expiry, a reaped reservation): uapi/PROTOCOL.md, secure erase.
    bool secure_erase = false;
};

struct DaemonConfig {
    std::string control_socket = "/run/kvpool/control";
    std::string shm_dir = "/dev/shm/kvpool";            // where 4 KiB-page pool files live
    std::string hugepage_dir = "/dev/hugepages/kvpool"; // a directory on a hugetlbfs mount
    std::string state_dir = "/var/lib/kvpool";
    std::string admin_group = "kvpool"; // may create pools; owns the control socket
    // "" (off), "tcp:127.0.0.1:9464", "tcp:[::1]:9464" or "unix:/run/kvpool/metrics".
    // TCP only on loopback (127.0.0.0/8 or ::1): a reader is identified in
    // the kernel's socket table, which holds this host's sockets only.
    std::string metrics;
    uint32_t reap_interval_ms = 200;  // 10..1000
    uint32_t evict_interval_ms = 100; // 10..10000
    uint32_t watchdog_divisor = 2;    // not configurable: ping at WATCHDOG_USEC / this
    LogLevel log_level = LogLevel::Info;
    // Audit trail: every control operation that reads or changes data goes
    // to the journal (audit.h), at most audit_rate entries a second on
    // average (bursts of 10x), then one entry saying how many were dropped.
    bool audit = true;
    uint32_t audit_rate = 100; // 1..100000
    std::vector<PoolConfig> pools;
};

// Parse the text of a config file. origin names it in messages (a path, or
// "<stdin>"). Errors look like
//   /etc/kvpool/kvpoold.toml:14:12: pool[0].prefault: expected a boolean, got string "yes"
// Never throws.
std::expected<DaemonConfig, std::string> parse_config(std::string_view text,
                                                      std::string_view origin);

// Read path and parse it. A missing or unreadable file is an error naming
// the path and strerror; so is a file over 1 MiB. Never throws.
std::expected<DaemonConfig, std::string> load_config(const std::string &path);

// One line for the startup log, e.g.
//   control_socket=/run/kvpool/control ... pools=1 [default 1.0 GiB hugepages=prefer ...]
std::string describe(const DaemonConfig &cfg);

// The AUTH password of a remote tier: the first line of password_file (a
// regular file owned by root or the daemon's user, with no access for
// others), or of $CREDENTIALS_DIRECTORY/password_credential; "" when the
// tier has neither. Errors name the file and what is wrong with it.
std::expected<std::string, std::string> read_remote_password(const RemoteConfig &rc);

// The spellings used in the file, for logs and kvctl.
std::string_view to_string(HugepageMode m);
std::string_view to_string(LogLevel l);

// DaemonConfig::metrics taken apart. parse_config has already checked the
// string; the metrics server calls this again to get the pieces.
struct MetricsEndpoint {
    enum class Kind { Off, Tcp, Unix };
    Kind kind = Kind::Off;
    std::string host;  // Tcp: "127.0.0.1" or "::1" (no brackets)
    uint16_t port = 0; // Tcp: 1..65535
    std::string path;  // Unix: absolute, fits sockaddr_un
};
// Errors name the text seen and the accepted forms (no file or key prefix).
std::expected<MetricsEndpoint, std::string> parse_metrics(std::string_view s);

} // namespace kv::daemon
