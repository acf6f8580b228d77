// SPDX-License-Identifier: MIT
//
// libkv internals shared by the sources: the process-local pool handle,
// accessors for the region's tables, bit-field packing of the shared words,
// and the atomic helpers every shared access goes through.
#pragma once

#include "room.h"

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <kv/kv.h>
#include <kvpool/region.h>
#include <memory>
#include <tuple>

namespace kv::detail {

// ---- Atomics ---------------------------------------------------------------
// Shared fields are plain integers in the UAPI structs; every concurrent
// access goes through std::atomic_ref so the memory order is explicit.
// Every release, acquire, acq_rel or seq_cst access and fence carries a
// label <TAG>-R<n> / -A<n> / -X<n> that names its partners; the ledger in
// uapi/PROTOCOL.md section 12 lists them all. A new one needs a label and
// a row there; a relaxed one needs a one-line reason.
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free);

template <typename T>
inline std::atomic_ref<T> aref(T &v) {
    return std::atomic_ref<T>(v);
}
template <typename T>
inline T load(T &v, std::memory_order mo) {
    return aref(v).load(mo);
}
template <typename T>
inline void store(T &v, T x, std::memory_order mo) {
    aref(v).store(x, mo);
}
template <typename T>
inline bool cas(T &v, T &expected, T desired, std::memory_order mo) {
    return aref(v).compare_exchange_strong(expected, desired, mo, std::memory_order_relaxed);
}

// 16-byte CAS on an entry's (ctl, aux) pair. std::atomic<__int128> is not
// always lock-free in libstdc++ (it may call libatomic), so use the builtin
// that -mcx16 turns into lock cmpxchg16b: a full barrier (seq_cst) on x86.
// Each call site is an acq_rel point of the ledger and carries an X label
// naming its partners (PROTOCOL.md section 12).
struct Pair {
    uint64_t lo; // ctl
    uint64_t hi; // aux
};
inline bool cas16(uint64_t *addr, Pair expected, Pair desired) {
    __extension__ typedef unsigned __int128 u128;
    u128 e = (static_cast<u128>(expected.hi) << 64) | expected.lo;
    u128 d = (static_cast<u128>(desired.hi) << 64) | desired.lo;
    return __sync_bool_compare_and_swap(reinterpret_cast<u128 *>(addr), e, d);
}

// ---- Packed words ----------------------------------------------------------
// kv_entry.ctl: [63:32] gen, [31:24] state, [23:0] pins
struct Ctl {
    static constexpr uint64_t make(uint32_t gen, uint32_t state, uint32_t pins) {
        return (uint64_t(gen) << 32) | (uint64_t(state & 0xff) << 24) | (pins & 0xffffff);
    }
    static constexpr uint32_t gen(uint64_t w) { return uint32_t(w >> 32); }
    static constexpr uint32_t state(uint64_t w) { return uint32_t(w >> 24) & 0xff; }
    static constexpr uint32_t pins(uint64_t w) { return uint32_t(w) & 0xffffff; }
};

// kv_entry.aux: [3:0] op, [15:4] client+1, [31:16] slot, [63:32] seq
struct Aux {
    static constexpr uint64_t make(uint32_t op, uint32_t client_plus1, uint32_t slot,
                                   uint32_t seq) {
        return (uint64_t(seq) << 32) | (uint64_t(slot & 0xffff) << 16) |
               (uint64_t(client_plus1 & 0xfff) << 4) | (op & 0xf);
    }
    static constexpr uint32_t op(uint64_t w) { return uint32_t(w) & 0xf; }
    static constexpr uint32_t client1(uint64_t w) { return uint32_t(w >> 4) & 0xfff; }
    static constexpr uint32_t slot(uint64_t w) { return uint32_t(w >> 16) & 0xffff; }
    static constexpr uint32_t seq(uint64_t w) { return uint32_t(w >> 32); }
    static constexpr uint64_t owner(uint32_t client) {
        return make(KV_AUX_OWNER, client + 1, 0, 0);
    }
};

