// SPDX-License-Identifier: MIT
//
// A block's eviction history carried across a snapshot (detail.h, History;
// uapi/kvpool/snapshot.h, struct kv_snap_history): read from a pinned
// entry by the daemon's snapshot writer, given back by its reader to the
// reservation before the commit (rank, CLOCK bit) and to the committed
// entry after it (commit time, chain parent).
//
// Ranks travel as ages. The access clock is the CPU's timestamp counter,
// which restarts at boot and differs between machines, so a rank copied as
// it is would read as "last used long ago" or "in the future". An age
// against one reference taken at the start of the persist keeps the order
// of every block in the file; the restore re-bases it on its own clock.
#include "detail.h"

namespace kv::detail {

namespace {

enum class RankKind { None, Tick, Count };

RankKind rank_kind(uint32_t policy) {
    switch (policy) {
    case KV_EVICT_LRU:
    case KV_EVICT_FIFO:
    case KV_EVICT_PRIORITY:
    case KV_EVICT_PREFIX:
        return RankKind::Tick;
    case KV_EVICT_LFU:
        return RankKind::Count;
    default:
        return RankKind::None;
    }
}

// The rank for a block age ticks old when the clock reads now. Ages up to
// half of now are exact (now - age); longer ones, which a clock restarted
// at boot cannot represent, are compressed into [0, now / 2) by
// (now / 2)^2 / age: decreasing in age, so the order is kept.
uint64_t rank_for_age(uint64_t now, uint64_t age) {
    const uint64_t half = now / 2;
    if (age <= half) return now - age;
    __extension__ typedef unsigned __int128 u128;
    return uint64_t(u128(half) * half / age);
}

// Release a pin taken with pin_entry (as kv_release does).
void unpin(kv_pool *p, uint32_t slot) {
    int rc = unpin_slot(p, p->client, slot);
    if (rc == 0 || rc == -EBADMSG) p->free_slots->push(slot);
}

} // namespace

uint64_t history_reference(kv_pool *p) {
    switch (rank_kind(p->policy)) {
    case RankKind::Tick:
        return tick();
    case RankKind::Count:
        return load(p->state->lfu_floor, std::memory_order_relaxed); // relaxed: a hint (region.h)
    default:
        return 0;
    }
}

int history_read(kv_pool *p, const kv_view &v, uint64_t ref, History *out) {
    const uint32_t e = PinA::entry(v.handle[1]);
    if (e >= p->hdr->n_entries) return -EINVAL;
    kv_entry &en = p->entries[e];
    // The pin's acquire of ctl (PIN-A2) saw the commit, which published
    // every field written while RESERVED; rank and clock are hints stored
    // relaxed since. So every read here is relaxed.
    *out = History{};
    out->commit_ns = load(en.commit_ns, std::memory_order_relaxed);
    out->ttl_ms = load(en.ttl_ms, std::memory_order_relaxed);
    const uint64_t rank = load(en.rank, std::memory_order_relaxed);
    switch (rank_kind(p->policy)) {
    case RankKind::Tick:
        out->rank_age = ref > rank ? ref - rank : 0;
        break; // used after ref: age 0
    case RankKind::Count:
        out->rank_age = rank > ref ? rank - ref : 0;
        break;
    case RankKind::None:
        out->referenced = load(en.clock, std::memory_order_relaxed) != 0;
        break;
    }
    // The parent's key, if the parent is still the life the block linked
    // to: its key is immutable while that life is committed, so a key read
    // between two loads of its ctl that agree is that life's.
    const uint64_t r = load(en.parent, std::memory_order_relaxed); // a hint, validated below
    const uint32_t pe = ParentRef::idx(r);
    if (pe >= p->hdr->n_entries) return 0;
    kv_entry &par = p->entries[pe];
    // HIST-A1: the parent committed in the life the block linked to; pairs
    // with the commit CAS16 (STO-X1, store.cc, commit_impl).
    const uint64_t c = load(par.ctl, std::memory_order_acquire);
    if (Ctl::gen(c) != ParentRef::gen(r) || Ctl::state(c) != KV_ENTRY_COMMITTED) return 0;
    const kv_key key{load(par.key_lo, std::memory_order_relaxed),
                     load(par.key_hi, std::memory_order_relaxed)};
    const uint32_t ns = load(par.ns_id, std::memory_order_relaxed);
    // HIST-A2: the key reads happen before the re-check (a seqlock read);
    // pairs with the claim's release fence (ROOM-R1, room.cc, entry_claim_one):
    // a key of a later life read above makes the re-check see its generation.
    std::atomic_thread_fence(std::memory_order_acquire);
    // Relaxed: ordered after the key reads by HIST-A2.
    if (Ctl::gen(load(par.ctl, std::memory_order_relaxed)) != Ctl::gen(c)) return 0;
    if (ns != load(en.ns_id, std::memory_order_relaxed)) return 0;
    out->has_parent = true;
    out->parent = key;
    return 0;
}

int history_apply(kv_pool *p, const kv_reservation &r, const History &h, uint32_t src_policy,
                  uint64_t ref) {
    const uint32_t e = PinA::entry(r.handle[0]), gen = PinA::gen(r.handle[0]);
    if (r.handle[1] != p->client || e >= p->hdr->n_entries) return -EINVAL;
    kv_entry &en = p->entries[e];
    // HIST-A3: our own reservation (only this client moves it on); pairs
    // with the claim CAS16 (ROOM-X1, room.cc, entry_claim_one) when another thread
    // of this process reserved it.
    const uint64_t c = load(en.ctl, std::memory_order_acquire);
    if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_RESERVED ||
        load(en.aux, std::memory_order_relaxed) != Aux::owner(p->client))
        return -EINVAL;
    // Written by the owner while RESERVED, relaxed: published by the commit
    // (STO-X1, store.cc, commit_impl).
    const RankKind kind = rank_kind(p->policy);
    if (kind == RankKind::Tick && rank_kind(src_policy) == RankKind::Tick)
        store(en.rank, rank_for_age(ref, h.rank_age), std::memory_order_relaxed);
    else if (kind == RankKind::Count && rank_kind(src_policy) == RankKind::Count)
        store(en.rank, load(p->state->lfu_floor, std::memory_order_relaxed) + h.rank_age,
              std::memory_order_relaxed);
    if (p->policy == KV_EVICT_CLOCK && src_policy == KV_EVICT_CLOCK)
        store(en.clock, h.referenced ? 1U : 0U, std::memory_order_relaxed);
    return 0;
}

