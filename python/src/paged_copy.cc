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
// accumulators from the same registers (libkv/copy_hash.cc does the same for
// one contiguous copy; this file cannot call it, it is not exported, but
// shares its XXH3 constants, secret and final merge: libkv/xxh3_parts.h).
// A stripe split between two pieces is finished from the contiguous pool
// block, where its bytes are adjacent. The data crosses the memory system once, and the
// checksum is of the bytes stored (save) or the bytes handed to the engine
// (load), so a byte changed under the pool block after the check cannot
// reach the engine unseen.
//
// A load stores whole stripes with non-temporal stores wherever the engine
// fragment is 64-byte aligned (it usually is). The engine reads a loaded
// block with its attention kernels or a DMA to the GPU, not from this
// core's cache, and a load of many blocks outgrows the caches anyway; a
// plain store would first read each destination line (read for ownership)
// and write it back later. A save keeps plain stores: into the pool they
// measured faster than non-temporal ones (doc/perf). gather() and scatter()
// end with a store fence, so that the stores are ordered before whatever
// the caller publishes next.
//
// XXH3's long-input path (inputs over 240 bytes, default secret, seed 0):
// stripes 0 .. (len - 1) / 64 - 1 are accumulated with secret offset
// 8 * (stripe % 16), the accumulators are scrambled after every 16th
// stripe, and the digest adds the last 64 bytes (overlapping) with its own
// secret offset. Shorter blocks are copied and hashed by libxxhash at the
// end. The tests compare every variant with python-xxhash over odd sizes.
#include "paged_copy.h"

#define XXH_INLINE_ALL  // header-only: the extension needs no libxxhash link
#include "xxh3_parts.h" // libkv's internal header, shared with its copy_hash

#include <algorithm>
#include <atomic>
#include <cstring>
#include <xxhash.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvpool_py::paged {

namespace {

using namespace kv::detail::xxh3; // constants, secret, merge_accs (shared with libkv)

typedef uint64_t V16 __attribute__((vector_size(16)));
typedef uint64_t V32 __attribute__((vector_size(32)));
typedef uint64_t V64 __attribute__((vector_size(64)));

// The streaming state BlockHash keeps between pieces.
struct State {
    uint64_t *acc; // 8 accumulators, 64-byte aligned
    uint64_t len;
    uint64_t *pos;
};

struct Variant {
    void (*save)(State, uint8_t *, uint8_t *, uint64_t);
    void (*load)(State, uint8_t *, uint8_t *, uint64_t);
    uint64_t (*finish)(const uint64_t *, uint64_t, const uint8_t *);
};

// The kernel (paged_simd.inc), compiled once per vector width, each time
// wholly for its ISA (#pragma GCC target): its helpers pass vectors by value
// and call intrinsics, which must not meet a function of another ISA.
// mul32: the low 32 bits of each lane of a times those of b, as 64-bit
// products. g++ does not see that XXH3's operands fit in 32 bits and
// emulates a 64 x 64 multiply (three multiplies and shifts a lane);
// pmuludq is one.
namespace w16 {
using V = V16;
[[gnu::always_inline]] inline V mul32(V a, V b) {
#if defined(__x86_64__)
    return V(_mm_mul_epu32(__m128i(a), __m128i(b)));
#else
    return (a & 0xffffffffULL) * (b & 0xffffffffULL);
#endif
}
[[gnu::always_inline]] inline V swap_pairs(V a) {
    return __builtin_shufflevector(a, a, 1, 0);
}
[[gnu::always_inline]] inline void stream(uint8_t *d, V v) {
#if defined(__x86_64__)
    _mm_stream_si128(reinterpret_cast<__m128i *>(d), __m128i(v));
#else
    memcpy(d, &v, sizeof v);
#endif
}
#include "paged_simd.inc"
} // namespace w16

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2")
namespace w32 {
using V = V32;
[[gnu::always_inline]] inline V mul32(V a, V b) {
    return V(_mm256_mul_epu32(__m256i(a), __m256i(b)));
}
[[gnu::always_inline]] inline V swap_pairs(V a) {
    return __builtin_shufflevector(a, a, 1, 0, 3, 2);
}
[[gnu::always_inline]] inline void stream(uint8_t *d, V v) {
    _mm256_stream_si256(reinterpret_cast<__m256i *>(d), __m256i(v));
}
#include "paged_simd.inc"
} // namespace w32
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace w64 {
using V = V64;
[[gnu::always_inline]] inline V mul32(V a, V b) {
    // The maskz form: _mm512_mul_epu32's undefined pass-through trips g++
    // 12's -Wmaybe-uninitialized; an all-ones mask compiles to the same.
    return V(_mm512_maskz_mul_epu32(__mmask8(0xff), __m512i(a), __m512i(b)));
}
[[gnu::always_inline]] inline V swap_pairs(V a) {
    return __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6);
}
[[gnu::always_inline]] inline void stream(uint8_t *d, V v) {
    _mm512_stream_si512(reinterpret_cast<__m512i *>(d), __m512i(v));
}
#include "paged_simd.inc"
} // namespace w64
#pragma GCC pop_options
#endif

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
    case 64:
        return {w64::save, w64::load, w64::finish};
    case 32:
        return {w32::save, w32::load, w32::finish};
#endif
    default:
        return {w16::save, w16::load, w16::finish};
    }
}

} // namespace

unsigned simd_width() {
    return g_width.load(std::memory_order_relaxed);
}

unsigned set_simd_width(unsigned width) {
    unsigned w = width >= 64 ? 64 : width >= 32 ? 32 : 16;
    if (width == 0 || w > kWidest) w = kWidest;
    g_width.store(w, std::memory_order_relaxed);
    return w;
}

BlockHash::BlockHash(uint64_t len) : len_(len) {
    memcpy(acc_, kInitAcc, sizeof acc_);
}

void BlockHash::save(uint8_t *block, const uint8_t *src, uint64_t n) {
    variant().save({acc_, len_, &pos_}, block, const_cast<uint8_t *>(src), n);
}

void BlockHash::load(const uint8_t *block, uint8_t *dst, uint64_t n) {
    variant().load({acc_, len_, &pos_}, const_cast<uint8_t *>(block), dst, n);
}

uint64_t BlockHash::digest(const uint8_t *block) const {
    return variant().finish(acc_, len_, block);
}

uint64_t xxh3_64(const void *p, uint64_t len) {
    return XXH3_64bits(p, len);
}

void store_fence() {
#if defined(__x86_64__)
    _mm_sfence();
#endif
}

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
    if (hash) store_fence();
}

} // namespace kvpool_py::paged
