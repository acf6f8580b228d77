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
// Memory orders (labels STO-*, listed in PROTOCOL.md's ledger): the commit
// STO-X1 (cmpxchg16b: a full barrier; called C1 elsewhere) publishes the
// data, checksum and metadata; readers load ctl with acquire (STO-A1 and
// the others that name STO-X1) before reading them. Key fields are written
// after the claim CAS behind a release fence (ROOM-R1, room.cc; called K1
// elsewhere) and read before the pin CAS behind an acquire fence (STO-A2,
// STO-A4, STO-A6; K2): if a reader saw a key written after a recycle, its
// pin CAS must see the new generation and fail, so a pin never lands on a
// key it did not match. Every 16-byte CAS on (ctl, aux) is a full barrier
// (seq_cst); each is labelled with what it publishes. Fields of a
// committed entry are read relaxed after an acquire of its ctl: they are
// immutable until the entry is freed, which a pin or the generation in the
// next CAS rules out.
#include "detail.h"
#include "feed.h"

#include <algorithm>

namespace kv::detail {

namespace {

constexpr uint64_t kNoBlock = UINT64_MAX;

// Check (after a find) that e is committed with this key; returns its ctl or 0.
uint64_t committed_ctl(kv_pool *p, uint32_t e, uint32_t ns, const kv_key &k) {
    kv_entry &en = p->entries[e];
    // STO-A1 (G1): pairs with the commit STO-X1; its fields are then visible.
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    if (Ctl::state(c) != KV_ENTRY_COMMITTED) return 0;
    if (!entry_key_is(en, ns, k)) return 0; // recycled since the find
    // STO-A2 (K2): pairs with ROOM-R1 (room.cc, the claim's fence): a key
    // of a later life read above makes the pin CAS see its generation.
    std::atomic_thread_fence(std::memory_order_acquire);
    // An expired block is not found (it is evicted first, and a put of its
    // key replaces it). If e was recycled meanwhile, the pin CAS fails.
    if (load(en.ttl_ms, std::memory_order_relaxed) && entry_expired(en, now_ns())) return 0;
    return c;
}

void fill_view(kv_pool *p, uint32_t e, uint32_t gen, uint32_t slot, kv_view *v,
               bool touch_rank = true) {
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
    if (touch_rank) touch(p, en); // pinned: e cannot be recycled under the stamp
}

// A committed entry's class, block and length name bytes inside the data
// section. They are immutable once committed, but live in memory every
// client can write: a stray write (or a hostile process) must not turn a
// get into a view of memory outside the region (fuzz/fuzz_region checks it).
bool entry_extent_ok(const kv_pool *p, const kv_entry &en) {
    const uint32_t cls = load(en.class_id, std::memory_order_relaxed);
    if (cls >= p->hdr->n_classes) return false;
    const uint64_t slab = p->hdr->slab_size, bs = p->classes[cls].block_size;
    const uint64_t id = load(en.block, std::memory_order_relaxed);
    if (bs == 0 || bs > slab || id / p->hdr->blocks_per_slab >= p->hdr->n_slabs) return false;
    if (id % p->hdr->blocks_per_slab >= slab / bs) return false;
    return load(en.length, std::memory_order_relaxed) <= bs;
}

int get_one(kv_pool *p, uint32_t ns, const kv_key &k, kv_view *out, bool touch_rank) {
    for (;;) {
        Found f = index_find(p, ns, k);
        if (!f.found) return -ENOENT;
        uint64_t c = committed_ctl(p, f.cur, ns, k);
        if (!c) return -ENOENT;
        uint32_t slot;
        int rc = pin_entry(p, f.cur, Ctl::gen(c), &slot);
        if (rc == -ENOENT) continue; // removed or recycled between find and pin: look again
        if (rc) return rc;
        // Checked once pinned: the entry can no longer be recycled, so these
        // are the committed fields, not a new reservation's.
        if (!entry_extent_ok(p, p->entries[f.cur])) { // damaged: a miss, never a bad view
            const int urc = unpin_slot(p, p->client, slot);
            if (urc == 0 || urc == -EBADMSG) p->free_slots->push(slot); // as kv_release
            return -ENOENT;
        }
        fill_view(p, f.cur, Ctl::gen(c), slot, out, touch_rank);
        return 0;
    }
}

int check_ns(kv_pool *p, uint32_t ns) {
    return ns_valid(p, ns) ? 0 : -ENOENT;
}

// The key is already present: KV_DEDUP (committed) or -EBUSY (being
// written); 0 if it is not.
int find_holder(kv_pool *p, uint32_t ns, const kv_key &k) {
    Found f = index_find(p, ns, k);
    if (!f.found) return 0;
    // STO-A3: pairs with the commit STO-X1 (and the claim ROOM-X1, for a
    // RESERVED holder).
    uint64_t c = load(p->entries[f.cur].ctl, std::memory_order_acquire);
    if (Ctl::state(c) == KV_ENTRY_COMMITTED && entry_key_is(p->entries[f.cur], ns, k)) {
        // STO-A4 (K2): pairs with ROOM-R1, as STO-A2.
        std::atomic_thread_fence(std::memory_order_acquire);
        if (entry_expired(p->entries[f.cur], now_ns())) return 0; // the insert replaces it
        bump(my_stats(p).dedups);
        return KV_DEDUP;
    }
    if (Ctl::state(c) == KV_ENTRY_RESERVED && entry_key_is(p->entries[f.cur], ns, k)) return -EBUSY;
    return 0;
}

// What a put or a reservation asks for: the arguments of kv_put_ex and
// kv_reserve_ex (meta and parent may be null).
struct PutRequest {
    uint32_t ns;
    const kv_key &key;
    uint64_t len;
    const kv_meta *meta;
    const kv_key *parent;
    uint32_t ttl_ms;
};

// A RESERVED entry of ours, linked under its key, with its block.
struct Reserved {
    uint32_t entry;
    uint32_t gen;
};

// Write the fields of entry e (RESERVED by us, not yet linked) for rq;
// returns its generation. The commit (STO-X1) publishes them.
uint32_t entry_init(kv_pool *p, uint32_t e, const PutRequest &rq, uint32_t cls) {
    kv_entry &en = p->entries[e];
    // Relaxed: only this client writes a RESERVED(us) entry, and readers
    // read its fields only after the commit (or, for the key, behind the
    // claim's fence ROOM-R1).
    const uint32_t gen = Ctl::gen(load(en.ctl, std::memory_order_relaxed));
    const kv_meta *meta = rq.meta;
    store(en.key_lo, rq.key.lo, std::memory_order_relaxed);
    store(en.key_hi, rq.key.hi, std::memory_order_relaxed);
    store(en.ns_id, rq.ns, std::memory_order_relaxed);
    store(en.class_id, cls, std::memory_order_relaxed);
    store(en.length, rq.len, std::memory_order_relaxed);
    store(en.block, kNoBlock, std::memory_order_relaxed);
    store(en.tokens, meta ? meta->tokens : 0U, std::memory_order_relaxed);
    store(en.priority, meta ? meta->priority : 0U, std::memory_order_relaxed);
    store(en.user_tag, meta ? meta->user_tag : uint64_t(0), std::memory_order_relaxed);
    store(en.clock, 0U, std::memory_order_relaxed);
    store(en.checksum, uint64_t(0), std::memory_order_relaxed);
    // v1.1 eviction fields.
    store(en.rank, initial_rank(p), std::memory_order_relaxed);
    store(en.parent, ParentRef::none(), std::memory_order_relaxed);
    store(en.kids, Kids::make(gen, 0), std::memory_order_relaxed);
    store(en.ttl_ms, rq.ttl_ms, std::memory_order_relaxed);
    return gen;
}

// Make block b (OWNED by us) entry e's: returns the block word that says
// ENTRY(e). The entry names its block before the block names the entry: a
// crash between leaves OWNED(us), which the reaper frees (entry_finish_free
// only frees a block word that says ENTRY(e)).
uint64_t entry_take_block(kv_pool *p, uint32_t e, uint64_t b) {
    store(p->entries[e].block, b, std::memory_order_relaxed); // published by the commit
    // Relaxed: only the owner changes an OWNED(us) word; the CAS checks.
    uint64_t w = load(p->blocks[b], std::memory_order_relaxed);
    const uint64_t mine = Blk::next(w, e, KV_BLOCK_ENTRY);
    // STO-X2: OWNED(us) -> ENTRY(e). Release: a process that reads ENTRY(e)
    // with acquire (STO-A11, entry_finish_free; the allocator's and the
    // reaper's block-word loads) sees e.block first. Acquire: orders it
    // after the claim of the block (allocator.cc).
    cas(p->blocks[b], w, mine, std::memory_order_acq_rel);
    return mine;
}

// Link e under its key. A committed holder of the key that has expired is
// removed (as kv_remove would) and the insert retried: a put replaces an
// expired block. Returns KV_NIL32 once linked, else the holder.
uint32_t entry_insert(kv_pool *p, uint32_t e, uint32_t ns, const kv_key &k) {
    uint32_t holder = index_insert(p, e);
    for (int tries = 0; holder != KV_NIL32 && tries < 4; tries++) {
        kv_entry &he = p->entries[holder];
        // STO-A5: the holder's commit (STO-X1) published its key and TTL.
        uint64_t hc = load(he.ctl, std::memory_order_acquire);
        if (Ctl::state(hc) != KV_ENTRY_COMMITTED || !entry_key_is(he, ns, k)) break;
        // STO-A6 (K2): the key read above is of the life whose generation
        // the kill's CAS names; pairs with ROOM-R1.
        std::atomic_thread_fence(std::memory_order_acquire);
        if (!entry_expired(he, now_ns())) break;
        if (entry_kill(p, holder, Ctl::gen(hc), false, KV_FEED_EXPIRE)) bump(my_stats(p).removes);
        holder = index_insert(p, e);
    }
    return holder;
}

// Reserve: returns 0 (*out filled), KV_DEDUP, or -errno.
//
// The entry and the block come from this process's RoomFinder (room.h).
// The key is looked up once, by the insert, after both are claimed: on a
// fresh key (the common case once an engine has matched its prefix) that
// saves a traversal, and the bucket miss overlaps the claims. A key that
// turns out to be present costs a claim and a release, unless claiming
// would evict: then the key is looked up first, so a duplicate put never
// evicts anything.
int reserve_impl(kv_pool *p, const PutRequest &rq, Reserved *out) {
    // The bucket head is as likely as not in another process's cache (the
    // last one that touched it): start that miss now, so that it overlaps
    // the entry and block claims below instead of following them.
    prefetch_w(&p->buckets[bucket_of(p, rq.ns, rq.key)]);
    if (int rc = check_ns(p, rq.ns)) return rc;
    const uint32_t cls = class_for(p, rq.len);
    if (cls == KV_NIL32) return -EMSGSIZE;

    RoomFinder::Search room(p, cls);
    uint32_t e = room.entry();
    if (e == KV_NIL32) { // the table is full
        if (int rc = find_holder(p, rq.ns, rq.key)) return rc;
        e = room.entry_by_eviction();
        if (e == KV_NIL32) return -ENOSPC;
    }
    const uint32_t gen = entry_init(p, e, rq, cls);
    uint64_t b = room.block();
    if (b == kNoBlock) { // the data area is full
        int rc = find_holder(p, rq.ns, rq.key);
        if (rc == 0 && (b = room.block_by_eviction()) == kNoBlock) rc = -ENOSPC;
        if (rc) {
            room.give_back_entry(e);
            return rc;
        }
    }
    const uint64_t mine = entry_take_block(p, e, b);

    if (const uint32_t holder = entry_insert(p, e, rq.ns, rq.key); holder != KV_NIL32) {
        // The key is there. Our entry was never linked, so nobody can reach
        // it: give the block and the entry back.
        // STO-A7: the holder's state, published by its commit (STO-X1).
        const uint64_t hc = load(p->entries[holder].ctl, std::memory_order_acquire);
        room.give_back(e, b, mine);
        if (Ctl::state(hc) == KV_ENTRY_COMMITTED) {
            bump(my_stats(p).dedups);
            return KV_DEDUP;
        }
        return -EBUSY;
    }
    if (rq.parent) entry_link_parent(p, e, rq.ns, *rq.parent);
    *out = {e, gen};
    return 0;
}

// What a commit records in the change feed beyond the entry's own fields.
struct CommitFeed {
    const kv_key *parent = nullptr; // the put's parent (reservations: from the entry)
    const uint32_t *ids = nullptr;
    uint32_t n_ids = 0;
};

int commit_impl(kv_pool *p, uint32_t e, uint32_t gen, bool have_sum, uint64_t sum,
                const CommitFeed &cf = {}) {
    if (e >= p->hdr->n_entries) return -EINVAL;
    kv_entry &en = p->entries[e];
    // STO-A8: pairs with the claim ROOM-X1, which another thread of this
    // client may have made (a reservation handed between threads). aux is
    // read relaxed: the CAS below checks the pair.
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_RESERVED || x != Aux::owner(p->client))
        return -EINVAL;
    uint64_t len = load(en.length, std::memory_order_relaxed); // the owner's own write
    if (!have_sum)
        sum = copy_hash(nullptr,
                        block_data(p, load(en.block, std::memory_order_relaxed), en.class_id), len);
    store(en.checksum, sum, std::memory_order_relaxed);
    const uint64_t commit_ns = now_ns();
    store(en.commit_ns, commit_ns, std::memory_order_relaxed);
    FeedRec fr;
    kv_key parent_key;
    if (feed_on(p)) {
        // Our own reservation's fields (relaxed: only we wrote them).
        fr = feed_rec_of(en, KV_FEED_COMMIT, e, gen, commit_ns);
        fr.ids = cf.ids;
        fr.n_ids = cf.n_ids;
        fr.parent = cf.parent;
        if (!fr.parent && feed_parent_key(p, en, &parent_key)) fr.parent = &parent_key;
    }
    const uint32_t rec = acct_begin(p, e, gen, len, false);
    acct_crash_point(AcctPoint::CommitWrittenDown);
    // Feed P1: after STO-A8 (the state the CAS expects), before the CAS.
    const uint64_t ticket = feed_claim(p);
    feed_crash_point(FeedPoint::Claimed);
    // STO-X1 (C1): RESERVED(gen, us) -> COMMITTED(gen), a full barrier:
    // publishes the data, checksum, metadata and key to every acquire of
    // ctl that sees COMMITTED (STO-A1, A3, A5, A7, A9, A13, A16; index.cc,
    // evict.cc, inspect.cc, the snapshot writer, and feed.cc's FEED-A6 and
    // FEED-A8). The feed's producer load FEED-X1 follows it (P6).
    const bool committed = cas16(
        &en.ctl, {c, x}, {Ctl::make(gen, KV_ENTRY_COMMITTED, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)});
    acct_crash_point(AcctPoint::CommitDone);
    feed_crash_point(FeedPoint::Changed);
    feed_publish(p, ticket, fr, committed);
    acct_end(p, rec, committed);
    if (!committed) return -EINVAL;
    kv_client_stats &st = my_stats(p);
    bump(st.puts);
    bump(st.bytes_committed, len);
    return 0;
}

} // namespace

