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
#include "feed.h"

namespace kv::detail {

void reclaim_client(kv_pool *p, uint32_t client, bool died) {
    const kv_region_header &h = *p->hdr;
    // First: a pending record is decided from its entry as the client left
    // it, before the steps below abort its reservations and finish its frees.
    acct_resolve_dead(p, client);
    for (uint32_t s = 0; s < h.pins_per_client; s++) {
        kv_pin_slot &js = p->journal_all[uint64_t(client) * h.pins_per_client + s];
        // REAP-A1: the dead client's journal; pairs with PIN-R1..PIN-R6 and
        // PIN-X1 (pin.cc).
        if (PinB::phase(load(js.b, std::memory_order_acquire)) != KV_PIN_FREE)
            journal_recover_slot(p, client, s);
    }
    const uint64_t owner = Aux::owner(client);
    for (uint32_t e = 0; e < h.n_entries; e++) {
        kv_entry &en = p->entries[e];
        // REAP-A2, REAP-A3: entries the client owns (state and owner are
        // written by one CAS16); pair with the claim ROOM-X1 (room.cc) and the
        // UNLINKED -> FREEING CAS16 STO-X5 (store.cc, entry_maybe_free).
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
        // REAP-A4: slabs the client was activating or retiring; pairs with
        // ALC-X2 (activate_at) and ALC-X4 (slab_retire).
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::client1(c) != client + 1) continue;
        if (SlabCtl::state(c) == KV_SLAB_ACTIVATING) slab_finish_activation(p, s);
        if (SlabCtl::state(c) == KV_SLAB_RETIRING) slab_rollback_retire(p, s);
    }
    const uint64_t nblocks = uint64_t(h.n_slabs) * h.blocks_per_slab;
    for (uint64_t b = 0; b < nblocks; b++) {
        // REAP-A5: blocks the client claimed; pairs with ALC-X1 (scan_slab),
        // ALC-R1 (activate_at, which hands block 0 to the activator), ALC-R2
        // (a block freed since) and STO-X2 (a block attached to an entry).
        uint64_t w = load(p->blocks[b], std::memory_order_acquire);
        if (Blk::state(w) != KV_BLOCK_OWNED || Blk::owner(w) != client) continue;
        // Secure erase (PROTOCOL.md 14): a block gets data only once an
        // entry names it, so an OWNED block should hold none; zeroed all
        // the same (a rare path), in case its dead owner wrote it early.
        // Its class: the slab's, which cannot change while a word in it is
        // OWNED (a retirement rolls back on it). Relaxed: the acquire of
        // REAP-A5 orders this load after the slab activation's ALC-R1.
        const uint64_t sc = load(p->slabs[b / h.blocks_per_slab].ctl, std::memory_order_relaxed);
        block_erase(p, b, SlabCtl::cls(sc));
        block_free(p, b, w);
    }
    // Feed slots the client left WRITING, and the loss it may have left
    // (PROTOCOL.md section 13): after everything it changed is settled.
    feed_reap_client(p, client, died);
    // Namespaces the client was registering: back to FREE so the slot can be
    // taken again (nobody can have seen a WRITING manifest as valid).
    for (uint32_t i = 0; i < h.max_namespaces; i++) {
        // REAP-A6: pairs with NS-X2 (kv_ns_register's WRITING claim).
        uint64_t c = load(p->ns[i].ctl, std::memory_order_acquire);
        // REAP-X1: WRITING(dead) -> FREE, as NS-X1 does; acquire pairs with
        // NS-X2, release publishes the FREE slot to NS-A2 and NS-X2.
        if (NsCtl::state(c) == KV_NS_WRITING && NsCtl::client1(c) == client + 1)
            cas(p->ns[i].ctl, c, NsCtl::make(KV_NS_FREE, 0, uint32_t(c >> 32) + 1),
                std::memory_order_acq_rel);
    }
}

namespace {

// Entries a dead process left between DEAD and UNLINKED (it died after its
// CAS unlinked the entry, or between DEAD and the mark): finish them. A DEAD
// entry of a live remover is helped harmlessly (every step is idempotent).
void sweep_dead_entries(kv_pool *p) {
    for (uint32_t e = 0; e < p->hdr->n_entries; e++) {
        // REAP-A7: DEAD or UNLINKED entries; pairs with the kill and abort
        // CAS16s (STO-X3 and STO-X6, store.cc) and
        // IDX-X3 (unlink).
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
        // REAP-A8: LIVE(pid) or REAPING(pid); pairs with CLI-X1, CLI-X2,
        // CLI-X3 and REAP-X2 (the claims that wrote the pid).
        uint64_t w = load(c.ctl, std::memory_order_acquire);
        uint32_t st = ClientCtl::state(w);
        bool dead;
        if (st == KV_CLIENT_LIVE)
            // REAP-A9: the start time of that pid's claim; pairs with CLI-R2.
            dead = client_is_dead(ClientCtl::pid(w), load(c.start_time, std::memory_order_acquire));
        else if (st == KV_CLIENT_REAPING)
            dead = client_is_dead(ClientCtl::pid(w), 0); // its reaper died: take over
        else
            continue;
        if (!dead) continue;
        uint64_t mine = ClientCtl::make(KV_CLIENT_REAPING, ClientCtl::tag(w) + 1, me);
        // REAP-X2: LIVE(dead) or REAPING(dead reaper) -> REAPING(us), as
        // CLI-X2. Acquire pairs with CLI-X1, CLI-X2, CLI-X3 and REAP-X2 (the
        // dead process's claim); release publishes REAPING(us) to CLI-A4,
        // REAP-A8, INS-A3 and INS-A7, so no second reaper starts.
        if (!cas(c.ctl, w, mine, std::memory_order_acq_rel)) continue;
        reclaim_client(p, i, true);
        // Relaxed: published by REAP-R1 (see client_release_slot).
        store(c.start_time, uint64_t(0), std::memory_order_relaxed);
        // REAP-R1: frees the slot (CLI-R3 does the same for a detach);
        // publishes the resolved journal, records and start_time 0 to the
        // next claimant (CLI-A3, CLI-X1) and to STAT-A4, STAT-A6, STAT-A11
        // and NS-A3.
        cas(c.ctl, mine, ClientCtl::make(KV_CLIENT_FREE, ClientCtl::tag(mine) + 1, 0),
            std::memory_order_release);
        bump(my_stats(p).reaps);
        reaped++;
    }
    if (reaped) {
        sweep_dead_entries(p);
        // Relaxed: a counter the daemon polls to notice reaps; orders nothing.
        aref(p->state->reap_epoch).fetch_add(1, std::memory_order_relaxed);
    }
    return reaped;
}

} // namespace kv::detail

extern "C" int kv_reap(kv_pool *p) noexcept {
    if (!p) return -EINVAL;
    return kv::detail::reap_dead_clients(p);
}
