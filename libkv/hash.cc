// SPDX-License-Identifier: MIT
//
// Chained block hashing: key(i) = XXH3-128(seed, key(i-1) || tokens of
// block i), key(-1) = {0, 0}. The previous key and the token ids are hashed
// as little-endian bytes (x86-64 and aarch64 hosts).
#include "detail.h"

#define XXH_STATIC_LINKING_ONLY // XXH3_state_t on the stack
#include <xxhash.h>

extern "C" {

kv_key kv_hash_block(uint64_t seed, const kv_key *prev, const uint32_t *tokens, size_t n) noexcept {
    kv_key zero{0, 0};
    const kv_key &pk = prev ? *prev : zero;
    XXH128_hash_t h;
    constexpr size_t kSmall = 256; // tokens hashed from a stack buffer in one shot
    if (n <= kSmall) {
        uint8_t buf[16 + 4 * kSmall];
        memcpy(buf, &pk.lo, 8);
        memcpy(buf + 8, &pk.hi, 8);
        if (n) memcpy(buf + 16, tokens, 4 * n);
        h = XXH3_128bits_withSeed(buf, 16 + 4 * n, seed);
    } else {
        XXH3_state_t st;
        XXH3_128bits_reset_withSeed(&st, seed);
        XXH3_128bits_update(&st, &pk.lo, 8);
        XXH3_128bits_update(&st, &pk.hi, 8);
        XXH3_128bits_update(&st, tokens, 4 * n);
        h = XXH3_128bits_digest(&st);
    }
    return kv_key{h.low64, h.high64};
}

size_t kv_hash_chain(uint64_t seed, const uint32_t *tokens, size_t n_tokens, uint32_t block_tokens,
                     kv_key *keys, size_t max_keys) noexcept {
    if (!block_tokens || (!tokens && n_tokens) || (!keys && max_keys)) return 0;
    size_t blocks = n_tokens / block_tokens;
    if (blocks > max_keys) blocks = max_keys;
    kv_key prev{0, 0};
    for (size_t i = 0; i < blocks; i++) {
        keys[i] = kv_hash_block(seed, &prev, tokens + i * block_tokens, block_tokens);
        prev = keys[i];
    }
    return blocks;
}

} // extern "C"