// Index link word: [63:32] idx, [31:1] tag, [0] mark
struct Link {
    static constexpr uint64_t make(uint32_t idx, uint32_t tag, bool mark) {
        return (uint64_t(idx) << 32) | (uint64_t(tag & 0x7fffffff) << 1) | (mark ? 1 : 0);
    }
    static constexpr uint32_t idx(uint64_t w) { return uint32_t(w >> 32); }
    static constexpr uint32_t tag(uint64_t w) { return uint32_t(w >> 1) & 0x7fffffff; }
    static constexpr bool marked(uint64_t w) { return w & KV_LINK_MARK; }
};

// Block word: [63:32] owner, [31:24] state, [23:0] tag
struct Blk {
    static constexpr uint64_t make(uint32_t owner, uint32_t state, uint32_t tag) {
        return (uint64_t(owner) << 32) | (uint64_t(state & 0xff) << 24) | (tag & 0xffffff);
    }
    static constexpr uint32_t owner(uint64_t w) { return uint32_t(w >> 32); }
    static constexpr uint32_t state(uint64_t w) { return uint32_t(w >> 24) & 0xff; }
    static constexpr uint32_t tag(uint64_t w) { return uint32_t(w) & 0xffffff; }
    // The successor of w with a new owner/state and the tag bumped.
    static constexpr uint64_t next(uint64_t w, uint32_t owner, uint32_t state) {
        return make(owner, state, tag(w) + 1);
    }
};

// Slab ctl: [7:0] state, [15:8] class, [27:16] client+1, [63:32] tag
struct SlabCtl {
    static constexpr uint64_t make(uint32_t state, uint32_t cls, uint32_t client1, uint32_t tag) {
        return (uint64_t(tag) << 32) | (uint64_t(client1 & 0xfff) << 16) |
               (uint64_t(cls & 0xff) << 8) | (state & 0xff);
    }
    static constexpr uint32_t state(uint64_t w) { return uint32_t(w) & 0xff; }
    static constexpr uint32_t cls(uint64_t w) { return uint32_t(w >> 8) & 0xff; }
    static constexpr uint32_t client1(uint64_t w) { return uint32_t(w >> 16) & 0xfff; }
    static constexpr uint32_t tag(uint64_t w) { return uint32_t(w >> 32); }
};

// Client ctl: [7:0] state, [23:8] tag, [63:32] pid
struct ClientCtl {
    static constexpr uint64_t make(uint32_t state, uint32_t tag, uint32_t pid) {
        return (uint64_t(pid) << 32) | (uint64_t(tag & 0xffff) << 8) | (state & 0xff);
    }
    static constexpr uint32_t state(uint64_t w) { return uint32_t(w) & 0xff; }
    static constexpr uint32_t tag(uint64_t w) { return uint32_t(w >> 8) & 0xffff; }
    static constexpr uint32_t pid(uint64_t w) { return uint32_t(w >> 32); }
};

// Namespace ctl: [7:0] state, [19:8] client+1, [63:32] tag
struct NsCtl {
    static constexpr uint64_t make(uint32_t state, uint32_t client1, uint32_t tag) {
        return (uint64_t(tag) << 32) | (uint64_t(client1 & 0xfff) << 8) | (state & 0xff);
    }
    static constexpr uint32_t state(uint64_t w) { return uint32_t(w) & 0xff; }
    static constexpr uint32_t client1(uint64_t w) { return uint32_t(w >> 8) & 0xfff; }
};

// Pin journal slot words.
struct PinA {
    static constexpr uint64_t make(uint32_t entry, uint32_t gen) {
        return (uint64_t(entry) << 32) | gen;
    }
    static constexpr uint32_t entry(uint64_t w) { return uint32_t(w >> 32); }
    static constexpr uint32_t gen(uint64_t w) { return uint32_t(w); }
};
struct PinB {
    static constexpr uint64_t make(uint32_t seq, uint32_t phase) {
        return (uint64_t(seq) << 32) | phase;
    }
    static constexpr uint32_t seq(uint64_t w) { return uint32_t(w >> 32); }
    static constexpr uint32_t phase(uint64_t w) { return uint32_t(w); }
};

