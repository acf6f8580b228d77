// SPDX-License-Identifier: MIT
//
// Block allocator: the data area is cut into slabs; a slab serves one size
// class; every possible block of every slab has one 64-bit block word that
// is the single authority on who owns the block (region.h, "Block word").
//
// Allocation claims a FREE block word with one CAS that also records the
// claiming client (OWNED), so there is no instant at which a block is owned
// by nobody on record: a process that dies anywhere leaves blocks that are
// FREE, OWNED(itself), or ENTRY(e), and the reaper frees OWNED(dead) blocks.
// There are no free lists to corrupt: the per-slab free_hint / scan_hint and
// per-class cursor_slab are hints (relaxed), and a full scan that ignores
// them runs before the caller resorts to eviction, so a hint that drifted
// (a process died between its CAS and its hint update) costs time, not space.
//
// Slab states (region.h): FREE -> ACTIVATING(owner) -> ACTIVE(class) ->
// RETIRING(owner) -> FREE or back to ACTIVE. An owner that dies leaves
// ACTIVATING/RETIRING with its client index; the reaper completes the
// activation or rolls the retirement back.
//
// Memory orders (labels ALC-*, PROTOCOL.md section 12): the claim ALC-X1
// (acq_rel) pairs with the frees ALC-R2 and ALC-R4 (release), so the new
// owner sees the previous owner's last writes to the block finished. The
// stores that make a slab ACTIVE (ALC-R1, ALC-R3, ALC-R5) are release and
// pair with the acquire load of a slab's ctl before its block words are
// scanned (ALC-A3..ALC-A7).
// ABA: block words carry a 24-bit tag bumped by every CAS; slab ctl a 32-bit tag.
//
// Home slabs. Two processes allocating from one slab write the same slab
// descriptor (free_hint, scan_hint) and block-word lines, and moving a line
// between cores costs more than the CASes themselves: those transfers are
// what an allocation costs. So a process allocates from slabs it calls home:
// an ACTIVE slab's ctl names, in its client field, the client whose home it is
// (the activator, or a later adopter; 0: nobody). The name is a hint, like
// free_hint: allocation from any ACTIVE slab is still a CAS on a FREE block
// word, the reaper ignores it, and a dead or detached client's homes are
// simply adopted by the next process that needs a slab of the class. A block
// is freed where it lives, so a process that turns its own blocks over (an
// engine writing, aborting, re-writing) keeps to lines no other process
// writes. block_alloc tries, in order: the home slabs it used last
// (kv_pool::home_slabs, process-local); another slab of the class that is its
// home or nobody live's (adopting it); while more than half of the pool's
// slabs are FREE, a FREE slab (activated as its home); then any slab of the
// class with room, other clients' homes included; then a FREE slab. So a
// process starts a slab of its own instead of joining another live process's
// (per-process slabs, as per-CPU slabs in kernel allocators) only while the
// pool is mostly unused; past half, FREE slabs are kept for classes without
// room and allocation is what it was before homes.
//
// Rebalancing (CacheLib's slab rebalancer is the model; PROTOCOL.md section
// 5). Space moves between size classes a slab at a time, under pressure,
// from the slab whose loss costs least. A class that keeps a slab holding
// little (a class few puts use, or one whose blocks were removed) keeps
// the rest of that slab idle, which no other class can use; in a full pool
// the classes that take the puts meanwhile evict their own blocks. So the
// search of step 2, which reads every slab's ctl and free_hint line anyway,
// also notes the least used ACTIVE slab of another class (a donor) if at
// most a quarter of its bytes are in use (donor_max_used); a put that found
// no block and no FREE slab then moves the donor to its class (slab_move:
// slab_retire, which evicts the donor's few blocks, then activation for
// the put's class as its home) instead of evicting one of its own blocks.
// A class keeps its slabs while they are used (a full slab is never a
// donor), so each class ends with the slabs its share of the puts fills,
// and the idle rest goes where the puts are. The donor is found only by
// puts that search (not those in an eviction streak, which look at their
// home slabs only and search every kStreakRecheck-th put: store.cc), so
// it costs no extra line. A class with no slab at all retires the
// cheapest slab of any other class (slab_cheapest, evict.cc), whatever it
// holds. Nothing here is new shared state: the choice reads hints, and the
// move is a retirement and an activation, with their crash paths; a
// process killed between the two leaves a FREE slab, which anyone activates.
#include "detail.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace kv::detail {

