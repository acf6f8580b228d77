// SPDX-License-Identifier: MIT
//
// The data path (put, reserve/commit/abort, get/release, contains, remove,
// match_prefix) and the entry life cycle it drives:
//
//   FREE(g) --claim--> RESERVED(g, owner) --commit--> COMMITTED(g)
//   RESERVED --abort--> DEAD(g);  COMMITTED --remove/evict--> DEAD(g)
//   DEAD --unlinked--> UNLINKED(g) --pins reach 0--> FREEING(g, owner) --> FREE(g+1)
//
// Every transition is one 16-byte CAS on (ctl, aux). Who may make each one:
// the owner for RESERVED->COMMITTED; anyone for COMMITTED->DEAD (remove,
// eviction: the CAS requires pins == 0 for eviction); whoever unlinks for
// DEAD->UNLINKED (index.cc); whoever sees UNLINKED with no pins for
// ->FREEING (exactly one CAS wins); the FREEING owner (or the reaper, if it
// died) for ->FREE. uapi/PROTOCOL.md lists what each crash point leaves.
//
// Memory orders: C1 (commit, cmpxchg16b: full barrier) publishes the data,
// checksum and metadata; readers load ctl with acquire (G1) before reading
// them. Key fields are written after the claim CAS behind a release fence
// (K1) and read before the pin CAS behind an acquire fence (K2): if a reader
// saw a key written after a recycle, its pin CAS must see the new generation
// and fail, so a pin never lands on a key it did not match.
#include "detail.h"

#define XXH_STATIC_LINKING_ONLY // XXH3_state_t on the stack
#include <xxhash.h>

