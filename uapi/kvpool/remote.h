/* SPDX-License-Identifier: MIT */
/*
 * kvpool remote-tier value format, version 1.
 *
 * A block that kvpoold uploads to the shared tier (a Redis Cluster) is
 * stored as one value: this header, then the block's bytes (or, when the
 * pool is encrypted, this header, a crypto block and the bytes sealed with
 * AES-256-GCM: see "Encrypted values" below). Any host that
 * fetches it checks every header field before the bytes may enter its pool,
 * because the store is shared and anyone holding its password can write it:
 * a value is accepted only if its magic, version, header size, flags and
 * reserved words are exactly as below, its namespace digest and key are the
 * ones the reader asked for, its length is the number of bytes that follow
 * the header, and the XXH3-64 (seed 0) of those bytes equals checksum.
 *
 * Encrypted values (KV_REMOTE_F_ENCRYPTED). A pool with encryption keys
 * (kvpoold.toml [pool.encryption]) writes
 *	struct kv_remote_header (flags = KV_REMOTE_F_ENCRYPTED, checksum = 0)
 *	struct kv_remote_crypto (KV_REMOTE_CRYPTO_SIZE_V1 bytes)
 *	ciphertext (length bytes)
 * where, with a fresh random 256-bit data key made for this value alone,
 *	ciphertext || data_tag = AES-256-GCM(key = data key, iv = data_iv,
 *	        aad = the first KV_REMOTE_AAD_SIZE bytes of the value,
 *	        plaintext = the block's bytes)
 * and wrapped is the data key wrapped by the pool key named in it
 * (keywrap.h, context KV_REMOTE_MAGIC). The AAD is the whole header and
 * the crypto block up to data_tag, so a value copied under another Redis
 * key, namespace or prefix, or any header byte changed, fails the tag; the
 * reader checks the header's namespace and key against the ones it asked
 * for before it decrypts anything. checksum is zero: an XXH3 of the
 * plaintext would let anyone who reads the store confirm a guess of a
 * block, and the tag authenticates the bytes. data_iv is
 * KV_REMOTE_DATA_IV_KIND in its top byte of the first four (daemon
 * crypto::make_iv(kind, 0, 0)); a reader uses the stored iv as it is.
 * A reader refuses an encrypted value whose wrapping key id it does not
 * have, whose wrapped key or data tag do not match, or whose alg or
 * reserved word it does not know; a reader with keys also refuses a value
 * without KV_REMOTE_F_ENCRYPTED, so that whoever can write the store
 * cannot put plaintext into an encrypted pool.
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
 * This header is C11 and C++20, depends on <stdint.h> and keywrap.h only and uses
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

#include <kvpool/keywrap.h>
#include <stdint.h>

#ifdef __cplusplus
#define KV_REMOTE_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KV_REMOTE_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* "KVREMOTE" read as a little-endian uint64_t. */
#define KV_REMOTE_MAGIC 0x45544f4d4552564bULL
#define KV_REMOTE_VERSION 1

/*
 * kv_remote_header.flags. A reader refuses a flag it does not know: a reader
 * older than KV_REMOTE_F_ENCRYPTED refuses encrypted values (rejected, by
 * reason "flags").
 */
#define KV_REMOTE_F_ENCRYPTED (1U << 0) /* a kv_remote_crypto follows the header */
#define KV_REMOTE_F_KNOWN KV_REMOTE_F_ENCRYPTED

/*
 * The header at offset 0 of every value. Size: KV_REMOTE_HEADER_SIZE_V1; the
 * block's bytes start right after it.
 */
struct kv_remote_header {
	uint64_t magic;        /* KV_REMOTE_MAGIC */
	uint16_t version;      /* KV_REMOTE_VERSION */
	uint16_t header_size;  /* KV_REMOTE_HEADER_SIZE_V1 */
	uint32_t flags;        /* KV_REMOTE_F_* */
	uint64_t ns_digest_lo; /* XXH3-128 of the namespace's kv_manifest: low 64 bits */
	uint64_t ns_digest_hi; /* and high 64 bits */
	uint64_t key_lo;       /* the block's struct kv_key */
	uint64_t key_hi;
	uint64_t length;      /* bytes of the block after the header (and crypto block); > 0 */
	uint64_t checksum;    /* XXH3-64 (seed 0) of those bytes, as kv_view.checksum;
	                       * 0 when encrypted */
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

/*
 * After the header of an encrypted value (KV_REMOTE_F_ENCRYPTED). Size:
 * KV_REMOTE_CRYPTO_SIZE_V1; the ciphertext starts right after it, at
 * KV_REMOTE_HEADER_SIZE_V1 + KV_REMOTE_CRYPTO_SIZE_V1.
 */
struct kv_remote_crypto {
	struct kv_wrapped_key wrapped;         /* the value's data key, wrapped by a pool key */
	uint8_t data_iv[KV_CRYPTO_IV_BYTES];   /* iv of the ciphertext */
	uint32_t reserved;                     /* zero */
	uint8_t data_tag[KV_CRYPTO_TAG_BYTES]; /* GCM tag of the ciphertext */
};
#define KV_REMOTE_CRYPTO_SIZE_V1 128
/* The AAD of the ciphertext: the header and the crypto block but data_tag. */
#define KV_REMOTE_AAD_SIZE (KV_REMOTE_HEADER_SIZE_V1 + KV_REMOTE_CRYPTO_SIZE_V1 - KV_CRYPTO_TAG_BYTES)
/* The kind byte of data_iv (top byte of its first four, little-endian). */
#define KV_REMOTE_DATA_IV_KIND 0x52U

KV_REMOTE_STATIC_ASSERT(sizeof(struct kv_remote_crypto) == KV_REMOTE_CRYPTO_SIZE_V1, "remote crypto v1 size");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_crypto, data_iv) == 96, "remote crypto iv");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_crypto, reserved) == 108, "remote crypto reserved");
KV_REMOTE_STATIC_ASSERT(__builtin_offsetof(struct kv_remote_crypto, data_tag) == 112, "remote crypto tag");

#endif /* KVPOOL_UAPI_REMOTE_H */
