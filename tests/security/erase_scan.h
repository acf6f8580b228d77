// SPDX-License-Identifier: MIT
//
// The secure-erase invariant (uapi/PROTOCOL.md section 14) checked on a
// mapped region: shared by tests/security/test_secure_erase.cc and the
// multi-process crash rounds (tests/mp/test_crash.cc).
#pragma once

#include "detail.h"

#include <cstdint>
#include <cstring>
#include <kv/kv.h>
#include <string>
#include <vector>

namespace kverase {

inline bool all_zero(const void *p, uint64_t n) {
    const uint8_t *b = static_cast<const uint8_t *>(p);
    return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

// The secure-erase invariant of a quiescent region: every byte of the data
// area outside a block whose word is OWNED or ENTRY is zero, and so is the
// tail of a committed block past its length. Returns a description of the
// first violation, or "".
inline std::string free_space_violation(kv_pool *p) {
    const kv_region_header *h = kv_pool_header(p);
    const uint8_t *base = reinterpret_cast<const uint8_t *>(h);
    const auto *classes = reinterpret_cast<const kv_class *>(base + h->class_off);
    const auto *slabs = reinterpret_cast<const kv_slab *>(base + h->slab_off);
    const auto *words = reinterpret_cast<const uint64_t *>(base + h->block_off);
    const auto *entries = reinterpret_cast<const kv_entry *>(base + h->entry_off);
    const uint8_t *data = base + h->data_off;
    for (uint32_t s = 0; s < h->n_slabs; s++) {
        const uint8_t *sd = data + uint64_t(s) * h->slab_size;
        const uint64_t ctl = __atomic_load_n(&slabs[s].ctl, __ATOMIC_ACQUIRE);
        const uint32_t st = kv::detail::SlabCtl::state(ctl);
        std::vector<bool> held(h->slab_size / 4096, false); // per 4 KiB page of the slab
        if (st == KV_SLAB_ACTIVE || st == KV_SLAB_RETIRING) {
            const uint32_t cls = kv::detail::SlabCtl::cls(ctl);
            const uint64_t bs = classes[cls].block_size;
            for (uint32_t slot = 0; slot < classes[cls].blocks_per_slab; slot++) {
                const uint64_t w = __atomic_load_n(&words[uint64_t(s) * h->blocks_per_slab + slot],
                                                   __ATOMIC_ACQUIRE);
                const uint32_t bst = kv::detail::Blk::state(w);
                if (bst != KV_BLOCK_OWNED && bst != KV_BLOCK_ENTRY) continue;
                for (uint64_t pg = slot * bs / 4096; pg < (slot + 1) * bs / 4096; pg++)
                    held[pg] = true;
                if (bst != KV_BLOCK_ENTRY) continue;
                const kv_entry &en = entries[kv::detail::Blk::owner(w)];
                const uint64_t c = __atomic_load_n(&en.ctl, __ATOMIC_ACQUIRE);
                if (kv::detail::Ctl::state(c) != KV_ENTRY_COMMITTED) continue;
                const uint64_t len = en.length;
                if (len < bs && !all_zero(sd + slot * bs + len, bs - len))
                    return "slab " + std::to_string(s) + " slot " + std::to_string(slot) +
                           ": bytes past a committed block's length are not zero";
            }
        } else if (st != KV_SLAB_FREE) {
            return "slab " + std::to_string(s) + " in state " + std::to_string(st) +
                   " in a quiescent pool";
        }
        for (uint64_t pg = 0; pg < held.size(); pg++)
            if (!held[pg] && !all_zero(sd + pg * 4096, 4096))
                return "slab " + std::to_string(s) + " (state " + std::to_string(st) + ") page " +
                       std::to_string(pg) + ": free space is not zero";
    }
    return "";
}

} // namespace kverase
