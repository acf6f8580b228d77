/* SPDX-License-Identifier: MIT */
/*
 * kvpoold control protocol, version 1.
 *
 * Transport: a SOCK_STREAM unix socket (default /run/kvpool/control). A
 * client sends requests and reads one response per request, in order; it may
 * keep the connection open for several. Every message is a 16-byte
 * struct kv_ctl_hdr followed by exactly hdr.length bytes of body, at most
 * KV_CTL_MAX_BODY. All integers are little-endian fixed-width.
 *
 * Request body: struct kv_ctl_request, hdr.length == its size, except for
 * ops that take a payload (REMOTE_FETCH): their arg says how many of the
 * body's last bytes are the payload, the struct being the bytes before it.
 * A client built
 * against an older header may send a shorter struct (>= KV_CTL_REQUEST_SIZE_V1);
 * fields past it read as zero. Unknown op, unknown flag bits, a non-zero
 * reserved field, a pool name that is not NUL-terminated, or a wrong magic or
 * version is answered with an error response (EPROTO / EINVAL / EOPNOTSUPP)
 * and, for a bad header, the connection is closed: the daemon never trusts a
 * length it has not checked against KV_CTL_MAX_BODY.
 *
 * Response body: struct kv_ctl_response followed by body_len bytes of UTF-8:
 * a JSON document when error == 0, an English message naming the problem
 * when error != 0 (error is a positive errno value). The JSON document of
 * each op is described next to the op below; kvctl renders it as a table.
 *
 * Authorization (SO_PEERCRED): a pool's readers are uid 0 and the members
 * (primary or supplementary) of the pool's group or of the daemon's admin
 * group. VERSION, LIST, STATUS and STATS are open to anyone who can
 * connect, but a pool the peer may not read appears there only as its
 * public view: {"name", "state", "group", "restricted": true}. ENTRIES,
 * HEALTH, CLIENTS and REMOTE_STATUS of a pool need its readers
 * (REMOTE_STATUS without a pool lists only the pools the peer may read).
 * Ops that change state need uid 0, or membership of the pool's group, and
 * so does VERIFY, which reads every block of the pool; CREATE needs uid 0
 * or the daemon's admin group. Refused: error = EPERM.
 *
 * Snapshots (PERSIST, RESTORE): root may name any absolute path. Anyone
 * else may name only the pool's own snapshot files, in its snapshot
 * directory DIR: DIR/POOL.kvsnap (the default) or DIR/POOL@TAG.kvsnap, TAG
 * being 1-63 characters of [A-Za-z0-9_.-] ('@' is not a pool-name
 * character, so no other pool's file has such a name). A RESTORE takes only
 * a snapshot whose header names the pool it is restored into: one written
 * from another pool needs root and KV_CTL_F_FORCE, one that names no pool
 * (an older kvpool's) needs root. Refused: EPERM, naming both pools.
 * Snapshot files are mode 0640, group the pool's group.
 */
#ifndef KVPOOL_UAPI_CONTROL_H
#define KVPOOL_UAPI_CONTROL_H

#include <stdint.h>

#ifdef __cplusplus
#define KV_CTL_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KV_CTL_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* "KCTL" read as a little-endian uint32_t. */
#define KV_CTL_MAGIC 0x4c54434bU
#define KV_CTL_VERSION 1
#define KV_CTL_MAX_BODY (1U << 20) /* larger bodies are refused with EMSGSIZE */
#define KV_CTL_NAME_MAX 64         /* pool names: [A-Za-z0-9_.-]{1,63}, NUL-padded */
#define KV_CTL_PATH_MAX 256

/* Ops. A response carries the op of its request, with one exception: a
 * connection the daemon refuses at accept (too many open, in all or from its
 * uid) gets, before any request is read, one response with op
 * KV_CTL_OP_REFUSED and seq 0, error EUSERS and a message saying why, and is
 * then closed. A client may find it when its send fails (EPIPE) or in place
 * of the response to its request. */
