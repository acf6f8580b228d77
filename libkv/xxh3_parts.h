// SPDX-License-Identifier: MIT
//
// The parts of XXH3-64's long-input path (inputs over 240 bytes, default
// secret, seed 0) that the one-pass copy kernels share: libkv's copy_hash
// (copy_hash.cc) and the Python extension's paged gather and scatter
// (python/src/paged_copy.cc). Each kernel writes out the per-stripe steps
// itself, because they must sit between its own loads and stores; the
// constants, the secret and the final merge are the same for both and live
// here. xxhash's format is frozen since 0.8.0, so these equal libxxhash's;
// the tests compare both kernels with XXH3_64bits for every length.
//
// Define XXH_STATIC_LINKING_ONLY or XXH_INLINE_ALL before the first
// include of <xxhash.h> (XXH3_generateSecret_fromSeed is in its
// static-linking part); this header includes it itself.
// Scalar code only: it is compiled for the base ISA and may be called from
// functions compiled for a wider one, not the other way round.
#pragma once

#include <xxhash.h>

#ifndef XXH3_SECRET_DEFAULT_SIZE
#error "xxh3_parts.h needs XXH_STATIC_LINKING_ONLY or XXH_INLINE_ALL defined before <xxhash.h>"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kv::detail::xxh3 {

constexpr uint64_t kP32_1 = 0x9E3779B1U, kP32_2 = 0x85EBCA77U, kP32_3 = 0xC2B2AE3DU;
constexpr uint64_t kP64_1 = 0x9E3779B185EBCA87ULL, kP64_2 = 0xC2B2AE3D27D4EB4FULL,
                   kP64_3 = 0x165667B19E3779F9ULL, kP64_4 = 0x85EBCA77C2B2AE63ULL,
                   kP64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t kMidsizeMax = 240;     // XXH3_MIDSIZE_MAX: longer inputs take the long path
constexpr uint64_t kStripe = 64;          // bytes per accumulate step
constexpr uint64_t kStripesPerBlock = 16; // stripes between scrambles (192-byte secret)
constexpr uint64_t kBlockLen = kStripe * kStripesPerBlock;
constexpr size_t kSecretLen = 192; // XXH3_SECRET_DEFAULT_SIZE
static_assert(kSecretLen == XXH3_SECRET_DEFAULT_SIZE);

// The accumulators' initial values (XXH3_INIT_ACC).
constexpr uint64_t kInitAcc[8] = {kP32_3, kP64_1, kP64_2, kP64_3, kP64_4, kP32_2, kP64_5, kP32_1};

// The default 192-byte secret (XXH3_kSecret), taken from libxxhash at
// start-up rather than copied: a seed-0 secret is the default secret itself
// (XXH3_initCustomSecret adds and subtracts the seed).
struct DefaultSecret {
    alignas(64) uint8_t bytes[kSecretLen];
    DefaultSecret() { XXH3_generateSecret_fromSeed(bytes, 0); }
};
inline const DefaultSecret kDefaultSecret;
inline const uint8_t *const kSecret = kDefaultSecret.bytes;

inline uint64_t read64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8); // little-endian hosts only, as the region format (region.h)
    return v;
}

inline uint64_t mul128_fold64(uint64_t a, uint64_t b) {
    __extension__ typedef unsigned __int128 u128;
    const u128 m = u128(a) * b;
    return uint64_t(m) ^ uint64_t(m >> 64);
}

// XXH3_mergeAccs with the final avalanche: the digest of len bytes whose
// stripes (the last, overlapping one included) are in acc.
inline uint64_t merge_accs(const uint64_t *acc, uint64_t len) {
    uint64_t r = len * kP64_1;
    for (int i = 0; i < 4; i++)
        r += mul128_fold64(acc[2 * i] ^ read64(kSecret + 11 + 16 * i),
                           acc[2 * i + 1] ^ read64(kSecret + 19 + 16 * i));
    r ^= r >> 37;
    r *= 0x165667919E3779F9ULL;
    return r ^ (r >> 32);
}

} // namespace kv::detail::xxh3
