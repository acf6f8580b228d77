// SPDX-License-Identifier: MIT
//
// The index: a hash table of buckets, each the head of a lock-free ordered
// list of entries (Maged Michael, "High Performance Dynamic Lock-Free Hash
// Tables and List-Based Sets", SPAA 2002), with tagged links instead of
// hazard pointers because entries are type-stable: they live in the entry
// table forever and are only ever recycled, never unmapped.
//
// Invariants
//  I1. Lists are sorted by (key_hi, key_lo, ns) and hold at most one
//      unmarked entry per key.
//  I2. An entry's key fields change only while it is unreachable (RESERVED
//      and not yet linked); a linked entry's key is immutable.
//  I3. Every successful CAS on a link word increments its tag, and an
//      entry's next tag keeps increasing across recycling, so a link word
//      never returns to an earlier value (ABA): a CAS or validation that
//      expects an old value fails.
//  I4. A mark bit on an entry's next word means "logically deleted"; only
//      entries whose ctl state is DEAD are marked (mark() checks the state
//      and generation the marker saw DEAD after reading the next word, so
//      a late marker cannot mark the entry's next life), and a marked next
//      word is never changed again until the entry is recycled.
//  I5. Whoever's CAS unlinks an entry calls on_unlinked(); if it dies before
//      doing so, the reaper's sweep (reap.cc) does it: the state stays DEAD,
//      and a DEAD entry that a full find() pass did not meet is unreachable.
//
// Crash safety: every change is one CAS; an entry marked but not unlinked is
// unlinked by the next traversal that meets it, by any process.
//
// Memory orders (labels IDX-*, PROTOCOL.md section 12): the insert's link
// CAS (IDX-R1) publishes the entry's key and next; every load of a link
// word on a traversal is acquire (IDX-A3, IDX-A4, IDX-A6) and pairs with
// it and with the mark and unlink CASes (IDX-X1, IDX-X2), which are acq_rel.
#include "detail.h"

namespace kv::detail {

namespace {

struct KeyView {
    uint64_t hi, lo;
    uint32_t ns;
};

// Relaxed: the caller orders these reads (published by IDX-R1, or checked
// against a ctl read with acquire and an acquire fence: IDX-A5, IDX-A8).
KeyView read_key(kv_entry &en) {
    return {load(en.key_hi, std::memory_order_relaxed), load(en.key_lo, std::memory_order_relaxed),
            load(en.ns_id, std::memory_order_relaxed)};
}

int cmp(const KeyView &a, uint32_t ns, const kv_key &k) {
    if (a.hi != k.hi) return a.hi < k.hi ? -1 : 1;
    if (a.lo != k.lo) return a.lo < k.lo ? -1 : 1;
    if (a.ns != ns) return a.ns < ns ? -1 : 1;
    return 0;
}

// Set the mark on e's next word (logical deletion) if e is still DEAD in
// generation gen; false if it is not (its removal was finished by someone
// else and e may already live again under another key). Idempotent.
//
// Why the check (I4): a remover, a reaper's sweep (which helps every DEAD
// entry, live removers' too) or an insert that met e DEAD may reach here
// after another process unlinked e, freed it, claimed it again and linked
// it under a new key; marking then would mark that new, COMMITTED life,
// and the next traversal would unlink it: a committed entry nobody can
// find (CrashTest.KillRandomWorkerRoundsEntryTableFull exercises this: an
// evicting put claims its victim's entry at once). So the next
// word is read first and ctl after it: if ctl still says DEAD(gen), v is a
// value of this life (a next value of the next life is stored after that
// life's claim CAS and its release fence ROOM-R1 (room.cc), so an acquire load
// that reads it sees the claim: IDX-A1). Once the check has passed, the CAS can
// succeed only while this life is unfinished: the only way out of DEAD(gen)
// is on_unlinked_gen, after an unlink that needs the mark, so whoever
// finishes the life first has changed next from v; and a later life's
// writes to next bump its tag (I3), so v never comes back.
bool mark(kv_pool *p, uint32_t e, uint32_t gen) {
    kv_entry &en = p->entries[e];
    for (;;) {
        // IDX-A1: pairs with the claim's release fence (ROOM-R1, room.cc,
        // entry_claim_one), IDX-R1 and IDX-X1 (a next value of a later life).
        uint64_t v = load(en.next, std::memory_order_acquire);
        // Marked already: by this life's removal (a later life's, if e has
        // lived and died again since, which the gen check of the caller's
        // on_unlinked_gen then tells apart). Nothing to mark either way.
        if (Link::marked(v)) return true;
        // IDX-A2: still DEAD in this life; pairs with the kill and abort
        // CAS16s (STO-X3 and STO-X6, store.cc) and IDX-X3.
        const uint64_t c = load(en.ctl, std::memory_order_acquire);
        if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_DEAD) return false;
        // IDX-X1: the mark; release pairs with IDX-A4 (the finder that sees
        // it then unlinks), IDX-A1 and STAT-A3, acquire with IDX-R1, IDX-X2.
        if (cas(en.next, v, Link::make(Link::idx(v), Link::tag(v) + 1, true),
                std::memory_order_acq_rel))
            return true;
    }
}

} // namespace

