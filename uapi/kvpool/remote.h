/* SPDX-License-Identifier: MIT */
/*
 * kvpool remote-tier value format, version 1.
 *
 * A block that kvpoold uploads to the shared tier (a Redis Cluster) is
 * stored as one value: this header, then the block's bytes. Any host that
 * fetches it checks every header field before the bytes may enter its pool,
 * because the store is shared and anyone holding its password can write it:
 * a value is accepted only if its magic, version, header size, flags and
 * reserved words are exactly as below, its namespace digest and key are the
 * ones the reader asked for, its length is the number of bytes that follow
 * the header, and the XXH3-64 (seed 0) of those bytes equals checksum.
 *
 * The value lives under the Redis key
 *	<key_prefix><ns digest hex>:<key hex>
 * where ns digest hex is the 32 lowercase hex digits of ns_digest_hi then
 * ns_digest_lo (each as %016llx), and key hex likewise of key_hi then key_lo.
 * No hash tag: the blocks of one chain spread over every slot.
 *
 * The namespace digest is XXH3-128 (seed 0) of the 160 bytes of the
 * namespace's struct kv_manifest (region.h): two hosts share blocks only when
 * their manifests agree byte for byte, as two processes on one host do.
 *
 * This header is C11 and C++20, depends on <stdint.h> only and uses
 * fixed-width unsigned types only. All multi-byte fields are little-endian
 * (x86-64 and aarch64 hosts).
 *
 * Compatibility rules:
 *  - A reader refuses another version, another header_size, a flag it does
 *    not know and a non-zero reserved word: the header cannot grow within a
 *    version, so a new field is a new version, and a reader never
 *    misinterprets a value written by a newer host (it counts it as a
 *    rejection and the block is computed again).
 *  - Writers zero every reserved word.
 */
#ifndef KVPOOL_UAPI_REMOTE_H
#define KVPOOL_UAPI_REMOTE_H

#include <stdint.h>

#ifdef __cplusplus
#define KV_REMOTE_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KV_REMOTE_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* "KVREMOTE" read as a little-endian uint64_t. */
#define KV_REMOTE_MAGIC 0x45544f4d4552564bULL
#define KV_REMOTE_VERSION 1

/* kv_remote_header.flags: none defined in version 1 (a reader refuses any). */
#define KV_REMOTE_F_KNOWN 0U

/*
 * The header at offset 0 of every value. Size: KV_REMOTE_HEADER_SIZE_V1; the
 * block's bytes start right after it.
 */
struct kv_remote_header {
	uint64_t magic;        /* KV_REMOTE_MAGIC */
	uint16_t version;      /* KV_REMOTE_VERSION */
	uint16_t header_size;  /* KV_REMOTE_HEADER_SIZE_V1 */
	uint32_t flags;        /* KV_REMOTE_F_*: zero in version 1 */
	uint64_t ns_digest_lo; /* XXH3-128 of the namespace's kv_manifest: low 64 bits */
	uint64_t ns_digest_hi; /* and high 64 bits */
	uint64_t key_lo;       /* the block's struct kv_key */
	uint64_t key_hi;
	uint64_t length;      /* bytes of the block after the header; > 0 */
	uint64_t checksum;    /* XXH3-64 (seed 0) of those bytes, as kv_view.checksum */
	uint64_t reserved[8]; /* zero */
};
#define KV_REMOTE_HEADER_SIZE_V1 128

KV_REMOTE_STATIC_ASSERT(sizeof(struct kv_remote_header) == KV_REMOTE_HEADER_SIZE_V1, "remote header v1 size");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, version) == 8, "remote header version");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, header_size) == 10, "remote header size");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, flags) == 12, "remote header flags");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, ns_digest_lo) == 16, "remote header digest");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, key_lo) == 32, "remote header key");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, length) == 48, "remote header length");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, checksum) == 56, "remote header checksum");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_header, reserved) == 64, "remote header reserved");

#endif /* KVPOOL_UAPI_REMOTE_H */
