// SPDX-License-Identifier: MIT
//
// Live-bytes accounting (v1.2, KV_INCOMPAT_F_LIVE_ACCT; PROTOCOL.md
// section 11). The pool's live bytes are the sum of the lengths of the
// blocks that have been committed and not yet freed: exactly what a scan of
// the entry table finds in COMMITTED entries (plus removed blocks that are
// still pinned), maintained in O(1) per operation so that the daemon's
// watermark pass can read it every tick.
//
// Why records and not a plain counter: a commit is one CAS on the entry
// (STO-X1, store.cc) and a free is one CAS on the block word (block_free); a
// counter updated next to it is a second word, and a process killed
// between the two leaves the counter wrong for good. So each operation is
// first written down in a record of the client's slot (pend, with its
// length in acct_len), then done, then accounted by one 16-byte CAS that
// adds the length to the record's live and clears pend together. A reaper
// that finds pend set decides from the entry whether the operation took
// effect (acct_resolve_dead) and finishes or drops the record.
//
// Invariants:
//   A1  A record's pend and acct_len are written only by the thread that
//       holds the record (taken from the process-local acct_free stack) or,
//       once the client is dead, by the reaper that holds its slot REAPING.
//   A2  pend != 0 is published (release store) before the operation's own
//       CAS (C1, STO-X1, or the block CAS, ALC-R2), and acct_len before
//       pend.
//   A3  {live, pend} -> {live + delta, 0} is one cmpxchg16b: a record is
//       accounted exactly once or not at all.
//   A4  An entry's length is zeroed before an abort makes it DEAD, so the
//       free of a block that was never committed accounts nothing (and is
//       not written down).
//
// Memory orders (labels ACCT-*, PROTOCOL.md section 12): the records order
// nothing but themselves. A2's release store (ACCT-R1) pairs with the
// reaper's acquire load of pend (ACCT-A1), which is what makes acct_len
// visible to it; the reaper reads the entry's ctl and block word with
// acquire (ACCT-A2, ACCT-A3) as reap.cc does elsewhere. The sum is read
// relaxed: a reader under load sees a figure that was true at some point
// of each record, and the exact figure once operations quiesce.
#include "detail.h"

#include <sched.h>