uint32_t bucket_of(const kv_pool *p, uint32_t ns, const kv_key &k) {
    // Keys are XXH3 outputs, uniformly distributed: mixing in the namespace
    // is enough; the high bits of a multiply spread it.
    uint64_t h = (k.lo ^ (uint64_t(ns) * 0x9E3779B97F4A7C15ULL)) * 0xD6E8FEB86659FD93ULL;
    return uint32_t(h >> 32) & p->bucket_mask;
}

bool entry_key_is(const kv_entry &en, uint32_t ns, const kv_key &k) {
    kv_entry &e = const_cast<kv_entry &>(en);
    return cmp(read_key(e), ns, k) == 0;
}

Found index_find(kv_pool *p, uint32_t ns, const kv_key &k) {
    const uint32_t n = p->hdr->n_entries;
    uint64_t *head = &p->buckets[bucket_of(p, ns, k)];
retry:
    uint64_t *prev = head;
    // A list holds at most n entries, so a pass that takes more than n steps
    // (advances or unlinks) is going round a cycle a damaged region made
    // (fuzz/fuzz_region makes such regions): end the list there instead of
    // hanging.
    uint32_t steps = 0;
    // IDX-A3: pairs with IDX-R1 (the insert that linked the first entry, so
    // its key and next are visible) and IDX-X2 (an unlink).
    uint64_t pv = load(*prev, std::memory_order_acquire);
    for (;;) {
        uint32_t cur = Link::idx(pv);
        if (cur == KV_NIL32 || cur >= n ||
            ++steps > n) // >= n: a corrupted link ends the list, it is never followed
            return {prev, pv, KV_NIL32, false};
        kv_entry &en = p->entries[cur];
        // IDX-A4: pairs with IDX-R1, IDX-X1 and IDX-X2 on cur's next.
        uint64_t nx = load(en.next, std::memory_order_acquire);
        KeyView ck = read_key(en);
        // Relaxed: validated with the key by IDX-A5 / IDX-A6 below.
        uint32_t gen = Ctl::gen(load(en.ctl, std::memory_order_relaxed));
        // IDX-A5: the reads above must complete before the validation below;
        // if prev still holds pv (I3: no ABA), cur was linked, hence not
        // recycled, while we read it, so ck/nx/gen belong to one instance.
        // Pairs with the claim's release fence (ROOM-R1, room.cc): a key of a
        // later life read above implies the claim is seen, and with it the
        // unlink that preceded it (IDX-X2), so IDX-A6 fails.
        std::atomic_thread_fence(std::memory_order_acquire);
        // IDX-A6: pairs with IDX-R1 and IDX-X2 (prev changed: restart).
        if (load(*prev, std::memory_order_acquire) != pv) goto retry;
        if (!Link::marked(nx)) {
            int c = cmp(ck, ns, k);
            if (c >= 0) return {prev, pv, cur, c == 0};
            prev = &en.next;
            pv = nx;
            continue;
        }
        // cur is logically deleted: unlink it.
        // IDX-X2: acquire pairs with IDX-R1/IDX-X1 and keeps our reads
        // ordered; release publishes the new successor to IDX-A3, IDX-A4,
        // IDX-A5, IDX-A6, STAT-A1 and STAT-A3.
        uint64_t nv = Link::make(Link::idx(nx), Link::tag(pv) + 1, false);
        if (!cas(*prev, pv, nv, std::memory_order_acq_rel)) goto retry;
        on_unlinked_gen(p, cur, gen);
        pv = nv;
    }
}

