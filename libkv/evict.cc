// SPDX-License-Identifier: MIT
//
// Eviction. Every trigger (a put that finds no space, the daemon's
// watermark pass, kvctl evict, kv_evict_bytes) ends in the same victim
// choice, by the pool's policy (region.h KV_EVICT_*, PROTOCOL.md section 10):
//
// CLOCK (v1.0 pools): second chance over the entry table. Gets set an
// entry's reference bit; the hand, shared by all processes (a fetch_add on
// kv_region_state.clock_hand, in batches so processes sweep disjoint runs),
// clears set bits and evicts entries whose bit is already clear.
//
// Every other policy: sampled eviction. Look at up to kSample committed,
// unpinned entries, visited in a random permutation of the entry table
// (random start, random stride coprime with the table size, so no entry is
// looked at twice; the probes stop at the sample size in candidates, or at
// twice the sample size in probes once a candidate is found, so a table of
// at most twice the sample size is examined whole and the choice is then
// exact), and evict the one with the smallest
// policy key (kept, with the best of earlier samples, in a per-thread
// candidate pool). Nothing is locked and nothing is written until the victim's
// CAS: a key read from an entry being recycled is harmless because the kill
// CAS names the generation seen with the key.
//
// An eviction hands the victim's parent to the candidate pool. Under
// PREFIX the parent has just lost a child, is often a tail now, and carries
// the chain's age, which is what "LRU among tails" picks next; under the
// others a parent is usually older than its child (inserted or read just
// before it). A random sample rarely lands on it (a parent is one entry of
// thousands); a candidate offered is still ranked by its key, so the feed
// can only improve the choice. With the parents fed in the pool stays
// stocked, so while it holds at least half its slots an eviction tops it up
// with a quarter-size sample instead of a full one (PREFIX: a 32nd, 4
// candidates, since the feed hands it the next tail): the steady state of
// a full pool, every put evicting, costs a fraction of the probes. The
// feed is what makes quarter samples safe: without it LRU and FIFO drift
// from their exact models on tools/kvsim's traces. PREFIX's top-up is the
// smallest that keeps it within its target distance of the model (2 points
// of hit ratio), since each probe it saves is a cache miss on the put path;
// doc/perf holds the kvsim and BM_PutSteady figures behind these choices.
//
// Memory orders (labels EVC-*, PROTOCOL.md section 12): every candidate's
// ctl is loaded with acquire (EVC-A1..EVC-A4), pairing with the commit
// CAS16 that published its rank, kids, ttl, length and block; the policy
// fields themselves are hints read relaxed, and the kill CAS16 (STO-X3,
// entry_kill, store.cc) names the generation seen, so a stale read evicts
// nothing wrong.
//
// Eviction is a remove that requires the pin count to be zero in the same
// CAS (entry_kill), so a pinned block is never evicted, however full the pool.
//
// A put that needs a block of class k first evicts class-k entries; if the
// class has no slab or nothing evictable, it retires a whole slab of another
// class, the one with the fewest bytes in use (retire_some_slab), so the
// slab can serve class k. Retirement empties the slab whatever the policy
// says of its blocks: it is how space moves between size classes. A put
// that finds the entry table full (blocks no larger than avg_block_size
// fill it before the data area) evicts the policy's victim of any class,
// as kv_evict_bytes does, and claims its entry directly, and its block too
// when that is of the put's class (Victim, store.cc).
#include "detail.h"

#include <numeric>
#include <unistd.h>

