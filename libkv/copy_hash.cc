// SPDX-License-Identifier: MIT
//
// Copying a block with its XXH3-64 (detail.h, copy_hash).
//
// A put must store the data and its XXH3-64. Copying and then hashing reads
// the data twice and, for a large block, the second pass finds it in L2 or
// L3 at best; hashing chunk by chunk through XXH3's streaming state still
// loads everything twice and, in libxxhash's generic build, is slower than
// its one-shot hash. Instead copy_hash makes one pass: each 64-byte stripe
// is loaded into vector registers once, stored to the block, and folded
// into the XXH3 accumulators from the same registers, so the checksum is
// exactly that of the bytes stored (even if the caller changes its buffer
// meanwhile) and the data crosses the memory system once.
//
// This is XXH3-64's long-input path (inputs over 240 bytes, default secret,
// seed 0), written out because its inner step must sit between our load and
// store; the constants, secret and final merge are shared with the Python
// extension's paged kernel (xxh3_parts.h). The result equals
// XXH3_64bits(block, len), which readers use (kv_view_verify) and
// tests/unit/test_alloc_put.cc checks for every length, alignment and
// vector width. Short inputs go to libxxhash.
//
// One generic-vector template, compiled for the widest ISA the CPU has:
// 64-byte vectors with AVX-512F, 32 with AVX2, 16 otherwise (SSE2 on
// x86-64, Advanced SIMD on aarch64). Plain stores: non-temporal ones
// measured slower for large blocks, also into cold memory (a put's block
// is read again soon, by the put's commit or a reader).
#include "detail.h"

#define XXH_STATIC_LINKING_ONLY // XXH3_generateSecret_fromSeed (xxh3_parts.h)
#include "xxh3_parts.h"

#include <xxhash.h>

namespace kv::detail {

namespace {

using namespace xxh3;

typedef uint64_t V16 __attribute__((vector_size(16)));
typedef uint64_t V32 __attribute__((vector_size(32)));
typedef uint64_t V64 __attribute__((vector_size(64)));

// XXH3_accumulate_512 on one 64-byte stripe, as 64 / sizeof(V) vectors; the
// stripe is stored to d first when Copy. Every helper here is always_inline
// and takes vectors only through pointers, so it is compiled for the ISA of
// the target-specific function it ends up in (and no vector crosses a call).
template <class V, bool Copy>
[[gnu::always_inline]] inline void stripe(V *acc, const uint8_t *s, uint8_t *d,
                                          const uint8_t *secret) {
    for (unsigned j = 0; j < 64 / sizeof(V); j++) {
        V data, key;
        memcpy(&data, s + j * sizeof(V), sizeof(V));
        if constexpr (Copy) memcpy(d + j * sizeof(V), &data, sizeof(V));
        memcpy(&key, secret + j * sizeof(V), sizeof(V));
        V dk = data ^ key;
        V product = (dk & 0xffffffffULL) * (dk >> 32); // 32 x 32 -> 64 per lane
        V swapped;                                     // acc[i ^ 1] += data[i]
        // __builtin_shufflevector: g++ >= 12 and clang (the fuzz build) both have it.
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
template <class V>
[[gnu::always_inline]] inline void scramble(V *acc, const uint8_t *secret) {
    for (unsigned j = 0; j < 64 / sizeof(V); j++) {
        V key;
        memcpy(&key, secret + j * sizeof(V), sizeof(V));
        V a = acc[j];
        a ^= a >> 47;
        a ^= key;
        acc[j] = (a & 0xffffffffULL) * kP32_1 + (((a >> 32) * kP32_1) << 32); // a * kP32_1 mod 2^64
    }
}

// XXH3_hashLong_64b over src[0, len), len > 240; also copies it to dst when
// Copy (else dst is null: no offset may be added to it, that is UB), and
// then takes the last, overlapping stripe from dst, so every byte hashed is
// a byte stored.
template <class V, bool Copy>
[[gnu::always_inline]] inline uint64_t xxh3_long(uint8_t *dst, const uint8_t *src, uint64_t len) {
    V acc[64 / sizeof(V)];
    memcpy(acc, kInitAcc, sizeof acc);
    const uint64_t blocks = (len - 1) / kBlockLen;
    for (uint64_t b = 0; b < blocks; b++) {
        for (uint64_t i = 0; i < kStripesPerBlock; i++) {
            const uint64_t off = b * kBlockLen + i * kStripe;
            stripe<V, Copy>(acc, src + off, Copy ? dst + off : nullptr, kSecret + 8 * i);
        }
        scramble<V>(acc, kSecret + kSecretLen - kStripe);
    }
    const uint64_t base = blocks * kBlockLen, stripes = (len - 1 - base) / kStripe;
    for (uint64_t i = 0; i < stripes; i++) {
        const uint64_t off = base + i * kStripe;
        stripe<V, Copy>(acc, src + off, Copy ? dst + off : nullptr, kSecret + 8 * i);
    }
    const uint8_t *last = src + len - kStripe;
    if constexpr (Copy) {
        const uint64_t done = base + stripes * kStripe;
        memcpy(dst + done, src + done, len - done);
        last = dst + len - kStripe;
    }
    stripe<V, false>(acc, last, nullptr, kSecret + kSecretLen - kStripe - 7);
    uint64_t a[8];
    memcpy(a, acc, sizeof a);
    return merge_accs(a, len);
}

using CopyHashFn = uint64_t (*)(void *dst, const void *src, uint64_t len);

template <class V>
[[gnu::always_inline]] inline uint64_t copy_hash_v(void *dst, const void *src, uint64_t len) {
    auto *d = static_cast<uint8_t *>(dst);
    auto *s = static_cast<const uint8_t *>(src);
    return d ? xxh3_long<V, true>(d, s, len) : xxh3_long<V, false>(nullptr, s, len);
}

uint64_t copy_hash_16(void *dst, const void *src, uint64_t len) {
    return copy_hash_v<V16>(dst, src, len);
}
#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t copy_hash_32(void *dst, const void *src, uint64_t len) {
    return copy_hash_v<V32>(dst, src, len);
}
__attribute__((target("avx512f"))) uint64_t copy_hash_64(void *dst, const void *src, uint64_t len) {
    return copy_hash_v<V64>(dst, src, len);
}
#endif

unsigned widest() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 64; // checks the OS saves the state too
    if (__builtin_cpu_supports("avx2")) return 32;
#endif
    return 16;
}

CopyHashFn copy_hash_fn(unsigned width) {
#if defined(__x86_64__)
    if (width >= 64) return copy_hash_64;
    if (width >= 32) return copy_hash_32;
#endif
    (void)width;
    return copy_hash_16;
}

} // namespace

unsigned copy_hash_width() {
    static const unsigned w = widest();
    return w;
}

uint64_t copy_hash(void *dst, const void *src, uint64_t len, unsigned width) {
    if (len <= kMidsizeMax) {
        if (dst) {
            memcpy(dst, src, len);
            src = dst;
        }
        return XXH3_64bits(src, len);
    }
    static const CopyHashFn best = copy_hash_fn(copy_hash_width());
    if (!width) return best(dst, src, len);
    return copy_hash_fn(width < copy_hash_width() ? width : copy_hash_width())(dst, src, len);
}

} // namespace kv::detail
