// SPDX-License-Identifier: MIT
//
// Finding room for a put: the entry and the block a reservation claims.
//
// RoomFinder is process-local (one per kv_pool, shared by the client's
// threads); nothing in it is part of the region format. What other
// processes can observe of a put's search is only its shared accesses: the
// claim CAS of an entry (PROTOCOL.md section 4, FREE(g) -> RESERVED), the
// claim of a block (section 5), evictions (section 10) and the reads of
// kv_region_state.room_epoch. Which entries and blocks it looks at, in
// which order, is this file's choice.
//
// ---- One put's search (RoomFinder::Search, a stack object) ---------------
//
//   START --entry()-----------------> ENTRY         (a hint or a scan found one)
//   START --entry()-----------------> TABLE_FULL    (returns KV_NIL32)
//   TABLE_FULL --entry_by_eviction()-> ENTRY | NO_ROOM (-ENOSPC)
//   ENTRY --block()-----------------> BLOCK
//   ENTRY --block()-----------------> DATA_FULL     (returns UINT64_MAX)
//   DATA_FULL --block_by_eviction()--> BLOCK | NO_ROOM
//   DATA_FULL | NO_ROOM(block) --give_back_entry()--> DONE (entry FREE again)
//   BLOCK --give_back(entry, block)--> DONE         (the key was already there)
//   BLOCK --(the caller links and commits the entry)--> DONE
//
// The caller looks the key up between TABLE_FULL / DATA_FULL and the
// eviction, so that a duplicate put never evicts anything (store.cc,
// reserve_impl); it may stop in any state but ENTRY and BLOCK, where it
// holds a RESERVED entry (and an OWNED block) it must link or give back.
//
// Where each step looks, in order:
//   entry()              1. entries this process's removes freed (hints);
//                        2. a scan for a FREE entry from the cursor:
//                           kEntryScan entries, or kEntryScanShort in an
//                           entry streak unless room_epoch moved.
//   entry_by_eviction()  evict the policy's victim of any class and claim
//                        its entry, which the kill left FREE, without a
//                        scan; remember its block for block(). A victim's
//                        entry that another process took first costs a short
//                        scan and another eviction (at most kAllocAttempts);
//                        the last resort scans the whole table.
//   block()              1. the entry victim's block, if of this class, or a
//                           neighbour in its slab (block_alloc_near);
//                        2. in a block streak: blocks this process's
//                           removes freed in the class (hints), in their slab;
//                        3. the home slabs only, when the streak is at least
//                           kEvictStreak long, this is not a kStreakRecheck-th
//                           put and room_epoch did not move; else the slab
//                           table (block_alloc, which may name a donor slab
//                           of another class to move).
//   block_by_eviction()  move the donor slab, if any; else evict in the
//                        class and claim the victim's block or a neighbour
//                        in its slab before another search (kAllocAttempts
//                        rounds).
//
// ---- Streaks (process-local, one for the entry table, one per class) -----
//
//   OPEN (0) --a put's search finds nothing and evicts--> STREAK(1)
//   STREAK(n) --a put evicts--> STREAK(n + 1)  (wraps to kEvictStreak, not 0)
//   STREAK(n) --a search finds room--> OPEN  (any scan or search, not a
//                                             hint; block hints cleared)
//   STREAK(n) --a hint lost to a full ring--> OPEN
//   STREAK(n) --a remove frees a block still pinned--> OPEN (both streaks)
//
// A put that takes a hint or the entry victim's block does not look for
// room: it leaves the streak as it is. room_epoch moving (kv_evict_bytes,
// anyone's) does not end a streak: the put that sees it searches in full,
// and the streak ends only if that search finds room.
//
// Why each heuristic exists:
// - Streaks: in a full pool every search fails and costs a read of every
//   slab's line (blocks) or of kEntryScan entries (entries) before the
//   eviction that was going to happen anyway. A streak is the evidence
//   that the pool is full; it shortens the search, and the periodic full
//   search (every kStreakRecheck-th put) and the rolling short scans still
//   find room that other processes make by removes, within a bounded
//   number of puts (each evicts one block it could have kept until then).
// - room_epoch: room made on purpose (the daemon's watermark pass, kvctl
//   evict) is used at once, not after up to kStreakRecheck puts. The room
//   seen at a streak's start is not news to it: a streak records the epoch
//   when it starts, so that room the failed full search already looked
//   past does not end the short searches at once.
// - Hints (freed_entries, freed_blocks): a remove in a full pool frees
//   room the short searches would rarely find; without a hint each remove
//   would have to end the streak and the next put would pay a full search.
//   Block hints are kept only while the class is in a streak: out of one,
//   its next put searches anyway, and a hint would draw it into a slab that
//   may be another client's home. A hint lost to a full ring ends the
//   streak, so that a full search finds what it named.
// - Victim claiming: the eviction's victim just freed exactly the room the
//   put needs; claiming it directly saves a search that would race other
//   processes for it, and an entry victim's block serves the put too when
//   it is of its class (one eviction makes room for both).
// - The cursor: scans go on where the last one stopped, so the short scans
//   walk the whole table in n_entries / kEntryScanShort puts, and processes
//   start at different points (derived from the pid) so they do not claim
//   the same entries.
//
// Invariants:
// - A hint names an entry or block this process freed; it may be stale
//   (taken by another process since) or repeated: every use is a claim CAS
//   that fails on anything not FREE, never a wrong claim.
// - Block hints of a class exist only while its streak is non-zero
//   (note_remove pushes only then; a streak that ends clears them).
// - Every field is a hint: threads of the client race on them with relaxed
//   accesses, which only changes which path a put takes; the only shared
//   writes are the claim CASes, whose orders are documented in room.cc.
#pragma once