#if defined(__x86_64__)
bool cpu_has_prefetchw() {
    unsigned a, b, c, d;
    return __get_cpuid(0x80000001U, &a, &b, &c, &d) && (c & bit_PRFCHW);
}
#endif

namespace {

constexpr uint64_t kNone = UINT64_MAX;

// Relaxed: free_hint and scan_hint are hints (see the top of this file).
int32_t hint(uint32_t &v) {
    return int32_t(load(v, std::memory_order_relaxed));
}

// kv_pool::home_slabs[cls]: slab + 1 of our newest homes, newest first, 0
// after the last. Relaxed loads and stores: a process-local list of hints;
// two threads updating it at once can lose or repeat an entry, which only
// costs a scan (find_home finds our slabs by their ctl word).
void note_home(kv_pool *p, uint32_t cls, uint32_t s) {
    std::atomic<uint32_t> *homes = p->home_slabs[cls];
    uint32_t carry = s + 1;
    for (uint32_t i = 0; i < kv_pool::kHomes && carry; i++) {
        uint32_t h = homes[i].load(std::memory_order_relaxed);
        homes[i].store(carry, std::memory_order_relaxed);
        carry = h == s + 1 ? 0 : h; // drop an older copy of s
    }
}

void forget_home(kv_pool *p, uint32_t cls, uint32_t i) {
    std::atomic<uint32_t> *homes = p->home_slabs[cls];
    for (; i + 1 < kv_pool::kHomes; i++)
        homes[i].store(homes[i + 1].load(std::memory_order_relaxed), std::memory_order_relaxed);
    homes[kv_pool::kHomes - 1].store(0, std::memory_order_relaxed);
}

// Claim one FREE block of slab s for this client. ctl is the slab word seen
// as ACTIVE(cls) before the scan. The slab may be retired and re-activated
// for another class while we scan, and a FREE word of the new activation
// would then be claimed with the old class's geometry; so after a claim the
// slab word is checked again (its tag makes any transition visible) and the
// block is given back if the slab changed.
uint64_t scan_slab(kv_pool *p, uint32_t s, uint32_t cls, uint64_t ctl) {
    kv_slab &sl = p->slabs[s];
    const uint32_t n = p->classes[cls].blocks_per_slab;
    uint64_t *words = p->blocks + uint64_t(s) * p->hdr->blocks_per_slab;
    uint32_t start = load(sl.scan_hint, std::memory_order_relaxed); // relaxed: a hint
    if (start >= n) start = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t slot = start + j < n ? start + j : start + j - n;
        // Relaxed: a candidate for the CAS below, which validates it.
        uint64_t w = load(words[slot], std::memory_order_relaxed);
        if (Blk::state(w) != KV_BLOCK_FREE) continue;
        // ALC-X1: claim and record the owner in one step. Acquire pairs with
        // ALC-R2 and ALC-R4 (the free of the block), so the previous owner's
        // writes to it are finished; release publishes OWNED(me) to STO-X2
        // (our own attach), REAP-A5, STAT-A9 and ALC-A12 (a retirer, which
        // then rolls back).
        uint64_t mine = Blk::next(w, p->client, KV_BLOCK_OWNED);
        if (!cas(words[slot], w, mine, std::memory_order_acq_rel)) continue;
        // ALC-A1: the slab still in the state the scan began with; pairs
        // with ALC-X3 and ALC-X4 (an adoption or a retirement that raced us).
        if (load(sl.ctl, std::memory_order_acquire) != ctl) {
            block_free(p, block_id(p, s, slot), mine);
            return kNone;
        }
        // Relaxed: hints (see the top of this file).
        aref(sl.free_hint).fetch_sub(1, std::memory_order_relaxed);
        store(sl.scan_hint, slot + 1, std::memory_order_relaxed);
        return block_id(p, s, slot);
    }
    return kNone;
}