// ---- Entry life cycle (shared with index.cc, evict.cc, reap.cc) ----------------

// ---- Chain links for prefix-aware eviction (PROTOCOL.md section 10) ------------
//
// A child counts itself in its parent's kids word once, at reserve, and
// uncounts itself once, when it is freed. Both are CASes on kids that carry
// the parent's generation (low 16 bits) in the same word, so they fail on a
// recycled parent instead of counting into its next life. Relaxed: kids is
// an eviction hint that orders nothing else. The uncount first swaps the
// child's parent word to NIL (CAS): of a FREEING entry's owner and a reaper
// that both finish its free, only one uncounts. A process dying between
// count and record (or swap and uncount) leaves a parent counting one child
// too many: it is evicted after its tails instead of among them, until it
// is freed. kids only ever says "not a tail"; it never protects a block.
void entry_link_parent(kv_pool *p, uint32_t e, uint32_t ns, const kv_key &parent) {
    Found f = index_find(p, ns, parent);
    if (!f.found || f.cur == e) return;
    kv_entry &pe = p->entries[f.cur];
    // STO-A9: pairs with the parent's commit STO-X1, which published its
    // kids reset to (gen, 0).
    uint64_t c = load(pe.ctl, std::memory_order_acquire);
    if (Ctl::state(c) != KV_ENTRY_COMMITTED || !entry_key_is(pe, ns, parent)) return;
    uint32_t pg = Ctl::gen(c);
    uint32_t w = load(pe.kids, std::memory_order_relaxed);
    do {
        if (Kids::gen16(w) != (pg & 0xffff) || Kids::count(w) == Kids::kMax) return;
    } while (!cas(pe.kids, w, Kids::make(pg, Kids::count(w) + 1), std::memory_order_relaxed));
    store(p->entries[e].parent, ParentRef::make(f.cur, pg), std::memory_order_relaxed);
}

