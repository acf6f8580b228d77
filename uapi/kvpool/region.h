/* SPDX-License-Identifier: MIT */
/*
 * kvpool shared-memory region, ABI v1.
 *
 * This header is the contract between every process that maps a kvpool
 * region. It is C11 and C++20, depends on <stdint.h> only, uses fixed-width
 * unsigned types only, and holds no pointers: every cross-reference is an
 * offset from the region base or an index into a table.
 *
 * The protocol (attach, allocate, publish, pin, release, remove, reap) and
 * what is left behind when a process dies between any two steps is written
 * down in uapi/PROTOCOL.md; the comments here name each field's writers.
 *
 * Compatibility rules:
 *  - Structs grow only at the end; each published size has a KV_*_SIZE_V1.
 *  - An attacher refuses another abi_major, an incompat feature bit it does
 *    not know, or a non-zero reserved field; it ignores compat bits it does
 *    not know.
 *  - All multi-byte fields are little-endian (x86-64 and aarch64 hosts).
 */
#ifndef KVPOOL_UAPI_REGION_H
#define KVPOOL_UAPI_REGION_H

#include <stdint.h>

#ifdef __cplusplus
#define KV_STATIC_ASSERT(c, m) static_assert(c, m)
#define KV_OFFSETOF(t, f) __builtin_offsetof(t, f)
#else
#define KV_STATIC_ASSERT(c, m) _Static_assert(c, m)
#define KV_OFFSETOF(t, f) __builtin_offsetof(t, f)
#endif

/* "KVPOOL\0\1" read as a little-endian uint64_t. Published last, with release
 * (LAY-R1); attachers load it with acquire (LAY-A1). PROTOCOL.md section 12
 * lists every such pair. */
#define KV_REGION_MAGIC 0x01004c4f4f50564bULL
#define KV_ABI_MAJOR 1
#define KV_ABI_MINOR                                                                  \
	4 /* 1.1: eviction policies; 1.2: exact live bytes (KV_INCOMPAT_F_LIVE_ACCT); \
	   * 1.3: change feed (KV_INCOMPAT_F_FEED); 1.4: secure erase                 \
	   * (KV_INCOMPAT_F_SECURE_ERASE) */

/* Incompatible features: an attacher that does not know a set bit refuses. */
#define KV_INCOMPAT_F_CAS16 (1ULL << 0) /* entry ctl/aux pair updated with 16-byte CAS */
/*
 * v1.2: every commit and every free of a committed block is accounted in
 * the committing or freeing client's kv_client.acct records (PROTOCOL.md
 * section 11), so the pool's live bytes are exact at any quiescent point,
 * across aborts, reaps and processes killed at any instruction. Incompatible:
 * a process that committed without accounting would make the figure wrong,
 * so a v1.1 process must not attach such a region.
 */
#define KV_INCOMPAT_F_LIVE_ACCT (1ULL << 1)
/*
 * v1.3: the region has a change feed (feed_off, feed_slots; PROTOCOL.md
 * section 13): every commit, remove, eviction and expiry of a block is
 * recorded by the process that makes it. Incompatible: a process that
 * committed or removed without recording would make the feed lie, so a
 * v1.2 process must not attach such a region. Set only when feed_slots > 0.
 */
#define KV_INCOMPAT_F_FEED (1ULL << 2)
/*
 * v1.4: secure erase (PROTOCOL.md section 14). Every byte of the data area
 * outside a block whose word is OWNED or ENTRY is zero: whoever frees a
 * block (the remover, evictor or expirer that finishes the free, the last
 * unpinner, a reaper finishing a dead client's free or aborting its
 * reservation) zeroes the whole block before its word leaves ENTRY or
 * OWNED. Incompatible: a v1.3 process would free without zeroing and leave
 * a block's bytes readable in free space and in the next reservation.
 */
#define KV_INCOMPAT_F_SECURE_ERASE (1ULL << 3)
#define KV_INCOMPAT_KNOWN \
	(KV_INCOMPAT_F_CAS16 | KV_INCOMPAT_F_LIVE_ACCT | KV_INCOMPAT_F_FEED | KV_INCOMPAT_F_SECURE_ERASE)