// Write the block words of a slab being activated for class cls. The owner
// keeps slot 0 (OWNED) when keep_first is set.
void fill_slab(kv_pool *p, uint32_t s, uint32_t cls, bool keep_first, uint32_t owner) {
    const uint32_t n = p->classes[cls].blocks_per_slab;
    uint64_t *words = p->blocks + uint64_t(s) * p->hdr->blocks_per_slab;
    // Relaxed: the slab is ACTIVATING(us), so nobody else writes its words;
    // ALC-R1 or ALC-R3 publishes them.
    for (uint32_t slot = 0; slot < p->hdr->blocks_per_slab; slot++) {
        uint64_t w = load(words[slot], std::memory_order_relaxed);
        uint32_t st = slot >= n ? KV_BLOCK_UNUSED
                                : (slot == 0 && keep_first ? KV_BLOCK_OWNED : KV_BLOCK_FREE);
        store(words[slot], Blk::next(w, st == KV_BLOCK_OWNED ? owner : 0, st),
              std::memory_order_relaxed);
    }
    store(p->slabs[s].free_hint, n - (keep_first ? 1 : 0), std::memory_order_relaxed);
    store(p->slabs[s].scan_hint, keep_first ? 1U : 0U, std::memory_order_relaxed);
}

// Activate slab s for class cls if it is FREE; returns block 0 of it,
// OWNED by us, or kNone if s is not FREE (taken meanwhile).
uint64_t activate_at(kv_pool *p, uint32_t s, uint32_t cls) {
    kv_slab &sl = p->slabs[s];
    // ALC-A2: observes a FREE slab; pairs with ALC-R6 (slab_retire).
    uint64_t c = load(sl.ctl, std::memory_order_acquire);
    if (SlabCtl::state(c) != KV_SLAB_FREE) return kNone;
    uint64_t act = SlabCtl::make(KV_SLAB_ACTIVATING, cls, p->client + 1, SlabCtl::tag(c) + 1);
    // ALC-X2: FREE -> ACTIVATING(me). Acquire pairs with ALC-R6 (the
    // retirer's RETIRED words are finished before fill_slab rewrites them);
    // release publishes the owner to REAP-A4 and ALC-A8.
    if (!cas(sl.ctl, c, act, std::memory_order_acq_rel)) return kNone;
    fill_slab(p, s, cls, true, p->client);
    // ALC-R1: publishes the block words with the ACTIVE state; pairs with
    // ALC-A3..ALC-A7, ALC-A11, ALC-X3, ALC-X4, EVC-A5, REAP-A5 (block 0,
    // OWNED by us) and STAT-A8. The slab is our home ("Home slabs" above).
    store(sl.ctl, SlabCtl::make(KV_SLAB_ACTIVE, cls, p->client + 1, SlabCtl::tag(act) + 1),
          std::memory_order_release);
    // Relaxed: a hint.
    store(p->classes[cls].cursor_slab, s, std::memory_order_relaxed);
    note_home(p, cls, s);
    return block_id(p, s, 0);
}

// Take a FREE slab for class cls; returns block 0 of it, OWNED by us.
uint64_t activate_slab(kv_pool *p, uint32_t cls) {
    const uint32_t n = p->hdr->n_slabs;
    // Relaxed: a hand that only spreads where activators start.
    uint32_t start = uint32_t(load(p->state->slab_hand, std::memory_order_relaxed) % n);
    for (uint32_t i = 0; i < n; i++)
        if (uint64_t id = activate_at(p, (start + i) % n, cls); id != kNone) return id;
    return kNone;
}

uint64_t find_in_class(kv_pool *p, uint32_t cls, bool thorough) {
    const uint32_t n = p->hdr->n_slabs;
    // Relaxed: cursor_slab and free_hint are hints; ALC-A3 validates each slab.
    uint32_t start = load(p->classes[cls].cursor_slab, std::memory_order_relaxed);
    if (start >= n) start = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s = start + i < n ? start + i : start + i - n;
        // ALC-A3: an ACTIVE slab's block words; pairs with ALC-R1, ALC-R3, ALC-R5.
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) != cls) continue;
        if (!thorough && hint(p->slabs[s].free_hint) <= 0) continue;
        uint64_t id = scan_slab(p, s, cls, c);
        if (id != kNone) {
            if (s != start) store(p->classes[cls].cursor_slab, s, std::memory_order_relaxed);
            return id;
        }
        if (thorough)
            store(p->slabs[s].free_hint, 0U, std::memory_order_relaxed); // re-sync the hint
    }
    return kNone;
}