void entry_unlink_parent(kv_pool *p, kv_entry &en) {
    uint64_t r = load(en.parent, std::memory_order_relaxed);
    if (ParentRef::idx(r) >= p->hdr->n_entries)
        return; // none (KV_NIL32), or garbage in a damaged region
    if (!cas(en.parent, r, ParentRef::none(), std::memory_order_relaxed))
        return; // another finisher has it
    kv_entry &pe = p->entries[ParentRef::idx(r)];
    uint32_t w = load(pe.kids, std::memory_order_relaxed);
    do {
        if (Kids::gen16(w) != (ParentRef::gen(r) & 0xffff) || Kids::count(w) == 0 ||
            Kids::count(w) == Kids::kMax)
            return; // parent recycled, or saturated (a saturated count stays)
    } while (!cas(pe.kids, w, Kids::make(ParentRef::gen(r), Kids::count(w) - 1),
                  std::memory_order_relaxed));
}

void entry_finish_free(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    // STO-A10: pairs with the FREEING claim (STO-X5, or the reaper's in
    // reap.cc) and so with every write of the life being freed.
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    uint64_t x = load(en.aux, std::memory_order_relaxed); // checked by the CAS below
    if (Ctl::state(c) != KV_ENTRY_FREEING) return;
    uint64_t b = load(en.block, std::memory_order_relaxed);
    uint64_t len = load(en.length, std::memory_order_relaxed);
    if (b < uint64_t(p->hdr->n_slabs) * p->hdr->blocks_per_slab) {
        // STO-A11: pairs with STO-X2 (the block word naming this entry).
        uint64_t w = load(p->blocks[b], std::memory_order_acquire);
        if (Blk::state(w) == KV_BLOCK_ENTRY && Blk::owner(w) == e) {
            // Secure erase (PROTOCOL.md 14): zero the block while its word
            // still names e, so a crash anywhere in it leaves FREEING with
            // ENTRY(e), and the reaper that finishes this free zeroes it
            // again. Before the accounting record: no record is pending
            // while we zero. Relaxed: class_id was published with the
            // FREEING claim that STO-A10 acquired.
            block_erase(p, b, load(en.class_id, std::memory_order_relaxed));
            const uint32_t rec = acct_begin(p, e, Ctl::gen(c), len, true);
            acct_crash_point(AcctPoint::FreeWrittenDown);
            const bool freed = block_free(p, b, w);
            acct_crash_point(AcctPoint::FreeDone);
            acct_end(p, rec, freed);
            if (freed) bump(my_stats(p).bytes_freed, len);
        }
    }
    store(en.clock, 0U, std::memory_order_relaxed);
    entry_unlink_parent(p, en);
    // STO-X4 (F): FREEING -> FREE with the next generation, a full barrier:
    // the next claim (ROOM-X1) acquires every write of this life.
    cas16(&en.ctl, {c, x},
          {Ctl::make(Ctl::gen(c) + 1, KV_ENTRY_FREE, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)});
}