#define KV_CTL_OP_REFUSED 0
#define KV_CTL_OP_VERSION 1 /* {"daemon": "0.1.0", "protocol": 1, "pid": N} */
#define KV_CTL_OP_LIST 2    /* {"pools": [POOL, ...]} */
#define KV_CTL_OP_STATUS 3  /* pool set: POOL (with "free_bytes", "created", ...); pool empty: as LIST */
#define KV_CTL_OP_CREATE 4  /* size, hugepages, numa_node, mode, flags: POOL of the new pool */
#define KV_CTL_OP_DESTROY 5 /* {"pool": name, "destroyed": true} */
#define KV_CTL_OP_ENTRIES 6 /* one page, see below: {"pool", "entries": [ENTRY...], "next_cursor", ...} */
#define KV_CTL_OP_HEALTH                                                \
	7 /* {"pool", "healthy", "problems": [text...], "usage": {...}, \
	   * "data_checked": false (block data is not read: see VERIFY)} */
#define KV_CTL_OP_EVICT \
	8 /* arg: percent 0..100 of unpinned bytes (0: a no-op): {"pool", "requested_bytes", "freed_bytes"} */
#define KV_CTL_OP_PERSIST 9  /* path optional: {"pool", "path", "bytes", "seconds"} */
#define KV_CTL_OP_RESTORE 10 /* path optional; KV_CTL_F_FORCE: {"pool", "path", "bytes", "seconds", ...} */
#define KV_CTL_OP_CLIENTS 11 /* {"pool", "clients": [CLIENT...]} */
#define KV_CTL_OP_DETACH                                                                           \
	12                        /* arg: pid; KV_CTL_F_KILL: {"pool", "pid", "killed", "reaped"}; \
	                           * ESRCH: the process is not attached to the pool */
#define KV_CTL_OP_STATS 13        /* {"daemon": {...}, "pools": [POOL...]} */
#define KV_CTL_OP_VERIFY 14       /* KV_CTL_F_REMOVE: see below */
#define KV_CTL_OP_REMOTE_FETCH 15 /* payload struct kv_ctl_remote_fetch + keys: see below */
#define KV_CTL_OP_REMOTE_STATUS \
	16 /* pool set: {"pool", "remote": REMOTE or null}; empty: {"pools": [{"pool", "remote"}...]} */
#define KV_CTL_OP_MAX 16

/*
 * VERIFY reads every committed block of the pool and checks it against the
 * XXH3-64 checksum recorded at its commit, pinning each block while it is
 * read. The daemon does it in bounded steps across turns of its loop (at
 * most KV_CTL_VERIFY_CHUNK_BYTES of data and KV_CTL_ENTRIES_MAX_SCAN entry
 * slots a turn), so it answers other requests meanwhile; the answer comes
 * once the whole table was examined:
 *   {"pool", "checked" (blocks read), "checked_bytes", "bad_count",
 *    "bad": [BAD...] (the first KV_CTL_VERIFY_MAX_LISTED), "removed",
 *    "skipped" (removed or replaced between the scan and the pin, or not
 *    pinnable), "seconds"}
 * BAD: {"index", "ns", "key" (32 hex digits), "length", "checksum" (the
 * recorded one, 16 hex digits), "removed" (true when KV_CTL_F_REMOVE removed
 * it)}. With KV_CTL_F_REMOVE each bad block is removed (kv_remove: readers
 * holding a pin keep their view). A block committed or removed while the
 * verify runs may be missed.
 */
#define KV_CTL_VERIFY_CHUNK_BYTES (64ULL << 20)
#define KV_CTL_VERIFY_MAX_LISTED 1000

/*
 * REMOTE_FETCH asks the daemon to bring blocks keys[first..n_keys) of one
 * chain (namespace ns of the pool) from the pool's remote tier (doc/
 * remote.md) into the pool: it reads them in order, verifies each value
 * (header, namespace digest, key, length, checksum), writes it into a
 * reservation and commits it, with the previous key as parent; it stops at
 * the first block it cannot bring (missing, rejected, an error). A block
 * already in the pool counts as present and is not fetched. The request is
 * struct kv_ctl_request with arg = the payload's size in bytes, followed by
 * the payload: struct kv_ctl_remote_fetch, then n_keys keys of 16 bytes
 * (lo, hi). The answer comes once the fetch ended (within timeout_ms plus
 * the daemon's own Redis timeout); meanwhile the daemon serves other
 * requests. ENODEV: the pool has no remote tier; ESTALE: pool_id is not the
 * region's (the pool was recreated); EINVAL: a bad payload; EBUSY: too many
 * fetches queued. Answer:
 *   {"pool", "ns", "first", "requested" (n_keys - first), "committed"
 *    (blocks first.. first+committed-1 are now in the pool), "present",
 *    "fetched", "fetched_bytes", "missing", "rejected", "errors",
 *    "stopped" ("end", "missing", "rejected", "error", "timeout",
 *    "no_room"), "seconds"}
 * Access: the pool's group (it writes into the pool).
 *
 * REMOTE_STATUS: the remote tier of one pool (or every pool with one):
 *   REMOTE: {"enabled", "seeds", "key_prefix", "write", "namespaces",
 *    "bandwidth", "ttl_s", "medium", "queue": {"blocks", "bytes",
 *    "limit_bytes", "oldest_age_s"}, "uploads", "upload_bytes",
 *    "upload_errors", "upload_dropped", "upload_skipped", "fetches",
 *    "fetched_blocks", "fetched_bytes", "fetch_missing", "fetch_errors",
 *    "rejected" {REASON: N}, "last_error", "last_error_age_s"}
 */
