// SPDX-License-Identifier: MIT
//
// Reaping: giving back everything a dead client held. A client slot is
// reaped by exactly one process at a time: the reaper moves it LIVE(pid) ->
// REAPING(reaper pid) with a CAS, and a reaper that dies is itself replaced
// the same way. Every step below is idempotent, so a takeover simply runs
// the whole sequence again.
//
// Order matters: live-bytes records first (accounting.cc), journal slots
// (pins), then entries the client owned
// (reservations and half-done frees), then slabs it was activating or
// retiring, then OWNED blocks (claimed but never attached to an entry;
// entry_finish_free leaves those to this last step).
#include "detail.h"

namespace kv::detail {

void reclaim_client(kv_pool *p, uint32_t client) {
    const kv_region_header &h = *p->hdr;
    // First: a pending record is decided from its entry as the client left
    // it, before the steps below abort its reservations and finish its frees.
    acct_resolve_dead(p, client);
    for (uint32_t s = 0; s < h.pins_per_client; s++) {
        kv_pin_slot &js = p->journal_all[uint64_t(client) * h.pins_per_client + s];
        if (PinB::phase(load(js.b, std::memory_order_acquire)) != KV_PIN_FREE) journal_recover_slot(p, client, s);
    }
    const uint64_t owner = Aux::owner(client);
    for (uint32_t e = 0; e < h.n_entries; e++) {
        kv_entry &en = p->entries[e];
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        uint32_t st = Ctl::state(c);
        if (st != KV_ENTRY_RESERVED && st != KV_ENTRY_FREEING) continue;
        uint64_t x = load(en.aux, std::memory_order_acquire);
        if (x != owner) continue;
        if (st == KV_ENTRY_RESERVED)
            entry_abort(p, e, c, x);
        else
            entry_finish_free(p, e);
    }
    for (uint32_t s = 0; s < h.n_slabs; s++) {
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::client1(c) != client + 1) continue;
        if (SlabCtl::state(c) == KV_SLAB_ACTIVATING) slab_finish_activation(p, s);
        if (SlabCtl::state(c) == KV_SLAB_RETIRING) slab_rollback_retire(p, s);
    }
    const uint64_t nblocks = uint64_t(h.n_slabs) * h.blocks_per_slab;
    for (uint64_t b = 0; b < nblocks; b++) {
        uint64_t w = load(p->blocks[b], std::memory_order_acquire);
        if (Blk::state(w) == KV_BLOCK_OWNED && Blk::owner(w) == client) block_free(p, b, w);
    }
    // Namespaces the client was registering: back to FREE so the slot can be
    // taken again (nobody can have seen a WRITING manifest as valid).
    for (uint32_t i = 0; i < h.max_namespaces; i++) {
        uint64_t c = load(p->ns[i].ctl, std::memory_order_acquire);
        if (NsCtl::state(c) == KV_NS_WRITING && NsCtl::client1(c) == client + 1)
            cas(p->ns[i].ctl, c, NsCtl::make(KV_NS_FREE, 0, uint32_t(c >> 32) + 1), std::memory_order_acq_rel);
    }
}

namespace {

// Entries a dead process left between DEAD and UNLINKED (it died after its
// CAS unlinked the entry, or between DEAD and the mark): finish them. A DEAD
// entry of a live remover is helped harmlessly (every step is idempotent).
void sweep_dead_entries(kv_pool *p) {
    for (uint32_t e = 0; e < p->hdr->n_entries; e++) {
        uint64_t c = load(p->entries[e].ctl, std::memory_order_acquire);
        if (Ctl::state(c) == KV_ENTRY_DEAD)
            index_remove(p, e, Ctl::gen(c));
        else if (Ctl::state(c) == KV_ENTRY_UNLINKED && Ctl::pins(c) == 0)
            entry_maybe_free(p, e);
    }
}

} // namespace

int reap_dead_clients(kv_pool *p) {
    int reaped = 0;
    const uint32_t me = p->pid;
    for (uint32_t i = 0; i < p->hdr->max_clients; i++) {
        if (i == p->client) continue;
        kv_client &c = p->clients[i];
        uint64_t w = load(c.ctl, std::memory_order_acquire);
        uint32_t st = ClientCtl::state(w);
        bool dead;
        if (st == KV_CLIENT_LIVE)
            dead = client_is_dead(ClientCtl::pid(w), load(c.start_time, std::memory_order_acquire));
        else if (st == KV_CLIENT_REAPING)
            dead = client_is_dead(ClientCtl::pid(w), 0); // its reaper died: take over
        else
            continue;
        if (!dead) continue;
        uint64_t mine = ClientCtl::make(KV_CLIENT_REAPING, ClientCtl::tag(w) + 1, me);
        if (!cas(c.ctl, w, mine, std::memory_order_acq_rel)) continue;
        reclaim_client(p, i);
        store(c.start_time, uint64_t(0), std::memory_order_relaxed); // see client_release_slot
        // C2 (client.cc): release, so the next claimant sees a clean journal.
        cas(c.ctl, mine, ClientCtl::make(KV_CLIENT_FREE, ClientCtl::tag(mine) + 1, 0), std::memory_order_release);
        bump(my_stats(p).reaps);
        reaped++;
    }
    if (reaped) {
        sweep_dead_entries(p);
        aref(p->state->reap_epoch).fetch_add(1, std::memory_order_relaxed);
    }
    return reaped;
}

} // namespace kv::detail

extern "C" int kv_reap(kv_pool *p) noexcept {
    if (!p) return -EINVAL;
    return kv::detail::reap_dead_clients(p);
}