// A slab of another class is moved to a class that would otherwise evict
// only while at most this many bytes of its blocks are in use
// ("Rebalancing" above).
uint64_t donor_max_used(const kv_pool *p) {
    return p->hdr->slab_size / 4;
}

// True if the ACTIVE slab word c names no home, or this client's, or the
// home of a client that is not LIVE (detached or dead: the hint is stale).
bool home_is_ours_or_free(kv_pool *p, uint64_t c) {
    uint32_t h1 = SlabCtl::client1(c);
    if (h1 == 0 || h1 == p->client + 1 || h1 > p->hdr->max_clients) return true;
    // Relaxed: advice only; a client that attaches right after this load
    // just finds its old slabs adopted.
    uint64_t owner = load(p->clients[h1 - 1].ctl, std::memory_order_relaxed);
    return ClientCtl::state(owner) != KV_CLIENT_LIVE;
}

// Step 2 of block_alloc, one pass over the slabs: a block from a slab of
// class cls that is our home or nobody live's, which then becomes our home;
// failing that, *other is the first slab of the class with free blocks that
// is another live client's home (KV_NIL32 if none), and *free_slabs the
// FREE slabs seen. Adopting a slab rewrites its ctl word (client field and
// tag): a claim racing in that slab sees the change in its post-claim check
// and gives its block back (scan_slab), and of two adopters only one wins.
uint64_t find_home(kv_pool *p, uint32_t cls, uint32_t *other, uint32_t *free_slabs,
                   uint32_t *donor) {
    const uint32_t n = p->hdr->n_slabs;
    // Relaxed: cursor_slab and free_hint are hints; ALC-A4 validates each slab.
    uint32_t start = load(p->classes[cls].cursor_slab, std::memory_order_relaxed);
    if (start >= n) start = 0;
    *other = KV_NIL32;
    *free_slabs = 0;
    uint64_t donor_used = donor_max_used(p) + 1;
    for (uint32_t i = 0; i < n; i++) {
        const uint32_t s = start + i < n ? start + i : start + i - n;
        kv_slab &sl = p->slabs[s];
        // ALC-A4: as ALC-A3: pairs with ALC-R1, ALC-R3, ALC-R5, and with
        // ALC-X3 (another adopter).
        uint64_t c = load(sl.ctl, std::memory_order_acquire);
        if (SlabCtl::state(c) == KV_SLAB_FREE) ++*free_slabs;
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE) continue;
        if (SlabCtl::cls(c) != cls) {
            // "Rebalancing" above: the least used slab of another class, if
            // it is used little enough to be worth moving. free_hint is on
            // the line just read for ctl.
            if (donor) {
                const uint64_t used = slab_used_bytes(p, s, c);
                if (used < donor_used) {
                    donor_used = used;
                    *donor = s;
                }
            }
            continue;
        }
        if (hint(sl.free_hint) <= 0) continue;
        if (!home_is_ours_or_free(p, c)) {
            if (*other == KV_NIL32) *other = s;
            continue;
        }
        if (SlabCtl::client1(c) != p->client + 1) {
            uint64_t ours = SlabCtl::make(KV_SLAB_ACTIVE, cls, p->client + 1, SlabCtl::tag(c) + 1);
            // ALC-X3: the adoption, acq_rel like every slab ctl CAS: acquire
            // pairs with ALC-R1, ALC-R3, ALC-R5, release with ALC-A1 (a racing
            // claim gives its block back), ALC-A4, ALC-A6, ALC-A11 and ALC-X4
            // (a retirer then fails its CAS and re-reads). ABA: the tag is bumped,
            // so a slab that was retired and re-activated in between fails it.
            // A failure means the slab changed under us: leave it to step 4.
            if (!cas(sl.ctl, c, ours, std::memory_order_acq_rel)) {
                if (*other == KV_NIL32) *other = s;
                continue;
            }
            c = ours;
        }
        uint64_t id = scan_slab(p, s, cls, c);
        if (id != kNone) {
            // Move the class's cursor here, as find_in_class does: the next
            // search starts where free blocks were last found instead of
            // walking again past every slab this one emptied. Relaxed: a hint.
            if (s != start) store(p->classes[cls].cursor_slab, s, std::memory_order_relaxed);
            note_home(p, cls, s);
            return id;
        }
    }
    return kNone;
}

