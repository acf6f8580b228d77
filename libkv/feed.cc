// SPDX-License-Identifier: MIT
//
// The change feed (uapi/PROTOCOL.md section 13). Invariants this file keeps:
//
//  F1 A slot's seq ticket only grows: a producer claims a slot only from
//     EMPTY or a PUBLISHED value of an older ticket (CAS), so two producers
//     never write one slot's body at once, and a producer that finds the
//     slot WRITING or holding a newer ticket drops its record (and counts
//     it) instead of waiting.
//  F2 Only the claimant (or, once it is dead, the one reaper holding its
//     client slot REAPING) moves WRITING(t, c) on.
//  F3 Every change whose record the reader will not read raises a loss the
//     reader sees after the change: a drop is counted after the change, a
//     producer whose ticket is at or below the reader's floor counts a drop
//     (the seq_cst floor store and load below decide who sees whom), and a
//     reaper counts a drop for every dead client.
//
// Memory orders (labels FEED-*, PROTOCOL.md section 12):
//   producer: FEED-A1 claim CAS (acquire), FEED-R1 release fence, body
//             relaxed, FEED-R2 publish (release), FEED-X1 floor load
//             (seq_cst), FEED-R3 dropped fetch_add (release)
//   reader:   FEED-A2 seq load (acquire), body relaxed, FEED-A3 fence
//             (acquire), seq re-load relaxed; FEED-A4 dropped (acquire);
//             resync: FEED-X2 floor store + FEED-X3 fence (seq_cst),
//             FEED-A5 dropped, FEED-A6/A7 entry seqlock
//   reaper:   FEED-R4 NOP publish (release)
//   parent key read: FEED-A8/A9 (seqlock on the parent entry)
#include "feed.h"

#include <ctime>

