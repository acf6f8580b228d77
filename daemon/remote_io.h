// SPDX-License-Identifier: MIT
//
// The remote tier's two primitives, between a pool (through libkv's C API)
// and a Redis Cluster (redis_cluster.h), in the value format of
// uapi/kvpool/remote.h. They know nothing of config files, queues or
// threads: the remote tier (remote_tier.h) decides what to move and when,
// and calls these from its worker threads, one ClusterClient per thread.
//
// fetch_into_pool brings blocks [first, n) of a chain from the cluster into
// the pool. It GETs them pipelined, a batch at a time (reading at most one
// byte more than the pool's largest block of each: a longer value is
// refused unread), checks every header field (remote_value.h) and copies
// each value's bytes into a reservation while hashing them (an encrypted
// value: decrypts them into it, then hashes them there for the pool's
// checksum); only a value that passes every check, its checksum or its
// tags included, is committed (with the
// previous key of the chain as its parent and the namespace's block_tokens
// as its token count). It stops at the first block that is missing,
// refused or fails, as a chain is useless past a hole: the blocks
// committed so far stay. A key the pool already holds counts as present
// and the chain goes on.
//
// upload_blocks checks that each item's digest is its namespace's, pins
// each named block, checks that it is still the block the caller meant
// (entry and generation when given, length) and that its bytes still hash
// to its checksum, then SETs header + bytes, pipelined, a batch at a time,
// straight from the pinned view, and unpins. With a keyring, each block is
// sealed (remote_value.h seal_value) into a buffer of the calling thread's
// first, and header + crypto block + ciphertext is SET instead.
//
// Encryption: keyring (in the options) is the pool's, null when it has
// none. Each thread that calls these keeps its own AES context and, for
// uploads, a sealing buffer as large as its largest batch.
//
// Neither throws. A node that is down, slow or empty shows up as errors or
// misses in the result; nothing invalid reaches the pool.
#pragma once

#include "redis_cluster.h"
#include "remote_value.h"

#include <chrono>
#include <cstdint>
#include <kv/kv.h>
#include <span>
#include <string>
#include <vector>

namespace kv::daemon {

struct FetchOptions {
    std::string key_prefix = "kvpool:"; // as RemoteConfig::key_prefix
    uint32_t batch = 16;   // keys GET per pipelined round (bounds memory); 0 counts as 1
    uint32_t ttl_ms = 0;   // kv_put_opts.ttl_ms of the committed blocks
    uint32_t priority = 0; // kv_meta.priority of the committed blocks
    // The pool's keys: only values sealed under one of them are committed.
    // Null: only plain values are.
    const Keyring *keyring = nullptr;
    // The call gives up (an error on the block it was at) by then.
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct FetchResult {
    size_t committed = 0; // blocks from first on now in the pool, consecutively (fetched + present)
    size_t fetched = 0;   // of those, committed by this call
    size_t present = 0;   // of those, already in the pool (KV_DEDUP)
    size_t missing = 0;   // 0 or 1: the block the chain stopped at was not in the cluster
    size_t rejected = 0;  // 0 or 1: it was refused (rejected_by says why)
    size_t errors = 0;    // 0 or 1: the cluster or the pool failed on it
    RejectCounts rejected_by{};
    uint64_t bytes = 0; // bytes committed by this call
    std::string error;  // the reason of a rejection or error
};

FetchResult fetch_into_pool(ClusterClient &cluster, kv_pool *pool, uint32_t ns,
                            const NsDigest &digest, std::span<const kv_key> keys, size_t first,
                            const FetchOptions &opts);

// One block to upload. entry/gen, when entry != KV_NIL32, come from the
// feed event that announced the block: the upload is skipped if the key
// now names another life of the block (removed and stored again).
struct UploadItem {
    uint32_t ns = 0;
    kv_key key{};
    NsDigest digest;     // of ns's manifest
    uint64_t length = 0; // expected length; 0: any
    uint32_t entry = KV_NIL32;
    uint32_t gen = 0;
};

enum class UploadStatus : uint8_t {
    Uploaded,
    Gone,    // not in the pool any more (removed, evicted, expired)
    Changed, // the key holds another life of the block, or another length
    Corrupt, // its bytes do not hash to its checksum: not uploaded
    Error,   // the cluster did not store it, or the pool refused a pin
};
const char *upload_status_name(UploadStatus s);

struct UploadOptions {
    std::string key_prefix = "kvpool:";
    uint32_t ttl_s = 0; // SET ... EX ttl_s; 0: no expiry
    // Per pipelined round, blocks are pinned and sent up to batch_bytes and
    // batch_blocks (the pins come out of the client's pins_per_client), and
    // at least one.
    uint64_t batch_bytes = 64ULL << 20;
    uint32_t batch_blocks = 256;
    // The pool's keys: values are sealed with the current one. Null: plain.
    const Keyring *keyring = nullptr;
};

struct UploadResult {
    size_t uploaded = 0;
    size_t gone = 0;
    size_t changed = 0;
    size_t corrupt = 0;
    size_t errors = 0;
    uint64_t bytes = 0;               // block bytes stored (headers, crypto blocks not counted)
    std::vector<UploadStatus> status; // per item
    std::string error;                // the first error's reason
};

UploadResult upload_blocks(ClusterClient &cluster, kv_pool *pool, std::span<const UploadItem> items,
                           const UploadOptions &opts);

// Free the calling thread's sealing buffer (an uploader going idle: it
// would otherwise keep its largest batch's size). The next encrypted
// upload_blocks on this thread allocates it again.
void release_upload_buffer();

} // namespace kv::daemon
