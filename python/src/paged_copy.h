// SPDX-License-Identifier: MIT
//
// The copy loops of kvpool.engine, free of Python: an engine's paged KV cache
// described by addresses and byte strides, and the gather (engine blocks ->
// one contiguous pool block) and scatter (pool block -> engine blocks) that
// compute the pool block's XXH3-64 in the same pass.
//
// A pool block holds one engine block with all its layers in the canonical
// order (num_layers, 2, block_size, num_kv_heads, head_size): layer l's K
// fragment, then its V fragment, then layer l + 1. A fragment, (block_size,
// num_kv_heads, head_size) of one layer, is contiguous in the engine too;
// everything above it may be strided any way (per-layer tensors, one
// cross-layer tensor, permuted views).
//
// Nothing here allocates on the copy path or touches Python; callers release
// the GIL around it. Addresses are trusted: the Python layer checks them
// against the tensors' extents.
#pragma once

#include <cstdint>
#include <vector>

namespace kvpool_py::paged {

// Where one engine layer keeps its blocks: the K fragment of engine block b
// starts at base + b * block_stride, its V fragment kv_stride bytes after
// that (strides may be negative).
struct Layer {
    uintptr_t base = 0;
    int64_t kv_stride = 0;
    int64_t block_stride = 0;
};

// An engine's paged KV cache as the copy loops see it.
struct Geometry {
    std::vector<Layer> layers;
    uint64_t frag_bytes = 0; // block_size * num_kv_heads * head_size * element size
    uint64_t num_blocks = 0;

    uint64_t layer_bytes() const { return 2 * frag_bytes; }
    uint64_t block_bytes() const { return layers.size() * layer_bytes(); }
    uint8_t *frag(uint64_t block, uint32_t layer, unsigned kv) const {
        const Layer &l = layers[layer];
        return reinterpret_cast<uint8_t *>(l.base + uintptr_t(int64_t(block) * l.block_stride) +
                                           uintptr_t(int64_t(kv) * l.kv_stride));
    }
};

// XXH3-64 (seed 0) of one pool block whose bytes are copied in order, in
// pieces of any size, folded from the registers that move them (the same
// one-pass scheme as libkv's put, libkv/store.cc). digest() equals
// XXH3_64bits(block, len), which kv_view_verify and kv_commit's checksum
// use. Not thread-safe; one per block in flight.
class BlockHash {
  public:
    explicit BlockHash(uint64_t len = 0);
    uint64_t length() const { return len_; }
    uint64_t done() const { return pos_; } // bytes copied so far
    // Copy n bytes from src to block + done() and hash them.
    void save(uint8_t *block, const uint8_t *src, uint64_t n);
    // Copy n bytes from block + done() to dst and hash them. The stores may
    // be non-temporal: call store_fence() before another thread may read
    // dst (scatter() does).
    void load(const uint8_t *block, uint8_t *dst, uint64_t n);
    // The checksum of the whole block; done() must equal length().
    uint64_t digest(const uint8_t *block) const;

  private:
    alignas(64) uint64_t acc_[8];
    uint64_t len_ = 0;
    uint64_t pos_ = 0;
};

// Copy layers [first, last) of engine block `block` into the pool block at
// pool (its layer `first` starts at pool + first * layer_bytes()). With a
// hash, its done() must be first * layer_bytes(). Fragments adjacent in the
// engine are copied as one run.
void gather(const Geometry &g, uint64_t block, uint32_t first, uint32_t last, uint8_t *pool,
            BlockHash *hash);
// The reverse: layers [first, last) of the pool block at pool into engine
// block `block`, verified through hash when not null; the hashed copy may
// use non-temporal stores, fenced before returning.
void scatter(const Geometry &g, uint64_t block, uint32_t first, uint32_t last, const uint8_t *pool,
             BlockHash *hash);

// Order the non-temporal stores of BlockHash::load before later stores
// (sfence; nothing where the loops use none).
void store_fence();

// XXH3_64bits(p, len), through the same code (for a block hashed apart from
// a copy, e.g. after layers were written out of order).
uint64_t xxh3_64(const void *p, uint64_t len);

// The vector width (bytes) of the loops: the widest this CPU has (64 with
// AVX-512F, 32 with AVX2, else 16), or the cap set here (tests check each
// variant). set_simd_width(0) restores the widest; returns the width used.
unsigned simd_width();
unsigned set_simd_width(unsigned width);

} // namespace kvpool_py::paged
