/* SPDX-License-Identifier: MIT */
/*
 * libkv: the kvpool client library, C API.
 *
 * Every function is safe to call from C and C++, never throws, never prints,
 * and returns 0 (or a documented non-negative value) on success and -errno
 * on failure. Functions that can fail for a reason a person must read also
 * fill a caller-provided message buffer (errbuf, errlen; may be NULL/0).
 *
 * Concurrency: a struct kv_pool is one client of a pool (one slot in the
 * pool's client table). All data-path calls on one kv_pool may be made from
 * many threads at once. Many processes may attach to the same pool; every
 * data-path call is lock-free and survives any other process dying at any
 * instruction (see uapi/PROTOCOL.md).
 */
#ifndef KV_KV_H
#define KV_KV_H

#include <stddef.h>
#include <stdint.h>

#include <kvpool/region.h>

#ifdef __cplusplus
extern "C" {
#define KV_NOEXCEPT noexcept
#else
#define KV_NOEXCEPT
#endif

struct kv_pool;

/* A 128-bit block key, unique within a namespace. */
struct kv_key {
	uint64_t lo;
	uint64_t hi;
};

/* ---- Pool lifecycle ---------------------------------------------------- */

#define KV_HUGEPAGES_NEVER 0   /* 4 KiB pages */
#define KV_HUGEPAGES_PREFER 1  /* hugepages when the path is on hugetlbfs (or memfd) and pages are free, else 4 KiB */
#define KV_HUGEPAGES_REQUIRE 2 /* fail with -ENOMEM/-EINVAL and a message when hugepages cannot back the pool */

#define KV_CREATE_F_PREFAULT (1U << 0) /* fault every page in at creation */
#define KV_CREATE_F_EXCL (1U << 1)     /* fail with -EEXIST if the path exists (the default since LIBKV_0.3) */
#define KV_CREATE_F_REPLACE (1U << 2)  /* replace an existing file: its blocks are lost to new attachers */
/* A client slot beyond max_clients, claimed only with KV_ATTACH_F_DAEMON (v1.2). */
#define KV_CREATE_F_DAEMON_SLOT (1U << 3)
/* Since ABI v1.4 (an older libkv refuses the flag: -EINVAL): zero a
 * block's bytes before its space can be reused (remove, eviction, expiry,
 * an aborted or reaped reservation), so a freed block is never readable in
 * the region, and a reservation is all zero. Sets the region's
 * KV_INCOMPAT_F_SECURE_ERASE, so libkv before v1.4 cannot attach it
 * (uapi/PROTOCOL.md section 14). */
#define KV_CREATE_F_SECURE_ERASE (1U << 4)

struct kv_create_opts {
	uint32_t struct_size;     /* sizeof(struct kv_create_opts) */
	uint32_t hugepages;       /* KV_HUGEPAGES_* */
	uint64_t size;            /* total region bytes, metadata included; rounded up to the page size */
	int32_t numa_node;        /* node to bind to, or -1 for no binding */
	uint32_t flags;           /* KV_CREATE_F_* */
	uint64_t slab_size;       /* 0: 4 MiB. Power of two, 64 KiB..1 GiB; also the largest block */
	uint64_t avg_block_size;  /* 0: 16 KiB. Sizes the entry table: entries = data / avg_block_size */
	uint32_t max_clients;     /* 0: 64 */
	uint32_t pins_per_client; /* 0: 4096 */
	uint32_t max_namespaces;  /* 0: 64 */
	uint32_t mode;            /* file mode of a created file; 0: 0660 */
	/* Since LIBKV_0.2 (struct_size >= 64; a smaller struct gets KV_EVICT_CLOCK): */
	uint32_t evict_policy; /* KV_EVICT_* (region.h); kv_create_opts_init: KV_EVICT_PREFIX */
	/* Since LIBKV_0.3 (was reserved0, zero): */
	uint32_t max_entries; /* 0: no cap; else 64..0xfffffff0, at most this many entry slots */
	/* Since LIBKV_0.5 (struct_size >= 72; a smaller struct gets no feed): */
	uint32_t feed_slots; /* 0: no change feed; else a power of two, 64..1048576 (region.h
	                      * KV_FEED_*): records of commits, removes, evictions and expiries
	                      * that kvpoold drains (uapi/PROTOCOL.md section 13) */
	uint32_t reserved1;  /* zero */
};

/* Fill opts with defaults for a pool of size bytes (policy: KV_EVICT_PREFIX). */
void kv_create_opts_init(struct kv_create_opts *opts, uint64_t size) KV_NOEXCEPT;

/*
 * Create a pool backed by the file at path (tmpfs such as /dev/shm for 4 KiB
 * pages, a hugetlbfs mount for hugepages) and initialize it. The backing is
 * reserved up front (fallocate), so running out of memory later cannot
 * SIGBUS a client.
 * A file already at path is left alone and the call fails with -EEXIST,
 * unless opts.flags has KV_CREATE_F_REPLACE: then the new pool replaces it
 * (processes attached to the old one keep it; every new attacher sees the
 * new, empty one).
 * Returns 0, -EEXIST (path exists), -EINVAL (bad option: message says
 * which), -ENOMEM / -ENOSPC (not enough memory or hugepages: message says how
 * many are needed), or another -errno from the system.
 */
int kv_pool_create(const char *path, const struct kv_create_opts *opts, char *errbuf, size_t errlen) KV_NOEXCEPT;

/*
 * Create an anonymous pool in a memfd (MFD_HUGETLB when hugepages are asked
 * for and available). On success *fd_out is the memfd; pass it to
 * kv_pool_attach_fd or to other processes (SCM_RIGHTS, /proc/PID/fd/N).
 */
int kv_pool_create_memfd(const char *name, const struct kv_create_opts *opts, int *fd_out, char *errbuf,
                         size_t errlen) KV_NOEXCEPT;

/* Remove the pool file. Attached processes keep their mapping. */
int kv_pool_destroy(const char *path) KV_NOEXCEPT;

#define KV_ATTACH_F_NO_REAP (1U << 0) /* do not reap dead clients during attach */
/* Claim the region's daemon slot (KV_CREATE_F_DAEMON_SLOT) if it is free,
 * else any free slot: for kvpoold, which must be able to serve a pool
 * whose other slots are all held. */
#define KV_ATTACH_F_DAEMON (1U << 1)

/*
 * Attach to a pool: map it, validate the header (magic, ABI major, unknown
 * incompat bits, sizes, every section offset, reserved fields) and claim a
 * client slot. Validation errors return -EPROTO (wrong format or version),
 * -EBADMSG (inconsistent geometry), -ENODATA (magic not yet published /
 * truncated file) and describe the value seen and the value expected in
 * errbuf. -EUSERS: the client table is full.
 */
int kv_pool_attach(const char *path, uint32_t flags, struct kv_pool **out, char *errbuf, size_t errlen) KV_NOEXCEPT;
int kv_pool_attach_fd(int fd, uint32_t flags, struct kv_pool **out, char *errbuf, size_t errlen) KV_NOEXCEPT;

/* Release every pin and reservation this client holds, free its slot, unmap. */
int kv_pool_detach(struct kv_pool *pool) KV_NOEXCEPT;

/*
 * Check a mapped region image without attaching (used by attach, tools and
 * fuzzers): 0 or a negative code as for attach, with the reason in errbuf.
 */
int kv_region_validate(const void *base, uint64_t len, char *errbuf, size_t errlen) KV_NOEXCEPT;

/* ---- Namespaces --------------------------------------------------------- */

void kv_manifest_init(struct kv_manifest *m, const char *model_name, uint32_t block_tokens) KV_NOEXCEPT;

/*
 * Find the namespace whose manifest equals *m byte for byte, or register it.
 * *ns_out receives its id, *seed_out (optional) its chain seed.
 * -EINVAL: invalid manifest (message says which field); -ENOSPC: table full.
 */
int kv_ns_register(struct kv_pool *pool, const struct kv_manifest *m, uint32_t *ns_out, uint64_t *seed_out) KV_NOEXCEPT;

/* Copy out the manifest of namespace ns. -ENOENT if not registered. */
int kv_ns_get(struct kv_pool *pool, uint32_t ns, struct kv_manifest *out, uint64_t *seed_out) KV_NOEXCEPT;

/* The chain seed a manifest yields (XXH3-64 of its bytes). */
uint64_t kv_manifest_seed(const struct kv_manifest *m) KV_NOEXCEPT;

/* ---- Chained block hashing --------------------------------------------- */

/*
 * key = XXH3-128(seed, prev || tokens[0..n)), with prev = {0,0} for the first
 * block of a sequence. Equal prefixes give equal keys; any earlier token that
 * differs changes every later key.
 */
struct kv_key kv_hash_block(uint64_t seed, const struct kv_key *prev, const uint32_t *tokens, size_t n) KV_NOEXCEPT;

/*
 * Hash the full blocks of a token sequence: keys[i] for i < n_tokens /
 * block_tokens (at most max_keys). Returns the number of keys written.
 */
size_t kv_hash_chain(uint64_t seed, const uint32_t *tokens, size_t n_tokens, uint32_t block_tokens, struct kv_key *keys,
                     size_t max_keys) KV_NOEXCEPT;

/* ---- vLLM prefix-cache block hashes (since LIBKV_0.4) -------------------- */

/*
 * vLLM's block hashes, bit for bit, so a kvpool key can be derived from the
 * hash an engine already computes (doc/vllm-keys.md). For a scheme H
 * (KV_HASH_VLLM_SHA256_CBOR: SHA-256; KV_HASH_VLLM_XXHASH_CBOR: XXH3-128 as
 * 16 big-endian bytes, high half first):
 *   NONE_HASH = H(cbor(seed as a text string))
 *   hash(i)   = H(cbor([hash(i-1), [token ids of block i], extra(i)]))
 * with hash(-1) = NONE_HASH, cbor() the canonical encoding that Python's
 * cbor2.dumps(x, canonical=True) produces (tuples are arrays) and extra(i)
 * the block's extra keys (LoRA name, multimodal (identifier, offset) pairs,
 * cache salt, prompt-embeds digest) or null.
 * All functions are pure: any thread, no pool needed, nothing allocated
 * beyond a per-call buffer (and one digest context per thread for SHA-256).
 */

/* Longest hash of any scheme, in bytes. */
#define KV_VLLM_HASH_MAX 32

/* Hash length of a vLLM scheme: 32 (SHA256_CBOR), 16 (XXHASH_CBOR), or 0 (not a vLLM scheme). */
size_t kv_vllm_hash_len(uint32_t scheme) KV_NOEXCEPT;

/*
 * NONE_HASH, the parent of every first block, from a seed of seed_len bytes
 * of UTF-8 (vLLM: the value of PYTHONHASHSEED; an engine without one uses
 * random bytes and shares with nobody). out receives kv_vllm_hash_len(scheme)
 * bytes. Returns that length, or -EINVAL (unknown scheme, NULL out, NULL
 * seed with seed_len > 0), -ENOMEM, -EIO (the SHA-256 provider failed).
 */
int kv_vllm_none_hash(uint32_t scheme, const char *seed, size_t seed_len, uint8_t *out) KV_NOEXCEPT;

/*
 * Hash the full blocks of a token sequence: block i covers tokens
 * [i * block_size, (i + 1) * block_size), its parent is parent (parent_len
 * bytes: NONE_HASH for a sequence's first block, or the hash of the block
 * before tokens[0]) for i = 0 and hash(i-1) after. extra_cbor[i] /
 * extra_len[i] are block i's extra keys, each exactly one canonical CBOR
 * item (usually an array); extra_cbor == NULL, extra_cbor[i] == NULL or
 * extra_len[i] == 0 means null (no extra keys). out receives
 * min(n_tokens / block_size, max_blocks) hashes of kv_vllm_hash_len(scheme)
 * bytes each, back to back; a trailing partial block is not hashed.
 * Returns the number of hashes written, or -EINVAL (unknown scheme,
 * block_size 0, parent NULL or parent_len 0, NULL tokens with
 * n_tokens > 0, NULL out with max_blocks > 0, NULL extra_len with non-NULL
 * extra_cbor, an extra item that is not one well-formed canonical CBOR item),
 * -ENOMEM, -EIO (the SHA-256 provider failed).
 */
int64_t kv_vllm_block_hashes(uint32_t scheme, const uint8_t *parent, size_t parent_len, const uint32_t *tokens,
                             size_t n_tokens, uint32_t block_size, const uint8_t *const *extra_cbor,
                             const size_t *extra_len, uint8_t *out, size_t max_blocks) KV_NOEXCEPT;

/*
 * The kvpool key of an engine block hash of len bytes: its last 16 bytes read
 * big-endian, hi = bytes [len-16, len-8), lo = [len-8, len) (a shorter hash
 * is zero-extended on the left). So key == int.from_bytes(h[-16:], "big") in
 * Python and key.lo is vLLM's KV-event form of the hash (its last 8 bytes,
 * VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES). Strip the 4-byte group id of a
 * BlockHashWithGroupId first. hash may be NULL when len is 0.
 */
struct kv_key kv_vllm_key(const uint8_t *hash, size_t len) KV_NOEXCEPT;

/*
 * The manifest hash_seed of a vLLM scheme and seed: the first 8 bytes of
 * NONE_HASH read big-endian. Returns 0 or the errors of kv_vllm_none_hash.
 */
int kv_vllm_seed_id(uint32_t scheme, const char *seed, size_t seed_len, uint64_t *out) KV_NOEXCEPT;

/*
 * Set m->hash_scheme = scheme and m->hash_seed = kv_vllm_seed_id(scheme,
 * seed): a namespace for blocks keyed by kv_vllm_key. Returns 0 or the errors
 * of kv_vllm_none_hash (m untouched on error; -EINVAL for a NULL m).
 */
int kv_manifest_set_vllm(struct kv_manifest *m, uint32_t scheme, const char *seed, size_t seed_len) KV_NOEXCEPT;

/* ---- Data path ----------------------------------------------------------- */

/* Optional metadata stored with a block. */
struct kv_meta {
	uint32_t tokens;   /* token count the block covers */
	uint32_t priority; /* larger survives longer under priority eviction */
	uint64_t user_tag; /* opaque to kvpool */
};

/* Returned by put and reserve when the key is already committed: no copy was made. */
#define KV_DEDUP 1

/*
 * Options of kv_put_ex / kv_reserve_ex (since LIBKV_0.2). Zero it, set
 * struct_size = sizeof(struct kv_put_opts); a smaller struct_size (an older
 * caller) leaves later fields at zero.
 */
#define KV_PUT_F_PARENT (1U << 0) /* parent is set: the block before this one in its chain */
struct kv_put_opts {
	uint32_t struct_size;
	uint32_t flags; /* KV_PUT_F_* */
	struct kv_meta meta;
	struct kv_key parent; /* with KV_PUT_F_PARENT: the preceding block of the chain, without
	                       * which this one is useless; PREFIX pools evict children first */
	uint32_t ttl_ms;      /* 0: no expiry; else the block expires ttl_ms after its commit: gets,
	                       * contains and match_prefix stop finding it and eviction takes it first */
	/* Since LIBKV_0.5 (was reserved, zero): the token ids the block covers,
	 * recorded in the pool's change feed with the commit (kv_put_ex only;
	 * kv_reserve_ex refuses them: pass them to kv_commit_ex). More than
	 * KV_FEED_MAX_IDS are not recorded (the record says so). */
	uint32_t n_token_ids;
	const uint32_t *token_ids; /* n_token_ids ids; NULL when n_token_ids is 0 */
};

/* A pinned, read-only, zero-copy view of a committed block. */
struct kv_view {
	const void *data;
	uint64_t length;
	uint64_t checksum;
	struct kv_meta meta;
	uint64_t handle[2]; /* private: identifies the pin */
};

/* A reservation: the caller writes up to length bytes at data, then commits or aborts. */
struct kv_reservation {
	void *data;
	uint64_t length;
	uint64_t handle[2]; /* private */
};

/*
 * Copy len bytes in under (ns, key) and commit them, with an XXH3-64
 * checksum computed during the copy.
 * Returns 0 (stored), KV_DEDUP (already committed; nothing copied),
 * -EBUSY (another client holds a reservation on the key), -EMSGSIZE (len is 0
 * or larger than the slab size), -ENOSPC (no space even after evicting every
 * unpinned block), -ENOENT (unknown namespace).
 */
int kv_put(struct kv_pool *pool, uint32_t ns, const struct kv_key *key, const void *data, uint64_t len,
           const struct kv_meta *meta) KV_NOEXCEPT;

/*
 * Reserve len bytes under (ns, key) for the caller to write in place.
 * Returns 0 with *out filled, KV_DEDUP (already committed; *out untouched), or
 * the errors of kv_put. Until committed the key is invisible to readers and
 * other writers get -EBUSY.
 */
int kv_reserve(struct kv_pool *pool, uint32_t ns, const struct kv_key *key, uint64_t len, const struct kv_meta *meta,
               struct kv_reservation *out) KV_NOEXCEPT;

/*
 * kv_put / kv_reserve with options (parent in a chain, time to live); opts may
 * be NULL. A parent that is not committed is ignored (the block is then a
 * chain root for eviction). Returns what kv_put / kv_reserve return, and
 * -EINVAL for an opts struct_size below 8, unknown flags or non-zero reserved.
 * A put of a key whose block has expired replaces it.
 */
int kv_put_ex(struct kv_pool *pool, uint32_t ns, const struct kv_key *key, const void *data, uint64_t len,
              const struct kv_put_opts *opts) KV_NOEXCEPT;
int kv_reserve_ex(struct kv_pool *pool, uint32_t ns, const struct kv_key *key, uint64_t len,
                  const struct kv_put_opts *opts, struct kv_reservation *out) KV_NOEXCEPT;

#define KV_COMMIT_F_CHECKSUM (1U << 0) /* checksum argument is the XXH3-64 of the data: do not recompute */

/*
 * Publish a reservation: the block becomes immutable and visible. Unless
 * KV_COMMIT_F_CHECKSUM is given the checksum is computed here.
 * Returns 0 or -EINVAL (not a live reservation of this client).
 */
int kv_commit(struct kv_pool *pool, struct kv_reservation *r, uint32_t flags, uint64_t checksum) KV_NOEXCEPT;

/*
 * kv_commit with the block's token ids, recorded in the pool's change feed
 * with the commit (ignored when the pool has no feed); token_ids may be
 * NULL when n is 0. Since LIBKV_0.5. Returns what kv_commit returns.
 */
int kv_commit_ex(struct kv_pool *pool, struct kv_reservation *r, uint32_t flags, uint64_t checksum,
                 const uint32_t *token_ids, uint32_t n) KV_NOEXCEPT;

/* Drop a reservation; its space is freed. 0 or -EINVAL. */
int kv_abort(struct kv_pool *pool, struct kv_reservation *r) KV_NOEXCEPT;

/*
 * Pin a committed block and return a zero-copy view of it. The memory stays
 * valid and unchanged until kv_release, even if the block is removed.
 * Returns 0, -ENOENT (absent, or still being written), -ENOBUFS (this client
 * has pins_per_client pins outstanding).
 */
int kv_get(struct kv_pool *pool, uint32_t ns, const struct kv_key *key, struct kv_view *out) KV_NOEXCEPT;

/* Unpin. 0 or -EINVAL (not a pin of this client). */
int kv_release(struct kv_pool *pool, struct kv_view *view) KV_NOEXCEPT;

/* 1 if committed, 0 if not. */
int kv_contains(struct kv_pool *pool, uint32_t ns, const struct kv_key *key) KV_NOEXCEPT;

/*
 * Remove a committed block. Pinned views stay valid; memory is freed at the
 * last release. Returns 0, -ENOENT, -EBUSY (reserved by a writer).
 */
int kv_remove(struct kv_pool *pool, uint32_t ns, const struct kv_key *key) KV_NOEXCEPT;

#define KV_MATCH_F_PIN (1U << 0) /* pin every matched block; views[] must hold n entries */

/*
 * Longest present prefix of a key chain: the number m of leading keys that
 * are committed (0..n). With KV_MATCH_F_PIN, views[0..m) are pinned and must
 * each be released. Returns m, or -ENOBUFS if pins ran out (none are kept).
 */
int kv_match_prefix(struct kv_pool *pool, uint32_t ns, const struct kv_key *keys, size_t n, uint32_t flags,
                    struct kv_view *views) KV_NOEXCEPT;

/* Read block data through a view and check it against its checksum: 0 or -EBADMSG. */
int kv_view_verify(const struct kv_view *view) KV_NOEXCEPT;

/* ---- Maintenance ----------------------------------------------------------- */

/*
 * Find clients whose process is gone (pid and start time), release their
 * pins, abort their reservations, finish any half-done free, activation or
 * retirement they left, and free their slots. Any process may call it at any
 * time; it is also run at attach. Returns the number of clients reaped.
 */
int kv_reap(struct kv_pool *pool) KV_NOEXCEPT;

/*
 * Evict unpinned blocks, by the pool's policy, until at least bytes are
 * freed (the same victim choice as a put that finds no space). Returns bytes
 * freed (capped at INT32_MAX) or -errno.
 */
int64_t kv_evict_bytes(struct kv_pool *pool, uint64_t bytes) KV_NOEXCEPT;

struct kv_stats {
	uint64_t capacity; /* data bytes */
	uint64_t slab_size;
	uint64_t page_size;
	uint32_t numa_node;
	uint32_t backing;
	uint32_t clients;   /* LIVE client slots */
	uint32_t n_entries; /* entry table size */
	uint64_t gets, hits, misses, puts, dedups, evictions, removes;
	uint64_t bytes_committed, bytes_freed;
	uint64_t reaps;
};

/* Counter totals (sum over client slots) and geometry. O(max_clients). */
int kv_pool_stats(struct kv_pool *pool, struct kv_stats *out) KV_NOEXCEPT;

/*
 * The pool's live bytes: lengths of the blocks committed and not yet freed
 * (removed or evicted blocks count until their last pin is released). O(max_clients),
 * cheap enough to poll. In a v1.2 region (KV_INCOMPAT_F_LIVE_ACCT) the figure
 * is exact whenever no operation is in flight, whatever aborted, was reaped or
 * was killed before; in an older region it is bytes_committed - bytes_freed.
 * Returns 0, or -EINVAL.
 */
int kv_pool_live_bytes(struct kv_pool *pool, uint64_t *bytes) KV_NOEXCEPT;

/*
 * Exact accounting by a full scan of the authoritative tables. On a quiescent
 * pool (no operation in flight) the counts are exact and consistency errors
 * are real; under load, transitional states are counted as seen.
 */
struct kv_usage {
	uint64_t entries_committed;
	uint64_t entries_reserved;
	uint64_t entries_dead; /* removed but still pinned (or being freed) */
	uint64_t entries_free;
	uint64_t bytes_committed; /* sum of lengths of committed entries */
	uint64_t blocks_free;
	uint64_t blocks_used;      /* ENTRY or OWNED */
	uint64_t block_bytes_used; /* class sizes of used blocks */
	uint64_t pins;             /* sum of entry pin counts */
	uint64_t journal_pins;     /* HELD journal slots of live clients */
	uint64_t slabs_free, slabs_active;
	uint64_t orphan_blocks; /* used blocks no live entry or live client owns: leaks */
	uint64_t bad_links;     /* index inconsistencies found */
	uint64_t unreachable;   /* committed entries the index does not reach */
};
int kv_pool_usage(struct kv_pool *pool, struct kv_usage *out) KV_NOEXCEPT;

/* ---- Inspection (tools and the daemon) ---------------------------------------- */

/* One row of the entry table, as read (not a consistent snapshot under load). */
struct kv_entry_info {
	uint32_t index; /* entry table index */
	uint32_t state; /* KV_ENTRY_RESERVED, KV_ENTRY_COMMITTED or KV_ENTRY_DEAD */
	uint32_t ns;
	uint32_t pins;
	struct kv_key key;
	uint64_t length;
	uint64_t checksum; /* valid once committed */
	struct kv_meta meta;
	uint64_t commit_ns; /* CLOCK_REALTIME at commit, 0 while reserved */
};

/*
 * Copy out up to max rows of in-use entries (reserved, committed, or removed
 * but still pinned), starting at table index *cursor, which is advanced past
 * the last index examined; start with *cursor = 0 and stop when it reaches
 * kv_pool_header(pool)->n_entries. Rows whose state changed while being read
 * are skipped. Returns the number of rows written, or -EINVAL.
 */
int kv_pool_entries(struct kv_pool *pool, uint64_t *cursor, struct kv_entry_info *out, size_t max) KV_NOEXCEPT;

/* One occupied slot of the client table. */
struct kv_client_info {
	uint32_t slot;
	uint32_t pid;            /* the client's pid (the reaper's while REAPING) */
	uint32_t state;          /* KV_CLIENT_LIVE or KV_CLIENT_REAPING */
	uint32_t alive;          /* 1 if the process still exists (pid and start time match) */
	uint64_t start_time;     /* /proc/PID/stat starttime, 0 if unknown */
	uint64_t attach_ns;      /* CLOCK_REALTIME at attach */
	uint32_t pins;           /* pins held (journal slots in use) */
	uint32_t reservations;   /* entries reserved and not yet committed */
	uint64_t bytes_reserved; /* block bytes of those reservations */
};

/*
 * Describe occupied client slots: writes up to max rows, returns how many
 * slots are occupied (may exceed max), or -EINVAL. O(max_clients *
 * pins_per_client + n_entries).
 */
int kv_pool_clients(struct kv_pool *pool, struct kv_client_info *out, size_t max) KV_NOEXCEPT;

/*
 * Reap the client slots of one process, which must be gone: 0 when it held
 * no slot, the number of slots reaped, -EBUSY when the process is still
 * alive (kill it first), -EINVAL.
 */
int kv_reap_pid(struct kv_pool *pool, uint32_t pid) KV_NOEXCEPT;

/* The region base and header of an attached pool (read-only use). */
const struct kv_region_header *kv_pool_header(const struct kv_pool *pool) KV_NOEXCEPT;
/* This client's slot index. */
uint32_t kv_pool_client_index(const struct kv_pool *pool) KV_NOEXCEPT;

/* The name of a KV_EVICT_* policy ("clock", "lru", "lfu", "fifo", "priority", "prefix"), or NULL. */
const char *kv_evict_policy_name(uint32_t policy) KV_NOEXCEPT;
/* The KV_EVICT_* value of a policy name, or -EINVAL. */
int kv_evict_policy_parse(const char *name) KV_NOEXCEPT;

/* A short English description of a libkv return code. */
const char *kv_strerror(int code) KV_NOEXCEPT;

/* ---- Remote tier (since LIBKV_0.5) ------------------------------------- */

/* What kv_remote_fetch did (kvpoold's answer, control.h REMOTE_FETCH). */
struct kv_remote_fetch_result {
	uint32_t struct_size; /* sizeof(struct kv_remote_fetch_result), set by the caller */
	uint32_t committed;   /* keys[first, first + committed) are in the pool now */
	uint32_t present;     /* of those, already in the pool */
	uint32_t fetched;     /* of those, brought from the remote tier */
	uint32_t missing;     /* blocks the remote tier did not hold (0 or 1: the fetch stops there) */
	uint32_t rejected;    /* values that failed a check (never committed) */
	uint32_t errors;      /* Redis errors and timeouts */
	uint32_t reserved0;
	uint64_t fetched_bytes;
	uint64_t reserved[4];
};

/*
 * Ask kvpoold to bring blocks keys[first, n) of one chain (namespace ns of
 * pool) from the pool's remote tier into the pool, in order, stopping at
 * the first block it cannot bring; then match them like any local block.
 * control_socket: kvpoold's (NULL: /run/kvpool/control). pool_name: the
 * name kvpoold serves the pool under (NULL: the name of the file the pool
 * was attached from, which is kvpoold's name for it); the daemon checks
 * that it is the region the caller attached. Blocks until kvpoold answers,
 * at most about timeout_ms (0: 10 s) plus the daemon's Redis timeout.
 * out (optional) receives the counts. Returns committed (>= 0), or
 * -ENODEV (no remote tier), -ESTALE (the pool was recreated), -ENOENT (no
 * such pool or namespace), -EPERM (not in the pool's group), -EINVAL (bad
 * argument: n 0 or over 16384, first >= n), -ECONNREFUSED / -ENOENT (no
 * daemon at the socket), -ETIMEDOUT, -EPROTO (a malformed answer); errbuf
 * says why.
 */
int kv_remote_fetch(struct kv_pool *pool, const char *control_socket, const char *pool_name, uint32_t ns,
                    const struct kv_key *keys, size_t n, size_t first, uint32_t timeout_ms,
                    struct kv_remote_fetch_result *out, char *errbuf, size_t errlen) KV_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* KV_KV_H */
