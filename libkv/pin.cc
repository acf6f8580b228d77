// SPDX-License-Identifier: MIT
//
// Pins: a per-entry pin count made recoverable by a per-client journal.
//
// The problem: a pin is one CAS on the entry's count, and the process may
// die right before or right after it. A journal entry written before the
// CAS cannot say which. So the CAS also records who made it: the entry's aux
// word names (op, client, slot, seq) of the last pin/unpin applied, in the
// same 16-byte CAS as the count (P2 below). Anyone who later replaces aux
// must first acknowledge the named journal slot (help_pending, H1): a CAS on
// the slot's b word from INTENT to the completed phase, which matches only
// the same seq. Hence, for a dead client's slot in phase INTENT(seq):
//   - aux still names (client, slot, seq, op) and the generation matches:
//     the op was applied and nobody has acknowledged it;
//   - otherwise it was never applied: had it been, whoever overwrote aux
//     acknowledged the slot first, and the slot would not say INTENT.
// The reaper resolves each slot with a CAS on b, so a helper that races it
// makes the reaper's CAS fail and re-read (journal_recover_slot).
//
// Memory orders (labels PIN-*, PROTOCOL.md section 12): the journal stores
// of P1 and P3 are release (PIN-R1, PIN-R3, PIN-R4, PIN-R6); cmpxchg16b
// (P2: PIN-X2, PIN-X3) is a full barrier, so the journal is visible before
// the entry names it. The acknowledgement CAS (H1: PIN-X1) and the reaper's
// decision (PIN-X4) are acq_rel; whoever reads a slot to decide it loads it
// with acquire.
//
// ABA: seq increments for every op on a slot and is never reset (it survives
// detach and reuse of the client slot), so a stale helper's CAS that expects
// an older seq fails. Entries carry a 32-bit generation bumped at each free,
// so a journal slot naming a recycled entry is recognized as stale.
#include "detail.h"

namespace kv::detail {

namespace {

kv_pin_slot &slot_of(kv_pool *p, uint32_t client, uint32_t slot) {
    return p->journal_all[uint64_t(client) * p->hdr->pins_per_client + slot];
}

} // namespace

void help_pending(kv_pool *p, uint64_t aux) {
    uint32_t op = Aux::op(aux);
    if (op != KV_AUX_PIN && op != KV_AUX_UNPIN) return;
    uint32_t c1 = Aux::client1(aux), slot = Aux::slot(aux);
    if (c1 == 0 || c1 > p->hdr->max_clients || slot >= p->hdr->pins_per_client) return;
    kv_pin_slot &js = slot_of(p, c1 - 1, slot);
    uint64_t want =
        PinB::make(Aux::seq(aux), op == KV_AUX_PIN ? KV_PIN_INTENT_PIN : KV_PIN_INTENT_UNPIN);
    // PIN-A1: observes the intent that aux names; pairs with PIN-R1 and PIN-R4.
    uint64_t b = load(js.b, std::memory_order_acquire);
    if (b != want) return; // acknowledged already, or the slot moved on (newer seq)
    uint64_t done = PinB::make(Aux::seq(aux), op == KV_AUX_PIN ? KV_PIN_HELD : KV_PIN_FREE);
    // PIN-X1 (H1): acknowledges the op before our CAS16 replaces aux; acquire
    // pairs with PIN-R1/PIN-R4, release with the slot's readers PIN-A5,
    // PIN-A7, REAP-A1, STAT-A7, STO-A15 and the reaper's PIN-X4 (which then
    // fails and re-reads).
    cas(js.b, b, done, std::memory_order_acq_rel);
}

int pin_entry(kv_pool *p, uint32_t e, uint32_t gen, uint32_t *slot_out) {
    uint32_t slot = p->free_slots->pop();
    if (slot == KV_NIL32) return -ENOBUFS;
    kv_pin_slot &js = p->journal[slot];
    // Relaxed: seq is written only by this client (a helper's PIN-X1 keeps it).
    uint32_t seq = PinB::seq(load(js.b, std::memory_order_relaxed)) + 1;
    // P1: the intent, before the entry CAS that can name it. a is relaxed:
    // published by PIN-R1.
    store(js.a, PinA::make(e, gen), std::memory_order_relaxed);
    // PIN-R1: publishes a and the intent; pairs with PIN-A1 and PIN-X1 (a
    // helper), PIN-A7 (journal_recover_slot), REAP-A1 and STAT-A7. A load
    // of a follows an acquire of b (PIN-A4, PIN-A6) and is covered by it.
    store(js.b, PinB::make(seq, KV_PIN_INTENT_PIN), std::memory_order_release);
    kv_entry &en = p->entries[e];
    const uint64_t mine = Aux::make(KV_AUX_PIN, p->client + 1, slot, seq);
    for (;;) {
        // PIN-A2: observes the state and generation the CAS16 below expects;
        // pairs with the commit CAS16 (STO-X1, store.cc, commit_impl) and the
        // other CAS16s on ctl (kill, unlink IDX-X3, PIN-X2, PIN-X3).
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        // Relaxed: the CAS16 below validates ctl and aux together.
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_COMMITTED ||
            Ctl::pins(c) == KV_ENTRY_MAX_PINS) {
            // Not applied: nothing names this slot, so a plain store frees it.
            // PIN-R2: pairs with PIN-A7, REAP-A1 and STAT-A7 (they then skip
            // the slot).
            store(js.b, PinB::make(seq, KV_PIN_FREE), std::memory_order_release);
            p->free_slots->push(slot);
            return Ctl::pins(c) == KV_ENTRY_MAX_PINS ? -ENOBUFS : -ENOENT;
        }
        if (x != mine) help_pending(p, x);
        // PIN-X2 (P2): count and record in one 16-byte CAS, a full barrier:
        // our journal store is visible before aux names the slot. Acquires
        // the CAS16 that last wrote ctl (STO-X1, the commit; PIN-X3). Pairs
        // with PIN-A8 and PIN-A9 (journal_recover_slot) and with whoever
        // reads ctl next: PIN-A2, PIN-A3, IDX-A9, EVC-A4, STAT-A5 and STO-A12
        // (store.cc, entry_maybe_free).
        if (cas16(&en.ctl, {c, x}, {c + 1, mine})) break;
    }
    // P3: a helper can only have written the same value (HELD for this seq),
    // and after this store the seq moves on only through our own unpin, so
    // a plain store is enough. PIN-R3: pairs with PIN-A5 (unpin_slot),
    // STO-A15 (kv_release), PIN-A7 (journal_recover_slot), REAP-A1 and
    // STAT-A7.
    store(js.b, PinB::make(seq, KV_PIN_HELD), std::memory_order_release);
    *slot_out = slot;
    return 0;
}

