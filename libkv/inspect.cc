// SPDX-License-Identifier: MIT
//
// Read-only views of a live region for tools and the daemon: the entry
// table row by row and the client table with what each client holds. These
// never write shared state (kv_reap_pid only hands over to the reaper), so a
// slow or killed inspector can harm nobody; in exchange rows are read, not
// snapshotted, and a row that changes while it is copied is skipped.
#include "inspect.h"

#include "detail.h"

#include <algorithm>

using namespace kv::detail;

namespace {

// A row is worth reporting when the entry holds data or is about to.
bool reportable(uint32_t state) {
    return state == KV_ENTRY_RESERVED || state == KV_ENTRY_COMMITTED || state == KV_ENTRY_DEAD;
}

// Copy entry e if it stays at the same ctl word across the copy (seqlock
// style: ctl's generation and state change on every transition that could
// make the fields inconsistent; pin count changes are harmless and tolerated).
bool read_entry(kv_pool *p, uint32_t e, kv_entry_info *out) {
    kv_entry &en = p->entries[e];
    // INS-A1: pairs with the commit CAS16 (STO-X1, store.cc, commit_impl), so
    // the metadata read below is the committed one. The field reads are
    // relaxed: INS-A2 and the re-check validate them.
    uint64_t c0 = load(en.ctl, std::memory_order_acquire);
    uint32_t st = Ctl::state(c0);
    if (!reportable(st)) return false;
    out->index = e;
    out->state = st;
    out->ns = load(en.ns_id, std::memory_order_relaxed);
    out->key = kv_key{load(en.key_lo, std::memory_order_relaxed),
                      load(en.key_hi, std::memory_order_relaxed)};
    out->length = load(en.length, std::memory_order_relaxed);
    out->checksum = load(en.checksum, std::memory_order_relaxed);
    out->meta.tokens = load(en.tokens, std::memory_order_relaxed);
    out->meta.priority = load(en.priority, std::memory_order_relaxed);
    out->meta.user_tag = load(en.user_tag, std::memory_order_relaxed);
    out->commit_ns = st == KV_ENTRY_RESERVED ? 0 : load(en.commit_ns, std::memory_order_relaxed);
    // INS-A2: the acquire fence orders the field reads before the re-check,
    // so a transition that raced with them shows up as a changed gen/state
    // (a seqlock read); pairs with the claim's release fence (ROOM-R1, room.cc,
    // entry_claim_one) and the CAS16s on ctl.
    std::atomic_thread_fence(std::memory_order_acquire);
    uint64_t c1 = load(en.ctl, std::memory_order_relaxed); // relaxed: after INS-A2
    if (Ctl::gen(c1) != Ctl::gen(c0) || Ctl::state(c1) != st) return false;
    out->pins = Ctl::pins(c1);
    return true;
}

} // namespace

int kv::detail::pool_entries_upto(kv_pool *p, uint64_t *cursor, uint64_t end, kv_entry_info *out,
                                  size_t max) noexcept {
    if (!p || !cursor || (!out && max)) return -EINVAL;
    const uint64_t n = std::min<uint64_t>(end, p->hdr->n_entries);
    uint64_t i = *cursor;
    size_t k = 0;
    while (i < n && k < max) {
        if (read_entry(p, uint32_t(i), &out[k])) k++;
        i++;
    }
    *cursor = i;
    return int(k);
}

kv::detail::EntryHints kv::detail::entry_hints(kv_pool *p, uint32_t index) noexcept {
    if (!p || index >= p->hdr->n_entries) return {0, 0};
    kv_entry &en = p->entries[index];
    // Relaxed: hints that gets store relaxed; nothing else is read through them.
    return {load(en.rank, std::memory_order_relaxed), load(en.clock, std::memory_order_relaxed)};
}

uint64_t kv::detail::access_tick() noexcept {
    return tick();
}