void entry_maybe_free(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    for (;;) {
        // STO-A12: pairs with the unlink (index.cc) and the last unpin
        // (pin.cc) that made UNLINKED with no pins.
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        uint64_t x = load(en.aux, std::memory_order_relaxed); // checked by the CAS
        if (Ctl::state(c) != KV_ENTRY_UNLINKED || Ctl::pins(c) != 0) return;
        help_pending(p, x); // aux is about to be overwritten
        // STO-X5: UNLINKED(pins 0) -> FREEING(us); exactly one CAS wins, and
        // its finish (STO-A10) follows it.
        if (cas16(&en.ctl, {c, x},
                  {Ctl::make(Ctl::gen(c), KV_ENTRY_FREEING, 0), Aux::owner(p->client)})) {
            entry_finish_free(p, e);
            return;
        }
    }
}

bool entry_kill(kv_pool *p, uint32_t e, uint32_t gen, bool require_unpinned, uint32_t cause) {
    kv_entry &en = p->entries[e];
    for (;;) {
        // STO-A13: pairs with the commit STO-X1 of this generation.
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        uint64_t x = load(en.aux, std::memory_order_relaxed); // checked by the CAS
        if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_COMMITTED) return false;
        if (require_unpinned && Ctl::pins(c) != 0) return false;
        FeedRec fr;
        if (feed_on(p)) {
            // Relaxed: the committed life's fields, published by STO-X1
            // (ordered by STO-A13); the CAS below names gen, so they are
            // used only if they are that life's (STO-A17).
            fr = feed_rec_of(en, cause, e, gen, now_ns());
            // STO-A17: pairs with ROOM-R1 (a new life's fence before its key
            // stores): a key of a later life read above makes the CAS16 see
            // that life's generation and fail.
            std::atomic_thread_fence(std::memory_order_acquire);
        }
        // Feed P1: after STO-A13 (the COMMITTED(gen) the CAS expects).
        const uint64_t ticket = feed_claim(p);
        feed_crash_point(FeedPoint::Claimed);
        // STO-X3: COMMITTED(gen) -> DEAD(gen). Pins and aux stay: pinned
        // views remain valid, the journal protocol keeps working on a DEAD
        // entry. The unlink that follows (index.cc) starts after it. The
        // feed's producer load FEED-X1 follows it (P6), and its resync scan
        // (FEED-A6) sees it or the producer counts a drop.
        const bool killed =
            cas16(&en.ctl, {c, x}, {Ctl::make(gen, KV_ENTRY_DEAD, Ctl::pins(c)), x});
        feed_crash_point(FeedPoint::Changed);
        feed_publish(p, ticket, fr, killed); // a NOP when the CAS failed
        if (killed) break;
    }
    index_remove(p, e, gen);
    return true;
}