// Apply an unpin for (client, slot) whose phase is HELD. Used by the owner
// (kv_release), by detach and by a reaper acting for a dead client; the
// caller owns the slot's fate (pushing it to a free list).
static int unpin_held(kv_pool *p, uint32_t client, uint32_t slot, uint64_t a, uint64_t b) {
    kv_pin_slot &js = slot_of(p, client, slot);
    uint32_t e = PinA::entry(a), gen = PinA::gen(a);
    if (e >= p->hdr->n_entries) return -EINVAL;
    uint32_t seq = PinB::seq(b) + 1;
    // P1 for the unpin. A slot is unpinned by one party only: its owner
    // (release, detach) or, once the owner is dead, the one reaper that
    // claimed the client slot; so a store is enough. cmpxchg16b below is a
    // full barrier: the intent is visible before the entry names it.
    // PIN-R4: pairs with PIN-A1 and PIN-X1 (a helper), PIN-A7, REAP-A1 and
    // STAT-A7.
    store(js.b, PinB::make(seq, KV_PIN_INTENT_UNPIN), std::memory_order_release);
    kv_entry &en = p->entries[e];
    const uint64_t mine = Aux::make(KV_AUX_UNPIN, client + 1, slot, seq);
    uint64_t c, nc;
    for (;;) {
        // PIN-A3: as PIN-A2; pairs with PIN-X2 (our pin) and the CAS16s that
        // moved the entry since (the kill STO-X3, the unlink IDX-X3).
        c = load(en.ctl, std::memory_order_acquire);
        // Relaxed: the CAS16 below validates ctl and aux together.
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::gen(c) != gen || Ctl::pins(c) == 0) {
            // Cannot happen while our pin is held (the entry cannot be freed
            // with a pin on it); a corrupted region: drop the slot.
            // PIN-R5: pairs with PIN-A7, REAP-A1 and STAT-A7.
            store(js.b, PinB::make(seq, KV_PIN_FREE), std::memory_order_release);
            return -EBADMSG;
        }
        if (x != mine) help_pending(p, x);
        nc = c - 1;
        // PIN-X3 (P2): the unpin's CAS16, a full barrier. Acquires the
        // CAS16 that last wrote ctl (PIN-X2, IDX-X3, the kill STO-X3);
        // pairs with PIN-A8, PIN-A9, and with whoever reads ctl next:
        // PIN-A2, IDX-A9, STAT-A5 and STO-A12 (store.cc, entry_maybe_free),
        // which frees an UNLINKED entry.
        if (cas16(&en.ctl, {c, x}, {nc, mine})) break;
    }
    // PIN-R6 (P3; a helper writes the same): pairs with PIN-A7, REAP-A1 and
    // STAT-A7. The slot's next pin, maybe on another thread, reads its seq
    // after popping it from free_slots (CLI-R1 -> CLI-A1 orders that).
    store(js.b, PinB::make(seq, KV_PIN_FREE), std::memory_order_release);
    if (Ctl::pins(nc) == 0 && Ctl::state(nc) == KV_ENTRY_UNLINKED) entry_maybe_free(p, e);
    return 0;
}