int history_set_commit_time(kv_pool *p, uint32_t e, uint32_t gen, uint64_t commit_ns) {
    if (e >= p->hdr->n_entries) return -EINVAL;
    uint32_t slot;
    if (int rc = pin_entry(p, e, gen, &slot)) return rc;
    // Relaxed, as the commit's own store: readers (expiry, LFU ties, the
    // entries listing) take it as it is; the pin keeps e in this life.
    store(p->entries[e].commit_ns, commit_ns, std::memory_order_relaxed);
    unpin(p, slot);
    return 0;
}

int history_link_parent(kv_pool *p, uint32_t ns, const kv_key &child, const kv_key &parent) {
    Found f = index_find(p, ns, child);
    if (!f.found) return -ENOENT;
    kv_entry &en = p->entries[f.cur];
    // HIST-A4: pairs with the commit CAS16 (STO-X1, store.cc, commit_impl); the
    // pin below re-checks the generation (PIN-X2).
    const uint64_t c = load(en.ctl, std::memory_order_acquire);
    if (Ctl::state(c) != KV_ENTRY_COMMITTED || !entry_key_is(en, ns, child)) return -ENOENT;
    uint32_t slot;
    if (int rc = pin_entry(p, f.cur, Ctl::gen(c), &slot)) return rc;
    // Pinned, the entry is not freed, and only its free writes its parent
    // word (entry_unlink_parent): a word read as none stays none until the
    // link below. Relaxed: the pin, not the order, keeps the word stable.
    int rc = 0;
    if (ParentRef::idx(load(en.parent, std::memory_order_relaxed)) == KV_NIL32) {
        entry_link_parent(p, f.cur, ns, parent);
        if (ParentRef::idx(load(en.parent, std::memory_order_relaxed)) == KV_NIL32) rc = -ENOENT;
    }
    unpin(p, slot);
    return rc;
}

} // namespace kv::detail