namespace kv::detail {

namespace {

uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

// F3: one lost record (or a reaped producer). FEED-R3: release, so the
// reader's acquire of the new count (FEED-A4, FEED-A5) happens after the
// change that was not recorded, and its resync scan sees that change.
void note_drop(kv_pool *p) {
    aref(p->feed_hdr->dropped).fetch_add(1, std::memory_order_release);
}

template <typename T>
void put(T &field, T v) {
    // Relaxed: the body is ordered by the claim's fence (FEED-R1) and the
    // publish (FEED-R2); the reader validates it as a seqlock.
    store(field, v, std::memory_order_relaxed);
}

} // namespace

void feed_publish(kv_pool *p, uint64_t t, const FeedRec &rec, bool changed) {
    if (t == 0) return;
    kv_feed_slot &sl = p->feed_slots[(t - 1) & p->feed_mask];
    const uint32_t me1 = p->client + 1;
    // P3: claim the slot. Relaxed load: the CAS validates the value.
    uint64_t s = load(sl.seq, std::memory_order_relaxed);
    bool claimed = false;
    for (;;) {
        if (FeedSeq::state(s) == KV_FEED_SEQ_WRITING ||
            (s != 0 && FeedSeq::diff(FeedSeq::ticket(s), t) >= 0))
            break; // F1: busy (an older writer, maybe dead) or lapped: drop
        // FEED-A1: acquire pairs with the publish of the slot's previous
        // record (FEED-R2, or a reaper's FEED-R4): our body stores come
        // after that writer's in each field's modification order.
        if (cas(sl.seq, s, FeedSeq::make(t, me1, KV_FEED_SEQ_WRITING), std::memory_order_acquire)) {
            claimed = true;
            break;
        }
    }
    if (!claimed) {
        if (changed) note_drop(p); // after the change (F3)
        return;
    }
    // FEED-R1: the body stores below come after WRITING(t): a reader whose
    // relaxed body loads see any of them re-loads seq after its acquire
    // fence (FEED-A3) and sees WRITING(t) or later, so it discards the copy.
    std::atomic_thread_fence(std::memory_order_release);
    feed_crash_point(FeedPoint::SlotClaimed);
    const uint32_t kind = changed ? rec.kind : uint32_t(KV_FEED_NOP);
    put(sl.kind, kind);
    if (kind != KV_FEED_NOP) {
        uint32_t flags = 0, n = rec.n_ids;
        if (n > KV_FEED_MAX_IDS) {
            flags |= KV_FEED_F_IDS_OMITTED;
            n = 0;
        }
        if (rec.parent) {
            flags |= KV_FEED_F_PARENT;
            put(sl.parent_lo, rec.parent->lo);
            put(sl.parent_hi, rec.parent->hi);
        }
        put(sl.flags, flags);
        put(sl.ns, rec.ns);
        put(sl.n_ids, n);
        put(sl.key_lo, rec.key.lo);
        put(sl.key_hi, rec.key.hi);
        put(sl.length, rec.length);
        put(sl.tokens, rec.tokens);
        put(sl.entry, rec.entry);
        put(sl.gen, rec.gen);
        put(sl.time_ns, rec.time_ns);
        for (uint32_t i = 0; i < n; i++)
            put(sl.token_ids[i], rec.ids[i]);
    }
    // P5, FEED-R2: publishes the body; pairs with the reader's FEED-A2.
    store(sl.seq, FeedSeq::make(t, me1, KV_FEED_SEQ_PUBLISHED), std::memory_order_release);
    feed_crash_point(FeedPoint::Published);
    if (!changed) return;
    // P6, FEED-X1: seq_cst, after the change's CAS16 (seq_cst too): either
    // the reader's floor store (FEED-X2) precedes this load in the single
    // total order, and we see t abandoned and count a drop, or our CAS16
    // precedes its fence (FEED-X3) and its resync scan sees the change.
    if (load(p->feed_hdr->floor, std::memory_order_seq_cst) >= t) note_drop(p);
}

bool feed_parent_key(kv_pool *p, const kv_entry &en, kv_key *out) {
    // Relaxed: our own reservation's field (entry_link_parent wrote it).
    const uint64_t r = load(const_cast<uint64_t &>(en.parent), std::memory_order_relaxed);
    const uint32_t idx = ParentRef::idx(r);
    if (idx >= p->hdr->n_entries) return false;
    kv_entry &pe = p->entries[idx];
    // FEED-A8: pairs with the parent's commit (STO-X1), which published its
    // key; a seqlock read against its recycling (as INS-A1).
    const uint64_t c = load(pe.ctl, std::memory_order_acquire);
    const uint32_t st = Ctl::state(c);
    if (Ctl::gen(c) != ParentRef::gen(r) ||
        (st != KV_ENTRY_COMMITTED && st != KV_ENTRY_DEAD && st != KV_ENTRY_UNLINKED))
        return false;
    kv_key k{load(pe.key_lo, std::memory_order_relaxed),
             load(pe.key_hi, std::memory_order_relaxed)};
    // FEED-A9: pairs with ROOM-R1 (the claim's fence before a new life's
    // key stores): a key of a later life read above makes the re-load see
    // that life's generation.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (Ctl::gen(load(pe.ctl, std::memory_order_relaxed)) != ParentRef::gen(r)) return false;
    *out = k;
    return true;
}

void feed_reap_client(kv_pool *p, uint32_t client, bool died) {
    if (!p->feed_hdr) return;
    const uint32_t n = p->feed_mask + 1;
    for (uint32_t i = 0; i < n; i++) {
        kv_feed_slot &sl = p->feed_slots[i];
        // Relaxed: the owner is dead (we hold its slot REAPING); the CAS
        // below validates the value, and F2 makes us its only writer.
        uint64_t s = load(sl.seq, std::memory_order_relaxed);
        if (FeedSeq::state(s) != KV_FEED_SEQ_WRITING || FeedSeq::client1(s) != client + 1) continue;
        store(sl.kind, uint32_t(KV_FEED_NOP), std::memory_order_relaxed); // published below
        // FEED-R4: publishes the NOP; pairs with the reader's FEED-A2 and a
        // later claimant's FEED-A1.
        cas(sl.seq, s, FeedSeq::make(FeedSeq::ticket(s), client + 1, KV_FEED_SEQ_PUBLISHED),
            std::memory_order_release);
    }
    // F3: a dead client may have died between a change and its record. A
    // client that detaches has finished every operation (kv_pool_detach's
    // contract), so it leaves no such gap and its subscribers no resync.
    if (died) note_drop(p);
}

// ---- FeedReader -------------------------------------------------------------------

FeedReader::FeedReader(kv_pool *p, uint64_t grace_ns) : p_(p), grace_ns_(grace_ns) {}

uint64_t FeedReader::head() const {
    // Relaxed: a count of tickets taken, for reports.
    return enabled() ? load(p_->feed_hdr->head, std::memory_order_relaxed) : 0;
}

size_t FeedReader::resync(std::vector<FeedItem> &out) {
    kv_feed_header &fh = *p_->feed_hdr;
    // Relaxed: tickets taken after this read are larger and read normally;
    // those up to h are abandoned (the floor below).
    const uint64_t h = load(fh.head, std::memory_order_relaxed);
    // FEED-X2: the floor (monotone: h only grows and we are the only
    // reader); seq_cst, pairs with the producers' FEED-X1.
    store(fh.floor, h, std::memory_order_seq_cst);
    // FEED-X3: orders the floor store before the scan's loads: a change
    // whose CAS16 follows this fence in the total order is seen by its
    // producer's FEED-X1 as abandoned (it counts a drop); one before it is
    // seen by the scan.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // FEED-A5: pairs with FEED-R3: every drop up to the count read here was
    // counted after its change (F3), which the scan below therefore sees; a
    // drop counted later makes the next poll resync again.
    seen_dropped_ = load(fh.dropped, std::memory_order_acquire);
    cursor_ = h + 1;
    waiting_since_ = 0;
    st_.resyncs++;
    size_t n = 0;
    FeedItem cl;
    cl.op = FeedItem::Op::Cleared;
    cl.ticket = 0;
    out.push_back(std::move(cl));
    n++;
    for (uint32_t e = 0; e < p_->hdr->n_entries; e++) {
        kv_entry &en = p_->entries[e];
        // FEED-A6: pairs with the commit STO-X1: a COMMITTED ctl makes the
        // entry's fields visible.
        const uint64_t c = load(en.ctl, std::memory_order_acquire);
        if (Ctl::state(c) != KV_ENTRY_COMMITTED) continue;
        FeedItem it;
        it.op = FeedItem::Op::Resync;
        it.ns = load(en.ns_id, std::memory_order_relaxed);
        it.key = {load(en.key_lo, std::memory_order_relaxed),
                  load(en.key_hi, std::memory_order_relaxed)};
        it.length = load(en.length, std::memory_order_relaxed);
        it.tokens = load(en.tokens, std::memory_order_relaxed);
        it.time_ns = load(en.commit_ns, std::memory_order_relaxed);
        // FEED-A7: pairs with ROOM-R1: fields of a later life read above
        // make the re-load below see its claim, so they are discarded.
        std::atomic_thread_fence(std::memory_order_acquire);
        if (load(en.ctl, std::memory_order_relaxed) != c) continue; // changed: its record follows
        it.entry = e;
        it.gen = Ctl::gen(c);
        out.push_back(std::move(it));
        n++;
    }
    st_.resync_items += n - 1;
    return n;
}

size_t FeedReader::poll(std::vector<FeedItem> &out, size_t max) {
    if (!enabled()) return 0;
    kv_feed_header &fh = *p_->feed_hdr;
    size_t n = 0;
    if (need_resync_) {
        need_resync_ = false;
        n += resync(out);
    }
    // FEED-A4: pairs with FEED-R3 (note_drop): a new count means a change
    // without a readable record happened before this load.
    if (load(fh.dropped, std::memory_order_acquire) != seen_dropped_) {
        st_.lost_drops++;
        n += resync(out);
    }
    const uint64_t mask = p_->feed_mask;
    while (n < max) {
        // Relaxed: a bound on what can be read; the slot's seq decides.
        const uint64_t h = load(fh.head, std::memory_order_relaxed);
        if (cursor_ > h) break;
        if (h - cursor_ >= mask + 1) { // the ring lapped us
            st_.lost_laps++;
            n += resync(out);
            continue;
        }
        kv_feed_slot &sl = p_->feed_slots[(cursor_ - 1) & mask];
        // FEED-A2: pairs with the publish FEED-R2 (or a reaper's FEED-R4).
        const uint64_t s = load(sl.seq, std::memory_order_acquire);
        const int64_t d = s ? FeedSeq::diff(FeedSeq::ticket(s), cursor_) : -1;
        if (d == 0 && FeedSeq::state(s) == KV_FEED_SEQ_PUBLISHED) {
            // Copy the body (relaxed loads: validated below).
            auto ld32 = [](uint32_t &f) { return load(f, std::memory_order_relaxed); };
            auto ld64 = [](uint64_t &f) { return load(f, std::memory_order_relaxed); };
            FeedItem it;
            const uint32_t kind = ld32(sl.kind);
            const uint32_t flags = ld32(sl.flags);
            it.ticket = cursor_;
            it.ns = ld32(sl.ns);
            it.key = {ld64(sl.key_lo), ld64(sl.key_hi)};
            it.has_parent = flags & KV_FEED_F_PARENT;
            if (it.has_parent) it.parent = {ld64(sl.parent_lo), ld64(sl.parent_hi)};
            it.ids_omitted = flags & KV_FEED_F_IDS_OMITTED;
            it.length = ld64(sl.length);
            it.tokens = ld32(sl.tokens);
            it.entry = ld32(sl.entry);
            it.gen = ld32(sl.gen);
            it.time_ns = ld64(sl.time_ns);
            uint32_t nid = ld32(sl.n_ids);
            if (nid > KV_FEED_MAX_IDS) nid = KV_FEED_MAX_IDS; // torn: discarded below
            if (kind == KV_FEED_COMMIT && nid) {
                it.token_ids.resize(nid);
                for (uint32_t i = 0; i < nid; i++)
                    it.token_ids[i] = ld32(sl.token_ids[i]);
            }
            // FEED-A3: pairs with the claim's fence FEED-R1: if any load
            // above read a newer writer's store, the re-load sees its claim.
            std::atomic_thread_fence(std::memory_order_acquire);
            if (load(sl.seq, std::memory_order_relaxed) != s) { // overwritten while copied
                st_.lost_laps++;
                n += resync(out);
                continue;
            }
            st_.records++;
            cursor_++;
            waiting_since_ = 0;
            switch (kind) {
            case KV_FEED_COMMIT:
                it.op = FeedItem::Op::Commit;
                break;
            case KV_FEED_REMOVE:
                it.op = FeedItem::Op::Remove;
                break;
            case KV_FEED_EVICT:
                it.op = FeedItem::Op::Evict;
                break;
            case KV_FEED_EXPIRE:
                it.op = FeedItem::Op::Expire;
                break;
            default:
                st_.nops++;
                continue;
            }
            out.push_back(std::move(it));
            n++;
            continue;
        }
        if (d > 0) { // a newer ticket took the slot: ours was overwritten
            st_.lost_laps++;
            n += resync(out);
            continue;
        }
        // Not published yet: its producer is between P1 and P5 (or died
        // there). Wait up to the grace time, then give up on it (F3 makes
        // a slow producer report itself; the reaper reports a dead one).
        const uint64_t now = mono_ns();
        if (waiting_since_ == 0) {
            waiting_since_ = now;
            break;
        }
        if (now - waiting_since_ < grace_ns_) break;
        st_.lost_grace++;
        n += resync(out);
    }
    return n;
}

} // namespace kv::detail
