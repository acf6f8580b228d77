/* SPDX-License-Identifier: MIT */
/*
 * kvpool on-disk snapshot format, version 1.2.
 *
 * A snapshot holds the committed blocks of one pool, with their keys,
 * namespaces (identity manifests), metadata and checksums, so that a fresh
 * region can be refilled after a reboot. It is a stable format held to the
 * same rules as the region ABI (uapi/kvpool/region.h): fixed-width
 * little-endian fields, no pointers, explicit padding, reserved fields zero
 * on write and checked on read, sizes static_asserted, structs grow only at
 * the end.
 *
 * Layout (every part starts on a KV_SNAP_ALIGN boundary, so the whole file
 * can be written and read with O_DIRECT):
 *
 *   file header      struct kv_snap_header, then namespaces[n_namespaces]
 *                    (struct kv_snap_namespace) from offset header_size (the
 *                    writer's struct size, so a reader finds them behind a
 *                    header that grew), zero-padded to header_len
 *   segment 0        struct kv_snap_segment, then records[n_records]
 *                    (struct kv_snap_record), zero-padded to KV_SNAP_SEGMENT_HEAD
 *                    (with KV_SNAP_COMPAT_HISTORY: at most
 *                    KV_SNAP_SEGMENT_RECORDS_HISTORY records, and from
 *                    KV_SNAP_SEGMENT_HISTORY_OFF history[n_records], struct
 *                    kv_snap_history, one per record in the same order);
 *                    then the data of each record at data_off (relative to
 *                    the segment start), each extent KV_SNAP_ALIGN aligned and
 *                    padded with zeros to a multiple of KV_SNAP_ALIGN
 *   segment 1 ...
 *   trailer          struct kv_snap_trailer, zero-padded to KV_SNAP_ALIGN
 *
 * A reader tells a segment head from the trailer by its magic. A pool with
 * no committed block gives a file of header and trailer (n_segments 0).
 * kv_snap_namespace, kv_snap_segment, kv_snap_record and kv_snap_history
 * have no size field: their sizes are fixed, and a layout that grows them
 * needs an incompat feature bit.
 *
 * Versions: a reader refuses another major version and any incompat bit it
 * does not know; it reads any minor version of its major, ignoring compat
 * bits it does not know (what they add lies where an older reader does not
 * look). Version 1.1 adds KV_SNAP_COMPAT_HISTORY: each block's eviction
 * history (commit time, rank, time to live, CLOCK bit, the key of its
 * parent in a chain), kept in the part of each segment head that 1.0
 * leaves as padding (a 1.0 reader neither reads nor checks it; the segment
 * checksum covers it), and the header's evict_policy, which says how the
 * ranks read. A 1.0 file restores as before: without history, every block
 * as if just put.
 *
 * Integrity: the header, each segment head (struct + records) and the
 * trailer carry an XXH3-64 of their bytes computed with the checksum field
 * zero; every block keeps the XXH3-64 of its data (the same checksum the
 * region holds). The trailer's segments_hash chains the segment checksums
 * (h = XXH3-64(seed = h, the 8 little-endian bytes of segment.checksum)
 * from h = 0), so a complete file proves it holds every segment written.
 * The padding of a data extent is zero: a writer copies a block's last
 * partial page out rather than writing whatever the region holds past the
 * block's length (a former block's bytes).
 *
 * Reading: a reader refuses a file whose header is damaged (magic, version,
 * unknown incompat bit, checksum, sizes). It then takes segments in order and
 * stops where the file ends (a truncated file restores its verified part).
 * A segment head that is damaged loses that segment only: the reader looks
 * for the next valid head of a later segment (its magic on a KV_SNAP_ALIGN
 * boundary, then every check, the checksum first) and goes on from there.
 * A block whose data fails its checksum is dropped and counted. The
 * trailer ends the snapshot: a trailer that does not match what was read
 * costs the proof that the file is whole, not blocks, and bytes after it
 * (trailer.file_len) are not part of the snapshot (reported, not read). No
 * length or offset is used before it is bounds-checked against the file size
 * and the segment.
 *
 * Writing: to "<path>.tmp", then fsync, rename over <path>, fsync of the
 * directory, so the previous snapshot stays valid until the new one is whole.
 *
 * Encryption (format 1.2, KV_SNAP_INCOMPAT_ENCRYPTED; a reader that does not
 * know the bit refuses the file). Everything but the plain header, the
 * fixed part of each segment head and the trailer is AES-256-GCM ciphertext
 * under a data key made for this one snapshot (random, 256 bits), which the
 * header carries wrapped by the pool's key (struct kv_wrapped_key,
 * kvpool/keywrap.h, context KV_SNAP_MAGIC; its key_id names the pool key).
 * Each sealed part has its own iv, make_iv(kind, index, counter) below, so
 * no iv repeats under one data key:
 *
 *   part           kind                   index   counter  aad
 *   namespaces     KV_SNAP_IV_NAMESPACES  0       0        the header
 *   segment head   KV_SNAP_IV_SEGMENT     0       seq      the segment struct
 *   data extent    KV_SNAP_IV_DATA        record  seq      its record
 *   trailer        KV_SNAP_IV_TRAILER     0       0        the trailer struct
 *
 * iv (12 bytes) = (kind << 24 | index) as 4 little-endian bytes, then
 * counter as 8 little-endian bytes.
 *
 *  - The header: header_size bytes of struct kv_snap_header with checksum
 *    and ns_tag zero are the aad of the namespace table, whose ciphertext
 *    (n_namespaces * KV_SNAP_NAMESPACE_SIZE_V1 bytes at header_size) and
 *    tag (ns_tag) follow; with no namespaces the tag authenticates the
 *    header alone. So the header, and through the data key it wraps every
 *    other part, is authenticated.
 *  - A segment head: the bytes [KV_SNAP_SEGMENT_SIZE_V1, KV_SNAP_SEGMENT_HEAD)
 *    (records, histories, the per-extent tags and the zero padding) are one
 *    ciphertext; the aad is the struct kv_snap_segment with checksum and
 *    tag zero; its tag is kv_snap_segment.tag (the 1.1 reserved words). At
 *    most KV_SNAP_SEGMENT_RECORDS_ENCRYPTED records (history is required),
 *    and tags[i] (16 bytes at KV_SNAP_SEGMENT_TAGS_OFF + 16 * i) is the tag
 *    of record i's data.
 *  - A data extent: the record's length bytes at data_off are ciphertext
 *    (the padding to KV_SNAP_ALIGN stays zero and is not authenticated:
 *    no reader uses it); the aad is the record's 64 bytes.
 *  - The trailer: GMAC (an empty plaintext) with the trailer struct,
 *    checksum and tag zero, as aad; the tag in kv_snap_trailer.tag.
 * The XXH3-64 checksums are computed last, over the bytes as stored
 * (ciphertext, tags): they still tell damage from a wrong key, and a reader
 * checks them before any tag.
 *
 * Reading an encrypted file: a reader without the key named by key_id
 * refuses the file (ENOKEY), as it does when the key of that id does not
 * unwrap the data key (EKEYREJECTED: another key under that id) or the
 * namespace table's tag does not match (EBADMSG: the header was altered).
 * A segment head whose tag does not match is a damaged head; a data extent
 * whose tag does not match is a damaged block (dropped, never committed);
 * a trailer whose tag does not match is a damaged trailer. Decrypted bytes
 * are used only once their tag matched.
 */
