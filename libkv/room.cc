// SPDX-License-Identifier: MIT
//
// Finding room for a put (room.h states the machine and its reasons).
//
// Memory orders: every field of RoomFinder is a process-local hint read
// and written relaxed (room.h, "Invariants"). The shared accesses are the
// claim and unclaim of an entry (16-byte CAS on (ctl, aux): a full barrier)
// and the release fence after a claim (ROOM-R1); the allocator, eviction
// and slab moves document their own. kv_region_state.room_epoch is read
// relaxed: it orders nothing, a put that misses a new value only searches
// later.
#include "room.h"

#include "detail.h"

namespace kv::detail {

namespace {

constexpr uint64_t kNoBlock = UINT64_MAX;

// Claim entry i if it is FREE.
bool entry_claim_one(kv_pool *p, uint32_t i) {
    kv_entry &en = p->entries[i];
    // Relaxed: a stale pair only fails the CAS, which reads the real one.
    uint64_t c = load(en.ctl, std::memory_order_relaxed);
    if (Ctl::state(c) != KV_ENTRY_FREE) return false;
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    // ROOM-X1: the claim, FREE(g) -> RESERVED(g, us) (cmpxchg16b, seq_cst).
    // Acquires the free that made it FREE (STO-X4, entry_finish_free; or
    // ROOM-X2, an unclaim), so this life's writes follow the last one's.
    if (!cas16(&en.ctl, {c, x},
               {Ctl::make(Ctl::gen(c), KV_ENTRY_RESERVED, 0), Aux::owner(p->client)}))
        return false;
    // ROOM-R1 (K1): orders the claim before the key, next and other fields
    // this life writes next with relaxed stores. A reader that reads one of
    // them and then fences with acquire (STO-A2, STO-A4, STO-A6, STO-A17:
    // the K2 fences in store.cc; FEED-A7, FEED-A9 in feed.cc) or loads with acquire (index.cc,
    // mark's load of next) sees the claim, so its pin or index CAS on the old generation fails.
    std::atomic_thread_fence(std::memory_order_release);
    return true;
}

// Release a RESERVED entry we claimed but never linked (its block, if it
// had one, already given back).
void entry_unclaim(kv_pool *p, uint32_t e) {
    kv_entry &en = p->entries[e];
    // Relaxed: only this client writes a RESERVED(us) entry; the CAS checks.
    uint64_t c = load(en.ctl, std::memory_order_relaxed);
    uint64_t x = load(en.aux, std::memory_order_relaxed);
    // ROOM-X2: RESERVED(g, us) -> FREE(g + 1) (cmpxchg16b, seq_cst); the
    // next claim (ROOM-X1) acquires it.
    cas16(&en.ctl, {c, x},
          {Ctl::make(Ctl::gen(c) + 1, KV_ENTRY_FREE, 0), Aux::make(KV_AUX_NONE, 0, 0, 0)});
}

// True if kv_evict_bytes made room since this streak last looked
// (room_epoch; room_seen is the streak's copy). Relaxed: process-local
// hints and a pool-wide one; racing threads only change which path a put
// takes.
bool room_made(kv_pool *p, std::atomic<uint64_t> &room_seen) {
    const uint64_t room = load(p->state->room_epoch, std::memory_order_relaxed);
    if (room == room_seen.load(std::memory_order_relaxed)) return false;
    room_seen.store(room, std::memory_order_relaxed);
    return true;
}

// True if this put should skip the slab-table search: the last
// kEvictStreak puts of the class all searched in vain and evicted, this is
// not a kStreakRecheck-th put, and no room was made since.
bool in_streak(kv_pool *p, uint32_t streak, std::atomic<uint64_t> &room_seen) {
    if (streak < RoomFinder::kEvictStreak || streak % RoomFinder::kStreakRecheck == 0) return false;
    return !room_made(p, room_seen);
}

// The streak after a put that evicted (wraps to kEvictStreak, not 0).
uint32_t streak_next(uint32_t st) {
    return st + 1 == 0 ? RoomFinder::kEvictStreak : st + 1;
}

// Allocate a block of class cls, evicting. Called after the search found
// nothing, so it evicts first. donor: a slab of another class that the
// search found used little enough to move to cls (allocator.cc,
// "Rebalancing"), or KV_NIL32: moving it evicts its few blocks and gives the
// class a whole slab, where an eviction in the class would free one block
// and leave the donor's room idle.
uint64_t alloc_with_eviction(kv_pool *p, uint32_t cls, uint32_t donor) {
    if (donor != KV_NIL32)
        if (uint64_t id = slab_move(p, donor, cls); id != kNoBlock) return id;
    for (int attempt = 0; attempt < RoomFinder::kAllocAttempts; attempt++) {
        if (attempt > 0) {
            uint64_t id = block_alloc(p, cls, true);
            if (id != kNoBlock) return id;
        }
        // The victim's block is of our class and was freed by us just now:
        // claim it (or a neighbour) in its slab before searching the table.
        Victim v;
        if (!evict_for_class(p, cls, &v)) return block_alloc(p, cls, true);
        if (v.block != kNoBlock) {
            uint64_t id = block_alloc_near(p, cls, v.block);
            if (id != kNoBlock) return id;
        }
    }
    return kNoBlock;
}

} // namespace

void RoomFinder::start(const kv_pool *p) {
    entry_cursor_.store(uint32_t((uint64_t(p->pid) * 2654435761ULL) % p->hdr->n_entries),
                        std::memory_order_relaxed);
}

// Claim a FREE entry, scanning up to budget entries from the cursor, which
// is left where the scan stopped.
uint32_t RoomFinder::entry_claim(kv_pool *p, uint32_t budget) {
    const uint32_t n = p->hdr->n_entries;
    uint32_t i = entry_cursor_.load(std::memory_order_relaxed) % n;
    for (uint32_t k = 0; k < budget && k < n; k++, i = i + 1 == n ? 0 : i + 1) {
        if (!entry_claim_one(p, i)) continue;
        entry_cursor_.store(i + 1, std::memory_order_relaxed);
        return i;
    }
    entry_cursor_.store(i, std::memory_order_relaxed);
    return KV_NIL32;
}

void RoomFinder::note_remove(kv_pool *p, uint32_t cls, uint32_t freed_entry, uint64_t freed_block) {
    // A block still pinned by a reader is freed by its last release, later:
    // no hint can name it yet, so end the streaks, and the searches that
    // follow find it once it is free. Relaxed: a stale state only chooses
    // the path.
    const uint64_t nblocks = uint64_t(p->hdr->n_slabs) * p->hdr->blocks_per_slab;
    if (freed_block >= nblocks ||
        Blk::state(load(p->blocks[freed_block], std::memory_order_relaxed)) != KV_BLOCK_FREE) {
        entry_streak_.store(0, std::memory_order_relaxed);
        if (cls < KV_MAX_CLASSES) block_streak_[cls].store(0, std::memory_order_relaxed);
        return;
    }
    if (freed_entries_.push(freed_entry)) entry_streak_.store(0, std::memory_order_relaxed);
    if (cls >= KV_MAX_CLASSES || block_streak_[cls].load(std::memory_order_relaxed) == 0) return;
    if (freed_blocks_[cls].push(freed_block)) { // the search that follows finds them all
        freed_blocks_[cls].clear();
        block_streak_[cls].store(0, std::memory_order_relaxed);
    }
}

RoomFinder::Search::Search(kv_pool *p, uint32_t cls) : p_(p), rf_(p->room), cls_(cls) {}

uint32_t RoomFinder::Search::entry() {
    uint32_t e = KV_NIL32;
    for (uint32_t h; e == KV_NIL32 && (h = rf_.freed_entries_.pop()) != KV_NIL32;)
        if (h < p_->hdr->n_entries && entry_claim_one(p_, h)) e = h;
    entry_streak_ = rf_.entry_streak_.load(std::memory_order_relaxed);
    if (e != KV_NIL32) return e; // a hint: the streak goes on
    const bool short_scan = entry_streak_ != 0 && !room_made(p_, rf_.entry_room_seen_);
    e = rf_.entry_claim(p_, short_scan ? kEntryScanShort : kEntryScan);
    // Only a scan that finds a FREE entry ends the streak (the table has room).
    if (e != KV_NIL32 && entry_streak_ != 0) rf_.entry_streak_.store(0, std::memory_order_relaxed);
    return e;
}

// The victim is the policy's choice over the whole pool, as for
// kv_evict_bytes: the put needs an entry, not a block of some class (the
// data area may have room).
uint32_t RoomFinder::Search::entry_by_eviction() {
    // A streak starts: room made before the full scan that just found
    // nothing is not news to the short scans that follow.
    if (entry_streak_ == 0) room_made(p_, rf_.entry_room_seen_);
    uint32_t e = KV_NIL32;
    for (int attempt = 0; attempt < kAllocAttempts && e == KV_NIL32; attempt++) {
        Victim v;
        if (!evict_one(p_, &v)) break;
        victim_block_ = v.block;
        if (v.entry != KV_NIL32 && entry_claim_one(p_, v.entry))
            e = v.entry;
        else
            e = rf_.entry_claim(p_, kEntryScanShort);
    }
    if (e == KV_NIL32) e = rf_.entry_claim(p_, p_->hdr->n_entries);
    if (e == KV_NIL32) return KV_NIL32;
    rf_.entry_streak_.store(streak_next(entry_streak_), std::memory_order_relaxed);
    return e;
}

uint64_t RoomFinder::Search::block() {
    block_streak_ = rf_.block_streak_[cls_].load(std::memory_order_relaxed);
    // Hints: no search, and the streak is left as it is.
    uint64_t b = victim_block_ != kNoBlock ? block_alloc_near(p_, cls_, victim_block_) : kNoBlock;
    if (b == kNoBlock && block_streak_ != 0)
        for (uint64_t h;
             b == kNoBlock && (h = rf_.freed_blocks_[cls_].pop()) != FreedBlocks::kNone;)
            b = block_alloc_near(p_, cls_, h);
    if (b != kNoBlock) return b;
    donor_ = KV_NIL32;
    b = in_streak(p_, block_streak_, rf_.room_seen_[cls_]) ? block_alloc_home(p_, cls_)
                                                           : block_alloc(p_, cls_, false, &donor_);
    if (b != kNoBlock && block_streak_ != 0) { // room found: the streak ends, its hints are stale
        rf_.block_streak_[cls_].store(0, std::memory_order_relaxed);
        rf_.freed_blocks_[cls_].clear();
    }
    return b;
}

uint64_t RoomFinder::Search::block_by_eviction() {
    if (block_streak_ == 0) room_made(p_, rf_.room_seen_[cls_]); // a streak starts (as for entries)
    const uint64_t b = alloc_with_eviction(p_, cls_, donor_);
    if (b != kNoBlock)
        rf_.block_streak_[cls_].store(streak_next(block_streak_), std::memory_order_relaxed);
    return b;
}

void RoomFinder::Search::give_back_entry(uint32_t e) {
    entry_unclaim(p_, e);
    rf_.freed_entries_.push(e); // it may have been a hint: keep it one
}

void RoomFinder::Search::give_back(uint32_t e, uint64_t b, uint64_t block_word) {
    // The block before the entry: a crash in between leaves RESERVED(us)
    // naming a block that is not ENTRY(e), which the reaper's abort frees
    // alone.
    block_free(p_, b, block_word);
    entry_unclaim(p_, e);
    // Either may have been a remove's hint: give them back as hints, or the
    // streak would go on past room this process knows of.
    rf_.freed_entries_.push(e);
    if (block_streak_ != 0) rf_.freed_blocks_[cls_].push(b);
}

} // namespace kv::detail