#define KV_CTL_REMOTE_FETCH_MAX_KEYS 16384

struct kv_ctl_remote_fetch {
	uint64_t pool_id_lo; /* the region's pool_id as the client sees it (both 0: not checked) */
	uint64_t pool_id_hi;
	uint32_t ns;          /* namespace id in the pool */
	uint32_t n_keys;      /* keys after this struct, 1..KV_CTL_REMOTE_FETCH_MAX_KEYS */
	uint32_t first;       /* fetch keys[first..n_keys), first < n_keys */
	uint32_t timeout_ms;  /* give up after this (0: the daemon's default, 10 s) */
	uint64_t reserved[2]; /* zero */
};
#define KV_CTL_REMOTE_FETCH_SIZE_V1 48
KV_CTL_STATIC_ASSERT(sizeof(struct kv_ctl_remote_fetch) == KV_CTL_REMOTE_FETCH_SIZE_V1, "remote fetch payload v1 size");

/*
 * ENTRIES is paged so that no request costs the daemon more than a bounded
 * amount of work and reply, whatever the pool's size: it examines the entry
 * table from index `cursor` on, at most KV_CTL_ENTRIES_MAX_SCAN slots, and
 * returns at most min(arg, KV_CTL_ENTRIES_MAX_ROWS) rows (arg 0: the
 * maximum), fewer when the next row would take the reply past
 * KV_CTL_MAX_BODY. "next_cursor" is the index to send as the next request's
 * cursor, or null once the end of the table was examined; a page may hold
 * no row and still have a next_cursor (a sparse stretch of the table).
 * A cursor past "entry_slots" is refused (EINVAL). Rows are read, not
 * snapshotted: an entry committed or removed while a listing pages through
 * the table may be missed or shown once more.
 * ENTRY: {"index", "ns", "key" (32 hex digits), "length", "tokens",
 * "priority", "user_tag" (a string of decimal digits, "0" to
 * "18446744073709551615": a JSON number above 2^53 is rounded by most
 * parsers), "pins", "state", "checksum", "age_s" (since
 * commit), "rank" (the policy's eviction rank), "last_access_s" (LRU,
 * PRIORITY, PREFIX pools: since the last get, or the reserve), "access_count"
 * (LFU pools: the LFU count, aged), "referenced" (CLOCK pools: the reference
 * bit)}; a field the pool's policy does not keep is null.
 */
#define KV_CTL_ENTRIES_MAX_ROWS 2048
#define KV_CTL_ENTRIES_MAX_SCAN 65536

/* kv_ctl_request.flags */
#define KV_CTL_F_KILL (1U << 0)     /* DETACH: SIGKILL a live process first */
#define KV_CTL_F_PREFAULT (1U << 1) /* CREATE: fault every page in */
#define KV_CTL_F_POLICY (1U << 2)   /* CREATE: evict_policy is set (else the daemon's default) */
#define KV_CTL_F_FORCE (1U << 3)    /* RESTORE, root only: take a snapshot written from another pool */
/* CREATE: do not persist the pool's blocks at stop nor restore them at start
 * (the pool itself is remembered across restarts either way). */
#define KV_CTL_F_NO_PERSIST (1U << 4)
#define KV_CTL_F_REMOVE (1U << 5) /* VERIFY: remove the blocks that fail their checksum */
/* CREATE: zero every block's bytes before its space is reused (the pool's
 * secure_erase; region.h KV_INCOMPAT_F_SECURE_ERASE). */