namespace kv::detail {

namespace {

constexpr uint64_t kNoBlock = UINT64_MAX;
constexpr int kAllocAttempts = 64;

uint32_t entry_claim(kv_pool *p, uint32_t budget) {
    const uint32_t n = p->hdr->n_entries;
    uint32_t i = p->entry_cursor.load(std::memory_order_relaxed) % n;
    for (uint32_t k = 0; k < budget && k < n; k++, i = i + 1 == n ? 0 : i + 1) {
        kv_entry &en = p->entries[i];
        uint64_t c = load(en.ctl, std::memory_order_relaxed);
        if (Ctl::state(c) != KV_ENTRY_FREE) continue;
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (!cas16(&en.ctl, {c, x}, {Ctl::make(Ctl::gen(c), KV_ENTRY_RESERVED, 0), Aux::owner(p->client)}))
            continue;
        std::atomic_thread_fence(std::memory_order_release); // K1
        p->entry_cursor.store(i + 1, std::memory_order_relaxed);
        return i;
    }
    p->entry_cursor.store(i, std::memory_order_relaxed);
    return KV_NIL32;
}

// Release a RESERVED entry we claimed but never linked or gave a block.
void entry_unclaim(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    uint64_t c = load(en.ctl, std::memory_order_relaxed);
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    cas16(&en.ctl, {c, x}, {Ctl::make(Ctl::gen(c) + 1, KV_ENTRY_FREE, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)});
}

// Check (after a find) that e is committed with this key; returns its ctl or 0.
uint64_t committed_ctl(kv_pool *p, uint32_t e, uint32_t ns, const kv_key &k) {
    kv_entry &en = p->entries[e];
    uint64_t c = load(en.ctl, std::memory_order_acquire); // G1
    if (Ctl::state(c) != KV_ENTRY_COMMITTED) return 0;
    if (!entry_key_is(en, ns, k)) return 0; // recycled since the find
    std::atomic_thread_fence(std::memory_order_acquire); // K2
    return c;
}

void fill_view(kv_pool *p, uint32_t e, uint32_t gen, uint32_t slot, kv_view *v) {
    kv_entry &en = p->entries[e];
    uint32_t cls = load(en.class_id, std::memory_order_relaxed);
    v->data = block_data(p, load(en.block, std::memory_order_relaxed), cls);
    v->length = load(en.length, std::memory_order_relaxed);
    v->checksum = load(en.checksum, std::memory_order_relaxed);
    v->meta.tokens = load(en.tokens, std::memory_order_relaxed);
    v->meta.priority = load(en.priority, std::memory_order_relaxed);
    v->meta.user_tag = load(en.user_tag, std::memory_order_relaxed);
    uint32_t seq = PinB::seq(load(p->journal[slot].b, std::memory_order_relaxed));
    v->handle[0] = (uint64_t(seq) << 32) | slot;
    v->handle[1] = PinA::make(e, gen);
    // CLOCK reference bit; written only when clear so hot blocks stay shared in caches.
    if (load(en.clock, std::memory_order_relaxed) == 0) store(en.clock, 1U, std::memory_order_relaxed);
}

int get_one(kv_pool *p, uint32_t ns, const kv_key &k, kv_view *out) {
    for (;;) {
        Found f = index_find(p, ns, k);
        if (!f.found) return -ENOENT;
        uint64_t c = committed_ctl(p, f.cur, ns, k);
        if (!c) return -ENOENT;
        uint32_t slot;
        int rc = pin_entry(p, f.cur, Ctl::gen(c), &slot);
        if (rc == -ENOENT) continue; // removed or recycled between find and pin: look again
        if (rc) return rc;
        fill_view(p, f.cur, Ctl::gen(c), slot, out);
        return 0;
    }
}

// Allocate a block of class cls, evicting when the pool is full.
uint64_t alloc_with_eviction(kv_pool *p, uint32_t cls) {
    for (int attempt = 0; attempt < kAllocAttempts; attempt++) {
        uint64_t id = block_alloc(p, cls, attempt > 0);
        if (id != kNoBlock) return id;
        if (!evict_for_class(p, cls)) {
            id = block_alloc(p, cls, true);
            return id;
        }
    }
    return kNoBlock;
}

uint32_t claim_with_eviction(kv_pool *p) {
    for (int attempt = 0; attempt < kAllocAttempts; attempt++) {
        uint32_t e = entry_claim(p, attempt == 0 ? 4096 : p->hdr->n_entries);
        if (e != KV_NIL32) return e;
        if (!evict_any(p)) return entry_claim(p, p->hdr->n_entries);
    }
    return KV_NIL32;
}

int check_ns(kv_pool *p, uint32_t ns) { return ns_valid(p, ns) ? 0 : -ENOENT; }

// Reserve: returns 0 (out filled), KV_DEDUP, or -errno.
int reserve_impl(kv_pool *p, uint32_t ns, const kv_key &k, uint64_t len, const kv_meta *meta, uint32_t *e_out,
                 uint32_t *gen_out) {
    if (int rc = check_ns(p, ns)) return rc;
    uint32_t cls = class_for(p, len);
    if (cls == KV_NIL32) return -EMSGSIZE;
    // Cheap dedup before allocating anything: most puts of a shared prefix
    // find the block already there.
    Found f = index_find(p, ns, k);
    if (f.found) {
        uint64_t c = load(p->entries[f.cur].ctl, std::memory_order_acquire);
        if (Ctl::state(c) == KV_ENTRY_COMMITTED && entry_key_is(p->entries[f.cur], ns, k)) {
            bump(my_stats(p).dedups);
            return KV_DEDUP;
        }
        if (Ctl::state(c) == KV_ENTRY_RESERVED && entry_key_is(p->entries[f.cur], ns, k)) return -EBUSY;
    }
    uint32_t e = claim_with_eviction(p);
    if (e == KV_NIL32) return -ENOSPC;
    kv_entry &en = p->entries[e];
    uint32_t gen = Ctl::gen(load(en.ctl, std::memory_order_relaxed));
    store(en.key_lo, k.lo, std::memory_order_relaxed);
    store(en.key_hi, k.hi, std::memory_order_relaxed);
    store(en.ns_id, ns, std::memory_order_relaxed);
    store(en.class_id, cls, std::memory_order_relaxed);
    store(en.length, len, std::memory_order_relaxed);
    store(en.block, kNoBlock, std::memory_order_relaxed);
    store(en.tokens, meta ? meta->tokens : 0U, std::memory_order_relaxed);
    store(en.priority, meta ? meta->priority : 0U, std::memory_order_relaxed);
    store(en.user_tag, meta ? meta->user_tag : uint64_t(0), std::memory_order_relaxed);
    store(en.clock, 0U, std::memory_order_relaxed);
    store(en.checksum, uint64_t(0), std::memory_order_relaxed);

    uint64_t b = alloc_with_eviction(p, cls);
    if (b == kNoBlock) {
        entry_unclaim(p, e);
        return -ENOSPC;
    }
    // The entry names its block before the block names the entry: a crash
    // between leaves OWNED(us), which the reaper frees (entry_finish_free
    // only frees a block word that says ENTRY(e)).
    store(en.block, b, std::memory_order_relaxed);
    uint64_t w = load(p->blocks[b], std::memory_order_relaxed);
    cas(p->blocks[b], w, Blk::next(w, e, KV_BLOCK_ENTRY), std::memory_order_acq_rel);

    uint32_t holder = index_insert(p, e);
    if (holder != KV_NIL32) {
        // Lost a race for the key. Our entry is unlinked and RESERVED: abort it.
        uint64_t hc = load(p->entries[holder].ctl, std::memory_order_acquire);
        entry_abort(p, e, load(en.ctl, std::memory_order_relaxed), load(en.aux, std::memory_order_relaxed));
        if (Ctl::state(hc) == KV_ENTRY_COMMITTED) {
            bump(my_stats(p).dedups);
            return KV_DEDUP;
        }
        return -EBUSY;
    }
    *e_out = e;
    *gen_out = gen;
    return 0;
}

int commit_impl(kv_pool *p, uint32_t e, uint32_t gen, bool have_sum, uint64_t sum) {
    if (e >= p->hdr->n_entries) return -EINVAL;
    kv_entry &en = p->entries[e];
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_RESERVED || x != Aux::owner(p->client)) return -EINVAL;
    uint64_t len = load(en.length, std::memory_order_relaxed);
    if (!have_sum) sum = XXH3_64bits(block_data(p, load(en.block, std::memory_order_relaxed), en.class_id), len);
    store(en.checksum, sum, std::memory_order_relaxed);
    store(en.commit_ns, now_ns(), std::memory_order_relaxed);
    // C1: publish (full barrier).
    if (!cas16(&en.ctl, {c, x}, {Ctl::make(gen, KV_ENTRY_COMMITTED, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)}))
        return -EINVAL;
    kv_client_stats &st = my_stats(p);
    bump(st.puts);
    bump(st.bytes_committed, len);
    return 0;
}

// Copy with the checksum computed on the way: hashing a chunk pulls it into
// cache, so the copy reads it from cache and the data crosses memory once.
uint64_t copy_and_hash(void *dst, const void *src, uint64_t len) {
    constexpr uint64_t kChunk = 64 << 10;
    if (len <= kChunk) {
        memcpy(dst, src, len);
        return XXH3_64bits(dst, len);
    }
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    auto *d = static_cast<uint8_t *>(dst);
    auto *s = static_cast<const uint8_t *>(src);
    for (uint64_t off = 0; off < len; off += kChunk) {
        uint64_t n = len - off < kChunk ? len - off : kChunk;
        XXH3_64bits_update(&st, s + off, n);
        memcpy(d + off, s + off, n);
    }
    return XXH3_64bits_digest(&st);
}

} // namespace