void entry_abort(kv_pool *p, uint32_t e, uint64_t c, uint64_t x) {
    kv_entry &en = p->entries[e];
    if (Ctl::state(c) != KV_ENTRY_RESERVED) return;
    // A4 (accounting.cc): a block never committed is freed with length 0,
    // so its free neither counts as freed bytes nor changes live bytes. Only
    // the owner or its reaper writes a RESERVED entry's length.
    store(en.length, uint64_t(0), std::memory_order_relaxed);
    // STO-X6: RESERVED -> DEAD, after the length store above, which the
    // free (STO-A10) then reads.
    if (!cas16(&en.ctl, {c, x},
               {Ctl::make(Ctl::gen(c), KV_ENTRY_DEAD, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)}))
        return;
    index_remove(p, e, Ctl::gen(c)); // linked or not, it ends UNLINKED and is freed
}

int pin_for_snapshot(kv_pool *p, uint32_t ns, const kv_key &k, kv_view *out) {
    if (!p || !out) return -EINVAL;
    return get_one(p, ns, k, out, false);
}

} // namespace kv::detail

using namespace kv::detail;

namespace {

// kv_put_opts, read up to the caller's struct_size (fields past it are zero).
struct PutOpts {
    kv_meta meta{};
    kv_key parent_key{};
    const kv_key *parent = nullptr;
    uint32_t ttl_ms = 0;
    const uint32_t *ids = nullptr; // for the change feed
    uint32_t n_ids = 0;
};
int put_opts(const kv_put_opts *in, PutOpts *out) {
    if (!in) return 0;
    if (in->struct_size < offsetof(kv_put_opts, meta)) return -EINVAL;
    kv_put_opts o{};
    memcpy(&o, in, std::min<size_t>(in->struct_size, sizeof o));
    if ((o.flags & ~KV_PUT_F_PARENT) || (o.n_token_ids && !o.token_ids)) return -EINVAL;
    out->meta = o.meta;
    out->ttl_ms = o.ttl_ms;
    out->ids = o.token_ids;
    out->n_ids = o.n_token_ids;
    if (o.flags & KV_PUT_F_PARENT) {
        out->parent_key = o.parent;
        out->parent = &out->parent_key;
    }
    return 0;
}

// The bodies of kv_put / kv_put_ex and kv_reserve / kv_reserve_ex.
int put_common(kv_pool *p, const PutRequest &rq, const void *data, const uint32_t *ids = nullptr,
               uint32_t n_ids = 0) {
    Reserved r;
    if (int rc = reserve_impl(p, rq, &r)) return rc;
    kv_entry &en = p->entries[r.entry];
    uint8_t *dst = block_data(p, load(en.block, std::memory_order_relaxed), en.class_id);
    feed_prefetch(p); // overlaps the copy
    uint64_t sum = copy_hash(dst, data, rq.len);
    return commit_impl(p, r.entry, r.gen, true, sum, {rq.parent, ids, n_ids});
}

int reserve_common(kv_pool *p, const PutRequest &rq, kv_reservation *out) {
    Reserved r;
    if (int rc = reserve_impl(p, rq, &r)) return rc;
    kv_entry &en = p->entries[r.entry];
    out->data = block_data(p, load(en.block, std::memory_order_relaxed), en.class_id);
    out->length = rq.len;
    out->handle[0] = PinA::make(r.entry, r.gen);
    out->handle[1] = p->client;
    return 0;
}

} // namespace