#define KV_CTL_F_SECURE_ERASE (1U << 6)
#define KV_CTL_F_KNOWN                                                                                \
	(KV_CTL_F_KILL | KV_CTL_F_PREFAULT | KV_CTL_F_POLICY | KV_CTL_F_FORCE | KV_CTL_F_NO_PERSIST | \
	 KV_CTL_F_REMOVE | KV_CTL_F_SECURE_ERASE)

/* kv_ctl_request.numa_node special values */
#define KV_CTL_NUMA_NONE 0xffffffffU
#define KV_CTL_NUMA_LOCAL 0xfffffffeU /* the node of the daemon's CPU */

struct kv_ctl_hdr {
	uint32_t magic;   /* KV_CTL_MAGIC */
	uint16_t version; /* KV_CTL_VERSION */
	uint16_t op;      /* KV_CTL_OP_* */
	uint32_t length;  /* body bytes after this header, <= KV_CTL_MAX_BODY */
	uint32_t seq;     /* chosen by the client, echoed in the response */
};
#define KV_CTL_HDR_SIZE_V1 16
KV_CTL_STATIC_ASSERT(sizeof(struct kv_ctl_hdr) == KV_CTL_HDR_SIZE_V1, "ctl header v1 size");

struct kv_ctl_request {
	uint8_t pool[KV_CTL_NAME_MAX]; /* NUL-terminated, NUL-padded; empty: all pools (LIST, STATUS, STATS) */
	uint64_t size;                 /* CREATE: bytes */
	uint64_t arg;                  /* EVICT: percent; DETACH: pid; ENTRIES: most rows (0: the maximum);
	                                * REMOTE_FETCH: bytes of payload after this struct */
	uint32_t flags;                /* KV_CTL_F_* */
	uint32_t hugepages;            /* CREATE: KV_HUGEPAGES_* (0 never, 1 prefer, 2 require) */
	uint32_t numa_node;            /* CREATE: node, KV_CTL_NUMA_NONE or KV_CTL_NUMA_LOCAL */
	uint32_t mode;                 /* CREATE: file mode bits (0: 0660) */
	uint8_t path[KV_CTL_PATH_MAX]; /* PERSIST / RESTORE: snapshot path, empty for the pool's default */
	uint32_t evict_policy;         /* CREATE with KV_CTL_F_POLICY: KV_EVICT_* (region.h); else zero.
	                                * Carved from reserved[0]: a daemon that predates it refuses
	                                * the request (non-zero reserved, unknown flag). */
	uint32_t max_entries;          /* CREATE: 0 (no cap) or 64..0xfffffff0 entry slots; else zero (was reserved0) */
	uint64_t cursor;               /* ENTRIES: entry-table index to start at, the previous page's
	                                * next_cursor (0: the start); else zero. Carved from
	                                * reserved[0]: a daemon that predates it refuses a non-zero
	                                * cursor (non-zero reserved) and answers cursor 0 with one
	                                * unpaged reply without next_cursor. */
	uint64_t reserved[6];          /* zero */
};
#define KV_CTL_REQUEST_SIZE_V1 416
KV_CTL_STATIC_ASSERT(sizeof(struct kv_ctl_request) == KV_CTL_REQUEST_SIZE_V1, "ctl request v1 size");
KV_CTL_STATIC_ASSERT(__builtin_offsetof(struct kv_ctl_request, path) == 96, "ctl request path offset");
KV_CTL_STATIC_ASSERT(__builtin_offsetof(struct kv_ctl_request, evict_policy) == 352, "ctl request policy offset");
KV_CTL_STATIC_ASSERT(__builtin_offsetof(struct kv_ctl_request, cursor) == 360, "ctl request cursor offset");

struct kv_ctl_response {
	uint32_t error;    /* 0, or a positive errno value */
	uint32_t body_len; /* bytes of UTF-8 that follow: JSON if error == 0, else a message */
	uint64_t reserved; /* zero */
};
#define KV_CTL_RESPONSE_SIZE_V1 16
KV_CTL_STATIC_ASSERT(sizeof(struct kv_ctl_response) == KV_CTL_RESPONSE_SIZE_V1, "ctl response v1 size");

#endif /* KVPOOL_UAPI_CONTROL_H */