/*
 * Compatible features: unknown bits are ignored.
 * EVICT_POLICY (v1.1): the header's evict_policy names the pool's eviction
 * policy and the entry fields rank, parent, kids and ttl_ms are maintained
 * (PROTOCOL.md section 10). A v1.0 process ignores the bit; it still refuses
 * a pool whose evict_policy is not KV_EVICT_CLOCK, because it sees a non-zero
 * reserved header word, so only CLOCK pools are shared with v1.0 processes
 * (which neither stamp ranks nor honour ttl_ms).
 */
#define KV_COMPAT_F_EVICT_POLICY (1ULL << 0)
#define KV_COMPAT_KNOWN (KV_COMPAT_F_EVICT_POLICY)

/*
 * kv_region_header.evict_policy (v1.1). Fixed at creation. The victim is the
 * unpinned committed block with the smallest key, compared in this order:
 * expired (ttl_ms) first, then per policy:
 *   CLOCK    second chance over the entry table (v1.0 behaviour; 0 in v1.0 regions)
 *   LRU      rank = last access tick
 *   LFU      rank = LFU with dynamic ageing: max(rank, lfu_floor) + 1 per access;
 *            equal ranks: the older commit_ns first
 *   FIFO     rank = tick at reserve; accesses do not change it
 *   PRIORITY (priority, rank as LRU): lowest priority first, LRU among equals
 *   PREFIX   (has children, rank as LRU): chain tails first, LRU among tails
 * Every policy but CLOCK picks among a sample of entries (PROTOCOL.md 10).
 */
#define KV_EVICT_CLOCK 0
#define KV_EVICT_LRU 1
#define KV_EVICT_LFU 2
#define KV_EVICT_FIFO 3
#define KV_EVICT_PRIORITY 4
#define KV_EVICT_PREFIX 5
#define KV_EVICT_MAX 5

#define KV_CACHELINE 64
#define KV_HEADER_BYTES 4096 /* the header owns the first 4 KiB of the region */
#define KV_NIL32 0xffffffffU /* "no index" in 32-bit index fields */
#define KV_NUMA_NONE 0xffffffffU
#define KV_MIN_BLOCK_SHIFT 12 /* smallest size class: 4 KiB; all classes are multiples */
#define KV_MAX_CLASSES 64
#define KV_MAX_CLIENTS 4095          /* client index + 1 must fit in 12 bits of kv_entry.aux */
#define KV_MAX_PINS_PER_CLIENT 65536 /* slot index must fit in 16 bits of kv_entry.aux */

/* kv_region_header.backing */
#define KV_BACKING_SHM 1           /* 4 KiB pages: tmpfs file or plain memfd */
#define KV_BACKING_HUGETLBFS 2     /* file on a hugetlbfs mount */
#define KV_BACKING_MEMFD_HUGETLB 3 /* memfd_create(MFD_HUGETLB) */

/* kv_region_header.flags */
#define KV_REGION_F_PREFAULTED (1U << 0)
#define KV_REGION_F_NUMA_BOUND (1U << 1)

/*
 * The region header. Written once by the creator before the magic is
 * published; read-only afterwards. Size: KV_REGION_HEADER_SIZE_V1.
 */
struct kv_region_header {
	uint64_t magic;             /* KV_REGION_MAGIC, stored last (release) */
	uint16_t abi_major;         /* KV_ABI_MAJOR */
	uint16_t abi_minor;         /* KV_ABI_MINOR */
	uint32_t header_size;       /* sizeof(struct kv_region_header) of the creator */
	uint64_t compat_features;   /* KV_COMPAT_* */
	uint64_t incompat_features; /* KV_INCOMPAT_* */
	uint64_t region_size;       /* bytes mapped; equals the backing file size */
	uint64_t page_size;         /* backing page size in effect: 4096 or the hugepage size */
	uint32_t numa_node;         /* node the memory is bound to, or KV_NUMA_NONE */
	uint32_t backing;           /* KV_BACKING_* */
	uint32_t flags;             /* KV_REGION_F_* */
	uint32_t creator_pid;
	uint64_t create_time_ns; /* CLOCK_REALTIME at creation */
	uint64_t pool_id_lo;     /* random id of this region instance */
	uint64_t pool_id_hi;

