// SPDX-License-Identifier: MIT
//
// Gather and scatter of paged KV blocks with their XXH3-64 in one pass.
//
// A pool block's checksum is XXH3-64 of the whole block, but a gather writes
// it in pieces (64 fragments of 32 KiB for a 32-layer model kept per layer),
// and per-layer saving writes each layer of a block in a separate call. So
// the hash is streamed: BlockHash keeps XXH3's eight accumulators and the
// position between pieces, and each 64-byte stripe that a piece covers whole
// is loaded into vector registers once, stored, and folded into the
// accumulators from the same registers (libkv/store.cc does the same for one
// contiguous copy; this file cannot call it, it is not exported). A stripe
// split between two pieces is finished from the contiguous pool block, where
// its bytes are adjacent. The data crosses the memory system once, and the
// checksum is of the bytes stored (save) or the bytes handed to the engine
// (load), so a byte changed under the pool block after the check cannot
// reach the engine unseen.
//
// XXH3's long-input path (inputs over 240 bytes, default secret, seed 0):
// stripes 0 .. (len - 1) / 64 - 1 are accumulated with secret offset
// 8 * (stripe % 16), the accumulators are scrambled after every 16th
// stripe, and the digest adds the last 64 bytes (overlapping) with its own
// secret offset. Shorter blocks are copied and hashed by libxxhash at the
// end. The tests compare every variant with python-xxhash over odd sizes.
#include "paged_copy.h"

#define XXH_INLINE_ALL // header-only: the extension needs no libxxhash link
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace kvpool_py::paged {

namespace {

__extension__ typedef unsigned __int128 u128;
typedef uint64_t V16 __attribute__((vector_size(16)));
typedef uint64_t V32 __attribute__((vector_size(32)));
typedef uint64_t V64 __attribute__((vector_size(64)));

constexpr uint64_t kP32_1 = 0x9E3779B1U, kP32_2 = 0x85EBCA77U, kP32_3 = 0xC2B2AE3DU;
constexpr uint64_t kP64_1 = 0x9E3779B185EBCA87ULL, kP64_2 = 0xC2B2AE3D27D4EB4FULL,
                   kP64_3 = 0x165667B19E3779F9ULL, kP64_4 = 0x85EBCA77C2B2AE63ULL,
                   kP64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t kMidsizeMax = 240; // XXH3_MIDSIZE_MAX
constexpr uint64_t kStripe = 64, kStripesPerBlock = 16;
constexpr size_t kSecretLen = 192; // XXH3_SECRET_DEFAULT_SIZE

// The default secret, from libxxhash (a seed-0 secret is the default one).
struct DefaultSecret {
    alignas(64) uint8_t bytes[kSecretLen];
    DefaultSecret() { XXH3_generateSecret_fromSeed(bytes, 0); }
};
const DefaultSecret kDefaultSecret;
const uint8_t *const kSecret = kDefaultSecret.bytes;

uint64_t read64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); // little-endian hosts only, as the region format
    return v;
}

uint64_t mul128_fold64(uint64_t a, uint64_t b) {
    u128 m = u128(a) * b;
    return uint64_t(m) ^ uint64_t(m >> 64);
}

// XXH3_mergeAccs with the final avalanche.
uint64_t merge_accs(const uint64_t *acc, uint64_t len) {
    uint64_t r = len * kP64_1;
    for (int i = 0; i < 4; i++)
        r += mul128_fold64(acc[2 * i] ^ read64(kSecret + 11 + 16 * i),
                           acc[2 * i + 1] ^ read64(kSecret + 19 + 16 * i));
    r ^= r >> 37;
    r *= 0x165667919E3779F9ULL;
    return r ^ (r >> 32);
}

// XXH3_accumulate_512 on the stripe at s, storing it to d first when Copy.
// Helpers are always_inline and see vectors only through pointers, so each
// is compiled for the ISA of the target-specific function it lands in.
template <class V, bool Copy>
[[gnu::always_inline]] inline void stripe(V *acc, const uint8_t *s, uint8_t *d,
                                          const uint8_t *secret) {
    for (unsigned j = 0; j < 64 / sizeof(V); j++) {
        V data, key;
        memcpy(&data, s + j * sizeof(V), sizeof(V));
        if constexpr (Copy) memcpy(d + j * sizeof(V), &data, sizeof(V));
        memcpy(&key, secret + j * sizeof(V), sizeof(V));
        V dk = data ^ key;
        V product = (dk & 0xffffffffULL) * (dk >> 32);
        V swapped; // acc[i ^ 1] += data[i]
        if constexpr (sizeof(V) == 16)
            swapped = __builtin_shufflevector(data, data, 1, 0);
        else if constexpr (sizeof(V) == 32)
            swapped = __builtin_shufflevector(data, data, 1, 0, 3, 2);
        else
            swapped = __builtin_shufflevector(data, data, 1, 0, 3, 2, 5, 4, 7, 6);
        acc[j] += swapped + product;
    }
}

