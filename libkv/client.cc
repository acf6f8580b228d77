// SPDX-License-Identifier: MIT
//
// Client table: claiming a slot at attach, freeing it at detach, and telling
// whether the process behind a slot is gone (pid plus start time, so a
// recycled pid is not mistaken for the original client).
#include "detail.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

namespace kv::detail {

SlotStack::SlotStack(uint32_t n) : head_(uint64_t(KV_NIL32)), next_(new std::atomic<uint32_t>[n]) {
    // Relaxed: no other thread sees the stack before its constructor returns.
    for (uint32_t i = 0; i < n; i++)
        next_[i].store(KV_NIL32, std::memory_order_relaxed);
}

// Treiber stack, process-local. The tag in head's upper half makes a pop
// that read (top, next) before another thread popped and re-pushed top fail
// its CAS (ABA). next_[top] is read only after an acquire of head that saw
// the push of top (CLI-A1, CLI-A2), so it is the value that push wrote.
uint32_t SlotStack::pop() {
    // CLI-A1: observes the pushed top's next_; pairs with CLI-R1 (push).
    uint64_t h = head_.load(std::memory_order_acquire);
    for (;;) {
        uint32_t top = uint32_t(h);
        if (top == KV_NIL32) return KV_NIL32;
        // Relaxed: ordered after the acquire of the head value that named top.
        uint32_t nx = next_[top].load(std::memory_order_relaxed);
        uint64_t nh = ((h >> 32) + 1) << 32 | nx;
        // CLI-A2: on failure reloads head as CLI-A1 does (the next round
        // reads next_ of the new top); pairs with CLI-R1 (push).
        if (head_.compare_exchange_weak(h, nh, std::memory_order_acquire,
                                        std::memory_order_acquire))
            return top;
    }
}

void SlotStack::push(uint32_t slot) {
    // Relaxed: only the expected value of the CAS below, which validates it.
    uint64_t h = head_.load(std::memory_order_relaxed);
    for (;;) {
        // Relaxed: published by the CAS below.
        next_[slot].store(uint32_t(h), std::memory_order_relaxed);
        uint64_t nh = ((h >> 32) + 1) << 32 | slot;
        // CLI-R1: publishes next_[slot]; pairs with CLI-A1 and CLI-A2 (pop).
        if (head_.compare_exchange_weak(h, nh, std::memory_order_release,
                                        std::memory_order_relaxed))
            return;
    }
}

namespace {

// Parse /proc/<pid>/stat: state (field 3) and starttime (field 22). The
// command name (field 2) may hold spaces and parentheses: skip to the last ')'.
bool read_stat(uint32_t pid, char *state, uint64_t *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    if (!s) return false;
    s += 2; // ") "
    *state = *s;
    int field = 3;
    while (*s && field < 22) {
        if (*s++ == ' ') field++;
    }
    *start = strtoull(s, nullptr, 10);
    return true;
}

} // namespace

uint64_t proc_start_time(uint32_t pid) {
    char st;
    uint64_t start = 0;
    return read_stat(pid, &st, &start) ? start : 0;
}

bool client_is_dead(uint32_t pid, uint64_t start_time) {
    if (pid == 0) return true;
    if (kill(pid_t(pid), 0) != 0 && errno == ESRCH) return true;
    char st;
    uint64_t start = 0;
    if (!read_stat(pid, &st, &start))
        return false;                        // exists but unreadable (other pid namespace): alive
    if (st == 'Z' || st == 'X') return true; // exited, not yet waited for
    return start_time != 0 && start != start_time; // pid recycled by another process
}

namespace {

// This process becomes the user of slot i, which it holds (LIVE with its
// pid): record its start time, and set up the process-local free lists of
// the slot's journal slots and live-bytes records.
void take_slot(kv_pool *p, uint32_t i) {
    kv_client &c = p->clients[i];
    // CLI-R2: publishes start_time after the claim that named our pid, so a
    // reader that sees it non-zero judges the right process; pairs with
    // CLI-A5 (client_claim), REAP-A9 (reap_dead_clients), INS-A4 and INS-A8
    // (inspect.cc). Until it lands a reaper judges the slot by pid alone
    // (PROTOCOL.md section 1).
    store(c.start_time, proc_start_time(p->pid), std::memory_order_release);
    // Relaxed: informational (kv_pool_clients), orders nothing.
    store(c.attach_ns, now_ns(), std::memory_order_relaxed);
    p->client = i;
    const uint32_t slots = p->hdr->pins_per_client;
    p->journal = p->journal_all + uint64_t(i) * slots;
    p->free_slots = std::make_unique<SlotStack>(slots);
    for (uint32_t s = slots; s-- > 0;) {
        // Every journal slot of a slot we hold is FREE: the reaper (or the
        // last user's detach) resolves them all before the client slot is
        // freed, and a takeover resolves them in reclaim_client. Anything
        // else is damage, not a pin: acting on it could drop another
        // client's pin, and leaving it would make those journal slots
        // unusable (every get -ENOBUFS once all are). Reset the phase,
        // keeping seq, which must never go back (pin.cc, ABA).
        // Relaxed: the slot is ours (LIVE or REAPING by us), and the claim's
        // acquire (CLI-X1, CLI-X2) already ordered the last user's writes.
        const uint64_t b = load(p->journal[s].b, std::memory_order_relaxed);
        if (PinB::phase(b) != KV_PIN_FREE)
            store(p->journal[s].b, PinB::make(PinB::seq(b), KV_PIN_FREE),
                  std::memory_order_relaxed);
        p->free_slots->push(s);
    }
    // A record still pending here was left by a user this slot outlived
    // (the reaper decides records before freeing a slot; a damaged region
    // may not have): decide it as a dead client's, then every record is
    // free for this process's threads.
    acct_resolve_dead(p, i);
    p->acct_free = std::make_unique<SlotStack>(KV_ACCT_RECORDS);
    for (uint32_t r = KV_ACCT_RECORDS; r-- > 0;)
        p->acct_free->push(r);
    p->room.start(p);
}

} // namespace

void reclaim_client(kv_pool *p, uint32_t client, bool died);

int client_claim(kv_pool *p, bool daemon) {
    const uint32_t n = p->hdr->max_clients;
    // Ordinary attachers use slots [0, shared); the daemon slots follow.
    const uint32_t shared = n - p->hdr->daemon_slots;
    const uint32_t start = p->pid % shared; // spread concurrent attachers
    auto slot_at = [&](uint32_t k) { return daemon ? (shared + k) % n : (start + k) % shared; };
    const uint32_t candidates = daemon ? n : shared;
    for (uint32_t k = 0; k < candidates; k++) {
        const uint32_t i = slot_at(k);
        kv_client &c = p->clients[i];
        // CLI-A3: observes a FREE slot; pairs with CLI-R3 (client_release_slot)
        // and REAP-R1 (reap_dead_clients), which freed it.
        uint64_t w = load(c.ctl, std::memory_order_acquire);
        if (ClientCtl::state(w) != KV_CLIENT_FREE) continue;
        // CLI-X1: one CAS claims the slot and records the pid, so the slot is
        // never LIVE without a pid a reaper can check. Its acquire pairs with
        // CLI-R3 and REAP-R1 (the release that freed the slot), so the journal
        // slots the last user or its reaper cleared are visible before we
        // reuse them; its release publishes the claim to CLI-A4, REAP-A8,
        // STAT-A4, STAT-A6, STAT-A11, INS-A3, INS-A7 and NS-A3, and to a
        // later takeover's CLI-X2 or REAP-X2.
        if (!cas(c.ctl, w, ClientCtl::make(KV_CLIENT_LIVE, ClientCtl::tag(w) + 1, p->pid),
                 std::memory_order_acq_rel))
            continue;
        take_slot(p, i);
        return 0;
    }
    // No FREE slot: take over the slot of a dead client. The CAS LIVE(dead)
    // -> REAPING(us) is the reaper's (reap.cc), so no other reaper touches
    // the slot while we give back what the dead client held, acting as that
    // slot's client (its live-bytes records and counters). Then
    // REAPING(us) -> LIVE(us) makes it ours, never FREE in between.
    for (uint32_t k = 0; k < candidates; k++) {
        const uint32_t i = slot_at(k);
        kv_client &c = p->clients[i];
        // CLI-A4: observes LIVE(pid) or REAPING(pid); pairs with CLI-X1,
        // CLI-X2, CLI-X3 and REAP-X2 (the claims that wrote the pid).
        uint64_t w = load(c.ctl, std::memory_order_acquire);
        const uint32_t st = ClientCtl::state(w);
        if (st == KV_CLIENT_LIVE) {
            // CLI-A5: the start time of that pid's claim; pairs with CLI-R2.
            if (!client_is_dead(ClientCtl::pid(w), load(c.start_time, std::memory_order_acquire)))
                continue;
        } else if (st != KV_CLIENT_REAPING || !client_is_dead(ClientCtl::pid(w), 0)) {
            continue;
        }
        const uint64_t reaping = ClientCtl::make(KV_CLIENT_REAPING, ClientCtl::tag(w) + 1, p->pid);
        // CLI-X2: the reaper's claim (as REAP-X2). Acquire pairs with CLI-X1,
        // CLI-X3 and REAP-X2 (the dead user's or dead reaper's claim), so what
        // it wrote before its claim is visible to the reclaim; release
        // publishes REAPING(us) to other reapers' CLI-A4 and REAP-A8 and to
        // INS-A3.
        if (!cas(c.ctl, w, reaping, std::memory_order_acq_rel)) continue;
        p->client = i;
        p->acct_free = std::make_unique<SlotStack>(KV_ACCT_RECORDS);
        for (uint32_t r = KV_ACCT_RECORDS; r-- > 0;)
            p->acct_free->push(r);
        reclaim_client(p, i, true); // decides the dead client's records before its operations
        bump(my_stats(p).reaps);
        // Relaxed: published by CLI-X3 below.
        store(c.start_time, uint64_t(0), std::memory_order_relaxed);
        // CLI-X3: REAPING(us) -> LIVE(us). Release publishes the reclaim's
        // writes and start_time 0 to the readers of CLI-X1 (CLI-A4, REAP-A8,
        // STAT-A4, STAT-A6, STAT-A11, INS-A3, INS-A7, NS-A3) and to a later
        // takeover's CLI-X2 or REAP-X2; its acquire pairs with nothing new
        // (only we write a slot we hold REAPING).
        uint64_t held = reaping;
        if (!cas(c.ctl, held, ClientCtl::make(KV_CLIENT_LIVE, ClientCtl::tag(reaping) + 1, p->pid),
                 std::memory_order_acq_rel))
            return -EUSERS; // cannot happen: only we write a slot we hold REAPING
        take_slot(p, i);
        // Relaxed: a counter the daemon polls to notice reaps; orders nothing.
        aref(p->state->reap_epoch).fetch_add(1, std::memory_order_relaxed);
        return 0;
    }
    return -EUSERS;
}

void client_release_slot(kv_pool *p) {
    reclaim_client(p, p->client, false);
    kv_client &c = p->clients[p->client];
    // start_time 0 means "not yet known": the next claimant's pid must never
    // be judged against our start time (a reaper would take it for a
    // recycled pid and reap a live client).
    // Relaxed: published by CLI-R3 below.
    store(c.start_time, uint64_t(0), std::memory_order_relaxed);
    // Relaxed: the slot is ours; the CAS below validates the value.
    uint64_t w = load(c.ctl, std::memory_order_relaxed);
    // CLI-R3: frees the slot; publishes the cleared journal, the decided
    // live-bytes records and start_time 0 to the next claimant (CLI-A3,
    // CLI-X1) and to the readers that count LIVE slots (STAT-A4, STAT-A6,
    // STAT-A11, NS-A3).
    while (!cas(c.ctl, w, ClientCtl::make(KV_CLIENT_FREE, ClientCtl::tag(w) + 1, 0),
                std::memory_order_release)) {
    }
}

} // namespace kv::detail