namespace kv::detail {

namespace {

constexpr uint64_t pend_make(uint32_t e, uint32_t gen) {
    return (uint64_t(e) + 1) << 32 | gen;
}
constexpr uint32_t pend_entry(uint64_t w) {
    return uint32_t(w >> 32) - 1;
}
constexpr uint32_t pend_gen(uint64_t w) {
    return uint32_t(w);
}

bool accounting(const kv_pool *p) {
    return p->hdr->incompat_features & KV_INCOMPAT_F_LIVE_ACCT;
}

// {live, pend} -> {live + delta, 0}, retried only if live changed under
// us, which A1 rules out except for a reader: none writes. Returns false
// if pend was no longer `pend` (a reaper finished the record: impossible
// while its owner lives, so only a second reaper after a first died).
bool settle(kv_acct_record &r, uint64_t pend, int64_t delta) {
    for (;;) {
        // Relaxed: expected values of the CAS16 below, which validates both.
        const uint64_t live = load(r.live, std::memory_order_relaxed);
        if (load(r.pend, std::memory_order_relaxed) != pend) return false;
        // ACCT-X1 (A3; cmpxchg16b, a full barrier): accounts and clears pend
        // at once; pairs with ACCT-A1 (a reaper then sees nothing pending)
        // and with a second reaper's ACCT-X1 (which then fails).
        if (cas16(&r.live, {live, pend}, {live + uint64_t(delta), 0})) return true;
    }
}

} // namespace

uint32_t acct_begin(kv_pool *p, uint32_t e, uint32_t gen, uint64_t len, bool freeing) {
    if (!accounting(p) || len == 0) return KV_NIL32;
    // A process with more than KV_ACCT_RECORDS threads committing or
    // freeing at once waits here for a record; each is held for a few
    // instructions, so only a preempted holder makes the wait long.
    uint32_t i;
    for (unsigned spins = 0; (i = p->acct_free->pop()) == KV_NIL32; spins++) {
        if (spins < 64)
            __builtin_ia32_pause();
        else
            sched_yield();
    }
    kv_client &c = p->clients[p->client];
    // Relaxed: published by ACCT-R1 (A1: only this thread writes it).
    store(c.acct_len[i], len | (freeing ? uint64_t(KV_ACCT_FREE) : uint64_t(0)),
          std::memory_order_relaxed);
    // ACCT-R1 (A2): publishes acct_len with pend, before the operation's
    // own CAS; pairs with ACCT-A1 (acct_resolve_dead).
    store(c.acct[i].pend, pend_make(e, gen), std::memory_order_release);
    return i;
}

void acct_end(kv_pool *p, uint32_t i, bool took_effect) {
    if (i == KV_NIL32) return;
    kv_client &c = p->clients[p->client];
    // Relaxed: this thread wrote both (A1).
    const uint64_t len = load(c.acct_len[i], std::memory_order_relaxed);
    const uint64_t pend = load(c.acct[i].pend, std::memory_order_relaxed);
    const uint64_t bytes = len & ~KV_ACCT_FREE;
    const int64_t delta = !took_effect           ? 0
                          : (len & KV_ACCT_FREE) ? -int64_t(bytes)
                                                 : int64_t(bytes);
    settle(c.acct[i], pend, delta);
    p->acct_free->push(i);
}

// Before the reaper aborts the dead client's reservations and finishes its
// frees (reclaim_client): each pending record is decided from the entry.
//   commit: it took effect unless the entry is still RESERVED in that
//           generation (only the owner, now dead, could have moved it on;
//           the reaper aborts it only after this).
//   free:   it took effect unless the entry is still FREEING in that
//           generation and its block word still names it (block_free
//           precedes FREE(gen + 1); a FREEING entry cannot own a block anew).
void acct_resolve_dead(kv_pool *p, uint32_t client) {
    if (!accounting(p)) return;
    kv_client &c = p->clients[client];
    for (uint32_t i = 0; i < KV_ACCT_RECORDS; i++) {
        // ACCT-A1: a pending record and its acct_len; pairs with ACCT-R1, and
        // with ACCT-X1 (after which the record reads pend 0).
        const uint64_t pend = load(c.acct[i].pend, std::memory_order_acquire);
        if (pend == 0) continue;
        // Relaxed: ordered by ACCT-A1.
        const uint64_t len = load(c.acct_len[i], std::memory_order_relaxed);
        const uint32_t e = pend_entry(pend), gen = pend_gen(pend);
        bool done = true;
        if (e < p->hdr->n_entries) {
            kv_entry &en = p->entries[e];
            // ACCT-A2: whether the commit took effect; pairs with the commit
            // CAS16 (STO-X1, store.cc, commit_impl) and the FREEING CAS16
            // (STO-X5, store.cc, entry_maybe_free).
            const uint64_t ctl = load(en.ctl, std::memory_order_acquire);
            const bool same_life = Ctl::gen(ctl) == gen;
            if (!(len & KV_ACCT_FREE)) {
                done = !(same_life && Ctl::state(ctl) == KV_ENTRY_RESERVED);
            } else if (same_life && Ctl::state(ctl) == KV_ENTRY_FREEING) {
                // Relaxed: written while RESERVED, published by the commit,
                // which ACCT-A2 ordered.
                const uint64_t b = load(en.block, std::memory_order_relaxed);
                if (b < uint64_t(p->hdr->n_slabs) * p->hdr->blocks_per_slab) {
                    // ACCT-A3: whether the free took effect; pairs with ALC-R2.
                    const uint64_t w = load(p->blocks[b], std::memory_order_acquire);
                    done = !(Blk::state(w) == KV_BLOCK_ENTRY && Blk::owner(w) == e);
                }
            }
        } else {
            done = false; // garbage in a damaged region: account nothing
        }
        const uint64_t bytes = len & ~KV_ACCT_FREE;
        settle(c.acct[i], pend,
               !done                  ? 0
               : (len & KV_ACCT_FREE) ? -int64_t(bytes)
                                      : int64_t(bytes));
    }
}

uint64_t live_bytes(kv_pool *p) {
    const kv_region_header &h = *p->hdr;
    uint64_t sum = 0;
    if (accounting(p)) {
        for (uint32_t k = 0; k < h.max_clients; k++)
            for (const kv_acct_record &r : p->clients[k].acct) // relaxed: see the top of this file
                sum += load(const_cast<uint64_t &>(r.live), std::memory_order_relaxed);
        // A sum caught between a free's record and the commit's (two
        // clients, read in the other order) can be transiently "negative".
        return int64_t(sum) < 0 ? 0 : sum;
    }
    // A v1.1 region: the event counters, exact only without crashes.
    uint64_t committed = 0, freed = 0;
    for (uint32_t k = 0; k < h.max_clients; k++) {
        committed += load(p->clients[k].stats.bytes_committed, std::memory_order_relaxed);
        freed += load(p->clients[k].stats.bytes_freed, std::memory_order_relaxed);
    }
    return committed > freed ? committed - freed : 0;
}

} // namespace kv::detail

extern "C" int kv_pool_live_bytes(kv_pool *p, uint64_t *out) noexcept {
    if (!p || !out) return -EINVAL;
    *out = kv::detail::live_bytes(p);
    return 0;
}