#ifndef KVPOOL_UAPI_SNAPSHOT_H
#define KVPOOL_UAPI_SNAPSHOT_H

#include <stdint.h>

#include "keywrap.h"
#include "region.h"

/* "KVSNAP\0\1", "KVSEG\0\0\1", "KVTRL\0\0\1" read as little-endian uint64_t. */
#define KV_SNAP_MAGIC 0x010050414e53564bULL
#define KV_SNAP_SEGMENT_MAGIC 0x010000474553564bULL
#define KV_SNAP_TRAILER_MAGIC 0x0100004c5254564bULL
#define KV_SNAP_VERSION_MAJOR 1
#define KV_SNAP_VERSION_MINOR 2
/* 1.2: encrypted and authenticated (see above); requires KV_SNAP_COMPAT_HISTORY. */
#define KV_SNAP_INCOMPAT_ENCRYPTED (1ULL << 0)
#define KV_SNAP_INCOMPAT_KNOWN KV_SNAP_INCOMPAT_ENCRYPTED
/* 1.1: segment heads carry struct kv_snap_history; the header evict_policy. */
#define KV_SNAP_COMPAT_HISTORY (1ULL << 0)
#define KV_SNAP_COMPAT_KNOWN KV_SNAP_COMPAT_HISTORY

#define KV_SNAP_ALIGN 4096          /* every part and data extent; O_DIRECT-safe */
#define KV_SNAP_SEGMENT_HEAD 8192   /* bytes of a segment head: struct + records + zero padding */
#define KV_SNAP_SEGMENT_RECORDS 127 /* (KV_SNAP_SEGMENT_HEAD - 64) / 64 */
/* With KV_SNAP_COMPAT_HISTORY: records fill the head's first page, histories its second. */
#define KV_SNAP_SEGMENT_RECORDS_HISTORY 63 /* (KV_SNAP_SEGMENT_HISTORY_OFF - 64) / 64 */
#define KV_SNAP_SEGMENT_HISTORY_OFF 4096
/* With KV_SNAP_INCOMPAT_ENCRYPTED: fewer records, a 16-byte tag per record behind the histories. */
#define KV_SNAP_SEGMENT_RECORDS_ENCRYPTED 51 /* (KV_SNAP_SEGMENT_HEAD - HISTORY_OFF) / (64 + 16) */
#define KV_SNAP_SEGMENT_TAGS_OFF 7360        /* HISTORY_OFF + RECORDS_ENCRYPTED * 64 */

