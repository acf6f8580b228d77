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
// Memory orders: the journal stores (P1) are release; cmpxchg16b (P2) is a
// full barrier, so the journal is visible before the entry names it. The
// acknowledgement CAS (P3/H1) is acq_rel.
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
    uint64_t want = PinB::make(Aux::seq(aux), op == KV_AUX_PIN ? KV_PIN_INTENT_PIN : KV_PIN_INTENT_UNPIN);
    uint64_t b = load(js.b, std::memory_order_acquire);
    if (b != want) return; // acknowledged already, or the slot moved on (newer seq)
    uint64_t done = PinB::make(Aux::seq(aux), op == KV_AUX_PIN ? KV_PIN_HELD : KV_PIN_FREE);
    cas(js.b, b, done, std::memory_order_acq_rel); // H1
}

int pin_entry(kv_pool *p, uint32_t e, uint32_t gen, uint32_t *slot_out) {
    uint32_t slot = p->free_slots->pop();
    if (slot == KV_NIL32) return -ENOBUFS;
    kv_pin_slot &js = p->journal[slot];
    uint32_t seq = PinB::seq(load(js.b, std::memory_order_relaxed)) + 1;
    // P1: the intent, before the entry CAS that can name it.
    store(js.a, PinA::make(e, gen), std::memory_order_relaxed);
    store(js.b, PinB::make(seq, KV_PIN_INTENT_PIN), std::memory_order_release);
    kv_entry &en = p->entries[e];
    const uint64_t mine = Aux::make(KV_AUX_PIN, p->client + 1, slot, seq);
    for (;;) {
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_COMMITTED || Ctl::pins(c) == KV_ENTRY_MAX_PINS) {
            // Not applied: nothing names this slot, so a plain store frees it.
            store(js.b, PinB::make(seq, KV_PIN_FREE), std::memory_order_release);
            p->free_slots->push(slot);
            return Ctl::pins(c) == KV_ENTRY_MAX_PINS ? -ENOBUFS : -ENOENT;
        }
        if (x != mine) help_pending(p, x);
        // P2: count and record in one 16-byte CAS (full barrier).
        if (cas16(&en.ctl, {c, x}, {c + 1, mine})) break;
    }
    // P3: a helper can only have written the same value (HELD for this seq),
    // and after this store the seq moves on only through our own unpin, so
    // a plain store is enough.
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
    store(js.b, PinB::make(seq, KV_PIN_INTENT_UNPIN), std::memory_order_release);
    kv_entry &en = p->entries[e];
    const uint64_t mine = Aux::make(KV_AUX_UNPIN, client + 1, slot, seq);
    uint64_t c, nc;
    for (;;) {
        c = load(en.ctl, std::memory_order_acquire);
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::gen(c) != gen || Ctl::pins(c) == 0) {
            // Cannot happen while our pin is held (the entry cannot be freed
            // with a pin on it); a corrupted region: drop the slot.
            store(js.b, PinB::make(seq, KV_PIN_FREE), std::memory_order_release);
            return -EBADMSG;
        }
        if (x != mine) help_pending(p, x);
        nc = c - 1;
        if (cas16(&en.ctl, {c, x}, {nc, mine})) break; // P2
    }
    store(js.b, PinB::make(seq, KV_PIN_FREE), std::memory_order_release); // P3 (a helper writes the same)
    if (Ctl::pins(nc) == 0 && Ctl::state(nc) == KV_ENTRY_UNLINKED) entry_maybe_free(p, e);
    return 0;
}

int unpin_slot(kv_pool *p, uint32_t client, uint32_t slot) {
    kv_pin_slot &js = slot_of(p, client, slot);
    uint64_t a = load(js.a, std::memory_order_acquire);
    uint64_t b = load(js.b, std::memory_order_acquire);
    if (PinB::phase(b) != KV_PIN_HELD) return -EINVAL;
    return unpin_held(p, client, slot, a, b);
}

void journal_recover_slot(kv_pool *p, uint32_t client, uint32_t slot) {
    kv_pin_slot &js = slot_of(p, client, slot);
    for (;;) {
        uint64_t a = load(js.a, std::memory_order_acquire);
        uint64_t b = load(js.b, std::memory_order_acquire);
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
            uint64_t x = load(en.aux, std::memory_order_acquire);
            uint64_t c = load(en.ctl, std::memory_order_acquire);
            uint32_t op = phase == KV_PIN_INTENT_PIN ? KV_AUX_PIN : KV_AUX_UNPIN;
            applied = Ctl::gen(c) == gen && x == Aux::make(op, client + 1, slot, seq);
            if (Ctl::gen(c) != gen) applied = phase == KV_PIN_INTENT_UNPIN; // freed: the unpin happened
        }
        uint64_t next;
        if (phase == KV_PIN_INTENT_PIN)
            next = PinB::make(seq, applied ? KV_PIN_HELD : KV_PIN_FREE);
        else
            next = PinB::make(seq, applied ? KV_PIN_FREE : KV_PIN_HELD);
        // A helper may acknowledge concurrently; then this CAS fails and the
        // loop re-reads the (now completed) phase.
        cas(js.b, b, next, std::memory_order_acq_rel);
    }
}

} // namespace kv::detail