	/* Geometry. */
	uint32_t max_clients;     /* client table entries, <= KV_MAX_CLIENTS */
	uint32_t pins_per_client; /* journal slots per client, <= KV_MAX_PINS_PER_CLIENT */
	uint32_t max_namespaces;
	uint32_t n_classes; /* size classes in use, <= KV_MAX_CLASSES */
	uint32_t n_entries; /* entry table size; KV_NIL32 is never a valid index */
	uint32_t n_buckets; /* power of two */
	uint32_t n_slabs;
	uint32_t blocks_per_slab; /* slab_size >> KV_MIN_BLOCK_SHIFT: block words per slab */
	uint64_t slab_size;       /* power of two; the largest block */

	/* Sections: offset from the region base and length in bytes. */
	uint64_t state_off, state_len;     /* struct kv_region_state */
	uint64_t class_off, class_len;     /* struct kv_class[n_classes] */
	uint64_t ns_off, ns_len;           /* struct kv_namespace[max_namespaces] */
	uint64_t client_off, client_len;   /* struct kv_client[max_clients] */
	uint64_t journal_off, journal_len; /* struct kv_pin_slot[max_clients][pins_per_client] */
	uint64_t bucket_off, bucket_len;   /* uint64_t link words [n_buckets] */
	uint64_t entry_off, entry_len;     /* struct kv_entry[n_entries] */
	uint64_t slab_off, slab_len;       /* struct kv_slab[n_slabs] */
	uint64_t block_off, block_len;     /* uint64_t block words [n_slabs][blocks_per_slab] */
	uint64_t data_off, data_len;       /* n_slabs * slab_size bytes, page_size aligned */