namespace kv::detail {

namespace {

constexpr uint32_t kBatch = 64;
// Candidates per sampled eviction; with the candidate pool below this is
// sized to keep each policy within 2 points of hit ratio of its exact model
// on tools/kvsim's traces. PREFIX and FIFO look at 4x more: only chain
// tails (about one block per chain) are PREFIX's real candidates, and
// FIFO's order is never refreshed by reads, so a near-oldest block is far
// more often a useful one; kSample alone leaves them short of that target.
// The probes are prefetched a few ahead so their misses overlap.
constexpr uint32_t kSample = 32;
constexpr uint32_t kSampleWide = 128;
constexpr uint32_t kPrefetchAhead = 4;
constexpr int kKillAttempts = 8;
// Cheapest slabs a retirement tries before it takes any (retire_some_slab).
constexpr uint32_t kRetireTries = 8;

// Sweep up to budget entries; evict the first candidate that passes the
// second-chance test and the filter. Returns the bytes evicted (0: none).
template <typename Filter>
uint64_t clock_sweep(kv_pool *p, uint64_t budget, Filter &&want, Victim *victim) {
    const uint32_t n = p->hdr->n_entries;
    uint64_t now = 0;
    while (budget > 0) {
        // Relaxed: the hand only spreads sweepers over the table.
        uint64_t start = aref(p->state->clock_hand).fetch_add(kBatch, std::memory_order_relaxed);
        for (uint32_t i = 0; i < kBatch && budget > 0; i++, budget--) {
            uint32_t e = uint32_t((start + i) % n);
            kv_entry &en = p->entries[e];
            // EVC-A1: pairs with the commit CAS16 (STO-X1, store.cc, commit_impl),
            // which published ttl, length and block read below.
            uint64_t c = load(en.ctl, std::memory_order_acquire);
            if (Ctl::state(c) != KV_ENTRY_COMMITTED || Ctl::pins(c) != 0) continue;
            if (!want(en)) continue;
            bool expired = load(en.ttl_ms, std::memory_order_relaxed) &&
                           entry_expired(en, now ? now : (now = now_ns()));
            // Relaxed: the CLOCK bit is a hint (detail.h, touch).
            if (!expired && load(en.clock, std::memory_order_relaxed)) {
                store(en.clock, 0U, std::memory_order_relaxed); // second chance
                continue;
            }
            uint64_t len = load(en.length, std::memory_order_relaxed);
            uint64_t blk =
                load(en.block, std::memory_order_relaxed); // read before the kill frees it
            if (entry_kill(p, e, Ctl::gen(c), true, expired ? KV_FEED_EXPIRE : KV_FEED_EVICT)) {
                note_eviction(p);
                if (victim) *victim = {blk, e};
                return len ? len : 1;
            }
        }
    }
    return 0;
}

// Per-thread xorshift64*: sampling only needs spread, not secrecy.
uint64_t rng() {
    thread_local uint64_t s = 0;
    if (s == 0) s = (tick() ^ (uint64_t(getpid()) << 32) ^ uint64_t(uintptr_t(&s))) | 1;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
}

// The victim order: smaller (k1, k2) first. Expired blocks (k1 = 0) go
// before everything; then per policy.
struct Key {
    uint64_t k1, k2;
    bool operator<(const Key &o) const { return k1 != o.k1 ? k1 < o.k1 : k2 < o.k2; }
};
// Relaxed: the policy fields are hints, read after the caller's acquire of
// ctl (EVC-A2..EVC-A4); a stale one changes which block goes, never whether
// the kill is valid.
Key key_of(kv_pool *p, const kv_entry &en, uint64_t &now) {
    if (load(const_cast<uint32_t &>(en.ttl_ms), std::memory_order_relaxed) &&
        entry_expired(en, now ? now : (now = now_ns())))
        return {0, 0};
    uint64_t rank = load(const_cast<uint64_t &>(en.rank), std::memory_order_relaxed);
    switch (p->policy) {
    case KV_EVICT_PRIORITY:
        return {1 + uint64_t(load(const_cast<uint32_t &>(en.priority), std::memory_order_relaxed)),
                rank};
    case KV_EVICT_PREFIX:
        return {1 + (Kids::count(load(const_cast<uint32_t &>(en.kids), std::memory_order_relaxed))
                         ? 1u
                         : 0u),
                rank};
    case KV_EVICT_LFU: // equal counts are common: the older commit goes first
        return {1 + rank, load(const_cast<uint64_t &>(en.commit_ns), std::memory_order_relaxed)};
    default:
        return {1, rank}; // LRU, FIFO: the rank says it all
    }
}

// (x + stride) mod n for x, stride < n, without a division: a 64-bit divide
// per probe (two with the prefetch cursor) is tens of cycles on the put
// path, more than the arithmetic it replaces.
inline uint64_t step(uint64_t x, uint64_t stride, uint64_t n) {
    x += stride;
    return x >= n ? x - n : x;
}

// rng() mapped onto [0, n) by a multiply (Lemire's range reduction): a
// 64-bit division is tens of cycles, and an eviction draws a start per sample.
uint64_t below(uint64_t n) {
    __extension__ typedef unsigned __int128 u128;
    return uint64_t((u128(rng()) * n) >> 64);
}

// A stride in [1, n) coprime with n, so start + i * stride visits every
// index once. The gcd loop costs hundreds of cycles, so samples draw from a
// few strides computed once per thread and pool (CandPool::strides); the
// random start keeps successive samples apart.
uint64_t coprime_stride(uint64_t n) {
    if (n <= 2) return 1;
    uint64_t s = 1 + below(n - 1);
    while (std::gcd(s, n) != 1)
        s = s + 1 < n ? s + 1 : 1;
    return s;
}

// Lift lfu_floor to at least rank (relaxed CAS loop: a hint, see region.h).
void raise_lfu_floor(kv_pool *p, uint64_t rank) {
    uint64_t f = load(p->state->lfu_floor, std::memory_order_relaxed);
    while (f < rank && !cas(p->state->lfu_floor, f, rank, std::memory_order_relaxed)) {
    }
}

// The best candidates of this thread's earlier samples (Redis keeps such an
// "eviction pool" too): a sample of kSample sees few chain tails or few
// really old blocks, the pool remembers the best it has seen, so the choice
// approaches the exact order. Thread-local, so nothing is shared; an entry
// named here may since have been read, removed or recycled: its state,
// generation and key are read again before it is chosen, and the kill CAS
// names the generation.
struct Cand {
    uint32_t e, gen;
    Key key;
};
constexpr uint32_t kPoolSize = 16;
struct CandPool {
    const kv_pool *owner = nullptr;
    uint64_t pool_id = 0;
    uint32_t n = 0;
    Cand c[kPoolSize];
    static constexpr uint32_t kStrides = 8;
    uint64_t strides[kStrides] = {};
    uint64_t stride() { return strides[rng() % kStrides]; }
};
thread_local CandPool t_cands;

CandPool &cands_of(kv_pool *p) {
    CandPool &cp = t_cands;
    if (cp.owner != p || cp.pool_id != p->hdr->pool_id_lo) {
        cp.owner = p;
        cp.pool_id = p->hdr->pool_id_lo;
        cp.n = 0;
        for (uint64_t &st : cp.strides)
            st = coprime_stride(p->hdr->n_entries);
    }
    return cp;
}

// Keep the kPoolSize smallest keys, sorted, one slot per entry.
void cands_offer(CandPool &cp, const Cand &x) {
    // Most offers of a steady-state sample lose to the whole pool: refuse
    // them before the duplicate scan. A copy of x.e already in the pool is
    // then left with its older (smaller) key, which the choice re-reads and
    // re-ranks before it evicts anything.
    if (cp.n == kPoolSize && !(x.key < cp.c[kPoolSize - 1].key)) return;
    for (uint32_t i = 0; i < cp.n; i++)
        if (cp.c[i].e == x.e) { // newer reading of the same entry
            for (uint32_t j = i; j + 1 < cp.n; j++)
                cp.c[j] = cp.c[j + 1];
            cp.n--;
            break;
        }
    uint32_t at = cp.n;
    while (at > 0 && x.key < cp.c[at - 1].key)
        at--;
    if (at >= kPoolSize) return;
    uint32_t last = cp.n < kPoolSize ? cp.n : kPoolSize - 1;
    for (uint32_t j = last; j > at; j--)
        cp.c[j] = cp.c[j - 1];
    cp.c[at] = x;
    if (cp.n < kPoolSize) cp.n++;
}

void cands_drop(CandPool &cp, uint32_t i) {
    for (uint32_t j = i; j + 1 < cp.n; j++)
        cp.c[j] = cp.c[j + 1];
    cp.n--;
}

// Offer entry e (a victim's parent, from its parent word read before the
// kill) to the candidate pool if it is committed, unpinned, of the wanted
// kind and still the generation the child linked to. The parent word is read
// relaxed (a hint); the acquire load of the parent's ctl validates it, and
// the kill CAS names the generation, so a recycled parent (ABA) is never
// evicted in its next life.
template <typename Filter>
void offer_parent(kv_pool *p, CandPool &cp, uint64_t parent_ref, Filter &&want) {
    const uint32_t e = ParentRef::idx(parent_ref);
    if (e >= p->hdr->n_entries) return; // none
    kv_entry &en = p->entries[e];
    // EVC-A2: pairs with the commit CAS16 (STO-X1, store.cc, commit_impl).
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    if (Ctl::gen(c) != ParentRef::gen(parent_ref) || Ctl::state(c) != KV_ENTRY_COMMITTED ||
        Ctl::pins(c) != 0 || !want(en))
        return;
    uint64_t now = 0;
    cands_offer(cp, {e, Ctl::gen(c), key_of(p, en, now)});
}

template <typename Filter>
uint64_t sample_evict(kv_pool *p, Filter &&want, Victim *victim) {
    const uint64_t n = p->hdr->n_entries;
    CandPool &cp = cands_of(p);
    const uint32_t full =
        p->policy == KV_EVICT_PREFIX || p->policy == KV_EVICT_FIFO ? kSampleWide : kSample;
    // PREFIX's top-up is smaller still: its parent feed hands the pool the
    // very next victim (the tail's parent, a tail of the same age now).
    // kSampleWide / 32: 4 candidates (see the top of this file).
    const uint32_t topup = p->policy == KV_EVICT_PREFIX ? kSampleWide / 32 : full / 4;
    for (int attempt = 0; attempt < kKillAttempts; attempt++) {
        // A well-stocked pool (from earlier samples) needs only a top-up; a
        // retry means the pool ran dry of valid candidates: sample in full.
        const uint32_t sample = attempt == 0 && cp.n >= kPoolSize / 2 ? topup : full;
        const uint64_t stride = cp.stride();
        uint64_t idx = below(n), ahead = idx;
        for (uint32_t i = 0; i < kPrefetchAhead; i++) {
            __builtin_prefetch(&p->entries[ahead]);
            __builtin_prefetch(&p->entries[ahead].rank);
            ahead = step(ahead, stride, n);
        }
        uint32_t found = 0;
        uint64_t now = 0;
        // Stop at `sample` candidates, or after 2 x `sample` probes once one
        // is found: in a sparse table (blocks larger than avg_block_size) a
        // full sample would cost a scan of most of the table per eviction;
        // the candidate pool makes up for the smaller sample. A table of at
        // most 2 x `sample` entries is probed whole, so the choice there is
        // exact (stopping at `sample` candidates in a dense one left it to
        // the candidate pool to hold the best, which it nearly always did).
        const bool whole = n <= 2 * uint64_t(sample);
        for (uint64_t probe = 0;
             probe < n &&
             (whole || (found < sample && (found == 0 || probe < 2 * uint64_t(sample))));
             probe++, idx = step(idx, stride, n)) {
            __builtin_prefetch(&p->entries[ahead]);
            __builtin_prefetch(&p->entries[ahead].rank);
            ahead = step(ahead, stride, n);
            kv_entry &en = p->entries[idx];
            // EVC-A3: pairs with the commit CAS16 (STO-X1, store.cc, commit_impl),
            // which published rank, kids and ttl.
            uint64_t c = load(en.ctl, std::memory_order_acquire);
            if (Ctl::state(c) != KV_ENTRY_COMMITTED || Ctl::pins(c) != 0 || !want(en)) continue;
            found++;
            cands_offer(cp, {uint32_t(idx), Ctl::gen(c), key_of(p, en, now)});
        }
        // Choose from the pool: the smallest key that still holds.
        for (uint32_t i = 0; i < cp.n;) {
            Cand c = cp.c[i];
            kv_entry &en = p->entries[c.e];
            // EVC-A4: pairs with the commit (STO-X1), and with the kill and
            // pin CAS16s that would disqualify the candidate (STO-X3, PIN-X2).
            uint64_t ctl = load(en.ctl, std::memory_order_acquire);
            if (Ctl::gen(ctl) != c.gen || Ctl::state(ctl) != KV_ENTRY_COMMITTED ||
                Ctl::pins(ctl) != 0 || !want(en)) {
                // Removed, recycled, pinned, or not the class asked for:
                // forget it (a sample finds it again if it still matters).
                cands_drop(cp, i);
                continue;
            }
            Key k = key_of(p, en, now);
            if (c.key < k) { // read since it was sampled: re-rank it
                cands_drop(cp, i);
                cands_offer(cp, {c.e, c.gen, k});
                continue;
            }
            // Relaxed: length, parent and block were published by the commit,
            // which EVC-A4 ordered; the kill below names the generation.
            uint64_t len = load(en.length, std::memory_order_relaxed);
            // Read before the kill: the kill's free clears it (and then the
            // entry may be reused). Checked against the parent's generation.
            uint64_t parent_ref = load(en.parent, std::memory_order_relaxed);
            uint64_t blk = load(en.block, std::memory_order_relaxed);
            cands_drop(cp, i);
            if (entry_kill(p, c.e, c.gen, true, k.k1 == 0 ? KV_FEED_EXPIRE : KV_FEED_EVICT)) {
                note_eviction(p);
                if (victim) *victim = {blk, c.e};
                if (p->policy == KV_EVICT_LFU && k.k1) raise_lfu_floor(p, k.k1 - 1);
                if (parent_ref) offer_parent(p, cp, parent_ref, want);
                return len ? len : 1;
            }
            // Pinned, removed or recycled since we looked: the next one.
        }
        if (found == 0) return 0; // nothing evictable
    }
    return 0;
}

template <typename Filter>
uint64_t evict_by_policy(kv_pool *p, Filter &&want, Victim *victim = nullptr) {
    if (p->policy == KV_EVICT_CLOCK) return clock_sweep(p, 2ULL * p->hdr->n_entries, want, victim);
    return sample_evict(p, want, victim);
}

bool class_has_slab(kv_pool *p, uint32_t cls) {
    for (uint32_t s = 0; s < p->hdr->n_slabs; s++) {
        // Relaxed: advice; a stale answer only chooses eviction or retirement.
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_relaxed);
        if (SlabCtl::state(c) == KV_SLAB_ACTIVE && SlabCtl::cls(c) == cls) return true;
    }
    return false;
}

// Retire the slab of another class whose loss costs least: the one with
// the fewest bytes in use (slab_cheapest), so that a class without a slab
// takes one that holds little (a class's slab that barely started, or one
// whose blocks were removed) rather than whichever the hand reaches, which
// in a full pool is a full slab: its every block evicted for one put. A
// slab that cannot be retired (a block pinned, reserved or being claimed:
// slab_retire rolls back) is skipped and the next cheapest tried.
bool retire_some_slab(kv_pool *p, uint32_t keep_cls) {
    uint32_t tried[kRetireTries];
    for (uint32_t t = 0; t < kRetireTries; t++) {
        const uint32_t s = slab_cheapest(p, keep_cls, tried, t);
        if (s == KV_NIL32) return false;
        if (slab_retire(p, s)) return true;
        tried[t] = s;
    }
    // Pins or races everywhere we looked: any slab that can go, as the hand
    // reaches it.
    const uint32_t n = p->hdr->n_slabs;
    for (uint32_t i = 0; i < n; i++) {
        // Relaxed: a hand that only spreads retirers over the table.
        uint32_t s =
            uint32_t(aref(p->state->slab_hand).fetch_add(1, std::memory_order_relaxed) % n);
        // EVC-A5: pairs with ALC-R1, ALC-R3, ALC-R5; slab_retire re-reads
        // and decides (ALC-A11, ALC-X4).
        uint64_t c = load(p->slabs[s].ctl, std::memory_order_acquire);
        if (SlabCtl::state(c) != KV_SLAB_ACTIVE || SlabCtl::cls(c) == keep_cls) continue;
        if (slab_retire(p, s)) return true;
    }
    return false;
}

} // namespace