// kv_entry.kids: [31:16] low 16 bits of the entry's generation, [15:0]
// children counted (saturates at 0xffff and then stays). The generation tag
// makes a child's CAS fail on a recycled parent (ABA across 65536 reuses of
// one slot during the child's CAS retry window is accepted: kids is a hint).
struct Kids {
    static constexpr uint32_t kMax = 0xffff;
    static constexpr uint32_t make(uint32_t gen, uint32_t count) {
        return ((gen & 0xffff) << 16) | (count & 0xffff);
    }
    static constexpr uint32_t gen16(uint32_t w) { return w >> 16; }
    static constexpr uint32_t count(uint32_t w) { return w & 0xffff; }
};
// kv_entry.parent: [63:32] parent entry index + 1 (0: none, so zeroed and
// v1.0 entries have none), [31:0] its generation.
struct ParentRef {
    static constexpr uint64_t make(uint32_t idx, uint32_t gen) {
        return (uint64_t(idx + 1) << 32) | gen;
    }
    static constexpr uint64_t none() { return 0; }
    static constexpr uint32_t idx(uint64_t w) {
        return uint32_t(w >> 32) - 1;
    } // KV_NIL32 when none
    static constexpr uint32_t gen(uint64_t w) { return uint32_t(w); }
};

// ---- Process-local free list of journal slots ------------------------------
// A Treiber stack over slot indices, private to this process (threads of one
// client share it). head: [63:32] tag, [31:0] top index (KV_NIL32 = empty).
// ABA: the tag is bumped by every successful CAS on head.
class SlotStack {
  public:
    explicit SlotStack(uint32_t n);
    uint32_t pop(); // KV_NIL32 when empty
    void push(uint32_t slot);

  private:
    std::atomic<uint64_t> head_;
    std::unique_ptr<std::atomic<uint32_t>[]> next_;
};

// ---- The pool handle ---------------------------------------------------------
} // namespace kv::detail

struct kv_pool {
    uint8_t *base = nullptr;
    uint64_t len = 0;
    int fd = -1;
    uint32_t client = 0; // index in the client table
    uint32_t pid = 0;
    const kv_region_header *hdr = nullptr;
    kv_region_state *state = nullptr;
    kv_class *classes = nullptr;
    kv_namespace *ns = nullptr;
    kv_client *clients = nullptr;
    kv_pin_slot *journal = nullptr; // this client's slots
    kv_pin_slot *journal_all = nullptr;
    uint64_t *buckets = nullptr;
    kv_entry *entries = nullptr;
    kv_slab *slabs = nullptr;
    uint64_t *blocks = nullptr;
    uint8_t *data = nullptr;
    // v1.3 change feed (feed.h); null / 0 when the region has none.
    kv_feed_header *feed_hdr = nullptr;
    kv_feed_slot *feed_slots = nullptr;
    uint32_t feed_mask = 0;
    uint32_t bucket_mask = 0;
    uint32_t policy = 0; // hdr->evict_policy, fixed at creation (KV_EVICT_*)
    // hdr has KV_INCOMPAT_F_SECURE_ERASE: frees zero the block first
    // (block_erase, PROTOCOL.md section 14). Fixed at creation.
    bool secure_erase = false;
    // Where this process looks for room for a put: scan cursor, streaks and
    // hints (room.h). Process-local.
    kv::detail::RoomFinder room;
    // Per size class, slab index + 1 of this process's newest home slabs,
    // where it allocates first (allocator.cc, "Home slabs"). Hints.
    static constexpr uint32_t kHomes = 4;
    std::atomic<uint32_t> home_slabs[KV_MAX_CLASSES][kHomes] = {};
    std::unique_ptr<kv::detail::SlotStack> free_slots;
    // This client's live-bytes records (kv_client.acct) not held by a thread.
    std::unique_ptr<kv::detail::SlotStack> acct_free;
};