// Step 4: a block of another live client's home slab s.
uint64_t take_from(kv_pool *p, uint32_t s, uint32_t cls) {
    // ALC-A5: as ALC-A3: pairs with ALC-R1, ALC-R3, ALC-R5.
    uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
    if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) != cls) return kNone;
    return scan_slab(p, s, cls, c);
}

} // namespace

uint64_t slab_used_bytes(const kv_pool *p, uint32_t s, uint64_t ctl) {
    const uint32_t cls = SlabCtl::cls(ctl);
    if (cls >= p->hdr->n_classes) return p->hdr->slab_size; // damaged: never the cheapest
    const uint32_t n = p->classes[cls].blocks_per_slab;
    // Relaxed: a hint (see the top of this file).
    const int32_t f = int32_t(load(p->slabs[s].free_hint, std::memory_order_relaxed));
    const uint32_t used = f <= 0 ? n : uint32_t(f) >= n ? 0 : n - uint32_t(f);
    return uint64_t(used) * p->classes[cls].block_size;
}

uint32_t slab_cheapest(kv_pool *p, uint32_t keep_cls, const uint32_t *skip, uint32_t n_skip) {
    const uint32_t n = p->hdr->n_slabs;
    // Relaxed fetch_add: a hand, so that retirers choosing among equally
    // cheap slabs start at different ones (and race less for the same).
    const uint32_t start =
        uint32_t(aref(p->state->slab_hand).fetch_add(1, std::memory_order_relaxed) % n);
    uint32_t best = KV_NIL32;
    uint64_t best_used = UINT64_MAX;
    for (uint32_t i = 0; i < n && best_used > 0; i++) {
        const uint32_t s = start + i < n ? start + i : start + i - n;
        // Relaxed: the choice is advice; slab_retire's CAS decides.
        const uint64_t c = load(p->slabs[s].ctl, std::memory_order_relaxed);
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) == keep_cls) continue;
        if (std::find(skip, skip + n_skip, s) != skip + n_skip) continue;
        const uint64_t used = slab_used_bytes(p, s, c);
        if (used < best_used) {
            best_used = used;
            best = s;
        }
    }
    return best;
}

uint64_t slab_move(kv_pool *p, uint32_t s, uint32_t cls) {
    if (!slab_retire(p, s)) return kNone;
    return activate_at(p, s, cls);
}

uint32_t class_for(const kv_pool *p, uint64_t len) {
    uint32_t lo = 0, hi = p->hdr->n_classes;
    if (len == 0 || len > p->classes[hi - 1].block_size) return KV_NIL32;
    while (lo < hi) { // first class with block_size >= len
        uint32_t mid = (lo + hi) / 2;
        if (p->classes[mid].block_size < len)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void block_prefetch(kv_pool *p, uint64_t id) {
    if (id >= uint64_t(p->hdr->n_slabs) * p->hdr->blocks_per_slab) return;
    prefetch_w(&p->blocks[id]);
    prefetch_w(&p->slabs[id / p->hdr->blocks_per_slab]);
}

uint64_t block_alloc_home(kv_pool *p, uint32_t cls) {
    // The home slabs we used last ("Home slabs" above), newest first,
    // without touching any other slab's line. Relaxed: a process-local hint;
    // the acquire load of each slab's ctl (ALC-A6) validates it, and a stale
    // value only changes which slab is tried first.
    std::atomic<uint32_t> *homes = p->home_slabs[cls];
    for (uint32_t i = 0; i < kv_pool::kHomes;) {
        const uint32_t h = homes[i].load(std::memory_order_relaxed);
        if (h == 0 || h > p->hdr->n_slabs) break;
        const uint32_t s = h - 1;
        // ALC-A6: as ALC-A3: pairs with ALC-R1, ALC-R3, ALC-R5, and with
        // ALC-X3 (adopted by another).
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) != cls ||
            SlabCtl::client1(c) != p->client + 1) {
            forget_home(p, cls, i); // retired, another class's now, or adopted after a reap
            continue;
        }
        if (hint(p->slabs[s].free_hint) > 0) {
            uint64_t id = scan_slab(p, s, cls, c);
            if (id != kNone) return id;
        }
        i++;
    }
    return kNone;
}

