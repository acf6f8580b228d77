// SPDX-License-Identifier: MIT
//
// AES-256-GCM over OpenSSL's EVP interface: see crypto.h.
#include "crypto.h"

#include <algorithm>
#include <cstring>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace kv::daemon::crypto {

Key::~Key() {
    OPENSSL_cleanse(bytes.data(), bytes.size());
}

Iv make_iv(uint8_t kind, uint32_t index, uint64_t counter) {
    Iv iv{};
    const uint32_t head = (uint32_t(kind) << 24) | (index & 0xffffffU);
    for (int i = 0; i < 4; i++)
        iv[size_t(i)] = uint8_t(head >> (8 * i));
    for (int i = 0; i < 8; i++)
        iv[size_t(4 + i)] = uint8_t(counter >> (8 * i));
    return iv;
}

bool random_bytes(void *buf, size_t len) {
    return RAND_bytes(static_cast<unsigned char *>(buf), int(len)) == 1;
}

std::expected<Key, std::string> new_data_key() {
    Key k;
    if (!random_bytes(k.bytes.data(), k.bytes.size()))
        return std::unexpected(std::string("RAND_bytes failed: OpenSSL could not seed"));
    return k;
}

Aead::Aead() : ctx_(EVP_CIPHER_CTX_new()) {}
Aead::~Aead() {
    EVP_CIPHER_CTX_free(ctx_);
}

// GCM takes at most 2^36 - 32 bytes per iv; EVP's update takes an int.
// Longer buffers go through update in pieces.
static constexpr size_t kChunk = size_t(1) << 30;

bool Aead::seal(const Key &key, const Iv &iv, std::span<const uint8_t> aad, const uint8_t *in,
                uint8_t *out, size_t len, Tag &tag) {
    if (!ctx_) return false;
    int n = 0;
    if (EVP_EncryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_IVLEN, int(kIvBytes), nullptr) != 1 ||
        EVP_EncryptInit_ex(ctx_, nullptr, nullptr, key.bytes.data(), iv.data()) != 1)
        return false;
    if (!aad.empty() && EVP_EncryptUpdate(ctx_, nullptr, &n, aad.data(), int(aad.size())) != 1)
        return false;
    for (size_t off = 0; off < len; off += kChunk) {
        const size_t step = std::min(kChunk, len - off);
        if (EVP_EncryptUpdate(ctx_, out + off, &n, in + off, int(step)) != 1) return false;
    }
    uint8_t tail[16]; // GCM is a stream mode: Final writes nothing
    if (EVP_EncryptFinal_ex(ctx_, tail, &n) != 1) return false;
    return EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, int(kTagBytes), tag.data()) == 1;
}

bool Aead::open(const Key &key, const Iv &iv, std::span<const uint8_t> aad, const uint8_t *in,
                uint8_t *out, size_t len, const Tag &tag) {
    if (!ctx_) return false;
    int n = 0;
    if (EVP_DecryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_IVLEN, int(kIvBytes), nullptr) != 1 ||
        EVP_DecryptInit_ex(ctx_, nullptr, nullptr, key.bytes.data(), iv.data()) != 1)
        return false;
    if (!aad.empty() && EVP_DecryptUpdate(ctx_, nullptr, &n, aad.data(), int(aad.size())) != 1)
        return false;
    for (size_t off = 0; off < len; off += kChunk) {
        const size_t step = std::min(kChunk, len - off);
        if (EVP_DecryptUpdate(ctx_, out + off, &n, in + off, int(step)) != 1) return false;
    }
    // EVP takes a non-const tag pointer for SET_TAG; it only reads it.
    Tag t = tag;
    if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, int(kTagBytes), t.data()) != 1)
        return false;
    uint8_t tail[16];
    return EVP_DecryptFinal_ex(ctx_, tail, &n) == 1;
}

// The wrap's AAD (keywrap.h): key_id[32] || alg (LE32) || context (LE64).
static std::array<uint8_t, KV_KEY_ID_BYTES + 12> wrap_aad(const uint8_t *key_id, uint32_t alg,
                                                          uint64_t context) {
    std::array<uint8_t, KV_KEY_ID_BYTES + 12> a{};
    std::memcpy(a.data(), key_id, KV_KEY_ID_BYTES);
    for (int i = 0; i < 4; i++)
        a[size_t(KV_KEY_ID_BYTES + i)] = uint8_t(alg >> (8 * i));
    for (int i = 0; i < 8; i++)
        a[size_t(KV_KEY_ID_BYTES + 4 + i)] = uint8_t(context >> (8 * i));
    return a;
}

bool wrap_key(Aead &aead, const Key &pool_key, std::string_view key_id, uint64_t context,
              const Key &data_key, kv_wrapped_key &out) {
    if (!valid_key_id(key_id)) return false;
    std::memset(&out, 0, sizeof out);
    std::memcpy(out.key_id, key_id.data(), key_id.size());
    out.alg = KV_CRYPTO_AES_256_GCM;
    Iv iv;
    if (!random_bytes(iv.data(), iv.size())) return false;
    std::memcpy(out.iv, iv.data(), iv.size());
    const auto aad = wrap_aad(out.key_id, out.alg, context);
    Tag tag;
    if (!aead.seal(pool_key, iv, aad, data_key.bytes.data(), out.wrapped, kKeyBytes, tag))
        return false;
    std::memcpy(out.tag, tag.data(), tag.size());
    return true;
}

bool unwrap_key(Aead &aead, const Key &pool_key, uint64_t context, const kv_wrapped_key &w,
                Key &data_key) {
    if (w.alg != KV_CRYPTO_AES_256_GCM) return false;
    Iv iv;
    std::memcpy(iv.data(), w.iv, iv.size());
    Tag tag;
    std::memcpy(tag.data(), w.tag, tag.size());
    const auto aad = wrap_aad(w.key_id, w.alg, context);
    if (aead.open(pool_key, iv, aad, w.wrapped, data_key.bytes.data(), kKeyBytes, tag)) return true;
    OPENSSL_cleanse(data_key.bytes.data(), data_key.bytes.size());
    return false;
}

std::string key_id_of(const kv_wrapped_key &w) {
    const void *nul = std::memchr(w.key_id, 0, sizeof w.key_id);
    if (!nul) return {};
    std::string id(reinterpret_cast<const char *>(w.key_id),
                   size_t(static_cast<const uint8_t *>(nul) - w.key_id));
    // Every byte after the NUL must be NUL too, as writers leave it.
    for (size_t i = id.size(); i < sizeof w.key_id; i++)
        if (w.key_id[i]) return {};
    return id;
}

} // namespace kv::daemon::crypto