/* make_iv kinds of the sealed parts of an encrypted snapshot (see above). */
#define KV_SNAP_IV_NAMESPACES 1
#define KV_SNAP_IV_SEGMENT 2
#define KV_SNAP_IV_DATA 3
#define KV_SNAP_IV_TRAILER 4

struct kv_snap_header {
	uint64_t magic;         /* KV_SNAP_MAGIC */
	uint16_t version_major; /* KV_SNAP_VERSION_MAJOR: another one is refused */
	uint16_t version_minor;
	uint32_t header_size; /* sizeof(struct kv_snap_header) of the writer */
	uint64_t compat_features;
	uint64_t incompat_features;
	uint64_t checksum;    /* XXH3-64 of header_len bytes with this field 0 */
	uint64_t header_len;  /* bytes of header + namespaces + padding; multiple of KV_SNAP_ALIGN,
	                         >= header_size + n_namespaces * KV_SNAP_NAMESPACE_SIZE_V1 */
	uint64_t snapshot_ns; /* CLOCK_REALTIME when the snapshot started */
	/* The source pool, for people and for compatibility checks. */
	uint64_t pool_id_lo, pool_id_hi;
	uint64_t region_size;
	uint64_t data_len;
	uint64_t slab_size; /* largest block the pool could hold */
	uint64_t page_size;
	uint32_t n_namespaces;     /* struct kv_snap_namespace that follow */
	uint32_t region_abi_major; /* KV_ABI_MAJOR of the source region */
	uint8_t pool_name[64];     /* NUL-padded */
	uint64_t reserved[16];     /* zero */
	/*
	 * Format 1.1 (KV_SNAP_HEADER_SIZE_V2). A reader takes the fields past
	 * the writer's header_size as zero.
	 */
	uint32_t evict_policy; /* KV_EVICT_* of the source pool: how kv_snap_history.rank_age reads */
	uint32_t reserved1;    /* zero */
	/*
	 * Format 1.2 (KV_SNAP_HEADER_SIZE_V3). Zero unless
	 * KV_SNAP_INCOMPAT_ENCRYPTED.
	 */
	struct kv_wrapped_key data_key;      /* this snapshot's data key, wrapped by the pool key */
	uint8_t ns_tag[KV_CRYPTO_TAG_BYTES]; /* GCM tag of the namespace table (aad: this header) */
};
#define KV_SNAP_HEADER_SIZE_V1 304 /* format 1.0 */
#define KV_SNAP_HEADER_SIZE_V2 312 /* format 1.1: evict_policy */
#define KV_SNAP_HEADER_SIZE_V3 424 /* format 1.2: data_key, ns_tag */
KV_STATIC_ASSERT(sizeof(struct kv_snap_header) == KV_SNAP_HEADER_SIZE_V3, "snapshot header v3 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_snap_header, data_key) == KV_SNAP_HEADER_SIZE_V2,
                 "snapshot header grows at the end (1.2)");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_snap_header, pool_name) == 112, "snapshot header name offset");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_snap_header, evict_policy) == KV_SNAP_HEADER_SIZE_V1,
                 "snapshot header grows at the end");