uint64_t block_alloc(kv_pool *p, uint32_t cls, bool thorough, uint32_t *donor) {
    if (donor) *donor = KV_NIL32;
    // 1. Our home slabs.
    if (uint64_t id = block_alloc_home(p, cls); id != kNone) return id;
    // 2. Another slab of ours, or one nobody live calls home (adopted).
    uint32_t other, free_slabs;
    uint64_t id = find_home(p, cls, &other, &free_slabs, donor);
    // 3. While most of the pool is FREE, a slab of our own (our home). Past
    // that, FREE slabs are kept for classes that have no slab with room.
    const bool mostly_free = 2 * uint64_t(free_slabs) > p->hdr->n_slabs;
    if (id == kNone && mostly_free) id = activate_slab(p, cls);
    // 4. Another live client's home, then (if that raced) any slab of the
    // class. If other is NIL, step 2 found no slab of the class with free
    // blocks, so no second scan then.
    if (id == kNone && other != KV_NIL32) {
        id = take_from(p, other, cls);
        if (id == kNone) id = find_in_class(p, cls, false);
    }
    // 5. A FREE slab, as before homes: the class has no room anywhere. Not
    // tried if step 2 saw none (a slab freed since is found by the caller's
    // next attempt, after its eviction).
    if (id == kNone && !mostly_free && free_slabs > 0) id = activate_slab(p, cls);
    if (id == kNone && thorough) id = find_in_class(p, cls, true);
    // A donor only matters when the class must otherwise evict; a FREE slab
    // seen (and raced for) is worth another look before any slab is moved.
    if (donor && (id != kNone || free_slabs > 0)) *donor = KV_NIL32;
    return id;
}

uint64_t block_alloc_near(kv_pool *p, uint32_t cls, uint64_t near) {
    if (near >= uint64_t(p->hdr->n_slabs) * p->hdr->blocks_per_slab) return kNone;
    const uint32_t s = uint32_t(near / p->hdr->blocks_per_slab);
    // ALC-A7: as ALC-A3: pairs with ALC-R1, ALC-R3, ALC-R5.
    uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
    if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) != cls) return kNone;
    return scan_slab(p, s, cls, c); // block_free lowered scan_hint to the freed slot
}

void block_erase(kv_pool *p, uint64_t id, uint32_t cls) {
    if (!p->secure_erase) return;
    // A damaged region (an entry whose class is not its slab's) must not
    // make us write outside the block's slab: then the slab's own class is
    // used, and nothing is zeroed if the block does not fit it either.
    // Relaxed: the slab's class cannot change while a word in it is ENTRY
    // or OWNED (a retirement rolls back), and the caller's acquire of that
    // word orders this load after the activation that set it.
    const uint64_t slot = id % p->hdr->blocks_per_slab;
    auto fits = [&](uint32_t c) {
        return c < p->hdr->n_classes && (slot + 1) * p->classes[c].block_size <= p->hdr->slab_size;
    };
    if (!fits(cls)) {
        cls = SlabCtl::cls(
            load(p->slabs[id / p->hdr->blocks_per_slab].ctl, std::memory_order_relaxed));
        if (!fits(cls)) return;
    }
    // The whole block, not the entry's length: an aborted reservation's
    // length is 0 (PROTOCOL.md section 11, A4) whatever its writer wrote.
    // Plain stores: the block is ours alone, and block_free's release CAS
    // (ALC-R2) publishes them to the next claim (ALC-X1). memset's
    // non-temporal path, if glibc takes it, ends with its own sfence.
    uint8_t *d = block_data(p, id, cls);
    const uint64_t n = p->classes[cls].block_size, half = n / 2;
    erase_crash_point(ErasePoint::Begun);
    std::memset(d, 0, half);
    erase_crash_point(ErasePoint::Half);
    std::memset(d + half, 0, n - half);
    erase_crash_point(ErasePoint::Zeroed);
}