// XXH3_scrambleAcc.
template <class V> [[gnu::always_inline]] inline void scramble(V *acc) {
    const uint8_t *secret = kSecret + kSecretLen - kStripe;
    for (unsigned j = 0; j < 64 / sizeof(V); j++) {
        V key;
        memcpy(&key, secret + j * sizeof(V), sizeof(V));
        V a = acc[j];
        a ^= a >> 47;
        a ^= key;
        acc[j] = (a & 0xffffffffULL) * kP32_1 + (((a >> 32) * kP32_1) << 32);
    }
}

// The streaming state BlockHash keeps between pieces.
struct State {
    uint64_t *acc; // 8 accumulators, 64-byte aligned
    uint64_t len;
    uint64_t *pos;
};

// Move n bytes between the contiguous block (at block + *pos) and the
// engine side (ext), Save: ext -> block, else block -> ext, hashing the
// stripes completed on the way.
template <class V, bool Save>
[[gnu::always_inline]] inline void advance(State st, uint8_t *block, uint8_t *ext, uint64_t n) {
    const uint64_t total = st.len > kMidsizeMax ? (st.len - 1) / kStripe : 0;
    V acc[64 / sizeof(V)];
    memcpy(acc, st.acc, sizeof acc);
    uint64_t pos = *st.pos;
    while (n) {
        const uint64_t k = pos / kStripe, in = pos % kStripe;
        if (in == 0 && n >= kStripe && k < total) {
            // Whole stripes, up to the end of this 1 KiB block of 16.
            const uint64_t m =
                std::min({n / kStripe, total - k, kStripesPerBlock - k % kStripesPerBlock});
            const uint8_t *secret = kSecret + 8 * (k % kStripesPerBlock);
            for (uint64_t i = 0; i < m; i++) {
                if constexpr (Save)
                    stripe<V, true>(acc, ext + i * kStripe, block + pos + i * kStripe,
                                    secret + 8 * i);
                else
                    stripe<V, true>(acc, block + pos + i * kStripe, ext + i * kStripe,
                                    secret + 8 * i);
            }
            pos += m * kStripe;
            ext += m * kStripe;
            n -= m * kStripe;
            if ((k + m) % kStripesPerBlock == 0) scramble<V>(acc);
            continue;
        }
        // A stripe split between pieces, or the tail the digest covers.
        const uint64_t c = std::min(n, kStripe - in);
        if constexpr (Save)
            memcpy(block + pos, ext, c);
        else
            memcpy(ext, block + pos, c);
        pos += c;
        ext += c;
        n -= c;
        if (pos % kStripe == 0 && k < total) {
            stripe<V, false>(acc, block + k * kStripe, nullptr,
                             kSecret + 8 * (k % kStripesPerBlock));
            if (k % kStripesPerBlock == kStripesPerBlock - 1) scramble<V>(acc);
        }
    }
    memcpy(st.acc, acc, sizeof acc);
    *st.pos = pos;
}

template <class V>
[[gnu::always_inline]] inline uint64_t finish(const uint64_t *acc8, uint64_t len,
                                              const uint8_t *block) {
    if (len <= kMidsizeMax) return XXH3_64bits(block, len);
    V acc[64 / sizeof(V)];
    memcpy(acc, acc8, sizeof acc);
    stripe<V, false>(acc, block + len - kStripe, nullptr, kSecret + kSecretLen - kStripe - 7);
    uint64_t a[8];
    memcpy(a, acc, sizeof a);
    return merge_accs(a, len);
}

struct Variant {
    void (*save)(State, uint8_t *, uint8_t *, uint64_t);
    void (*load)(State, uint8_t *, uint8_t *, uint64_t);
    uint64_t (*finish)(const uint64_t *, uint64_t, const uint8_t *);
};