#include <atomic>
#include <cstdint>
#include <kvpool/region.h>

struct kv_pool;

namespace kv::detail {

// Entries and blocks this process's kv_remove freed, taken first by its
// next puts (RoomFinder, "Hints"). A slot holds value + 1 (0: empty); push
// overwrites the oldest slot when all are full and then says so (the
// caller ends its streak: a lost hint is found by a full search), pop takes
// the newest it finds. Relaxed throughout: a hint lost, repeated or stale
// costs a search or a claim CAS that fails, never a wrong claim; pending
// only saves pops the slots' reads when nothing is there and is re-synced
// to 0 by a pop that finds nothing.
template <typename T, uint32_t N>
class FreedHints {
  public:
    static constexpr uint32_t kSlots = N;
    static constexpr T kNone = T(~T(0)); // pop's "nothing"; never pushed
    // True if a hint not yet taken was overwritten.
    bool push(T v) {
        const uint32_t i = next_.fetch_add(1, std::memory_order_relaxed);
        const T old = slots_[i % kSlots].exchange(v + 1, std::memory_order_relaxed);
        pending_.fetch_add(1, std::memory_order_relaxed);
        if (old == 0) return false;
        pending_.fetch_sub(1, std::memory_order_relaxed);
        return true;
    }
    T pop() {
        if (pending_.load(std::memory_order_relaxed) == 0) return kNone;
        const uint32_t top = next_.load(std::memory_order_relaxed);
        for (uint32_t k = 1; k <= kSlots; k++) {
            std::atomic<T> &slot = slots_[(top - k) % kSlots];
            // Read first: an exchange on an empty slot would still take its
            // line exclusive, and threads share these lines.
            if (slot.load(std::memory_order_relaxed) == 0) continue;
            const T v = slot.exchange(0, std::memory_order_relaxed);
            if (v == 0) continue; // another thread took it
            pending_.fetch_sub(1, std::memory_order_relaxed);
            return v - 1;
        }
        pending_.store(0, std::memory_order_relaxed);
        return kNone;
    }

    // Forget every hint (a search that follows will find what they named).
    void clear() {
        if (pending_.load(std::memory_order_relaxed) == 0) return;
        for (std::atomic<T> &slot : slots_)
            if (slot.load(std::memory_order_relaxed) != 0) slot.store(0, std::memory_order_relaxed);
        pending_.store(0, std::memory_order_relaxed);
    }