bool block_free(kv_pool *p, uint64_t id, uint64_t expected) {
    uint64_t &w = p->blocks[id];
    // ALC-R2: our writes to the block happen-before the next claim; pairs
    // with ALC-X1 and ALC-X5 (claims), and with the readers that decide from
    // a block word: ACCT-A3, ALC-A12, ALC-A14, REAP-A5, STAT-A9.
    if (!cas(w, expected, Blk::next(expected, 0, KV_BLOCK_FREE), std::memory_order_release))
        return false;
    uint32_t s = uint32_t(id / p->hdr->blocks_per_slab),
             slot = uint32_t(id % p->hdr->blocks_per_slab);
    // Relaxed: hints (see the top of this file).
    aref(p->slabs[s].free_hint).fetch_add(1, std::memory_order_relaxed);
    if (slot < load(p->slabs[s].scan_hint, std::memory_order_relaxed))
        store(p->slabs[s].scan_hint, slot, std::memory_order_relaxed);
    return true;
}

void slab_finish_activation(kv_pool *p, uint32_t s) {
    kv_slab &sl = p->slabs[s];
    // ALC-A8: pairs with ALC-X2 (the dead activator's claim).
    uint64_t c = load(sl.ctl, std::memory_order_acquire);
    if (SlabCtl::state(c) != KV_SLAB_ACTIVATING) return;
    uint32_t cls = SlabCtl::cls(c);
    if (cls >= p->hdr->n_classes) cls = 0; // corrupted: any valid class will do
    fill_slab(p, s, cls, false, 0);        // the dead owner's block 0 goes back too
    // ALC-R3: as ALC-R1, for the reaper; pairs with ALC-A3..ALC-A7,
    // ALC-A11, ALC-X3, ALC-X4, EVC-A5 and STAT-A8.
    cas(sl.ctl, c, SlabCtl::make(KV_SLAB_ACTIVE, cls, 0, SlabCtl::tag(c) + 1),
        std::memory_order_release);
}

void slab_rollback_retire(kv_pool *p, uint32_t s) {
    kv_slab &sl = p->slabs[s];
    // ALC-A9: pairs with ALC-X4 (the retirement being rolled back).
    uint64_t c = load(sl.ctl, std::memory_order_acquire);
    if (SlabCtl::state(c) != KV_SLAB_RETIRING) return;
    uint32_t cls = SlabCtl::cls(c);
    uint32_t owner = SlabCtl::client1(c) - 1;
    uint64_t *words = p->blocks + uint64_t(s) * p->hdr->blocks_per_slab;
    for (uint32_t slot = 0; slot < p->classes[cls].blocks_per_slab; slot++) {
        // ALC-A10: pairs with ALC-X5 (the retirer's RETIRED claim).
        uint64_t w = load(words[slot], std::memory_order_acquire);
        if (Blk::state(w) == KV_BLOCK_RETIRED && Blk::owner(w) == owner) {
            // ALC-R4: RETIRED -> FREE, a free like ALC-R2; pairs with ALC-X1.
            if (cas(words[slot], w, Blk::next(w, 0, KV_BLOCK_FREE), std::memory_order_release))
                aref(sl.free_hint).fetch_add(1, std::memory_order_relaxed); // relaxed: a hint
        }
    }
    store(sl.scan_hint, 0U, std::memory_order_relaxed); // relaxed: a hint
    // ALC-R5: back to ACTIVE, as ALC-R1; pairs with ALC-A3..ALC-A7,
    // ALC-A11, ALC-X3, ALC-X4, EVC-A5 and STAT-A8.
    cas(sl.ctl, c, SlabCtl::make(KV_SLAB_ACTIVE, cls, 0, SlabCtl::tag(c) + 1),
        std::memory_order_release);
}

