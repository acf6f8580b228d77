// SPDX-License-Identifier: MIT
//
// AES-256-GCM for everything kvpoold writes encrypted (snapshots, remote
// values), over OpenSSL 3's EVP interface (its AES-NI/VAES code: no
// hand-written cryptography here), and the key wrapping of
// <kvpool/keywrap.h>.
//
// Nonces: GCM is broken by reusing an iv under one key. Every data key is
// fresh (random_bytes) and seals one container, whose format assigns each
// sealed part a distinct iv (make_iv); a pool key only wraps data keys, each
// with a random iv (2^-32 collision bound after 2^32 wraps, NIST SP 800-38D
// 8.3; rotate the key well before that).
//
// Thread safety: an Aead holds one cipher context; use one per thread. The
// free functions are thread-safe. Nothing throws or prints.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <kvpool/keywrap.h>
#include <span>
#include <string>
#include <string_view>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace kv::daemon::crypto {

inline constexpr size_t kKeyBytes = KV_CRYPTO_KEY_BYTES;
inline constexpr size_t kIvBytes = KV_CRYPTO_IV_BYTES;
inline constexpr size_t kTagBytes = KV_CRYPTO_TAG_BYTES;

// A 256-bit key. Wiped (OPENSSL_cleanse) when destroyed.
struct Key {
    std::array<uint8_t, kKeyBytes> bytes{};
    Key() = default;
    Key(const Key &) = default;
    Key &operator=(const Key &) = default;
    ~Key();
};
using Iv = std::array<uint8_t, kIvBytes>;
using Tag = std::array<uint8_t, kTagBytes>;

// The iv of one sealed part of a container: 4 bytes of part kind and index
// (kind in the top byte, index in the low 24 bits), then 8 bytes of a
// counter (a segment number, say), all little-endian. Unique as long as no
// (kind, index, counter) repeats under one data key.
Iv make_iv(uint8_t kind, uint32_t index, uint64_t counter);

// Fill buf with bytes from the OS's CSPRNG (RAND_bytes). False only if
// OpenSSL could not seed (never on a running Linux).
bool random_bytes(void *buf, size_t len);

// A fresh random data key; nullopt-like failure as unexpected(errno text).
std::expected<Key, std::string> new_data_key();

class Aead {
  public:
    Aead();
    ~Aead();
    Aead(const Aead &) = delete;
    Aead &operator=(const Aead &) = delete;

    // Encrypt len bytes from in to out (in == out is allowed; otherwise the
    // ranges must not overlap), authenticating aad too; writes the tag.
    // False only on an OpenSSL failure (allocation).
    bool seal(const Key &key, const Iv &iv, std::span<const uint8_t> aad, const uint8_t *in,
              uint8_t *out, size_t len, Tag &tag);
    // Decrypt and verify. False when the tag does not match (the key, iv,
    // aad, ciphertext or tag differ from the sealing): out then holds
    // unauthenticated bytes that must not be used (overwrite or discard).
    bool open(const Key &key, const Iv &iv, std::span<const uint8_t> aad, const uint8_t *in,
              uint8_t *out, size_t len, const Tag &tag);

  private:
    EVP_CIPHER_CTX *ctx_;
};

// Wrap data_key under pool_key (kvpool/keywrap.h), with a random iv; key_id
// is 1..31 bytes and context the container's magic. False on an OpenSSL
// failure or a bad key_id length.
bool wrap_key(Aead &aead, const Key &pool_key, std::string_view key_id, uint64_t context,
              const Key &data_key, kv_wrapped_key &out);

// Unwrap: false when the tag does not match (another key under that id, a
// modified byte) or alg is unknown. The caller looked pool_key up by
// key_id_of(w).
bool unwrap_key(Aead &aead, const Key &pool_key, uint64_t context, const kv_wrapped_key &w,
                Key &data_key);

// The key id a wrapped key names ("" when the field is not NUL-terminated
// or empty, which callers refuse).
std::string key_id_of(const kv_wrapped_key &w);

// A key id is 1..31 of [A-Za-z0-9_.-].
inline bool valid_key_id(std::string_view id) {
    if (id.empty() || id.size() >= KV_KEY_ID_BYTES) return false;
    for (char c : id)
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    return true;
}

} // namespace kv::daemon::crypto