bool evict_for_class(kv_pool *p, uint32_t cls, Victim *victim) {
    if (victim) *victim = {};
    if (class_has_slab(p, cls) &&
        evict_by_policy(
            p,
            // Relaxed: after the caller's acquire of ctl.
            [cls](kv_entry &en) { return load(en.class_id, std::memory_order_relaxed) == cls; },
            victim))
        return true;
    return retire_some_slab(p, cls);
}

uint64_t evict_one(kv_pool *p, Victim *victim) {
    if (victim) *victim = {};
    return evict_by_policy(p, [](kv_entry &) { return true; }, victim);
}

} // namespace kv::detail

using namespace kv::detail;

extern "C" int64_t kv_evict_bytes(kv_pool *p, uint64_t bytes) noexcept {
    if (!p) return -EINVAL;
    uint64_t freed = 0;
    while (freed < bytes) {
        uint64_t got = evict_one(p);
        if (!got) break;
        freed += got;
    }
    // Room made on purpose: every process's next puts, this one's included,
    // search for it instead of evicting (region.h, room_epoch). Relaxed: a
    // hint that orders nothing; the search it triggers validates by CAS.
    if (freed) aref(p->state->room_epoch).fetch_add(1, std::memory_order_relaxed);
    return int64_t(freed > INT32_MAX ? INT32_MAX : freed);
}

static const char *const kPolicyNames[KV_EVICT_MAX + 1] = {"clock", "lru",      "lfu",
                                                           "fifo",  "priority", "prefix"};

extern "C" const char *kv_evict_policy_name(uint32_t policy) noexcept {
    return policy <= KV_EVICT_MAX ? kPolicyNames[policy] : nullptr;
}

extern "C" int kv_evict_policy_parse(const char *name) noexcept {
    if (!name) return -EINVAL;
    for (uint32_t i = 0; i <= KV_EVICT_MAX; i++)
        if (strcmp(name, kPolicyNames[i]) == 0) return int(i);
    return -EINVAL;
}
