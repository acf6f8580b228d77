// SPDX-License-Identifier: MIT
//
// The region's change feed (ABI v1.3, KV_INCOMPAT_F_FEED; uapi/PROTOCOL.md
// section 13): the producer steps libkv runs around every commit and kill
// of a block, the reaper's cleanup of a dead producer's slots, and the
// reader (FeedReader) that the daemon drains the ring with.
//
// Producer (never waits, bounded cost):
//   P1 t = feed_claim(p)        after the acquire load of the state the CAS
//                                expects, before the CAS (ticket order then
//                                follows the order of changes to one key)
//   P2 the state-changing CAS16 (commit, kill)
//   P3..P6 feed_publish(p, t, rec, changed): claim the slot, write, publish,
//                                and check the reader's floor
// A failed CAS publishes a NOP, so the reader does not wait for the ticket.
#pragma once

#include "detail.h"

#include <cstdint>
#include <vector>

namespace kv::detail {

// kv_feed_slot.seq packing: [63:16] ticket mod 2^48, [15:4] client + 1, [3:0] state.
struct FeedSeq {
    static constexpr uint64_t kTicketMask = (1ULL << 48) - 1;
    static constexpr uint64_t make(uint64_t ticket, uint32_t client1, uint32_t state) {
        return ((ticket & kTicketMask) << 16) | (uint64_t(client1 & 0xfff) << 4) | (state & 0xf);
    }
    static constexpr uint64_t ticket(uint64_t w) { return w >> 16; }
    static constexpr uint32_t client1(uint64_t w) { return uint32_t(w >> 4) & 0xfff; }
    static constexpr uint32_t state(uint64_t w) { return uint32_t(w) & 0xf; }
    // a - b for 48-bit tickets, as a signed distance (|a - b| < 2^47).
    static constexpr int64_t diff(uint64_t a, uint64_t b) {
        return int64_t(((a - b) & kTicketMask) << 16) >> 16;
    }
};

// What a producer records (P4). Pointers are only read during feed_publish.
struct FeedRec {
    uint32_t kind = KV_FEED_NOP;
    uint32_t ns = 0;
    kv_key key{};
    const kv_key *parent = nullptr;
    uint64_t length = 0;
    uint32_t tokens = 0;
    uint32_t entry = 0;
    uint32_t gen = 0;
    uint64_t time_ns = 0;
    const uint32_t *ids = nullptr;
    uint32_t n_ids = 0;
};

// The record of a change to entry e of generation gen: the entry's
// namespace, key, length and token count, loaded relaxed. The caller says
// why they are that life's: its own reservation, or a committed life whose
// CAS names gen.
inline FeedRec feed_rec_of(const kv_entry &en, uint32_t kind, uint32_t e, uint32_t gen,
                           uint64_t time_ns) {
    FeedRec fr;
    fr.kind = kind;
    fr.ns = load(en.ns_id, std::memory_order_relaxed);
    fr.key = {load(en.key_lo, std::memory_order_relaxed),
              load(en.key_hi, std::memory_order_relaxed)};
    fr.length = load(en.length, std::memory_order_relaxed);
    fr.tokens = load(en.tokens, std::memory_order_relaxed);
    fr.entry = e;
    fr.gen = gen;
    fr.time_ns = time_ns;
    return fr;
}

inline bool feed_on(const kv_pool *p) {
    return p->feed_hdr != nullptr;
}

// P1: take a ticket (0 when the pool has no feed).
inline uint64_t feed_claim(kv_pool *p) {
    if (!p->feed_hdr) return 0;
    // Relaxed: the ticket order between changes of one key comes from the
    // happens-before order of their entry CAS16s (each producer claims after
    // its acquire load that saw the previous change, so the earlier fetch_add
    // precedes it in head's modification order); head orders no other data.
    return aref(p->feed_hdr->head).fetch_add(1, std::memory_order_relaxed) + 1;
}

// Start loading, for writing, the head line and the slot lines the next
// ticket will use, so their misses (the reader last read them) overlap
// the caller's copy instead of following it. A guess: another producer
// may take that ticket; then the prefetch was only wasted. Not a memory
// access in the C++ model (detail.h, prefetch_w).
inline void feed_prefetch(kv_pool *p) {
    if (!p->feed_hdr) return;
    prefetch_w(&p->feed_hdr->head);
    // Relaxed: only a guess of the next ticket.
    const uint64_t h = load(p->feed_hdr->head, std::memory_order_relaxed);
    const char *sl = reinterpret_cast<const char *>(&p->feed_slots[h & p->feed_mask]);
    prefetch_w(sl);
    prefetch_w(sl + 64);
}

// P3..P6 for ticket t (from feed_claim; nothing when 0). changed: the CAS
// took effect (else a NOP is published).
void feed_publish(kv_pool *p, uint64_t t, const FeedRec &rec, bool changed);

// The parent key of a RESERVED entry of ours (its parent word names a
// committed parent seen at reserve), read as a seqlock against the
// parent's recycling. false when there is none or it has been recycled.
bool feed_parent_key(kv_pool *p, const kv_entry &en, kv_key *out);

// Reclaim of a client slot: publish as NOPs the slots the client left
// WRITING; when it died (died), count a loss, since it may have died
// between its change and its record. A detaching client passes false.
void feed_reap_client(kv_pool *p, uint32_t client, bool died);

// Geometry helpers for layout.cc.
inline uint64_t feed_bytes(uint32_t slots) {
    return slots ? sizeof(kv_feed_header) + uint64_t(slots) * sizeof(kv_feed_slot) : 0;
}

// ---- The reader ---------------------------------------------------------------

// One item the reader hands out, in ticket order.
struct FeedItem {
    enum class Op : uint8_t {
        Commit, // a commit record
        Remove, // kill records, by cause
        Evict,
        Expire,
        Cleared, // the reader lost records: forget everything, Resync items follow
        Resync,  // a block held at the resync (COMMITTED in the entry table)
    };
    Op op = Op::Commit;
    uint64_t ticket = 0; // 0 for Cleared and Resync
    uint32_t ns = 0;
    kv_key key{};
    bool has_parent = false;
    kv_key parent{};
    uint64_t length = 0;
    uint32_t tokens = 0;
    uint32_t entry = KV_NIL32;
    uint32_t gen = 0;
    uint64_t time_ns = 0;
    bool ids_omitted = false;
    std::vector<uint32_t> token_ids;
};

struct FeedReaderStats {
    uint64_t records = 0;      // records read (NOPs included)
    uint64_t nops = 0;         // NOP records skipped
    uint64_t resyncs = 0;      // resyncs done (the first one included)
    uint64_t lost_drops = 0;   // resyncs caused by a change of the dropped counter
    uint64_t lost_laps = 0;    // ... by an overflow (the ring lapped the reader)
    uint64_t lost_grace = 0;   // ... by a ticket unpublished past the grace time
    uint64_t resync_items = 0; // Resync items handed out
};

// The single reader of one pool's feed (the daemon's drainer; tests). Not
// thread-safe: one thread polls it. Producers never wait for it: when it
// falls behind, records are lost and it resynchronizes (PROTOCOL.md 13).
class FeedReader {
  public:
    // grace_ns: how long a claimed ticket may stay unpublished before the
    // reader gives up on it and resynchronizes.
    explicit FeedReader(kv_pool *p, uint64_t grace_ns = 200'000'000);
    bool enabled() const { return p_ && p_->feed_hdr; }
    // Append at most max items to out (a resync may append more: the
    // Cleared item and every block held). Returns the number appended. The
    // first poll resynchronizes.
    size_t poll(std::vector<FeedItem> &out, size_t max);
    // Force a resync at the next poll.
    void request_resync() { need_resync_ = true; }
    const FeedReaderStats &stats() const { return st_; }
    uint64_t cursor() const { return cursor_; } // next ticket to read
    uint64_t head() const;                      // tickets taken so far (relaxed)

  private:
    size_t resync(std::vector<FeedItem> &out);
    kv_pool *p_;
    uint64_t grace_ns_;
    uint64_t cursor_ = 1;
    uint64_t seen_dropped_ = 0;
    uint64_t waiting_since_ = 0; // CLOCK_MONOTONIC ns when the cursor's ticket was first missing
    bool need_resync_ = true;
    FeedReaderStats st_;
};

} // namespace kv::detail