int unpin_slot(kv_pool *p, uint32_t client, uint32_t slot) {
    kv_pin_slot &js = slot_of(p, client, slot);
    // PIN-A5: the slot is HELD; pairs with PIN-R3 or PIN-X1 (which made it
    // HELD). b is loaded first so that PIN-A5 also covers a, which the
    // pinning thread stored relaxed before PIN-R1.
    uint64_t b = load(js.b, std::memory_order_acquire);
    // PIN-A4: the entry the slot names; ordered after PIN-R1 by PIN-A5.
    // Relaxed would do; acquire costs nothing on x86 and states the intent.
    uint64_t a = load(js.a, std::memory_order_acquire);
    if (PinB::phase(b) != KV_PIN_HELD) return -EINVAL;
    return unpin_held(p, client, slot, a, b);
}

void journal_recover_slot(kv_pool *p, uint32_t client, uint32_t slot) {
    kv_pin_slot &js = slot_of(p, client, slot);
    for (;;) {
        // PIN-A7: the dead client's slot; pairs with PIN-R1..PIN-R6 (its own
        // stores) and PIN-X1 (a helper's acknowledgement). b is loaded first
        // so that PIN-A7 also covers a, stored relaxed before PIN-R1.
        uint64_t b = load(js.b, std::memory_order_acquire);
        // PIN-A6: the entry the slot names; ordered after PIN-R1 by PIN-A7.
        uint64_t a = load(js.a, std::memory_order_acquire);
        uint32_t phase = PinB::phase(b), seq = PinB::seq(b);
        if (phase == KV_PIN_FREE) return;
        if (phase == KV_PIN_HELD) {
            unpin_held(p, client, slot, a, b);
            return;
        }
        uint32_t e = PinA::entry(a), gen = PinA::gen(a);
        bool applied = false;
        if (e < p->hdr->n_entries) {
            kv_entry &en = p->entries[e];
            // PIN-A8, PIN-A9: whether the op was applied; pair with PIN-X2 and
            // PIN-X3 (the CAS16 that named the slot), with the free STO-X4 (a
            // generation moved on) and with any later CAS16 on the entry
            // (which acknowledged the slot first, PIN-X1).
            uint64_t x = load(en.aux, std::memory_order_acquire);
            uint64_t c = load(en.ctl, std::memory_order_acquire);
            uint32_t op = phase == KV_PIN_INTENT_PIN ? KV_AUX_PIN : KV_AUX_UNPIN;
            applied = Ctl::gen(c) == gen && x == Aux::make(op, client + 1, slot, seq);
            if (Ctl::gen(c) != gen)
                applied = phase == KV_PIN_INTENT_UNPIN; // freed: the unpin happened
        }
        uint64_t next;
        if (phase == KV_PIN_INTENT_PIN)
            next = PinB::make(seq, applied ? KV_PIN_HELD : KV_PIN_FREE);
        else
            next = PinB::make(seq, applied ? KV_PIN_FREE : KV_PIN_HELD);
        // A helper may acknowledge concurrently; then this CAS fails and the
        // loop re-reads the (now completed) phase. PIN-X4: acquire pairs with
        // PIN-X1 (a helper that won), release publishes the decision to
        // STAT-A7 and to the slot's next user (CLI-X1 orders it anyway).
        cas(js.b, b, next, std::memory_order_acq_rel);
    }
}

} // namespace kv::detail
