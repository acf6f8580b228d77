// SPDX-License-Identifier: MIT
//
// Statistics and accounting. Counters live in each client slot (written by
// that client only, so the data path never writes a shared counter line)
// and accumulate across the slot's users; totals are sums over slots.
// kv_pool_usage recounts everything from the authoritative tables and
// checks the index, for tests, tools and the daemon's health command.
#include "detail.h"

#include <algorithm>

using namespace kv::detail;

namespace {

// Relaxed: counters and fields read for a report; a figure caught mid-update
// is as good as one read a moment earlier or later.
uint64_t rd(uint64_t &v) {
    return load(v, std::memory_order_relaxed);
}

// Walk every bucket list; count reachable committed entries and problems.
void check_index(kv_pool *p, uint64_t *reachable, uint64_t *bad) {
    const uint32_t n = p->hdr->n_entries;
    for (uint32_t b = 0; b <= p->bucket_mask; b++) {
        // STAT-A1: pairs with IDX-R1 and IDX-X2 (the insert or unlink that
        // wrote the head), so the first entry's key and next are visible.
        uint64_t v = load(p->buckets[b], std::memory_order_acquire);
        uint32_t steps = 0;
        bool have_prev = false;
        uint64_t phi = 0, plo = 0;
        uint32_t pns = 0;
        while (Link::idx(v) != KV_NIL32) {
            uint32_t e = Link::idx(v);
            if (e >= n || ++steps > n) {
                (*bad)++;
                break;
            }
            kv_entry &en = p->entries[e];
            // STAT-A2: pairs with the commit CAS16 (STO-X1, store.cc, commit_impl).
            uint64_t c = load(en.ctl, std::memory_order_acquire);
            // STAT-A3: pairs with IDX-R1, IDX-X1 and IDX-X2 on e's next.
            uint64_t nx = load(en.next, std::memory_order_acquire);
            uint64_t hi = rd(en.key_hi), lo = rd(en.key_lo);
            uint32_t ns = load(en.ns_id, std::memory_order_relaxed);
            if (!Link::marked(nx)) {
                if (bucket_of(p, ns, kv_key{lo, hi}) != b) (*bad)++;
                if (have_prev && std::tie(phi, plo, pns) >= std::tie(hi, lo, ns)) (*bad)++;
                have_prev = true;
                phi = hi, plo = lo, pns = ns;
                if (Ctl::state(c) == KV_ENTRY_COMMITTED) (*reachable)++;
            }
            v = nx;
        }
    }
}

} // namespace