uint32_t index_insert(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    KeyView kv = read_key(en);
    kv_key k{kv.lo, kv.hi};
    for (;;) {
        Found f = index_find(p, kv.ns, k);
        if (f.found) {
            // A holder exists. If it is being removed but not yet marked,
            // help the remover (mark it) and look again; otherwise report it.
            kv_entry &h = p->entries[f.cur];
            // IDX-A7: the holder's state; pairs with the claim and commit
            // CAS16s (ROOM-X1, room.cc, entry_claim_one; STO-X1, store.cc,
            // commit_impl).
            uint64_t c = load(h.ctl, std::memory_order_acquire);
            uint32_t st = Ctl::state(c);
            if (st == KV_ENTRY_RESERVED || st == KV_ENTRY_COMMITTED) {
                // IDX-A8: as STO-A4 in store.cc: the key re-check reads
                // the life whose ctl IDX-A7 saw, or a later one that the claim
                // fence (ROOM-R1, room.cc) published.
                std::atomic_thread_fence(std::memory_order_acquire);
                if (entry_key_is(h, kv.ns, k)) return f.cur;
                continue; // recycled under us: look again
            }
            if (st == KV_ENTRY_DEAD) mark(p, f.cur, Ctl::gen(c));
            continue;
        }
        // Keep the tag of our next word increasing across reuse (I3).
        // Relaxed: e is ours and unlinked; IDX-R1 publishes next.
        uint64_t old = load(en.next, std::memory_order_relaxed);
        store(en.next, Link::make(f.cur, Link::tag(old) + 1, false), std::memory_order_relaxed);
        // IDX-R1: publishes key, next and the RESERVED ctl; pairs with
        // IDX-A3, IDX-A4, IDX-A6 (traversals), IDX-X1, IDX-X2 (a later mark
        // or unlink of the successor link), IDX-A1 and STAT-A1, STAT-A3.
        uint64_t nv = Link::make(e, Link::tag(f.prev_val) + 1, false);
        uint64_t expect = f.prev_val;
        if (cas(*f.prev, expect, nv, std::memory_order_release)) return KV_NIL32;
    }
}

void index_remove(kv_pool *p, uint32_t e, uint32_t gen) {
    kv_entry &en = p->entries[e];
    if (!mark(p, e, gen)) return; // already unlinked (and its unlinker called on_unlinked)
    KeyView kv = read_key(en);
    // A find for e's key passes e if it is still linked (I1: a marked entry
    // precedes any unmarked entry with the same key) and unlinks it, so when
    // it returns e is unreachable.
    index_find(p, kv.ns, kv_key{kv.lo, kv.hi});
    on_unlinked_gen(p, e, gen);
}

void on_unlinked_gen(kv_pool *p, uint32_t e, uint32_t gen) {
    kv_entry &en = p->entries[e];
    for (;;) {
        // IDX-A9: pairs with the kill and abort CAS16s (STO-X3, STO-X6) and with
        // PIN-X2/PIN-X3 (pin counts change while DEAD).
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        // Relaxed: the CAS16 below validates ctl and aux together.
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_DEAD) return; // someone else did it
        uint64_t nc = Ctl::make(gen, KV_ENTRY_UNLINKED, Ctl::pins(c));
        // IDX-X3: DEAD -> UNLINKED (cmpxchg16b, a full barrier). Acquires the
        // kill or abort that made the entry DEAD (STO-X3, STO-X6); pairs with
        // PIN-A2, PIN-A3, PIN-X3 (the last unpin then frees), IDX-A2, REAP-A7,
        // STAT-A5, STO-A12 and the UNLINKED -> FREEING CAS16 (STO-X5,
        // store.cc, entry_maybe_free).
        if (cas16(&en.ctl, {c, x}, {nc, x})) {
            if (Ctl::pins(c) == 0) entry_maybe_free(p, e);
            return;
        }
    }
}

} // namespace kv::detail