// ---- Entry life cycle (shared with index.cc, evict.cc, reap.cc) ----------------

void entry_finish_free(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    if (Ctl::state(c) != KV_ENTRY_FREEING) return;
    uint64_t b = load(en.block, std::memory_order_relaxed);
    uint64_t len = load(en.length, std::memory_order_relaxed);
    if (b < uint64_t(p->hdr->n_slabs) * p->hdr->blocks_per_slab) {
        uint64_t w = load(p->blocks[b], std::memory_order_acquire);
        if (Blk::state(w) == KV_BLOCK_ENTRY && Blk::owner(w) == e && block_free(p, b, w))
            bump(my_stats(p).bytes_freed, len);
    }
    store(en.clock, 0U, std::memory_order_relaxed);
    // F: FREE with the next generation; release pairs with the claim CAS.
    cas16(&en.ctl, {c, x}, {Ctl::make(Ctl::gen(c) + 1, KV_ENTRY_FREE, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)});
}

void entry_maybe_free(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    for (;;) {
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::state(c) != KV_ENTRY_UNLINKED || Ctl::pins(c) != 0) return;
        help_pending(p, x); // aux is about to be overwritten
        if (cas16(&en.ctl, {c, x}, {Ctl::make(Ctl::gen(c), KV_ENTRY_FREEING, 0), Aux::owner(p->client)})) {
            entry_finish_free(p, e);
            return;
        }
    }
}