extern "C" {

int kv_pool_entries(kv_pool *p, uint64_t *cursor, kv_entry_info *out, size_t max) noexcept {
    return kv::detail::pool_entries_upto(p, cursor, UINT64_MAX, out, max);
}

int kv_pool_clients(kv_pool *p, kv_client_info *out, size_t max) noexcept {
    if (!p || (!out && max)) return -EINVAL;
    const kv_region_header &h = *p->hdr;
    int occupied = 0;
    for (uint32_t i = 0; i < h.max_clients; i++) {
        kv_client &c = p->clients[i];
        // INS-A3: pairs with CLI-X1, CLI-X2, CLI-X3 and REAP-X2 (the claims).
        uint64_t w = load(c.ctl, std::memory_order_acquire);
        uint32_t st = ClientCtl::state(w);
        if (st != KV_CLIENT_LIVE && st != KV_CLIENT_REAPING) continue;
        if (size_t(occupied) < max) {
            kv_client_info &ci = out[occupied];
            ci = kv_client_info{};
            ci.slot = i;
            ci.pid = ClientCtl::pid(w);
            ci.state = st;
            // INS-A4: the start time of that pid's claim; pairs with CLI-R2.
            ci.start_time = load(c.start_time, std::memory_order_acquire);
            ci.attach_ns = load(c.attach_ns, std::memory_order_relaxed); // relaxed: informational
            ci.alive = client_is_dead(ci.pid, st == KV_CLIENT_LIVE ? ci.start_time : 0) ? 0 : 1;
            const kv_pin_slot *js = p->journal_all + uint64_t(i) * h.pins_per_client;
            for (uint32_t s = 0; s < h.pins_per_client; s++) {
                // Relaxed: a count for a report, not a decision.
                uint32_t phase =
                    PinB::phase(load(const_cast<uint64_t &>(js[s].b), std::memory_order_relaxed));
                if (phase == KV_PIN_HELD || phase == KV_PIN_INTENT_UNPIN) ci.pins++;
            }
        }
        occupied++;
    }
    if (occupied == 0 || max == 0) return occupied;
    // Reservations: one pass over the entry table, credited to the owner.
    const size_t rows = std::min(size_t(occupied), max);
    for (uint32_t e = 0; e < h.n_entries; e++) {
        kv_entry &en = p->entries[e];
        // INS-A5, INS-A6: a reservation and its owner (one CAS16 wrote both);
        // pair with the claim CAS16 (ROOM-X1, room.cc, entry_claim_one).
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        if (Ctl::state(c) != KV_ENTRY_RESERVED) continue;
        uint64_t x = load(en.aux, std::memory_order_acquire);
        if (Aux::op(x) != KV_AUX_OWNER || Aux::client1(x) == 0) continue;
        uint32_t owner = Aux::client1(x) - 1;
        // Relaxed: a figure for a report.
        uint32_t cls = load(en.class_id, std::memory_order_relaxed);
        for (size_t r = 0; r < rows; r++) {
            if (out[r].slot != owner) continue;
            out[r].reservations++;
            if (cls < h.n_classes) out[r].bytes_reserved += p->classes[cls].block_size;
        }
    }
    return occupied;
}

int kv_reap_pid(kv_pool *p, uint32_t pid) noexcept {
    if (!p || pid == 0) return -EINVAL;
    const kv_region_header &h = *p->hdr;
    int held = 0;
    for (uint32_t i = 0; i < h.max_clients; i++) {
        if (i == p->client) continue;
        kv_client &c = p->clients[i];
        // INS-A7, INS-A8: the client's ctl and start time, as REAP-A8 and
        // REAP-A9 read them (the reaper re-reads both); pair with CLI-X1,
        // CLI-X3, REAP-X2 (the claim) and CLI-R2 (the start time).
        uint64_t w = load(c.ctl, std::memory_order_acquire);
        if (ClientCtl::state(w) != KV_CLIENT_LIVE || ClientCtl::pid(w) != pid) continue;
        if (!client_is_dead(pid, load(c.start_time, std::memory_order_acquire))) return -EBUSY;
        held++;
    }
    if (held == 0) return 0;
    // The ordinary reaper takes over: one code path for every reclaim.
    reap_dead_clients(p);
    return held;
}

} // extern "C"