	/* v1.1 (KV_COMPAT_F_EVICT_POLICY), carved from reserved[0]. */
	uint32_t evict_policy; /* KV_EVICT_*; 0 (CLOCK) in v1.0 regions */
	/* v1.2, carved from reserved0: the last daemon_slots client slots are
	 * claimed only by attachers that ask for one (KV_ATTACH_F_DAEMON), so
	 * the daemon finds a slot when every other one is held. 0 or 1; 0 in
	 * older regions. */
	uint32_t daemon_slots;
	/* v1.3 (KV_INCOMPAT_F_FEED), carved from reserved[0..2]: the change
	 * feed, struct kv_feed_header then struct kv_feed_slot[feed_slots].
	 * All zero when the region has no feed. */
	uint64_t feed_off, feed_len;
	uint32_t feed_slots;     /* 0, or a power of two, KV_FEED_MIN_SLOTS..KV_FEED_MAX_SLOTS */
	uint32_t feed_slot_size; /* sizeof(struct kv_feed_slot) of the creator: KV_FEED_SLOT_SIZE_V1 */
	uint64_t reserved[28];   /* zero on write, checked on attach */
};
#define KV_REGION_HEADER_SIZE_V1 544
KV_STATIC_ASSERT(sizeof(struct kv_region_header) == KV_REGION_HEADER_SIZE_V1, "header v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_header, max_clients) == 88, "header geometry offset");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_header, state_off) == 128, "header sections offset");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_header, evict_policy) == 288, "header v1.1 policy offset");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_header, feed_off) == 296, "header v1.3 feed offset");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_header, feed_slots) == 312, "header v1.3 feed slots");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_header, reserved) == 320, "header reserved offset");

/*
 * Pool-wide mutable words, each on its own cache line because different
 * processes write them independently. All are hints or hands: losing an
 * update (a process dies mid-way) costs at most a little extra scanning.
 */
struct kv_region_state {
	uint64_t clock_hand; /* eviction hand over the entry table; fetch_add by any process */
	uint64_t pad0[7];
	uint64_t slab_hand; /* rebalancing hand over the slab table */
	uint64_t pad1[7];
	uint64_t reap_epoch; /* incremented by every completed reap pass */
	uint64_t pad2[7];
	/* v1.1, LFU pools: the rank of the last LFU victim (dynamic ageing).
	 * Raised (CAS, relaxed) by evictors, read (relaxed) by gets and puts; a
	 * hint: a lost raise only delays ageing. */
	uint64_t lfu_floor;
	/* v1.1: bumped (relaxed fetch_add) by kv_evict_bytes when it freed
	 * something: the daemon's watermark pass and kvctl evict make room on
	 * purpose. A process whose puts keep evicting stops searching for room
	 * before it evicts, and searches again when it reads a new value here.
	 * A hint: a process that never bumps or reads it (v1.0, or v1.1 before
	 * it) only leaves that room to the periodic search (PROTOCOL.md 10). */
	uint64_t room_epoch;
	uint64_t reserved[6];
};
#define KV_REGION_STATE_SIZE_V1 256
KV_STATIC_ASSERT(sizeof(struct kv_region_state) == KV_REGION_STATE_SIZE_V1, "state v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_state, lfu_floor) == 192, "lfu_floor on its own line");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_region_state, room_epoch) == 200, "room_epoch beside lfu_floor");

/*
 * One size class. block_size and blocks_per_slab are written by the creator;
 * cursor_slab is an allocation hint any process may store (relaxed).
 */
struct kv_class {
	uint64_t block_size;      /* multiple of 4 KiB */
	uint32_t blocks_per_slab; /* slab_size / block_size */
	uint32_t cursor_slab;     /* hint: last slab of this class that had a free block */
	uint64_t reserved[6];
};
#define KV_CLASS_SIZE_V1 64
KV_STATIC_ASSERT(sizeof(struct kv_class) == KV_CLASS_SIZE_V1, "class v1 size");

/*
 * Identity manifest of a namespace: a key is only meaningful together with
 * the model, weights, layout and hashing that produced it, so two engines
 * share blocks only when every field matches byte for byte.
 */
struct kv_manifest {
	uint8_t model_name[64];          /* NUL-padded UTF-8 */
	uint8_t weights_fingerprint[32]; /* e.g. a digest of the weights files */
	uint32_t dtype;                  /* KV_DTYPE_* or engine-defined above 1024 */
	uint32_t kv_layout;              /* engine-defined layout code */
	uint32_t block_tokens;           /* tokens per block, > 0 */
	uint32_t tp_rank;
	uint32_t tp_world;    /* > tp_rank */
	uint32_t hash_scheme; /* KV_HASH_* */
	uint64_t hash_seed;
	uint64_t reserved[4]; /* zero */
};
#define KV_MANIFEST_SIZE_V1 160
KV_STATIC_ASSERT(sizeof(struct kv_manifest) == KV_MANIFEST_SIZE_V1, "manifest v1 size");

#define KV_DTYPE_FP16 1
#define KV_DTYPE_BF16 2
#define KV_DTYPE_FP8_E4M3 3
#define KV_DTYPE_FP8_E5M2 4
#define KV_DTYPE_FP32 5
#define KV_DTYPE_INT8 6

/* key(i) = XXH3-128(seed = chain_seed, bytes = key(i-1) || token ids of block i) */
#define KV_HASH_XXH3_128_CHAINED 1
/*
 * vLLM's prefix-cache block hashes (doc/vllm-keys.md): hash(i) = H(canonical
 * CBOR of [hash(i-1) or NONE_HASH, [token ids of block i], extra keys or
 * null]), NONE_HASH = H(CBOR text string of the seed); the key is the last 16
 * bytes of hash(i), big-endian. hash_seed holds the first 8 bytes of
 * NONE_HASH, big-endian, so engines with different seeds never share blocks.
 */
#define KV_HASH_VLLM_SHA256_CBOR 2 /* H = SHA-256, 32-byte hashes */
#define KV_HASH_VLLM_XXHASH_CBOR 3 /* H = XXH3-128, 16-byte hashes (canonical, big-endian) */
#define KV_HASH_MAX 3

/* kv_namespace.ctl: [7:0] state, [19:8] client+1 while WRITING, [63:32] tag */
#define KV_NS_FREE 0
#define KV_NS_WRITING 1 /* claimed by a client that is filling the manifest */
#define KV_NS_ACTIVE 2

struct kv_namespace {
	uint64_t ctl;        /* CAS by registrants; WRITING -> ACTIVE by the claimant (release, NS-R1) */
	uint64_t chain_seed; /* XXH3-64 of the manifest; written before ACTIVE */
	uint32_t id;         /* equals the table index; written before ACTIVE */
	uint32_t reserved0;
	uint64_t reserved[5];
	struct kv_manifest manifest;
	uint64_t reserved2[4];
};
#define KV_NAMESPACE_SIZE_V1 256
KV_STATIC_ASSERT(sizeof(struct kv_namespace) == KV_NAMESPACE_SIZE_V1, "namespace v1 size");

/*
 * Client table. ctl: [7:0] state, [23:8] tag, [31:24] zero, [63:32] pid.
 * A process claims a FREE slot with one CAS that also records its pid, so a
 * slot is never LIVE without a pid to check. start_time is written right
 * after; 0 means "not yet known" and the slot is then judged by pid alone.
 */
#define KV_CLIENT_FREE 0
#define KV_CLIENT_LIVE 1
#define KV_CLIENT_REAPING 2 /* pid field holds the reaper's pid */

/* Per-client counters, written only by the client (relaxed), read by anyone. */
struct kv_client_stats {
	uint64_t reserved0; /* gets are hits + misses */
	uint64_t hits;
	uint64_t misses;
	uint64_t puts;      /* blocks committed (new keys) */
	uint64_t dedups;    /* puts/reserves that found the key already committed */
	uint64_t evictions; /* blocks this client evicted */
	uint64_t removes;
	uint64_t bytes_committed; /* sum of lengths committed */
	uint64_t bytes_freed;     /* sum of lengths of blocks whose memory this client freed */
	uint64_t reaps;           /* dead clients this process reaped */
	uint64_t reserved[6];
};
#define KV_CLIENT_STATS_SIZE_V1 128
KV_STATIC_ASSERT(sizeof(struct kv_client_stats) == KV_CLIENT_STATS_SIZE_V1, "client stats v1 size");

/*
 * v1.2 (KV_INCOMPAT_F_LIVE_ACCT): live-bytes accounting records, written by
 * one thread of the slot's client at a time (the thread that took the
 * record from its process-local free list) and, once that client is dead,
 * by the one reaper that holds the slot REAPING.
 *   live: this record's share of the pool's live bytes (a two's-complement
 *         delta: a block committed through one record may be freed through
 *         another, of another client; only the sum over every record of
 *         every slot is meaningful). Accumulates across the slot's users.
 *   pend: 0, or the operation in flight: [63:32] entry index + 1,
 *         [31:0] entry generation. Its length and kind are acct_len.
 * live and pend change together, with one 16-byte CAS: {live, P} ->
 * {live +/- len, 0} is the one step that accounts an operation, so a
 * process killed at any instruction leaves either P (the reaper decides
 * from the entry whether the operation took effect, PROTOCOL.md section 11)
 * or nothing to decide.
 */
#define KV_ACCT_RECORDS 4
#define KV_ACCT_FREE (1ULL << 63) /* acct_len: the pending operation frees; else it commits */
struct kv_acct_record {
	uint64_t live;
	uint64_t pend;
};

struct kv_client {
	uint64_t ctl;        /* see above; CAS only */
	uint64_t start_time; /* /proc/<pid>/stat starttime (clock ticks since boot) */
	uint64_t attach_ns;  /* CLOCK_REALTIME at attach */
	uint64_t reserved1;
	/* v1.2: the length (and KV_ACCT_FREE) of each record's pending
	 * operation, written before its pend; carved from reserved[4]. */
	uint64_t acct_len[KV_ACCT_RECORDS];
	/* Counters accumulate across the slot's users: pool totals are the sum over slots. */
	struct kv_client_stats stats;
	/* v1.2: carved from reserved2[8]; zero in v1.1 regions. */
	struct kv_acct_record acct[KV_ACCT_RECORDS];
};
#define KV_CLIENT_SIZE_V1 256
KV_STATIC_ASSERT(sizeof(struct kv_client) == KV_CLIENT_SIZE_V1, "client v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_client, stats) == 64, "client stats on their own line");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_client, acct_len) == 32, "client v1.2 acct_len offset");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_client, acct) == 192, "client v1.2 acct records on their own line");

/*
 * Pin journal slot: the record that makes a client's pins recoverable.
 * a: [63:32] entry index, [31:0] entry generation.
 * b: [63:32] op sequence number, [31:0] phase.
 * The owner writes a, then b = (seq, INTENT_*), then CASes the entry; the
 * entry's aux word then names (client, slot, seq, op) until someone else's
 * pin/unpin CAS replaces it, and that someone first acknowledges the slot
 * with a CAS on b (INTENT_PIN -> HELD, INTENT_UNPIN -> FREE) that only
 * matches the same seq. uapi/PROTOCOL.md proves why a reaper can always tell
 * whether an INTENT took effect.
 */
#define KV_PIN_FREE 0
#define KV_PIN_INTENT_PIN 1
#define KV_PIN_HELD 2
#define KV_PIN_INTENT_UNPIN 3

struct kv_pin_slot {
	uint64_t a;
	uint64_t b;
};
#define KV_PIN_SLOT_SIZE_V1 16
KV_STATIC_ASSERT(sizeof(struct kv_pin_slot) == KV_PIN_SLOT_SIZE_V1, "pin slot v1 size");

/*
 * Index link word (bucket heads and kv_entry.next):
 * [63:32] entry index or KV_NIL32, [31:1] tag (incremented by every CAS),
 * [0] mark (set on an entry's next word: the entry is logically deleted).
 */
#define KV_LINK_MARK 1ULL

/*
 * Entry control words, updated together with a 16-byte CAS
 * (KV_INCOMPAT_F_CAS16); either may be read alone with an 8-byte load.
 * ctl: [63:32] generation (incremented each time the entry is freed),
 *      [31:24] state, [23:0] pin count.
 * aux: [3:0] op, [15:4] client index + 1 (0: none), [31:16] pin slot,
 *      [63:32] op sequence number. In RESERVED and FREEING, op is
 *      KV_AUX_OWNER and client names the owner. In COMMITTED and later, op is
 *      the last pin/unpin applied (KV_AUX_PIN / KV_AUX_UNPIN) or KV_AUX_NONE.
 */
#define KV_ENTRY_FREE 0
#define KV_ENTRY_RESERVED 1  /* owned by aux.client; linked or being linked; data being written */
#define KV_ENTRY_COMMITTED 2 /* immutable, visible, pinnable */
#define KV_ENTRY_DEAD 3      /* removed: no new pins; may still be linked */
#define KV_ENTRY_UNLINKED 4  /* removed and no longer reachable from the index */
#define KV_ENTRY_FREEING 5   /* pin count 0, unlinked; aux.client returns block and entry */

#define KV_AUX_NONE 0
#define KV_AUX_OWNER 1
#define KV_AUX_PIN 2
#define KV_AUX_UNPIN 3

#define KV_ENTRY_MAX_PINS 0xffffffU

struct kv_entry {
	/* Line 0: everything a lookup touches. */
	uint64_t ctl; /* CAS16 with aux */
	uint64_t aux;
	uint64_t next;   /* index link word; tag never decreases, across reuse too */
	uint64_t key_lo; /* key and ns_id: written while RESERVED and unlinked, then immutable */
	uint64_t key_hi;
	uint32_t ns_id;
	uint32_t class_id;
	uint64_t block;  /* block id: slab * blocks_per_slab + slot */
	uint64_t length; /* bytes of data in the block */
	/* Line 1: metadata, written by the owner before COMMITTED (the commit
	 * CAS16 publishes it; PROTOCOL.md section 12). */
	uint64_t checksum; /* XXH3-64 of the block's data */
	uint32_t tokens;
	uint32_t priority;
	uint64_t user_tag;
	uint64_t commit_ns; /* CLOCK_REALTIME at commit */
	uint32_t clock;     /* CLOCK reference bit: set by gets, cleared by the eviction hand */
	uint32_t flags;     /* zero in v1 */
	/*
	 * v1.1 (KV_COMPAT_F_EVICT_POLICY), carved from reserved[3]. Written by
	 * the owner while RESERVED (published by the commit); rank and kids are
	 * also written later, see each field. All are eviction hints: a lost or
	 * stale update changes which block is evicted, never what a get returns
	 * (ttl_ms excepted, which is immutable once committed).
	 */
	uint64_t rank;   /* policy rank (KV_EVICT_*): access tick, LFU count or reserve tick;
	                  * stored (relaxed) by gets in LRU, LFU, PRIORITY and PREFIX pools */
	uint64_t parent; /* [63:32] parent entry index + 1 (0: none), [31:0] its generation when
	                  * this entry counted itself in its kids; CAS to NIL by the one who
	                  * uncounts it (at free) */
	uint32_t kids;   /* [31:16] low 16 bits of this entry's generation, [15:0] children
	                  * counted (saturating); CAS only, by children at reserve and free */
	uint32_t ttl_ms; /* 0, or expiry: commit_ns + ttl_ms milliseconds */
};
#define KV_ENTRY_SIZE_V1 128
KV_STATIC_ASSERT(sizeof(struct kv_entry) == KV_ENTRY_SIZE_V1, "entry v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_entry, checksum) == 64, "entry metadata on line 1");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_entry, rank) == 104, "entry v1.1 fields in the old reserved words");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_entry, ttl_ms) == 124, "entry v1.1 ttl offset");

/*
 * Slab descriptor. ctl: [7:0] state, [15:8] class, [27:16] client + 1: the
 * owner while ACTIVATING or RETIRING; while ACTIVE the slab's home client
 * (a hint, 0: none; see PROTOCOL.md section 5), [31:28] zero, [63:32] tag.
 * free_hint and scan_hint are hints (relaxed); block words are the truth.
 */
#define KV_SLAB_FREE 0
#define KV_SLAB_ACTIVATING 1 /* owner is writing FREE into its block words */
#define KV_SLAB_ACTIVE 2     /* serves allocations of its class */
#define KV_SLAB_RETIRING 3   /* owner is taking every block back to give the slab to another class */

struct kv_slab {
	uint64_t ctl;
	uint32_t free_hint; /* approximate free blocks; read as int32_t */
	uint32_t scan_hint; /* approximate lowest free slot */
	uint64_t reserved[6];
};
#define KV_SLAB_SIZE_V1 64
KV_STATIC_ASSERT(sizeof(struct kv_slab) == KV_SLAB_SIZE_V1, "slab v1 size");

/*
 * Block word, one per possible block of every slab: the authority on who
 * owns each block. [63:32] owner (entry index for ENTRY, client index for
 * OWNED and RETIRED), [31:24] state, [23:0] tag (incremented by every CAS).
 */
#define KV_BLOCK_UNUSED 0 /* slot beyond its slab's class capacity, or slab not ACTIVE */
#define KV_BLOCK_FREE 1
#define KV_BLOCK_OWNED 2   /* claimed by a client, not yet attached to an entry */
#define KV_BLOCK_ENTRY 3   /* holds the data of the entry named by owner */
#define KV_BLOCK_RETIRED 4 /* taken back by a slab retirer (owner) */

/*
 * v1.3 change feed (KV_INCOMPAT_F_FEED; PROTOCOL.md section 13): a
 * lock-free multi-producer ring of fixed-size records, drained by one
 * reader (kvpoold). Producers never wait: a record whose slot is busy is
 * dropped and counted, and the reader then resynchronizes from the entry
 * table.
 *
 * Tickets are 1-based: a producer takes t = head + 1 with one fetch_add
 * on head, and writes slot (t - 1) % feed_slots. Ticket order follows the
 * order of the changes to any one key (PROTOCOL.md 13 proves it).
 */
#define KV_FEED_MIN_SLOTS 64
#define KV_FEED_MAX_SLOTS 1048576

struct kv_feed_header {
	uint64_t head; /* tickets taken so far; fetch_add (relaxed) by every producer */
	uint64_t pad0[7];
	/* Records not written (their slot was busy) and dead producers reaped:
	 * each says "the reader lost something". fetch_add (release) by
	 * producers and reapers, load (acquire) by the reader. */
	uint64_t dropped;
	uint64_t pad1[7];
	/* Every ticket <= floor is abandoned by the reader (it resynchronized
	 * instead of reading it). Stored (seq_cst) by the reader only; a
	 * producer whose change came after it reads a floor >= its ticket and
	 * counts a drop (PROTOCOL.md 13). */
	uint64_t floor;
	uint64_t pad2[7];
	uint64_t reserved[8]; /* zero */
};
#define KV_FEED_HEADER_SIZE_V1 256
KV_STATIC_ASSERT(sizeof(struct kv_feed_header) == KV_FEED_HEADER_SIZE_V1, "feed header v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_feed_header, dropped) == 64, "feed dropped on its own line");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_feed_header, floor) == 128, "feed floor on its own line");

/* kv_feed_slot.seq: [63:16] ticket (mod 2^48), [15:4] client + 1 of the
 * writer, [3:0] KV_FEED_SEQ_*. 0: never written. */
#define KV_FEED_SEQ_WRITING 1   /* the client named is writing the body */
#define KV_FEED_SEQ_PUBLISHED 2 /* the body is complete (release) */

/* kv_feed_slot.kind */
#define KV_FEED_NOP 0    /* the producer's CAS failed: nothing changed */
#define KV_FEED_COMMIT 1 /* RESERVED -> COMMITTED */
#define KV_FEED_REMOVE 2 /* COMMITTED -> DEAD by kv_remove (or a put replacing an expired block) */
#define KV_FEED_EVICT 3  /* COMMITTED -> DEAD to make room (put, watermark, kv_evict_bytes) */
#define KV_FEED_EXPIRE 4 /* COMMITTED -> DEAD of an expired block */

/* kv_feed_slot.flags */
#define KV_FEED_F_PARENT (1U << 0)      /* parent_lo/hi name the chain's previous block */
#define KV_FEED_F_IDS_OMITTED (1U << 1) /* the producer had more token ids than fit: none recorded */

#define KV_FEED_MAX_IDS 224

struct kv_feed_slot {
	uint64_t seq; /* CAS from a published or empty value of an older ticket to
	               * WRITING(t, me); then a release store of PUBLISHED(t, me) */
	uint32_t kind;
	uint32_t flags;
	uint32_t ns;
	uint32_t n_ids; /* token ids recorded in token_ids, <= KV_FEED_MAX_IDS */
	uint64_t key_lo, key_hi;
	uint64_t parent_lo, parent_hi;
	uint64_t length; /* bytes of the block */
	uint32_t tokens; /* kv_meta.tokens */
	uint32_t entry;  /* entry index of the block */
	uint32_t gen;    /* its generation at the change */
	uint32_t reserved0;
	uint64_t time_ns; /* CLOCK_REALTIME of the change (commit_ns for a commit) */
	uint64_t reserved[5];
	uint32_t token_ids[KV_FEED_MAX_IDS];
};
#define KV_FEED_SLOT_SIZE_V1 1024
KV_STATIC_ASSERT(sizeof(struct kv_feed_slot) == KV_FEED_SLOT_SIZE_V1, "feed slot v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_feed_slot, token_ids) == 128, "feed slot ids offset");

#endif /* KVPOOL_UAPI_REGION_H */