  private:
    static_assert((uint64_t(1) << 32) % N == 0, "next_ wraps at 2^32: N must divide it");
    std::atomic<uint32_t> next_{0};
    std::atomic<uint32_t> pending_{0};
    std::atomic<T> slots_[kSlots] = {};
};
// Entry indices (KV_NIL32 when none); one ring per process.
using FreedEntries = FreedHints<uint32_t, 64>;
// Block ids of one size class (UINT64_MAX when none); a ring per class.
using FreedBlocks = FreedHints<uint64_t, 8>;

class RoomFinder {
  public:
    // Eviction rounds a claim by eviction tries before it gives up.
    static constexpr int kAllocAttempts = 64;
    // Puts in a row that had to evict before a put skips the slab-table
    // search, and how often it searches anyway.
    static constexpr uint32_t kEvictStreak = 4;
    static constexpr uint32_t kStreakRecheck = 16;
    // Entries a put scans for a FREE one: normally, and in an entry streak.
    static constexpr uint32_t kEntryScan = 4096;
    static constexpr uint32_t kEntryScanShort = 8;

    // At attach: the scan cursor starts at a point derived from the pid.
    void start(const kv_pool *p);

    // This process just removed (or aborted) entry freed_entry of class
    // cls, whose block was freed_block: its next puts take them first, and
    // the streaks go on (see "Hints").
    void note_remove(kv_pool *p, uint32_t cls, uint32_t freed_entry, uint64_t freed_block);

    // One put's pass through the states above. Not thread-safe itself; any
    // number of threads may run their own Search on the same RoomFinder.
    class Search {
      public:
        Search(kv_pool *p, uint32_t cls);
        // START -> ENTRY (the entry, RESERVED by us) or TABLE_FULL (KV_NIL32).
        uint32_t entry();
        // TABLE_FULL -> ENTRY, or KV_NIL32 (NO_ROOM).
        uint32_t entry_by_eviction();
        // ENTRY -> BLOCK (a block OWNED by us) or DATA_FULL (UINT64_MAX).
        uint64_t block();
        // DATA_FULL -> BLOCK, or UINT64_MAX (NO_ROOM).
        uint64_t block_by_eviction();
        // Give the claimed entry back (FREE, next generation), as a hint.
        void give_back_entry(uint32_t e);
        // BLOCK, never linked: give the block (whose word is block_word)
        // and the entry back, both as hints for the next puts.
        void give_back(uint32_t e, uint64_t b, uint64_t block_word);

      private:
        kv_pool *p_;
        RoomFinder &rf_;
        uint32_t cls_;
        uint32_t entry_streak_ = 0;          // the entry streak this put started in
        uint32_t block_streak_ = 0;          // the class's block streak this put started in
        uint64_t victim_block_ = UINT64_MAX; // the entry victim's block
        uint32_t donor_ = UINT32_MAX;        // a slab block_alloc offered to move (KV_NIL32: none)
    };

    // For tests: the streaks' lengths.
    uint32_t entry_streak() const { return entry_streak_.load(std::memory_order_relaxed); }
    uint32_t block_streak(uint32_t cls) const {
        return block_streak_[cls].load(std::memory_order_relaxed);
    }
    // For tests: where the next entry scan starts.
    void set_entry_cursor(uint32_t i) { entry_cursor_.store(i, std::memory_order_relaxed); }

  private:
    uint32_t entry_claim(kv_pool *p, uint32_t budget);

    std::atomic<uint32_t> entry_cursor_{0}; // where the next entry scan starts
    // Per size class: the block streak and the room_epoch it last saw.
    std::atomic<uint32_t> block_streak_[KV_MAX_CLASSES] = {};
    std::atomic<uint64_t> room_seen_[KV_MAX_CLASSES] = {};
    // The entry table's streak and the room_epoch it last saw.
    std::atomic<uint32_t> entry_streak_{0};
    std::atomic<uint64_t> entry_room_seen_{0};
    // Entries this process's removes freed; per size class, the blocks they
    // freed while the class was in a streak.
    FreedEntries freed_entries_;
    FreedBlocks freed_blocks_[KV_MAX_CLASSES];
};

} // namespace kv::detail