bool entry_kill(kv_pool *p, uint32_t e, uint32_t gen, bool require_unpinned) {
    kv_entry &en = p->entries[e];
    for (;;) {
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        uint64_t x = load(en.aux, std::memory_order_relaxed);
        if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_COMMITTED) return false;
        if (require_unpinned && Ctl::pins(c) != 0) return false;
        // Pins and aux stay: pinned views remain valid, the journal protocol
        // keeps working on a DEAD entry.
        if (cas16(&en.ctl, {c, x}, {Ctl::make(gen, KV_ENTRY_DEAD, Ctl::pins(c)), x})) break;
    }
    index_remove(p, e, gen);
    return true;
}

void entry_abort(kv_pool *p, uint32_t e, uint64_t c, uint64_t x) {
    kv_entry &en = p->entries[e];
    if (Ctl::state(c) != KV_ENTRY_RESERVED) return;
    if (!cas16(&en.ctl, {c, x}, {Ctl::make(Ctl::gen(c), KV_ENTRY_DEAD, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)}))
        return;
    index_remove(p, e, Ctl::gen(c)); // linked or not, it ends UNLINKED and is freed
}

} // namespace kv::detail

using namespace kv::detail;

extern "C" {

int kv_reserve(kv_pool *p, uint32_t ns, const kv_key *key, uint64_t len, const kv_meta *meta,
               kv_reservation *out) noexcept {
    if (!p || !key || !out) return -EINVAL;
    uint32_t e, gen;
    int rc = reserve_impl(p, ns, *key, len, meta, &e, &gen);
    if (rc) return rc;
    kv_entry &en = p->entries[e];
    out->data = block_data(p, load(en.block, std::memory_order_relaxed), en.class_id);
    out->length = len;
    out->handle[0] = PinA::make(e, gen);
    out->handle[1] = p->client;
    return 0;
}

int kv_commit(kv_pool *p, kv_reservation *r, uint32_t flags, uint64_t checksum) noexcept {
    if (!p || !r || (flags & ~KV_COMMIT_F_CHECKSUM) || r->handle[1] != p->client) return -EINVAL;
    return commit_impl(p, PinA::entry(r->handle[0]), PinA::gen(r->handle[0]), flags & KV_COMMIT_F_CHECKSUM,
                       checksum);
}

int kv_abort(kv_pool *p, kv_reservation *r) noexcept {
    if (!p || !r || r->handle[1] != p->client) return -EINVAL;
    uint32_t e = PinA::entry(r->handle[0]), gen = PinA::gen(r->handle[0]);
    if (e >= p->hdr->n_entries) return -EINVAL;
    kv_entry &en = p->entries[e];
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_RESERVED || x != Aux::owner(p->client)) return -EINVAL;
    entry_abort(p, e, c, x);
    return 0;
}

int kv_put(kv_pool *p, uint32_t ns, const kv_key *key, const void *data, uint64_t len,
           const kv_meta *meta) noexcept {
    if (!p || !key || (!data && len)) return -EINVAL;
    uint32_t e, gen;
    int rc = reserve_impl(p, ns, *key, len, meta, &e, &gen);
    if (rc) return rc;
    kv_entry &en = p->entries[e];
    uint64_t sum = copy_and_hash(block_data(p, load(en.block, std::memory_order_relaxed), en.class_id), data, len);
    return commit_impl(p, e, gen, true, sum);
}