/* A namespace in use when the snapshot was taken. */
struct kv_snap_namespace {
	uint32_t id;        /* the id records use (the source pool's id) */
	uint32_t reserved0; /* zero */
	uint64_t chain_seed;
	struct kv_manifest manifest;
	uint64_t reserved[2]; /* zero */
};
#define KV_SNAP_NAMESPACE_SIZE_V1 192
KV_STATIC_ASSERT(sizeof(struct kv_snap_namespace) == KV_SNAP_NAMESPACE_SIZE_V1, "snapshot namespace v1 size");

struct kv_snap_segment {
	uint64_t magic;     /* KV_SNAP_SEGMENT_MAGIC */
	uint64_t checksum;  /* XXH3-64 of KV_SNAP_SEGMENT_HEAD bytes with this field 0 */
	uint64_t seq;       /* 0, 1, 2, ... */
	uint64_t length;    /* bytes of this segment: head + data extents; multiple of KV_SNAP_ALIGN */
	uint32_t n_records; /* 1..KV_SNAP_SEGMENT_RECORDS (see the other limits above) */
	uint32_t reserved0;
	/* KV_SNAP_INCOMPAT_ENCRYPTED: GCM tag of the rest of the head; else zero. */
	uint8_t tag[KV_CRYPTO_TAG_BYTES];
	uint64_t reserved; /* zero */
};
#define KV_SNAP_SEGMENT_SIZE_V1 64
KV_STATIC_ASSERT(sizeof(struct kv_snap_segment) == KV_SNAP_SEGMENT_SIZE_V1, "snapshot segment v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_snap_segment, tag) == 40, "segment tag in the 1.1 reserved words");

/* One block. */
struct kv_snap_record {
	uint64_t key_lo, key_hi;
	uint32_t ns; /* kv_snap_namespace.id */
	uint32_t tokens;
	uint64_t length;   /* data bytes, 1..slab_size */
	uint64_t checksum; /* XXH3-64 of the data */
	uint64_t data_off; /* from the segment start; KV_SNAP_ALIGN aligned, >= KV_SNAP_SEGMENT_HEAD */
	uint64_t user_tag;
	uint32_t priority;
	uint32_t reserved0; /* zero */
};
#define KV_SNAP_RECORD_SIZE_V1 64
KV_STATIC_ASSERT(sizeof(struct kv_snap_record) == KV_SNAP_RECORD_SIZE_V1, "snapshot record v1 size");
KV_STATIC_ASSERT(KV_SNAP_SEGMENT_SIZE_V1 + KV_SNAP_SEGMENT_RECORDS * KV_SNAP_RECORD_SIZE_V1 <= KV_SNAP_SEGMENT_HEAD,
                 "segment head holds its records");

/*
 * Format 1.1 (KV_SNAP_COMPAT_HISTORY): what a block's eviction order
 * depended on in the source pool, so that the first evictions after a
 * restore pick the blocks the source would have picked. Hints: a restore
 * into a pool of another policy family keeps what applies (commit time,
 * time to live, parent) and starts the rank afresh.
 *
 * rank_age, by the header's evict_policy:
 *   LRU, PRIORITY, PREFIX: ticks of the source's access clock (the CPU's
 *     timestamp counter, region.h kv_entry.rank) from the block's last
 *     access to the start of the persist; FIFO: from its insertion. 0 for
 *     a block accessed after the persist started. Ticks are meaningless
 *     across a reboot or between machines, so only the age is kept, and a
 *     restore re-bases it on its own clock (rank = now - age, ages larger
 *     than half of now compressed into the rest of the range: the order
 *     is kept, not the spacing).
 *   LFU: the access count above the source pool's floor (kv_region_state
 *     lfu_floor); a restore adds its pool's floor.
 *   CLOCK: 0; the reference bit is KV_SNAP_HISTORY_F_REFERENCED.
 */
#define KV_SNAP_HISTORY_F_PARENT (1U << 0)     /* parent_lo/hi name the block's parent */
#define KV_SNAP_HISTORY_F_REFERENCED (1U << 1) /* CLOCK reference bit set */
#define KV_SNAP_HISTORY_F_KNOWN (KV_SNAP_HISTORY_F_PARENT | KV_SNAP_HISTORY_F_REFERENCED)
struct kv_snap_history {
	uint64_t commit_ns;            /* CLOCK_REALTIME of the block's commit in the source pool */
	uint64_t rank_age;             /* see above */
	uint64_t parent_lo, parent_hi; /* KV_SNAP_HISTORY_F_PARENT: the key of the block before this
	                                  one in its chain (same namespace); else zero */
	uint32_t ttl_ms;               /* 0, or expiry at commit_ns + ttl_ms milliseconds */
	uint32_t flags;                /* KV_SNAP_HISTORY_F_* */
	uint64_t reserved[3];          /* zero */
};
#define KV_SNAP_HISTORY_SIZE_V1 64
KV_STATIC_ASSERT(sizeof(struct kv_snap_history) == KV_SNAP_HISTORY_SIZE_V1, "snapshot history v1 size");
KV_STATIC_ASSERT(KV_SNAP_SEGMENT_SIZE_V1 + KV_SNAP_SEGMENT_RECORDS_HISTORY * KV_SNAP_RECORD_SIZE_V1 <=
                         KV_SNAP_SEGMENT_HISTORY_OFF,
                 "records end before the histories");
KV_STATIC_ASSERT(KV_SNAP_SEGMENT_HISTORY_OFF + KV_SNAP_SEGMENT_RECORDS_HISTORY * KV_SNAP_HISTORY_SIZE_V1 <=
                         KV_SNAP_SEGMENT_HEAD,
                 "segment head holds the histories");
KV_STATIC_ASSERT(KV_SNAP_SEGMENT_TAGS_OFF ==
                         KV_SNAP_SEGMENT_HISTORY_OFF + KV_SNAP_SEGMENT_RECORDS_ENCRYPTED * KV_SNAP_HISTORY_SIZE_V1,
                 "tags follow the histories");
KV_STATIC_ASSERT(KV_SNAP_SEGMENT_TAGS_OFF + KV_SNAP_SEGMENT_RECORDS_ENCRYPTED * KV_CRYPTO_TAG_BYTES <=
                         KV_SNAP_SEGMENT_HEAD,
                 "encrypted segment head holds the tags");

struct kv_snap_trailer {
	uint64_t magic;    /* KV_SNAP_TRAILER_MAGIC */
	uint64_t checksum; /* XXH3-64 of this struct with this field 0 */
	uint64_t n_segments;
	uint64_t n_records;
	uint64_t data_bytes;      /* sum of record lengths */
	uint64_t file_len;        /* total file bytes, trailer included */
	uint64_t segments_hash;   /* chain of segment checksums, see above */
	uint64_t header_checksum; /* the header's checksum again: the trailer belongs to that header */
	/* KV_SNAP_INCOMPAT_ENCRYPTED: GMAC of this struct; else zero. */
	uint8_t tag[KV_CRYPTO_TAG_BYTES];
	uint64_t reserved[6]; /* zero */
};
#define KV_SNAP_TRAILER_SIZE_V1 128
KV_STATIC_ASSERT(sizeof(struct kv_snap_trailer) == KV_SNAP_TRAILER_SIZE_V1, "snapshot trailer v1 size");
KV_STATIC_ASSERT(KV_OFFSETOF(struct kv_snap_trailer, tag) == 64, "trailer tag in the 1.1 reserved words");

#endif /* KVPOOL_UAPI_SNAPSHOT_H */