extern "C" {

int kv_pool_stats(kv_pool *p, kv_stats *out) noexcept {
    if (!p || !out) return -EINVAL;
    *out = kv_stats{};
    const kv_region_header &h = *p->hdr;
    out->capacity = h.data_len;
    out->slab_size = h.slab_size;
    out->page_size = h.page_size;
    out->numa_node = h.numa_node;
    out->backing = h.backing;
    out->n_entries = h.n_entries;
    for (uint32_t i = 0; i < h.max_clients; i++) {
        kv_client &c = p->clients[i];
        // STAT-A4: pairs with CLI-X1, CLI-X3 (claims), CLI-R3, REAP-R1 (frees).
        if (ClientCtl::state(load(c.ctl, std::memory_order_acquire)) == KV_CLIENT_LIVE)
            out->clients++;
        kv_client_stats &s = c.stats;
        out->hits += rd(s.hits);
        out->misses += rd(s.misses);
        out->puts += rd(s.puts);
        out->dedups += rd(s.dedups);
        out->evictions += rd(s.evictions);
        out->removes += rd(s.removes);
        out->bytes_committed += rd(s.bytes_committed);
        out->bytes_freed += rd(s.bytes_freed);
        out->reaps += rd(s.reaps);
    }
    out->gets = out->hits + out->misses; // not counted separately: one less shared write per get
    return 0;
}

int kv_pool_usage(kv_pool *p, kv_usage *out) noexcept {
    if (!p || !out) return -EINVAL;
    *out = kv_usage{};
    const kv_region_header &h = *p->hdr;
    for (uint32_t e = 0; e < h.n_entries; e++) {
        kv_entry &en = p->entries[e];
        // STAT-A5: pairs with every CAS16 on ctl (ROOM-X1, ROOM-X2, STO-X1,
        // STO-X3..STO-X6, IDX-X3, PIN-X2, PIN-X3); the commit's (STO-X1)
        // publishes the length read below.
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        out->pins += Ctl::pins(c);
        switch (Ctl::state(c)) {
        case KV_ENTRY_FREE:
            out->entries_free++;
            break;
        case KV_ENTRY_RESERVED:
            out->entries_reserved++;
            break;
        case KV_ENTRY_COMMITTED:
            out->entries_committed++;
            out->bytes_committed += rd(en.length);
            break;
        default:
            out->entries_dead++;
            break;
        }
    }
    for (uint32_t i = 0; i < h.max_clients; i++) {
        // STAT-A6: pairs with CLI-X1, CLI-X3, CLI-R3, REAP-R1.
        if (ClientCtl::state(load(p->clients[i].ctl, std::memory_order_acquire)) != KV_CLIENT_LIVE)
            continue;
        for (uint32_t s = 0; s < h.pins_per_client; s++) {
            // STAT-A7: pairs with PIN-R1..PIN-R6, PIN-X1 and PIN-X4.
            uint32_t ph = PinB::phase(load(p->journal_all[uint64_t(i) * h.pins_per_client + s].b,
                                           std::memory_order_acquire));
            if (ph == KV_PIN_HELD || ph == KV_PIN_INTENT_UNPIN) out->journal_pins++;
        }
    }
    for (uint32_t s = 0; s < h.n_slabs; s++) {
        // STAT-A8: pairs with ALC-R1, ALC-R3, ALC-R5 (ACTIVE) and ALC-R6 (FREE).
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::state(c) == KV_SLAB_FREE) {
            out->slabs_free++;
            continue;
        }
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE) continue;
        out->slabs_active++;
        uint32_t cls = SlabCtl::cls(c);
        // A damaged slab word (class past the table) or class row must not
        // send the scan outside the block words (fuzz/fuzz_region tries it):
        // its blocks count as orphans, so a health check reports it.
        if (cls >= h.n_classes) {
            out->orphan_blocks++;
            continue;
        }
        uint64_t bsz = p->classes[cls].block_size;
        const uint32_t slots = std::min(p->classes[cls].blocks_per_slab, h.blocks_per_slab);
        for (uint32_t slot = 0; slot < slots; slot++) {
            uint64_t id = block_id(p, s, slot);
            // STAT-A9: pairs with ALC-X1, ALC-R2 and the OWNED -> ENTRY(e)
            // CAS (STO-X2, store.cc, entry_take_block).
            uint64_t w = load(p->blocks[id], std::memory_order_acquire);
            switch (Blk::state(w)) {
            case KV_BLOCK_FREE:
                out->blocks_free++;
                break;
            case KV_BLOCK_ENTRY: {
                out->blocks_used++;
                out->block_bytes_used += bsz;
                uint32_t e = Blk::owner(w);
                // STAT-A10: pairs with the claim ROOM-X1 (room.cc) and the free
                // STO-X4 (store.cc).
                uint64_t ec =
                    e < h.n_entries ? load(p->entries[e].ctl, std::memory_order_acquire) : 0;
                if (e >= h.n_entries || Ctl::state(ec) == KV_ENTRY_FREE ||
                    rd(p->entries[e].block) != id)
                    out->orphan_blocks++;
                break;
            }
            case KV_BLOCK_OWNED: {
                out->blocks_used++;
                out->block_bytes_used += bsz;
                uint32_t owner = Blk::owner(w);
                // STAT-A11: pairs with CLI-X1, CLI-X3, CLI-R3, REAP-R1.
                if (owner >= h.max_clients ||
                    ClientCtl::state(load(p->clients[owner].ctl, std::memory_order_acquire)) !=
                        KV_CLIENT_LIVE)
                    out->orphan_blocks++;
                break;
            }
            default:
                out->orphan_blocks++;
                break; // UNUSED/RETIRED inside an ACTIVE slab's class range
            }
        }
    }
    uint64_t reachable = 0;
    check_index(p, &reachable, &out->bad_links);
    out->unreachable = out->entries_committed > reachable ? out->entries_committed - reachable : 0;
    return 0;
}

} // extern "C"
