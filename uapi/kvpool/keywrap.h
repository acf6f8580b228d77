/* SPDX-License-Identifier: MIT */
/*
 * kvpool key wrapping, shared by encrypted snapshots (snapshot.h) and
 * encrypted remote values (remote.h).
 *
 * Everything kvpool writes encrypted is sealed with AES-256-GCM under a
 * fresh random 256-bit data key, made for that one snapshot or value. The
 * data key is stored next to the ciphertext, itself sealed ("wrapped") with
 * AES-256-GCM under the pool's key, which never leaves kvpoold's memory:
 *
 *	wrapped || tag = AES-256-GCM(key = pool key, iv = iv,
 *	                             aad = key_id[32] || alg (4 bytes LE)
 *	                                   || context (8 bytes LE),
 *	                             plaintext = data key)
 *
 * where context is the magic of the container (KV_SNAP_MAGIC for a
 * snapshot, KV_REMOTE_MAGIC for a remote value), so a wrapped key lifted
 * from one kind of container does not open in the other. iv is 12 random
 * bytes. A pool's key is named by its key id, 1..31 characters of
 * [A-Za-z0-9_.-], stored NUL-padded: a reader picks the configured key of
 * that id and refuses the container when it has none (the key id is in its
 * message) or when the tag does not match (the wrong key under that id).
 *
 * Rotation: configure a new key id for writing and keep the old one for
 * reading; containers name the key that wrapped them.
 *
 * C11 and C++20, <stdint.h> only, fixed-width fields, no implicit padding.
 */
#ifndef KVPOOL_UAPI_KEYWRAP_H
#define KVPOOL_UAPI_KEYWRAP_H

#include <stdint.h>

#ifdef __cplusplus
#define KV_KEYWRAP_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KV_KEYWRAP_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define KV_CRYPTO_AES_256_GCM 1U /* the only algorithm: AES-256-GCM, 12-byte iv, 16-byte tag */
#define KV_CRYPTO_KEY_BYTES 32
#define KV_CRYPTO_IV_BYTES 12
#define KV_CRYPTO_TAG_BYTES 16
#define KV_KEY_ID_BYTES 32 /* key_id field: 1..31 characters, NUL-padded */

struct kv_wrapped_key {
	uint8_t key_id[KV_KEY_ID_BYTES];      /* the pool key that wrapped the data key */
	uint8_t iv[KV_CRYPTO_IV_BYTES];       /* random */
	uint32_t alg;                         /* KV_CRYPTO_AES_256_GCM */
	uint8_t wrapped[KV_CRYPTO_KEY_BYTES]; /* the data key, encrypted */
	uint8_t tag[KV_CRYPTO_TAG_BYTES];     /* GCM tag, see above */
};
#define KV_WRAPPED_KEY_SIZE_V1 96
KV_KEYWRAP_STATIC_ASSERT(sizeof(struct kv_wrapped_key) == KV_WRAPPED_KEY_SIZE_V1, "wrapped key size");
KV_KEYWRAP_STATIC_ASSERT(__builtin_offsetof(struct kv_wrapped_key, alg) == 44, "wrapped key alg");
KV_KEYWRAP_STATIC_ASSERT(__builtin_offsetof(struct kv_wrapped_key, wrapped) == 48, "wrapped key bytes");
KV_KEYWRAP_STATIC_ASSERT(__builtin_offsetof(struct kv_wrapped_key, tag) == 80, "wrapped key tag");

#endif /* KVPOOL_UAPI_KEYWRAP_H */