extern "C" {

int kv_reserve(kv_pool *p, uint32_t ns, const kv_key *key, uint64_t len, const kv_meta *meta,
               kv_reservation *out) noexcept {
    if (!p || !key || !out) return -EINVAL;
    return reserve_common(p, {ns, *key, len, meta, nullptr, 0}, out);
}

int kv_commit(kv_pool *p, kv_reservation *r, uint32_t flags, uint64_t checksum) noexcept {
    if (!p || !r || (flags & ~KV_COMMIT_F_CHECKSUM) || r->handle[1] != p->client) return -EINVAL;
    return commit_impl(p, PinA::entry(r->handle[0]), PinA::gen(r->handle[0]),
                       flags & KV_COMMIT_F_CHECKSUM, checksum);
}

int kv_commit_ex(kv_pool *p, kv_reservation *r, uint32_t flags, uint64_t checksum,
                 const uint32_t *token_ids, uint32_t n) noexcept {
    if (!p || !r || (flags & ~KV_COMMIT_F_CHECKSUM) || r->handle[1] != p->client ||
        (n && !token_ids))
        return -EINVAL;
    return commit_impl(p, PinA::entry(r->handle[0]), PinA::gen(r->handle[0]),
                       flags & KV_COMMIT_F_CHECKSUM, checksum, {nullptr, token_ids, n});
}

int kv_abort(kv_pool *p, kv_reservation *r) noexcept {
    if (!p || !r || r->handle[1] != p->client) return -EINVAL;
    uint32_t e = PinA::entry(r->handle[0]), gen = PinA::gen(r->handle[0]);
    if (e >= p->hdr->n_entries) return -EINVAL;
    kv_entry &en = p->entries[e];
    // STO-A14: pairs with the claim ROOM-X1 (the reservation may come from
    // another thread of this client).
    uint64_t c = load(en.ctl, std::memory_order_acquire);
    uint64_t x = load(en.aux, std::memory_order_relaxed); // checked by entry_abort's CAS
    if (Ctl::gen(c) != gen || Ctl::state(c) != KV_ENTRY_RESERVED || x != Aux::owner(p->client))
        return -EINVAL;
    const uint64_t blk = load(en.block, std::memory_order_relaxed);
    const uint32_t cls = load(en.class_id, std::memory_order_relaxed);
    block_prefetch(p, blk); // freed at the end of the abort
    entry_abort(p, e, c, x);
    p->room.note_remove(p, cls, e, blk); // room made, as by a remove
    return 0;
}

int kv_put(kv_pool *p, uint32_t ns, const kv_key *key, const void *data, uint64_t len,
           const kv_meta *meta) noexcept {
    if (!p || !key || (!data && len)) return -EINVAL;
    return put_common(p, {ns, *key, len, meta, nullptr, 0}, data);
}

int kv_put_ex(kv_pool *p, uint32_t ns, const kv_key *key, const void *data, uint64_t len,
              const kv_put_opts *opts) noexcept {
    if (!p || !key || (!data && len)) return -EINVAL;
    PutOpts o;
    if (int rc = put_opts(opts, &o)) return rc;
    return put_common(p, {ns, *key, len, &o.meta, o.parent, o.ttl_ms}, data, o.ids, o.n_ids);
}

int kv_reserve_ex(kv_pool *p, uint32_t ns, const kv_key *key, uint64_t len, const kv_put_opts *opts,
                  kv_reservation *out) noexcept {
    if (!p || !key || !out) return -EINVAL;
    PutOpts o;
    if (int rc = put_opts(opts, &o)) return rc;
    if (o.n_ids) return -EINVAL; // token ids go to kv_commit_ex
    return reserve_common(p, {ns, *key, len, &o.meta, o.parent, o.ttl_ms}, out);
}

int kv_get(kv_pool *p, uint32_t ns, const kv_key *key, kv_view *out) noexcept {
    if (!p || !key || !out) return -EINVAL;
    kv_client_stats &st = my_stats(p);
    int rc = get_one(p, ns, *key, out, true);
    bump(rc == 0 ? st.hits : st.misses);
    return rc;
}

int kv_release(kv_pool *p, kv_view *v) noexcept {
    if (!p || !v) return -EINVAL;
    uint32_t slot = uint32_t(v->handle[0]), seq = uint32_t(v->handle[0] >> 32);
    if (slot >= p->hdr->pins_per_client) return -EINVAL;
    kv_pin_slot &js = p->journal[slot];
    // STO-A15: pairs with the pin's release store of HELD (pin.cc, P1), so
    // the a word read next is the one the pin wrote before it.
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
        // STO-A16: pairs with the commit STO-X1 (or the claim ROOM-X1).
        uint64_t c = load(en.ctl, std::memory_order_acquire);
        if (!entry_key_is(en, ns, *key)) continue;
        switch (Ctl::state(c)) {
        case KV_ENTRY_RESERVED:
            return -EBUSY;
        case KV_ENTRY_COMMITTED: {
            // Read while committed; if the entry is recycled before the
            // kill, the kill fails and the value is not used.
            const uint32_t cls = load(en.class_id, std::memory_order_relaxed);
            const uint64_t blk =
                load(en.block, std::memory_order_relaxed); // the kill's free clears it
            if (entry_kill(p, f.cur, Ctl::gen(c), false)) {
                bump(my_stats(p).removes);
                p->room.note_remove(p, cls, f.cur, blk);
                return 0;
            }
            continue; // changed under us
        }
        default:
            return -ENOENT; // already being removed
        }
    }
}

int kv_match_prefix(kv_pool *p, uint32_t ns, const kv_key *keys, size_t n, uint32_t flags,
                    kv_view *views) noexcept {
    if (!p || (n && !keys) || (flags & ~KV_MATCH_F_PIN) ||
        ((flags & KV_MATCH_F_PIN) && n && !views))
        return -EINVAL;
    if (n > INT32_MAX) n = INT32_MAX;
    size_t m = 0;
    for (; m < n; m++) {
        // The bucket of a key a few steps ahead is almost always a cache
        // miss; start loading it now.
        if (m + 4 < n) __builtin_prefetch(&p->buckets[bucket_of(p, ns, keys[m + 4])]);
        if (flags & KV_MATCH_F_PIN) {
            int rc = get_one(p, ns, keys[m], &views[m], true);
            if (rc == -ENOENT) break;
            if (rc < 0) {
                for (size_t i = 0; i < m; i++)
                    kv_release(p, &views[i]);
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
    return copy_hash(nullptr, v->data, v->length) == v->checksum ? 0 : -EBADMSG;
}

} // extern "C"
