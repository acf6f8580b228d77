// SPDX-License-Identifier: MIT
//
// Eviction: CLOCK (second chance) over the entry table. Gets set an entry's
// reference bit; the hand, shared by all processes (a fetch_add on
// kv_region_state.clock_hand, in batches so processes sweep disjoint runs),
// clears set bits and evicts entries whose bit is already clear. Eviction is
// a remove that requires the pin count to be zero in the same CAS
// (entry_kill), so a pinned block is never evicted, however full the pool.
//
// A put that needs a block of class k first evicts class-k entries; if the
// class has no slab or nothing evictable, it retires a whole slab of another
// class (allocator.cc) so the slab can serve class k.
#include "detail.h"

namespace kv::detail {

namespace {

constexpr uint32_t kBatch = 64;

// Sweep up to budget entries; evict the first candidate that passes the
// second-chance test and the filter. Returns the bytes evicted (0: none).
template <typename Filter> uint64_t clock_sweep(kv_pool *p, uint64_t budget, Filter &&want) {
    const uint32_t n = p->hdr->n_entries;
    while (budget > 0) {
        uint64_t start = aref(p->state->clock_hand).fetch_add(kBatch, std::memory_order_relaxed);
        for (uint32_t i = 0; i < kBatch && budget > 0; i++, budget--) {
            uint32_t e = uint32_t((start + i) % n);
            kv_entry &en = p->entries[e];
            uint64_t c = load(en.ctl, std::memory_order_acquire);
            if (Ctl::state(c) != KV_ENTRY_COMMITTED || Ctl::pins(c) != 0) continue;
            if (!want(en)) continue;
            if (load(en.clock, std::memory_order_relaxed)) {
                store(en.clock, 0U, std::memory_order_relaxed); // second chance
                continue;
            }
            uint64_t len = load(en.length, std::memory_order_relaxed);
            if (entry_kill(p, e, Ctl::gen(c), true)) {
                bump(my_stats(p).evictions);
                return len ? len : 1;
            }
        }
    }
    return 0;
}

bool class_has_slab(kv_pool *p, uint32_t cls) {
    for (uint32_t s = 0; s < p->hdr->n_slabs; s++) {
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_relaxed);
        if (SlabCtl::state(c) == KV_SLAB_ACTIVE && SlabCtl::cls(c) == cls) return true;
    }
    return false;
}

bool retire_some_slab(kv_pool *p, uint32_t keep_cls) {
    const uint32_t n = p->hdr->n_slabs;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s = uint32_t(aref(p->state->slab_hand).fetch_add(1, std::memory_order_relaxed) % n);
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) == keep_cls) continue;
        if (slab_retire(p, s)) return true;
    }
    return false;
}

} // namespace

bool evict_for_class(kv_pool *p, uint32_t cls) {
    // Two passes over the table give every entry its second chance.
    if (class_has_slab(p, cls) &&
        clock_sweep(p, 2ULL * p->hdr->n_entries, [cls](kv_entry &en) {
            return load(en.class_id, std::memory_order_relaxed) == cls;
        }))
        return true;
    return retire_some_slab(p, cls);
}

bool evict_any(kv_pool *p) {
    return clock_sweep(p, 2ULL * p->hdr->n_entries, [](kv_entry &) { return true; }) != 0;
}

} // namespace kv::detail

using namespace kv::detail;

extern "C" int64_t kv_evict_bytes(kv_pool *p, uint64_t bytes) noexcept {
    if (!p) return -EINVAL;
    uint64_t freed = 0;
    while (freed < bytes) {
        uint64_t got = clock_sweep(p, 2ULL * p->hdr->n_entries, [](kv_entry &) { return true; });
        if (!got) break;
        freed += got;
    }
    return int64_t(freed > INT32_MAX ? INT32_MAX : freed);
}