bool slab_retire(kv_pool *p, uint32_t s) {
    kv_slab &sl = p->slabs[s];
    // ALC-A11: pairs with ALC-R1, ALC-R3, ALC-R5 and ALC-X3.
    uint64_t c = load(sl.ctl, std::memory_order_acquire);
    if (SlabCtl::state(c) != KV_SLAB_ACTIVE) return false;
    uint32_t cls = SlabCtl::cls(c);
    uint64_t ret = SlabCtl::make(KV_SLAB_RETIRING, cls, p->client + 1, SlabCtl::tag(c) + 1);
    // ALC-X4: ACTIVE -> RETIRING(me). Acquire pairs with ALC-R1, ALC-R3,
    // ALC-R5 and ALC-X3 (as ALC-A11); release publishes
    // the retirement to ALC-A1 (a claim that raced gives its block back),
    // ALC-A9 and REAP-A4.
    if (!cas(sl.ctl, c, ret, std::memory_order_acq_rel)) return false;
    // No allocator claims from a RETIRING slab (they scan ACTIVE slabs only),
    // but a claim that started earlier may still land: it leaves an OWNED
    // word, which makes us roll back.
    const uint32_t n = p->classes[cls].blocks_per_slab;
    uint64_t *words = p->blocks + uint64_t(s) * p->hdr->blocks_per_slab;
    for (uint32_t slot = 0; slot < n; slot++) {
        for (int tries = 0;; tries++) {
            // ALC-A12: pairs with ALC-X1, ALC-R2 and the OWNED -> ENTRY(e)
            // CAS (STO-X2, store.cc, entry_take_block).
            uint64_t w = load(words[slot], std::memory_order_acquire);
            uint32_t st = Blk::state(w);
            if (st == KV_BLOCK_RETIRED) break;
            if (st == KV_BLOCK_FREE) {
                // ALC-X5: FREE -> RETIRED(me). Acquire pairs with ALC-R2 (the
                // last owner's free), release with ALC-A10 (a rollback).
                if (cas(words[slot], w, Blk::next(w, p->client, KV_BLOCK_RETIRED),
                        std::memory_order_acq_rel))
                    break;
                continue;
            }
            if (st == KV_BLOCK_ENTRY && tries < 4) {
                uint32_t e = Blk::owner(w);
                if (e < p->hdr->n_entries) {
                    // ALC-A13: pairs with the commit CAS16 (STO-X1, store.cc,
                    // commit_impl) and the free's FREE(g+1) CAS16 (STO-X4,
                    // store.cc, entry_finish_free).
                    uint64_t ec = load(p->entries[e].ctl, std::memory_order_acquire);
                    // Is ec the life that owns this block? Between the two
                    // loads e's owner may have freed the block (FREE, tag
                    // bumped) and then e, and e may live again with a block
                    // elsewhere: killing that life would evict an unrelated
                    // block. The free of the block precedes e's FREE(g+1),
                    // which precedes any later life's ctl that the acquire
                    // load above can read, so the block word read again
                    // differs from w if the life changed. ALC-A14: pairs
                    // with ALC-R2 (that free).
                    if (load(words[slot], std::memory_order_acquire) != w) continue;
                    if (Ctl::state(ec) == KV_ENTRY_COMMITTED && Ctl::pins(ec) == 0 &&
                        entry_kill(p, e, Ctl::gen(ec), true, KV_FEED_EVICT)) {
                        note_eviction(p);
                        continue; // its block is FREE now (or freed by the last unpinner soon)
                    }
                }
            }
            slab_rollback_retire(p, s); // pinned, reserved, being written: give up on this slab
            return false;
        }
    }
    // Every block word is RETIRED(us) now; they stay so until the next
    // activation rewrites them (fill_slab), so dying here loses nothing.
    store(sl.free_hint, 0U, std::memory_order_relaxed); // relaxed: a hint
    // ALC-R6: publishes the RETIRED words with the FREE slab; pairs with
    // ALC-A2 and ALC-X2 (the next activator) and STAT-A8.
    store(sl.ctl, SlabCtl::make(KV_SLAB_FREE, 0, 0, SlabCtl::tag(ret) + 1),
          std::memory_order_release);
    return true;
}

} // namespace kv::detail