#define KVPOOL_VARIANT(V, ATTR)                                                                   \
    ATTR void save_##V(State st, uint8_t *b, uint8_t *e, uint64_t n) {                            \
        advance<V, true>(st, b, e, n);                                                            \
    }                                                                                             \
    ATTR void load_##V(State st, uint8_t *b, uint8_t *e, uint64_t n) {                            \
        advance<V, false>(st, b, e, n);                                                           \
    }                                                                                             \
    ATTR uint64_t finish_##V(const uint64_t *acc, uint64_t len, const uint8_t *b) {               \
        return finish<V>(acc, len, b);                                                            \
    }

KVPOOL_VARIANT(V16, )
#if defined(__x86_64__)
KVPOOL_VARIANT(V32, __attribute__((target("avx2"))))
KVPOOL_VARIANT(V64, __attribute__((target("avx512f"))))
#endif
#undef KVPOOL_VARIANT

unsigned widest() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 64;
    if (__builtin_cpu_supports("avx2")) return 32;
#endif
    return 16;
}

const unsigned kWidest = widest();
// Only tests change it (set_simd_width), between copies: relaxed is enough.
std::atomic<unsigned> g_width{kWidest};

Variant variant() {
    switch (g_width.load(std::memory_order_relaxed)) {
#if defined(__x86_64__)
    case 64: return {save_V64, load_V64, finish_V64};
    case 32: return {save_V32, load_V32, finish_V32};
#endif
    default: return {save_V16, load_V16, finish_V16};
    }
}

} // namespace

unsigned simd_width() { return g_width.load(std::memory_order_relaxed); }

unsigned set_simd_width(unsigned width) {
    unsigned w = width >= 64 ? 64 : width >= 32 ? 32 : 16;
    if (width == 0 || w > kWidest) w = kWidest;
    g_width.store(w, std::memory_order_relaxed);
    return w;
}

BlockHash::BlockHash(uint64_t len) : len_(len) {
    const uint64_t init[8] = {kP32_3, kP64_1, kP64_2, kP64_3, kP64_4, kP32_2, kP64_5, kP32_1};
    memcpy(acc_, init, sizeof acc_);
}

void BlockHash::save(uint8_t *block, const uint8_t *src, uint64_t n) {
    variant().save({acc_, len_, &pos_}, block, const_cast<uint8_t *>(src), n);
}

void BlockHash::load(const uint8_t *block, uint8_t *dst, uint64_t n) {
    variant().load({acc_, len_, &pos_}, const_cast<uint8_t *>(block), dst, n);
}

uint64_t BlockHash::digest(const uint8_t *block) const { return variant().finish(acc_, len_, block); }

uint64_t xxh3_64(const void *p, uint64_t len) { return XXH3_64bits(p, len); }

namespace {

// Walk the fragments of layers [first, last) of an engine block in pool
// order, merging those adjacent in the engine, and hand each run to fn.
template <class Fn>
void runs(const Geometry &g, uint64_t block, uint32_t first, uint32_t last, Fn fn) {
    uint8_t *run = nullptr;
    uint64_t len = 0;
    for (uint32_t l = first; l < last; l++)
        for (unsigned kv = 0; kv < 2; kv++) {
            uint8_t *p = g.frag(block, l, kv);
            if (run && run + len == p) {
                len += g.frag_bytes;
                continue;
            }
            if (len) fn(run, len);
            run = p;
            len = g.frag_bytes;
        }
    if (len) fn(run, len);
}

} // namespace

void gather(const Geometry &g, uint64_t block, uint32_t first, uint32_t last, uint8_t *pool,
            BlockHash *hash) {
    uint64_t off = first * g.layer_bytes();
    runs(g, block, first, last, [&](uint8_t *src, uint64_t n) {
        if (hash)
            hash->save(pool, src, n);
        else
            memcpy(pool + off, src, n);
        off += n;
    });
}

void scatter(const Geometry &g, uint64_t block, uint32_t first, uint32_t last, const uint8_t *pool,
             BlockHash *hash) {
    uint64_t off = first * g.layer_bytes();
    runs(g, block, first, last, [&](uint8_t *dst, uint64_t n) {
        if (hash)
            hash->load(pool, dst, n);
        else
            memcpy(dst, pool + off, n);
        off += n;
    });
}

} // namespace kvpool_py::paged