namespace kv::detail {

// ---- Small helpers -------------------------------------------------------------
__attribute__((format(printf, 3, 4))) inline void errf(char *buf, size_t len, const char *fmt,
                                                       ...) {
    if (!buf || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

// Prefetch a line this thread is about to CAS, asking for it exclusive
// (PREFETCHW, where the CPU has it): a line last written by another process
// then arrives once, ready for the CAS, instead of shared and then again for
// ownership. Locked instructions do not wait for a prefetch (x86 does not
// order PREFETCH with them), so a miss started early overlaps the CASes that
// follow. Not a memory access in the C++ model: no ordering to document.
#if defined(__x86_64__)
bool cpu_has_prefetchw();
inline const bool kHavePrefetchw = cpu_has_prefetchw();
inline void prefetch_w(const void *a) {
    if (kHavePrefetchw)
        asm volatile("prefetchw %0" ::"m"(*static_cast<const char *>(a)));
    else
        __builtin_prefetch(a, 1, 3);
}
#else
inline void prefetch_w(const void *a) {
    __builtin_prefetch(a, 1, 3);
}
#endif

// ---- Live-bytes accounting (accounting.cc, PROTOCOL.md section 11) --------------
// Fault injection for the crash tests: where set (only tests set it, in a
// child they then let die), called at each point where a process killed
// leaves a record for its reaper to decide. Not exported by libkv.so.
enum class AcctPoint { CommitWrittenDown, CommitDone, FreeWrittenDown, FreeDone };
inline void (*acct_crash_hook)(AcctPoint) = nullptr;
inline void acct_crash_point(AcctPoint at) {
    if (acct_crash_hook) [[unlikely]]
        acct_crash_hook(at);
}

// Fault injection for the feed's crash tests (feed.h, PROTOCOL.md 13), as
// acct_crash_hook: after a producer's ticket claim (P1) and after its CAS (P2).
enum class FeedPoint { Claimed, Changed, SlotClaimed, Published };
inline void (*feed_crash_hook)(FeedPoint) = nullptr;
inline void feed_crash_point(FeedPoint at) {
    if (feed_crash_hook) [[unlikely]]
        feed_crash_hook(at);
}

// Write down a commit (freeing false) or a free of len committed bytes of
// entry e in generation gen, before the CAS that does it; KV_NIL32 when
// nothing is to be accounted (len 0, or a v1.1 region).
uint32_t acct_begin(kv_pool *p, uint32_t e, uint32_t gen, uint64_t len, bool freeing);
// After that CAS: account the record if the CAS succeeded, then give it back.
void acct_end(kv_pool *p, uint32_t record, bool took_effect);
// Decide the pending records of a dead client's slot (the reaper holds it).
void acct_resolve_dead(kv_pool *p, uint32_t client);
// The sum over every record: exact whenever no operation is in flight.
uint64_t live_bytes(kv_pool *p);

inline kv_client_stats &my_stats(kv_pool *p) {
    return p->clients[p->client].stats;
}
// Evictions done by this thread, over every pool: what one thread's own
// puts cost, which the client slot's counter (shared by the process's
// threads) cannot tell. The daemon's restore reads it.
inline thread_local uint64_t thread_evictions = 0;
// Per-client counter: only this client's threads write it (its own cache
// line), readers sum over clients. Relaxed: counts, not synchronization.
inline void bump(uint64_t &counter, uint64_t by = 1) {
    aref(counter).fetch_add(by, std::memory_order_relaxed);
}
inline void note_eviction(kv_pool *p) {
    bump(my_stats(p).evictions);
    thread_evictions++;
}

inline uint64_t block_id(const kv_pool *p, uint32_t slab, uint32_t slot) {
    return uint64_t(slab) * p->hdr->blocks_per_slab + slot;
}
inline uint8_t *block_data(const kv_pool *p, uint64_t id, uint32_t cls) {
    uint32_t slab = uint32_t(id / p->hdr->blocks_per_slab);
    uint32_t slot = uint32_t(id % p->hdr->blocks_per_slab);
    return p->data + uint64_t(slab) * p->hdr->slab_size +
           uint64_t(slot) * p->classes[cls].block_size;
}
uint64_t now_ns();

// ---- Secure erase (allocator.cc, PROTOCOL.md section 14) -----------------------
// Fault injection for the erase's crash tests, as acct_crash_hook: before
// the first byte is zeroed, with half of the block zeroed, and with all of
// it zeroed before the block word is freed.
enum class ErasePoint { Begun, Half, Zeroed };
inline void (*erase_crash_hook)(ErasePoint) = nullptr;
inline void erase_crash_point(ErasePoint at) {
    if (erase_crash_hook) [[unlikely]]
        erase_crash_hook(at);
}
// In a secure-erase pool, zero the whole of block id (which holds class
// cls) before its word leaves ENTRY or OWNED; a no-op otherwise. The caller
// owns the block: its word names the caller's FREEING entry or the caller
// (or, for a reaper, the dead client it holds REAPING), so nobody else
// writes or reads it meanwhile. The block free's release (ALC-R2) then
// orders the zeroes before the next claim (ALC-X1).
void block_erase(kv_pool *p, uint64_t id, uint32_t cls);

// ---- Eviction ranks (evict.cc, PROTOCOL.md section 10) --------------------------
// The access clock: the CPU's invariant timestamp counter, which Linux keeps
// synchronized across cores (it refuses the TSC as clocksource otherwise),
// so ticks from different processes compare. Only compared, never converted
// to time. Elsewhere CLOCK_MONOTONIC in ns.
#if defined(__x86_64__)
inline uint64_t tick() {
    return __builtin_ia32_rdtsc();
}
#elif defined(__aarch64__)
inline uint64_t tick() {
    uint64_t v;
    asm volatile("mrs %0, cntvct_el0" : "=r"(v));
    return v;
}
#else
uint64_t tick();
#endif
// A get skips re-stamping an entry stamped less than this many ticks ago
// (well under a microsecond at any TSC rate): a hot block read by many
// cores is not written on every read.
inline constexpr uint64_t kTouchSlack = 512;

// Record an access to a pinned, committed entry (the get path): one relaxed
// load and at most one relaxed store on the entry's metadata line. Relaxed:
// ranks are hints that no other memory access depends on; concurrent
// stamps may overwrite each other (the later tick usually wins; LFU may lose
// a count).
inline void touch(kv_pool *p, kv_entry &en) {
    switch (p->policy) {
    case KV_EVICT_CLOCK:
        // CLOCK reference bit; written only when clear so hot blocks stay shared in caches.
        if (load(en.clock, std::memory_order_relaxed) == 0)
            store(en.clock, 1U, std::memory_order_relaxed);
        break;
    case KV_EVICT_FIFO:
        break;
    case KV_EVICT_LFU: {
        uint64_t floor = load(p->state->lfu_floor, std::memory_order_relaxed);
        uint64_t r = load(en.rank, std::memory_order_relaxed);
        store(en.rank, (r > floor ? r : floor) + 1, std::memory_order_relaxed);
        break;
    }
    default: {
        uint64_t t = tick();
        if (t - load(en.rank, std::memory_order_relaxed) > kTouchSlack)
            store(en.rank, t, std::memory_order_relaxed);
    }
    }
}
// The rank a new entry starts with.
// Relaxed: lfu_floor is a hint (region.h).
inline uint64_t initial_rank(kv_pool *p) {
    if (p->policy == KV_EVICT_LFU) return load(p->state->lfu_floor, std::memory_order_relaxed) + 1;
    return tick();
}
// A committed entry whose time to live has passed. Relaxed: the caller read
// ctl with acquire before (e.g. EVC-A1), and ttl_ms and commit_ns were
// published by the commit.
inline bool entry_expired(const kv_entry &en, uint64_t now) {
    uint32_t ttl = load(const_cast<uint32_t &>(en.ttl_ms), std::memory_order_relaxed);
    return ttl && now >= load(const_cast<uint64_t &>(en.commit_ns), std::memory_order_relaxed) +
                             uint64_t(ttl) * 1000000;
}

// ---- layout.cc -------------------------------------------------------------------
struct Geometry; // computed section layout
int layout_compute(const kv_create_opts &o, uint64_t page_size, kv_region_header *out, char *err,
                   size_t errlen);
void layout_init_region(uint8_t *base, const kv_region_header &h);
int validate_region(const uint8_t *base, uint64_t len, char *err, size_t errlen);
void pool_bind(kv_pool *p, uint8_t *base, uint64_t len);

// ---- client.cc -------------------------------------------------------------------
// Claim a client slot: a FREE one (the daemon slot only when daemon), else
// the slot of a dead client, reaped first. 0 or -EUSERS.
int client_claim(kv_pool *p, bool daemon);
void client_release_slot(kv_pool *p);
bool client_is_dead(uint32_t pid, uint64_t start_time);
uint64_t proc_start_time(uint32_t pid);

// ---- index.cc (lock-free ordered lists per bucket; Michael 2002 with tags) ------
struct Found {
    uint64_t *prev;    // link word that points at cur
    uint64_t prev_val; // its value when read
    uint32_t cur;      // first entry with key >= search key, or KV_NIL32
    bool found;        // cur has exactly the search key
};
uint32_t bucket_of(const kv_pool *p, uint32_t ns, const kv_key &k);
Found index_find(kv_pool *p, uint32_t ns, const kv_key &k);
// Link entry e (key already written, state RESERVED). Returns KV_NIL32 when
// linked, else the index of the entry that already holds the key.
uint32_t index_insert(kv_pool *p, uint32_t e);
// Make sure entry e (state DEAD at gen) is marked and unlinked; returns once
// e is unreachable, and moves it to UNLINKED (freeing it if unpinned). A
// call made late, once e is no longer DEAD at gen (someone else finished the
// removal; e may live again under another key), changes nothing.
void index_remove(kv_pool *p, uint32_t e, uint32_t gen);
// e (seen at gen) is unreachable now: DEAD -> UNLINKED, free if unpinned.
void on_unlinked_gen(kv_pool *p, uint32_t e, uint32_t gen);
bool entry_key_is(const kv_entry &en, uint32_t ns, const kv_key &k);

// ---- pin.cc ------------------------------------------------------------------------
// Pin entry e at generation gen (must be COMMITTED). Returns 0 with *slot_out,
// -ENOENT when the entry is no longer committed at gen, -ENOBUFS when out of slots.
int pin_entry(kv_pool *p, uint32_t e, uint32_t gen, uint32_t *slot_out);
// Unpin via journal slot. Returns 0 or -EINVAL.
int unpin_slot(kv_pool *p, uint32_t client, uint32_t slot);
// Acknowledge the pending op recorded in aux (helping), see region.h.
void help_pending(kv_pool *p, uint64_t aux);
// Resolve a dead client's journal slot (reaper): finish or undo its op.
void journal_recover_slot(kv_pool *p, uint32_t client, uint32_t slot);

// ---- allocator.cc ------------------------------------------------------------------
uint32_t class_for(const kv_pool *p, uint64_t len); // KV_NIL32 if too large
// Claim a block of class cls for this client: OWNED(client). Returns the
// block id or UINT64_MAX when none is free (after trying to activate a free
// slab; thorough: also scan slabs whose hints say full).
// donor (when given): on a failure with no FREE slab seen, the least used
// ACTIVE slab of another class if it is used little enough to be moved to
// cls (slab_move), else KV_NIL32; found in the same pass over the slab
// table.
uint64_t block_alloc(kv_pool *p, uint32_t cls, bool thorough, uint32_t *donor = nullptr);
// Step 1 of block_alloc alone: a block of this client's home slabs of class
// cls, touching no other slab's line. UINT64_MAX when they have none.
uint64_t block_alloc_home(kv_pool *p, uint32_t cls);
// Claim a free block of class cls in the slab of block near (one this
// client just freed by eviction): no search of the slab table. UINT64_MAX
// when that slab has none (taken meanwhile) or is no longer of class cls.
uint64_t block_alloc_near(kv_pool *p, uint32_t cls, uint64_t near);
// Return a block whose word is expected (OWNED or ENTRY) to FREE.
bool block_free(kv_pool *p, uint64_t id, uint64_t expected_word);
// Prefetch, for writing, the block word and slab descriptor of block id
// (about to be freed); ids out of range are ignored.
void block_prefetch(kv_pool *p, uint64_t id);
void slab_finish_activation(kv_pool *p, uint32_t slab);
void slab_rollback_retire(kv_pool *p, uint32_t slab);
bool slab_retire(kv_pool *p, uint32_t slab); // evicts its entries; true if now FREE
// Bytes in use in ACTIVE slab s whose ctl is ctl (used blocks x block
// size, from the free_hint hint): what retiring it would evict, about.
uint64_t slab_used_bytes(const kv_pool *p, uint32_t s, uint64_t ctl);
// The ACTIVE slab of a class other than keep_cls, and not in skip, with the
// fewest bytes in use: the cheapest to retire. KV_NIL32 if none.
uint32_t slab_cheapest(kv_pool *p, uint32_t keep_cls, const uint32_t *skip, uint32_t n_skip);
// Move ACTIVE slab s to class cls: retire it (evicting its blocks), then
// activate it for cls. Returns block 0 of it, OWNED by us, or UINT64_MAX if
// the retirement rolled back or another process took the freed slab.
uint64_t slab_move(kv_pool *p, uint32_t s, uint32_t cls);

// ---- store.cc ----------------------------------------------------------------------
// Copy len bytes from src to dst and return XXH3_64bits of the bytes stored,
// in one pass (copy_hash.cc explains how); dst == nullptr: only hash src. width
// caps the vector width in bytes (64, 32 or 16; 0: the widest this CPU has,
// copy_hash_width()), so tests can check each variant.
uint64_t copy_hash(void *dst, const void *src, uint64_t len, unsigned width = 0);
unsigned copy_hash_width();
// Free an entry whose ctl is FREEING (owner this client): return its block and the entry.
void entry_finish_free(kv_pool *p, uint32_t e);
// After a transition that may have made (UNLINKED, pins 0): try to claim the free.
void entry_maybe_free(kv_pool *p, uint32_t e);

// Remove committed entry e at gen (eviction or remove). If require_unpinned,
// only succeeds when the pin count is 0. Returns the length freed-to-be or 0.
// cause (KV_FEED_REMOVE, EVICT or EXPIRE) is what the change feed records.
bool entry_kill(kv_pool *p, uint32_t e, uint32_t gen, bool require_unpinned,
                uint32_t cause = KV_FEED_REMOVE);
// Count entry e (RESERVED, ours, linked) as a child of the committed entry
// with key parent: kids + 1 on the parent, e.parent names it.
void entry_link_parent(kv_pool *p, uint32_t e, uint32_t ns, const kv_key &parent);
// Uncount en from its parent's kids (at free; once, whoever frees it).
void entry_unlink_parent(kv_pool *p, kv_entry &en);
// Abort a RESERVED entry (owner may be dead).
void entry_abort(kv_pool *p, uint32_t e, uint64_t ctl_seen, uint64_t aux_seen);

// ---- store.cc: for the daemon's snapshot writer ----------------------------------
// kv_get without its side effects: the block is pinned and its view filled,
// but no hit or miss is counted and its eviction rank is not refreshed, so a
// persist neither inflates the pool's hit rate nor makes every block look
// just used to LRU/LFU/prefix eviction. Release with kv_release.
int pin_for_snapshot(kv_pool *p, uint32_t ns, const kv_key &k, kv_view *out);

// ---- evict.cc ------------------------------------------------------------------------
// What an eviction freed, so that the put that asked for it can claim that
// first instead of searching: the victim's block and entry (both FREE once
// the kill finished the victim's free, which it does since the victim was
// unpinned; another process may claim them first, so they are hints that
// the claim CAS validates). None (UINT64_MAX, KV_NIL32) when a slab was
// retired instead.
struct Victim {
    uint64_t block = UINT64_MAX;
    uint32_t entry = KV_NIL32;
};
// Free space for a block of class cls. Returns true if something was freed;
// then *victim (when given) names the evicted block of the class, or none.
bool evict_for_class(kv_pool *p, uint32_t cls, Victim *victim = nullptr);
// Evict one unpinned block chosen by the pool's policy (any class); the one
// code path of inline, watermark and kvctl eviction. Returns bytes freed-to-be
// (at least 1) or 0 when nothing is evictable; *victim (when given): what.
uint64_t evict_one(kv_pool *p, Victim *victim = nullptr);

// ---- namespace.cc ----------------------------------------------------------------------
bool ns_valid(const kv_pool *p, uint32_t ns);

// ---- reap.cc ---------------------------------------------------------------------------
int reap_dead_clients(kv_pool *p);

} // namespace kv::detail

// ---- history.cc: eviction history across a snapshot (daemon/snapshot_*.cc) -------
namespace kv::detail {

// What a block's eviction order depends on, in a form that keeps its
// meaning in another pool or after a reboot (uapi/kvpool/snapshot.h,
// struct kv_snap_history, says how each field reads).
struct History {
    uint64_t commit_ns = 0; // CLOCK_REALTIME
    uint64_t rank_age = 0;  // ticks since the last access, or LFU count above the floor
    uint32_t ttl_ms = 0;
    bool referenced = false; // CLOCK bit
    bool has_parent = false;
    kv_key parent{}; // same namespace as the block
};

// The pool's rank reference: the access clock now (tick policies), the
// LFU floor (LFU), 0 (CLOCK). A persist takes one at its start and ages
// every block against it; a restore takes one and re-bases against it.
uint64_t history_reference(kv_pool *p);
// The history of the entry a view pins (pin_for_snapshot, kv_get): 0, or
// -EINVAL for a view that names no entry. The pin keeps the entry in its
// life; the parent's key is read only while the parent is committed in
// the life the block linked to (else no parent).
int history_read(kv_pool *p, const kv_view &v, uint64_t ref, History *out);
// Give a reservation of this client (RESERVED, not yet committed) the
// rank and CLOCK bit of h, read in a pool of policy src_policy, re-based
// on ref (history_reference of this pool); a rank of another policy family
// is left as the reserve set it. The commit publishes them. 0 or -EINVAL.
int history_apply(kv_pool *p, const kv_reservation &r, const History &h, uint32_t src_policy,
                  uint64_t ref);
// After the commit of entry e at gen: set its commit time (the commit
// wrote the current time). Pinned meanwhile, so an entry evicted and
// recycled since is left alone. 0, -ENOENT (no longer committed at gen)
// or -ENOBUFS (no free pin slot).
int history_set_commit_time(kv_pool *p, uint32_t e, uint32_t gen, uint64_t commit_ns);
// Count the committed block child as a child of the committed block
// parent (both in ns), as a put that named the parent would have
// (entry_link_parent); nothing when child has a parent already. 0,
// -ENOENT (either is not committed) or -ENOBUFS (no free pin slot).
int history_link_parent(kv_pool *p, uint32_t ns, const kv_key &child, const kv_key &parent);

} // namespace kv::detail
