// SPDX-License-Identifier: MIT
//
// vLLM's prefix-cache block hashes (kv_vllm_* in kv.h). vLLM hashes the
// canonical CBOR of the tuple (parent hash, tuple of token ids, extra keys)
// with cbor2 in Python; the bytes are rebuilt here by hand, so one block is
// one buffer fill and one digest, with no allocation after the first block.
#include <kv/kv.h>
#include <kv/kv.hpp>
#include <openssl/evp.h>

#define XXH_STATIC_LINKING_ONLY
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <vector>
#include <xxhash.h>

namespace {

using kv::cbor::put_head;

// Deeper extra keys than this are refused rather than recursed into (vLLM's
// are two levels deep: a tuple of strings, bytes and (identifier, offset)).
constexpr int kMaxDepth = 64;

// The fetched SHA-256 implementation, shared by all threads: fetching by name
// on every digest costs a provider lookup under a lock. Fetched once, kept
// until exit.
const EVP_MD *sha256_md() noexcept {
    static EVP_MD *const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return md;
}

// One digest context per thread (an EVP_MD_CTX is not thread-safe); reusing
// it saves an allocation and a free per block.
struct CtxHolder {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    CtxHolder() = default;
    CtxHolder(const CtxHolder &) = delete;
    CtxHolder &operator=(const CtxHolder &) = delete;
    ~CtxHolder() { EVP_MD_CTX_free(ctx); }
};

int digest(uint32_t scheme, const uint8_t *data, size_t len, uint8_t *out) noexcept {
    if (scheme == KV_HASH_VLLM_XXHASH_CBOR) {
        // xxhash's xxh3_128_digest: the canonical (big-endian) form, high half first.
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
        memcpy(out, c.digest, sizeof c.digest);
        return 0;
    }
    thread_local CtxHolder holder;
    const EVP_MD *md = sha256_md();
    if (!holder.ctx) return -ENOMEM;
    if (!md) return -EIO;
    unsigned int n = 0;
    if (EVP_DigestInit_ex2(holder.ctx, md, nullptr) != 1 ||
        EVP_DigestUpdate(holder.ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(holder.ctx, out, &n) != 1 || n != 32)
        return -EIO;
    return 0;
}

// The end of the single CBOR item at [p, end), or nullptr when it is not
// well-formed, has an indefinite length or a head longer than needed (not
// canonical).
const uint8_t *item_end(const uint8_t *p, const uint8_t *end, int depth) noexcept {
    if (p >= end || depth > kMaxDepth) return nullptr;
    const uint8_t major = *p >> 5, ai = *p & 31;
    p++;
    uint64_t v = ai;
    if (ai >= 24) {
        if (ai > 27) return nullptr; // 28..30 reserved, 31 indefinite length
        const size_t n = size_t{1} << (ai - 24);
        if (static_cast<size_t>(end - p) < n) return nullptr;
        v = 0;
        for (size_t i = 0; i < n; i++)
            v = (v << 8) | p[i];
        p += n;
        if (major == kv::cbor::kSimple) {
            if (ai == 24 && v < 32) return nullptr; // simple values below 32 take the one-byte form
            return p;                               // ai 25..27: a half, single or double float
        }
        const uint64_t shortest_max = n == 1 ? 23 : (uint64_t{1} << (4 * n)) - 1;
        if (v <= shortest_max) return nullptr;
    }
    switch (major) {
    case kv::cbor::kUint:
    case kv::cbor::kNegint:
    case kv::cbor::kSimple:
        return p;
    case kv::cbor::kBytes:
    case kv::cbor::kText:
        return static_cast<uint64_t>(end - p) < v ? nullptr : p + v;
    case kv::cbor::kTag:
        return item_end(p, end, depth + 1);
    default: { // arrays: v items; maps: v pairs. Each item takes a byte at least.
        const uint64_t items = major == kv::cbor::kArray ? v : 2 * v;
        if (major != kv::cbor::kArray && v > UINT64_MAX / 2) return nullptr;
        for (uint64_t i = 0; i < items; i++)
            if (!(p = item_end(p, end, depth + 1))) return nullptr;
        return p;
    }
    }
}

} // namespace

extern "C" {

size_t kv_vllm_hash_len(uint32_t scheme) noexcept {
    switch (scheme) {
    case KV_HASH_VLLM_SHA256_CBOR:
        return 32;
    case KV_HASH_VLLM_XXHASH_CBOR:
        return 16;
    default:
        return 0;
    }
}

int kv_vllm_none_hash(uint32_t scheme, const char *seed, size_t seed_len, uint8_t *out) noexcept {
    const size_t hl = kv_vllm_hash_len(scheme);
    if (!hl || !out || (!seed && seed_len)) return -EINVAL;
    try {
        std::vector<uint8_t> buf(kv::cbor::kMaxHead + seed_len);
        uint8_t *p = put_head(buf.data(), kv::cbor::kText, seed_len);
        if (seed_len) memcpy(p, seed, seed_len);
        if (int rc =
                digest(scheme, buf.data(), static_cast<size_t>(p - buf.data()) + seed_len, out))
            return rc;
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    }
    return static_cast<int>(hl);
}

int64_t kv_vllm_block_hashes(uint32_t scheme, const uint8_t *parent, size_t parent_len,
                             const uint32_t *tokens, size_t n_tokens, uint32_t block_size,
                             const uint8_t *const *extra_cbor, const size_t *extra_len,
                             uint8_t *out, size_t max_blocks) noexcept {
    const size_t hl = kv_vllm_hash_len(scheme);
    if (!hl || !block_size || !parent || !parent_len || (!tokens && n_tokens) ||
        (!out && max_blocks) || (extra_cbor && !extra_len))
        return -EINVAL;
    const size_t n = std::min(n_tokens / block_size, max_blocks);
    if (n == 0) return 0;
    // Check every extra item before writing any hash, so a bad one leaves out untouched.
    size_t extra_max = 1; // null
    for (size_t i = 0; extra_cbor && i < n; i++) {
        if (!extra_cbor[i] || !extra_len[i]) continue;
        if (item_end(extra_cbor[i], extra_cbor[i] + extra_len[i], 0) !=
            extra_cbor[i] + extra_len[i])
            return -EINVAL;
        extra_max = std::max(extra_max, extra_len[i]);
    }
    try {
        // [parent, [tokens...], extra]: a token id takes 5 bytes at most.
        std::vector<uint8_t> buf(1 + kv::cbor::kMaxHead + std::max(parent_len, hl) +
                                 kv::cbor::kMaxHead + size_t{5} * block_size + extra_max);
        const uint8_t *prev = parent;
        size_t prev_len = parent_len;
        for (size_t i = 0; i < n; i++) {
            uint8_t *p = buf.data();
            *p++ = (kv::cbor::kArray << 5) | 3;
            p = put_head(p, kv::cbor::kBytes, prev_len);
            memcpy(p, prev, prev_len);
            p += prev_len;
            p = put_head(p, kv::cbor::kArray, block_size);
            const uint32_t *t = tokens + i * block_size;
            for (uint32_t j = 0; j < block_size; j++)
                p = put_head(p, kv::cbor::kUint, t[j]);
            if (extra_cbor && extra_cbor[i] && extra_len[i]) {
                memcpy(p, extra_cbor[i], extra_len[i]);
                p += extra_len[i];
            } else {
                *p++ = kv::cbor::kNull;
            }
            uint8_t *h = out + i * hl;
            if (int rc = digest(scheme, buf.data(), static_cast<size_t>(p - buf.data()), h))
                return rc;
            prev = h;
            prev_len = hl;
        }
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    }
    return static_cast<int64_t>(n);
}

kv_key kv_vllm_key(const uint8_t *hash, size_t len) noexcept {
    kv_key k{0, 0};
    if (!hash) return k;
    const size_t take = std::min<size_t>(len, 16);
    for (const uint8_t *p = hash + len - take; p < hash + len; p++) {
        k.hi = (k.hi << 8) | (k.lo >> 56);
        k.lo = (k.lo << 8) | *p;
    }
    return k;
}

int kv_vllm_seed_id(uint32_t scheme, const char *seed, size_t seed_len, uint64_t *out) noexcept {
    if (!out) return -EINVAL;
    uint8_t h[KV_VLLM_HASH_MAX];
    int rc = kv_vllm_none_hash(scheme, seed, seed_len, h);
    if (rc < 0) return rc;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | h[i];
    *out = v;
    return 0;
}

int kv_manifest_set_vllm(kv_manifest *m, uint32_t scheme, const char *seed,
                         size_t seed_len) noexcept {
    if (!m) return -EINVAL;
    uint64_t id = 0;
    if (int rc = kv_vllm_seed_id(scheme, seed, seed_len, &id)) return rc;
    m->hash_scheme = scheme;
    m->hash_seed = id;
    return 0;
}

} // extern "C"