int kv_get(kv_pool *p, uint32_t ns, const kv_key *key, kv_view *out) noexcept {
    if (!p || !key || !out) return -EINVAL;
    kv_client_stats &st = my_stats(p);
    int rc = get_one(p, ns, *key, out);
    bump(rc == 0 ? st.hits : st.misses);
    return rc;
}

int kv_release(kv_pool *p, kv_view *v) noexcept {
    if (!p || !v) return -EINVAL;
    uint32_t slot = uint32_t(v->handle[0]), seq = uint32_t(v->handle[0] >> 32);
    if (slot >= p->hdr->pins_per_client) return -EINVAL;
    kv_pin_slot &js = p->journal[slot];
    uint64_t b = load(js.b, std::memory_order_acquire);
    if (PinB::phase(b) != KV_PIN_HELD || PinB::seq(b) != seq ||
        load(js.a, std::memory_order_relaxed) != v->handle[1])
        return -EINVAL; // not a live pin of this client (double release, foreign view)
    int rc = unpin_slot(p, p->client, slot);
    if (rc == 0 || rc == -EBADMSG) p->free_slots->push(slot);
    v->handle[0] = v->handle[1] = UINT64_MAX;
    return rc;
}

int kv_contains(kv_pool *p, uint32_t ns, const kv_key *key) noexcept {
    if (!p || !key) return -EINVAL;
    Found f = index_find(p, ns, *key);
    return f.found && committed_ctl(p, f.cur, ns, *key) ? 1 : 0;
}

int kv_remove(kv_pool *p, uint32_t ns, const kv_key *key) noexcept {
    if (!p || !key) return -EINVAL;
    for (;;) {
        Found f = index_find(p, ns, *key);
        if (!f.found) return -ENOENT;
        kv_entry &en = p->entries[f.cur];
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        if (!entry_key_is(en, ns, *key)) continue;
        switch (Ctl::state(c)) {
        case KV_ENTRY_RESERVED: return -EBUSY;
        case KV_ENTRY_COMMITTED:
            if (entry_kill(p, f.cur, Ctl::gen(c), false)) {
                bump(my_stats(p).removes);
                return 0;
            }
            continue; // changed under us
        default: return -ENOENT; // already being removed
        }
    }
}

int kv_match_prefix(kv_pool *p, uint32_t ns, const kv_key *keys, size_t n, uint32_t flags,
                    kv_view *views) noexcept {
    if (!p || (n && !keys) || (flags & ~KV_MATCH_F_PIN) || ((flags & KV_MATCH_F_PIN) && n && !views))
        return -EINVAL;
    if (n > INT32_MAX) n = INT32_MAX;
    size_t m = 0;
    for (; m < n; m++) {
        // The bucket of a key a few steps ahead is almost always a cache
        // miss; start loading it now.
        if (m + 4 < n) __builtin_prefetch(&p->buckets[bucket_of(p, ns, keys[m + 4])]);
        if (flags & KV_MATCH_F_PIN) {
            int rc = get_one(p, ns, keys[m], &views[m]);
            if (rc == -ENOENT) break;
            if (rc < 0) {
                for (size_t i = 0; i < m; i++) kv_release(p, &views[i]);
                return rc;
            }
        } else {
            Found f = index_find(p, ns, keys[m]);
            if (!f.found || !committed_ctl(p, f.cur, ns, keys[m])) break;
        }
    }
    kv_client_stats &st = my_stats(p);
    bump(st.hits, m);
    if (m < n) bump(st.misses);
    return int(m);
}

int kv_view_verify(const kv_view *v) noexcept {
    if (!v || !v->data) return -EINVAL;
    return XXH3_64bits(v->data, v->length) == v->checksum ? 0 : -EBADMSG;
}

} // extern "C"
