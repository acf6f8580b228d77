// SPDX-License-Identifier: MIT
//
// Crash torture: workers running the stress workload (holding pins and open
// reservations) are SIGKILLed at random instructions; kv_reap, run by the
// parent, by survivors or by a newcomer's attach, must give back everything
// they held. After every round the pool is quiescent and its exact
// accounting is checked, so a leak is caught in the round that caused it
// (the round, its mode and the seed are printed).
//
// Environment: KV_MP_SEED, KV_CRASH_ROUNDS (default 200),
// KV_CRASH_PIN_ROUNDS (default 100).
#include "../security/erase_scan.h"
#include "mp_common.h"

#include <poll.h>

namespace {

using namespace kvmp;

constexpr int kWorkers = 3;

const char *mode_name(unsigned mode) {
    switch (mode) {
    case 0:
        return "parent reaps while survivors run";
    case 1:
        return "newcomer's attach reaps";
    case 2:
        return "survivors reap";
    case 3:
        return "killed while cleaning up and detaching";
    case 4:
        return "two killed, parent reaps";
    case 5:
        return "reaping newcomer killed too";
    default:
        return "?";
    }
}

// The pool a round-based crash test runs against.
struct CrashPool {
    const char *tag;
    uint64_t avg_block_size; // 0: the library's default (16 KiB)
    uint64_t default_rounds;
    uint64_t size = 64 * kMiB;
    bool expect_moves = false; // slabs must change class during the rounds
    bool secure_erase = false; // KV_CREATE_F_SECURE_ERASE: free space must stay zero
};

// Each slab's state and class ([7:0] state, [15:8] class, as the ctl word
// has them): what a round's end compares with the last round's to count
// slabs that moved between classes (or were freed or taken).
std::vector<uint64_t> slab_classes(kv_pool *p) {
    const kv_region_header *h = kv_pool_header(p);
    const auto *slabs =
        reinterpret_cast<const kv_slab *>(reinterpret_cast<const char *>(h) + h->slab_off);
    std::vector<uint64_t> out(h->n_slabs);
    for (uint32_t i = 0; i < h->n_slabs; i++)
        out[i] = __atomic_load_n(&slabs[i].ctl, __ATOMIC_ACQUIRE) & 0xffff;
    return out;
}

class CrashTest : public MpTest {
  protected:
    // Rounds of: start workers, SIGKILL some at random points, reap, check
    // the pool is quiescent and its accounting exact (body below).
    void run_rounds(const CrashPool &cp);
    pid_t start_worker(int slot, const KeySpace &ks, const WorkloadCfg &cfg, uint64_t seed) {
        new (&board_->w[slot]) WorkerCounters();
        pid_t pid = spawn(30, [&, slot, seed] {
            Worker w(board_, slot, ks, cfg, seed);
            return w.run(path_.c_str());
        });
        if (pid > 0) kids_.push_back(pid);
        return pid;
    }
    void forget(pid_t pid) {
        for (pid_t &k : kids_)
            if (k == pid) k = 0;
    }
};

struct Victim {
    pid_t pid;
    int slot;
    bool killed;   // died from our SIGKILL (not a normal exit first)
    bool attached; // had returned from kv_pool_attach and not yet begun kv_pool_detach
    uint32_t client_index;
};

void CrashTest::run_rounds(const CrashPool &cp) {
    uint64_t seed = test_seed("crash");
    const uint64_t rounds = env_u64("KV_CRASH_ROUNDS", cp.default_rounds);
    ASSERT_TRUE(create_pool(cp.tag, cp.size, 1 * kMiB, KV_EVICT_PREFIX, cp.avg_block_size,
                            cp.secure_erase ? KV_CREATE_F_SECURE_ERASE : 0U));
    ASSERT_TRUE(attach());
    KeySpace ks;
    ASSERT_TRUE(build_keys(&ks, 2048, 48, 8));
    board_ = shared_new<Board>();
    ASSERT_NE(board_, nullptr);

    WorkloadCfg cfg;
    cfg.max_ops = ~0ULL;
    cfg.max_held = 64;
    cfg.max_open = 4;
    cfg.hold_percent = 50;

    Rng rng(seed);
    kv_stats s_prev{};
    ASSERT_EQ(kv_pool_stats(pool_, &s_prev), 0);
    const kv_stats s_start = s_prev;
    uint64_t kills = 0, kills_attached = 0, parent_reaped = 0, rounds_run = 0, moves = 0;
    std::vector<uint64_t> slabs_before = slab_classes(pool_);
    uint64_t t0 = now_ns();

    for (uint64_t round = 0; round < rounds && !HasFailure(); round++) {
        unsigned mode = static_cast<unsigned>(rng.below(6));
        board_->stop.store(0);
        board_->no_reap.store(mode == 0 || mode == 4 ? 1 : 0);
        cfg.deadline_ns = now_ns() + 5000000000ULL;
        kids_.clear();
        pid_t pids[kWorkers + 1] = {};
        for (int i = 0; i < kWorkers; i++) {
            pids[i] = start_worker(i, ks, cfg, seed ^ mix64(round * 16 + static_cast<uint64_t>(i)));
            ASSERT_GT(pids[i], 0) << "fork: " << strerror(errno);
        }
        if (mode == 0 || mode == 4) {
            // Only the parent may reap in these modes: no attach may come
            // after the kill (an attach reaps too).
            for (int w = 0; w < 100000; w++) { // up to 10 s (ASan, a loaded VM)
                bool all = true;
                for (int i = 0; i < kWorkers; i++)
                    all &= board_->w[i].attached.load() == 1;
                if (all) break;
                usleep(100);
            }
        }
        usleep(static_cast<useconds_t>(rng.below(20001)));

        std::vector<Victim> victims;
        auto kill_slot = [&](int slot) {
            Victim v{pids[slot], slot, false, false, KV_NIL32};
            kill(v.pid, SIGKILL);
            int st = 0;
            bool ok = wait_child(v.pid, 10000, &st);
            forget(v.pid);
            EXPECT_TRUE(ok) << "victim did not die";
            if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
                v.killed = true;
            } else {
                EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "victim " << status_str(st);
            }
            const WorkerCounters &c = board_->w[slot];
            v.attached = v.killed && c.attached.load() == 1 && c.detaching.load() == 0;
            v.client_index = c.client_index.load();
            victims.push_back(v);
        };

        int victim = static_cast<int>(rng.below(kWorkers));
        if (mode == 3) {
            board_->stop.store(1);
            usleep(static_cast<useconds_t>(rng.below(3000)));
        }
        kill_slot(victim);
        if (mode == 4)
            kill_slot((victim + 1 + static_cast<int>(rng.below(kWorkers - 1))) % kWorkers);

        int reaped = 0;
        if (mode == 0 || mode == 4) {
            usleep(static_cast<useconds_t>(rng.below(5000)));
            int r = kv_reap(pool_); // concurrent with the survivors' operations
            EXPECT_GE(r, 0) << kv_strerror(r);
            reaped += r > 0 ? r : 0;
        } else if (mode == 1 || mode == 5) {
            pids[kWorkers] = start_worker(kWorkers, ks, cfg, seed ^ mix64(round * 16 + 15));
            ASSERT_GT(pids[kWorkers], 0);
            if (mode == 5) {
                usleep(static_cast<useconds_t>(rng.below(3000)));
                kill_slot(kWorkers);
            }
        }
        usleep(static_cast<useconds_t>(rng.below(10000)));
        board_->stop.store(1);
        for (int i = 0; i <= kWorkers; i++) {
            bool is_victim = false;
            for (auto &v : victims)
                is_victim |= v.slot == i;
            if (pids[i] <= 0 || is_victim) continue;
            int st = 0;
            EXPECT_TRUE(wait_child(pids[i], 20000, &st))
                << "survivor " << i << " hung: " << status_str(st);
            forget(pids[i]);
            EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
                << "survivor " << i << ": " << status_str(st);
        }
        int r2 = kv_reap(pool_);
        EXPECT_GE(r2, 0) << kv_strerror(r2);
        reaped += r2 > 0 ? r2 : 0;
        parent_reaped += static_cast<uint64_t>(reaped);

        uint64_t attached = 0, killed = 0;
        for (auto &v : victims) {
            attached += v.attached;
            killed += v.killed;
        }
        kills += killed;
        kills_attached += attached;

        kv_stats s{};
        ASSERT_EQ(kv_pool_stats(pool_, &s), 0);
        uint64_t delta = s.reaps - s_prev.reaps;
        // A client that attached is reaped exactly once, whoever does it; one
        // killed inside kv_pool_attach may or may not have a slot yet.
        EXPECT_GE(delta, attached) << "dead clients left unreaped";
        EXPECT_LE(delta, killed)
            << "more reaps counted than processes died (a client reaped twice?)";
        if (mode == 0 || mode == 4) {
            // Nobody else reaps in these modes: the parent's kv_reap calls must
            // have returned the dead clients.
            EXPECT_GE(static_cast<uint64_t>(reaped), attached) << "kv_reap returned " << reaped;
        }
        EXPECT_EQ(s.clients, 1u) << "only the parent should be live";
        const kv_client *ct = client_table(pool_);
        for (auto &v : victims) {
            if (!v.attached || v.client_index >= kv_pool_header(pool_)->max_clients) continue;
            uint64_t ctl = __atomic_load_n(&ct[v.client_index].ctl, __ATOMIC_ACQUIRE);
            bool freed = (ctl & 0xff) == KV_CLIENT_FREE || static_cast<pid_t>(ctl >> 32) != v.pid;
            EXPECT_TRUE(freed) << "client slot " << v.client_index << " of dead pid " << v.pid
                               << " still held: ctl 0x" << std::hex << ctl;
        }
        s_prev = s;

        kv_usage u{};
        ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
        EXPECT_TRUE(quiescent(u));
        // Live bytes are exact whatever instruction the victims died at.
        uint64_t live = 0;
        ASSERT_EQ(kv_pool_live_bytes(pool_, &live), 0);
        EXPECT_EQ(live, u.bytes_committed) << "live bytes drifted from the entry table";
        // No slab is left half moved: the reaper rolled back or finished
        // every retirement and activation a victim was in.
        EXPECT_EQ(u.slabs_free + u.slabs_active, kv_pool_header(pool_)->n_slabs)
            << "slabs left RETIRING or ACTIVATING";
        // Secure erase: whatever the victims were freeing, aborting or
        // erasing when they died, the reaps left no old byte in free space.
        if (cp.secure_erase) {
            EXPECT_EQ(kverase::free_space_violation(pool_), "");
        }
        const std::vector<uint64_t> slabs_now = slab_classes(pool_);
        for (size_t i = 0; i < slabs_now.size(); i++)
            moves += slabs_now[i] != slabs_before[i];
        slabs_before = slabs_now;
        EXPECT_EQ(board_->failures.load(), 0u) << board_->messages();
        rounds_run = round + 1;
        if (HasFailure()) {
            std::string vs;
            for (auto &v : victims)
                vs += " pid " + std::to_string(v.pid) + " slot " + std::to_string(v.slot) +
                      " client " + std::to_string(v.client_index) +
                      (v.killed ? " killed" : " exited") +
                      (v.attached ? " attached;" : " not-attached;");
            uint64_t worker_reaped = 0;
            for (int i = 0; i <= kWorkers; i++)
                worker_reaped += board_->w[i].reaped.load();
            fprintf(
                stderr,
                "[crash] round %" PRIu64 " (mode %u: %s) failed; seed 0x%016" PRIx64
                "\n  victims:%s\n  parent kv_reap returned %d in all, survivors' kv_reap %" PRIu64
                ", stats.reaps delta %" PRIu64 "\n%s",
                round, mode, mode_name(mode), seed, vs.c_str(), reaped, worker_reaped, delta,
                dump_suspects(pool_).c_str());
        }
    }
    double secs = static_cast<double>(now_ns() - t0) / 1e9;
    fprintf(stderr,
            "[crash] %" PRIu64 " rounds in %.1f s: %" PRIu64 " kills (%" PRIu64
            " after attach), parent reaped %" PRIu64 ", slabs changed class %" PRIu64 "\n",
            rounds_run, secs, kills, kills_attached, parent_reaped, moves);
    if (cp.expect_moves) {
        EXPECT_GT(moves, 0u) << "no slab moved between classes";
    }
    kids_.clear();

    // Every block left must be intact and reachable.
    kv_usage u{};
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_TRUE(quiescent(u));
    WalkResult w = walk_all(pool_, ks);
    EXPECT_EQ(w.bad, 0u) << w.first_error;
    EXPECT_EQ(w.found, u.entries_committed);
    EXPECT_EQ(w.bytes, u.bytes_committed);
    uint64_t live = 0;
    ASSERT_EQ(kv_pool_live_bytes(pool_, &live), 0);
    EXPECT_EQ(live, u.bytes_committed);
    kv_stats s{};
    ASSERT_EQ(kv_pool_stats(pool_, &s), 0);
    fprintf(stderr, "[crash] stats: %s\n[crash] usage: %s\n", stats_str(s).c_str(),
            usage_str(u).c_str());
    EXPECT_GE(s.reaps - s_start.reaps, kills_attached);
    EXPECT_LE(s.reaps - s_start.reaps, kills);
    // A client killed between counting a get and counting its outcome leaves
    // the totals off by one at most.
    uint64_t outcomes = s.hits + s.misses;
    uint64_t skew = s.gets > outcomes ? s.gets - outcomes : outcomes - s.gets;
    EXPECT_LE(skew, kills) << stats_str(s);
    if (cp.avg_block_size) { // the entry table was the limit, not the data area
        EXPECT_GT(s.evictions, 0u) << "the entry table never filled";
        EXPECT_LT(u.block_bytes_used, s.capacity / 2)
            << "the data area filled, not (only) the entry table";
    }
}

// A default pool: the data area fills first, so a put that finds no space
// evicts a block of its class (or retires another class's slab).
TEST_F(CrashTest, KillRandomWorkerRounds) {
    run_rounds({"crash", 0, 200});
}

// The entry table fills first (avg_block_size 256 KiB: 236 entries for 64
// MiB, blocks mostly 4-32 KiB), so nearly every put takes the entry-table
// path (store.cc, claim_with_eviction): evict the policy's victim, claim its
// entry and block directly, short rolling scans. A worker killed anywhere
// in it leaves a reservation (reaped) or a FREE entry and block (the kill
// is a remove), never a leak: the rounds' quiescence and accounting checks
// hold as for the default pool.
TEST_F(CrashTest, KillRandomWorkerRoundsEntryTableFull) {
    run_rounds({"crash-entries", 256 * kKiB, 100});
}

// Slab rebalancing under kills (issue 16): a 16 MiB pool has 14 slabs of
// 1 MiB for the workload's 4 KiB..512 KiB blocks (about 20 classes), so
// puts keep moving slabs between classes (allocator.cc, "Rebalancing":
// the cheapest slab retired for a class without one, an idle one moved to
// a class that would evict) while workers are killed anywhere in them.
// Each round's checks hold as for the default pool, no slab is left
// RETIRING or ACTIVATING, and slabs must have changed class.
TEST_F(CrashTest, KillRandomWorkerRoundsSlabMoves) {
    run_rounds({"crash-moves", 0, 100, 16 * kMiB, true});
}

// Secure erase under kills (uapi/PROTOCOL.md section 14): workers killed
// anywhere, inside an erase too (a remove's, an eviction's, an abort's,
// a reaper's), and after each round's reaps every byte outside the
// blocks still owned is zero, while each round's other checks hold.
TEST_F(CrashTest, KillRandomWorkerRoundsSecureErase) {
    CrashPool cp{"crash-erase", 0, 60};
    cp.secure_erase = true;
    run_rounds(cp);
}

// A client killed while holding many pins (match_prefix with KV_MATCH_F_PIN,
// repeated kv_get without release) and open reservations: after kv_reap
// every one of its pins is gone, blocks removed while it held them are freed,
// its reservations are aborted, and a pin another client holds on the same
// block survives.
TEST_F(CrashTest, KilledPinHolderIsReaped) {
    test_seed("pinholder");
    ASSERT_TRUE(create_pool("pins", 64 * kMiB, 1 * kMiB));
    ASSERT_TRUE(attach());
    KeySpace ks;
    ASSERT_TRUE(build_keys(&ks, 64, 12, 4));
    // Keep it well inside the pool: no eviction may take a block away.
    std::vector<kv_key> rand_keys;
    uint64_t bytes = 0;
    KeySet chain_keys;
    for (auto &c : ks.chains)
        chain_keys.insert(c.begin(), c.end());
    for (const kv_key &k : chain_keys)
        bytes += block_len(k);
    for (const kv_key &k : ks.rand) {
        if (bytes + block_len(k) > 24 * kMiB) continue;
        rand_keys.push_back(k);
        bytes += block_len(k);
    }
    std::vector<unsigned char> buf(kMaxBlock);
    auto put = [&](const kv_key &k) {
        fill_block(k, buf.data(), block_len(k));
        kv_meta m = block_meta(k);
        return kv_put(pool_, ks.ns, &k, buf.data(), block_len(k), &m);
    };
    for (const kv_key &k : chain_keys)
        ASSERT_EQ(put(k), 0);
    for (const kv_key &k : rand_keys)
        ASSERT_EQ(put(k), 0);
    const uint64_t n_blocks = chain_keys.size() + rand_keys.size();

    // The parent pins the first block of chain 0 (shared by the child's pins).
    kv_view mine{};
    ASSERT_EQ(kv_get(pool_, ks.ns, &ks.chains[0][0], &mine), 0);
    ASSERT_EQ(check_view(ks.chains[0][0], mine), "");

    // Keys nobody stored: the child reserves them and never commits.
    std::vector<kv_key> res_keys;
    for (uint64_t i = 0; i < 4; i++)
        res_keys.push_back(kv_key{mix64(0xabc0 + i), mix64(0xdef0 + i)});

    board_ = shared_new<Board>();
    ASSERT_NE(board_, nullptr);
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    pid_t child = spawn(60, [&] {
        close(pfd[0]);
        kv_pool *p = nullptr;
        char err[256] = "";
        int rc = kv_pool_attach(path_.c_str(), 0, &p, err, sizeof err);
        if (rc != 0) {
            board_->fail(0, "attach %d: %s", rc, err);
            return 2;
        }
        uint64_t pins = 0;
        for (auto &c : ks.chains) {
            std::vector<kv_view> v(c.size());
            int m = kv_match_prefix(p, ks.ns, c.data(), c.size(), KV_MATCH_F_PIN, v.data());
            if (m != static_cast<int>(c.size()))
                board_->fail(0, "match_prefix = %d, want %zu", m, c.size());
            for (int i = 0; i < m; i++) {
                std::string e = check_view(c[i], v[i]);
                if (!e.empty()) board_->fail(0, "pinned view: %s", e.c_str());
            }
            pins += static_cast<uint64_t>(m > 0 ? m : 0);
        }
        for (int rep = 0; rep < 3; rep++)
            for (const kv_key &k : rand_keys) {
                kv_view v{};
                int g = kv_get(p, ks.ns, &k, &v);
                if (g != 0)
                    board_->fail(0, "kv_get = %d", g);
                else
                    pins++;
            }
        for (const kv_key &k : res_keys) {
            kv_reservation r{};
            int g = kv_reserve(p, ks.ns, &k, block_len(k), nullptr, &r);
            if (g != 0)
                board_->fail(0, "kv_reserve = %d", g);
            else
                fill_block(k, r.data, block_len(k) / 2);
        }
        board_->w[0].max_held.store(pins);
        char c = 'r';
        if (write(pfd[1], &c, 1) != 1) return 3;
        for (;;)
            pause();
    });
    ASSERT_GT(child, 0);
    kids_.push_back(child);
    close(pfd[1]);
    pollfd pf{pfd[0], POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 30000), 1) << "child never got ready";
    char c = 0;
    ASSERT_EQ(read(pfd[0], &c, 1), 1) << "child died before ready: " << board_->messages();
    close(pfd[0]);
    ASSERT_EQ(board_->failures.load(), 0u) << board_->messages();
    const uint64_t child_pins = board_->w[0].max_held.load();
    EXPECT_EQ(child_pins, [&] {
        uint64_t n = 3 * rand_keys.size();
        for (auto &ch : ks.chains)
            n += ch.size();
        return n;
    }());

    kv_usage u{};
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_EQ(u.pins, child_pins + 1) << usage_str(u);
    EXPECT_EQ(u.journal_pins, child_pins + 1) << usage_str(u);
    EXPECT_EQ(u.entries_reserved, res_keys.size()) << usage_str(u);
    EXPECT_EQ(u.entries_committed, n_blocks);
    EXPECT_EQ(u.orphan_blocks, 0u);
    for (const kv_key &k : res_keys) {
        EXPECT_EQ(kv_contains(pool_, ks.ns, &k), 0) << "a reservation is invisible";
        EXPECT_EQ(put(k), -EBUSY) << "another client holds the reservation";
        EXPECT_EQ(kv_remove(pool_, ks.ns, &k), -EBUSY);
    }
    // Remove half of the blocks the child pins: they stay (pinned) until the
    // child's pins go.
    uint64_t removed = 0, removed_bytes = 0;
    for (size_t i = 0; i < rand_keys.size(); i += 2) {
        EXPECT_EQ(kv_remove(pool_, ks.ns, &rand_keys[i]), 0);
        EXPECT_EQ(kv_contains(pool_, ks.ns, &rand_keys[i]), 0);
        removed++;
        removed_bytes += block_len(rand_keys[i]);
    }
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_EQ(u.entries_dead, removed) << usage_str(u);
    EXPECT_EQ(u.entries_committed, n_blocks - removed) << usage_str(u);
    kv_stats s0{};
    ASSERT_EQ(kv_pool_stats(pool_, &s0), 0);

    ASSERT_EQ(kill(child, SIGKILL), 0);
    int st = 0;
    ASSERT_TRUE(wait_child(child, 10000, &st));
    kids_.clear();
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << status_str(st);

    EXPECT_EQ(kv_reap(pool_), 1);
    EXPECT_EQ(kv_reap(pool_), 0) << "reaped twice";
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_EQ(u.pins, 1u) << "only the parent's pin is left: " << usage_str(u);
    EXPECT_EQ(u.journal_pins, 1u) << usage_str(u);
    EXPECT_EQ(u.entries_reserved, 0u) << usage_str(u);
    EXPECT_EQ(u.entries_dead, 0u) << "removed blocks are freed at the last unpin: " << usage_str(u);
    EXPECT_EQ(u.entries_committed, n_blocks - removed);
    EXPECT_EQ(u.orphan_blocks, 0u);
    EXPECT_EQ(u.bad_links, 0u);
    EXPECT_EQ(u.unreachable, 0u);
    kv_stats s1{};
    ASSERT_EQ(kv_pool_stats(pool_, &s1), 0);
    EXPECT_EQ(s1.clients, 1u);
    EXPECT_EQ(s1.reaps - s0.reaps, 1u);
    EXPECT_EQ(s1.bytes_freed - s0.bytes_freed >= removed_bytes, true)
        << "bytes_freed grew by " << s1.bytes_freed - s0.bytes_freed
        << ", want >= " << removed_bytes;

    // The parent's pin is untouched.
    EXPECT_EQ(check_view(ks.chains[0][0], mine), "");
    // The aborted reservations' keys are free to store again.
    for (const kv_key &k : res_keys) {
        EXPECT_EQ(put(k), 0);
        kv_view v{};
        ASSERT_EQ(kv_get(pool_, ks.ns, &k, &v), 0);
        EXPECT_EQ(check_view(k, v), "");
        EXPECT_EQ(kv_release(pool_, &v), 0);
    }
    // Everything can be removed; the block the parent pins goes at its release.
    KeySet all = chain_keys;
    all.insert(rand_keys.begin(), rand_keys.end());
    all.insert(res_keys.begin(), res_keys.end());
    for (const kv_key &k : all) {
        int rc = kv_remove(pool_, ks.ns, &k);
        EXPECT_TRUE(rc == 0 || rc == -ENOENT) << rc;
    }
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_EQ(u.entries_dead, 1u) << usage_str(u);
    EXPECT_EQ(u.pins, 1u);
    EXPECT_EQ(check_view(ks.chains[0][0], mine), "") << "a pinned view outlives kv_remove";
    EXPECT_EQ(kv_release(pool_, &mine), 0);
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_TRUE(quiescent(u));
    EXPECT_EQ(u.entries_committed, 0u);
    EXPECT_EQ(u.blocks_used, 0u) << usage_str(u);
    EXPECT_EQ(u.block_bytes_used, 0u);
    EXPECT_EQ(u.bytes_committed, 0u);
}

// Pin/unpin storms on a few hot blocks, with one of two clients killed at a
// random instant each round: the pin journal must let kv_reap undo exactly
// the dead client's pins, never a survivor's. The parent holds one pin on
// each hot block throughout, so the count after reap must be exactly that.
TEST_F(CrashTest, KillDuringPinStorm) {
    uint64_t seed = test_seed("pinstorm");
    const uint64_t rounds = env_u64("KV_CRASH_PIN_ROUNDS", 100);
    ASSERT_TRUE(create_pool("storm", 32 * kMiB, 1 * kMiB));
    ASSERT_TRUE(attach());
    KeySpace ks;
    ASSERT_TRUE(build_keys(&ks, 16, 2, 1));
    std::vector<unsigned char> buf(kMaxBlock);
    // hot: pinned by the parent, never removed; churn: removed and re-put.
    std::vector<kv_key> hot(ks.rand.begin(), ks.rand.begin() + 8),
        churn(ks.rand.begin() + 8, ks.rand.end());
    for (auto &c : ks.chains)
        hot.insert(hot.end(), c.begin(), c.end());
    KeySet hot_set(hot.begin(), hot.end());
    hot.assign(hot_set.begin(), hot_set.end());
    for (const kv_key &k : hot) {
        fill_block(k, buf.data(), block_len(k));
        kv_meta m = block_meta(k);
        ASSERT_EQ(kv_put(pool_, ks.ns, &k, buf.data(), block_len(k), &m), 0);
    }
    std::vector<kv_view> mine(hot.size());
    for (size_t i = 0; i < hot.size(); i++)
        ASSERT_EQ(kv_get(pool_, ks.ns, &hot[i], &mine[i]), 0);
    const uint64_t held = hot.size();
    board_ = shared_new<Board>();
    ASSERT_NE(board_, nullptr);
    Rng rng(seed);

    auto storm = [&](int slot, uint64_t s) {
        return [&, slot, s] {
            kv_pool *p = nullptr;
            char err[256] = "";
            int rc = kv_pool_attach(path_.c_str(), 0, &p, err, sizeof err);
            if (rc != 0) {
                board_->fail(slot, "attach %d: %s", rc, err);
                return 2;
            }
            board_->w[slot].client_index.store(kv_pool_client_index(p));
            board_->w[slot].attached.store(1);
            Rng r(s);
            std::vector<unsigned char> b(kMaxBlock);
            std::vector<kv_view> views(64);
            while (!board_->stop.load(std::memory_order_relaxed)) {
                unsigned op = static_cast<unsigned>(r.below(10));
                if (op < 4) { // pin a burst of hot blocks, then unpin them
                    size_t n = 1 + r.below(views.size());
                    size_t got = 0;
                    for (; got < n; got++) {
                        const kv_key &k = hot[r.below(hot.size())];
                        if (kv_get(p, ks.ns, &k, &views[got]) != 0) {
                            board_->fail(slot, "kv_get of a hot block failed");
                            break;
                        }
                    }
                    for (size_t i = 0; i < got; i++)
                        if (kv_release(p, &views[i]) != 0) board_->fail(slot, "kv_release failed");
                } else if (op < 6) {
                    auto &c = ks.chains[r.below(ks.chains.size())];
                    int m =
                        kv_match_prefix(p, ks.ns, c.data(), c.size(), KV_MATCH_F_PIN, views.data());
                    if (m != static_cast<int>(c.size()))
                        board_->fail(slot, "match_prefix on hot chain = %d, want %zu", m, c.size());
                    for (int i = 0; i < m; i++)
                        if (kv_release(p, &views[i]) != 0) board_->fail(slot, "kv_release failed");
                } else { // churn: get, remove, put back
                    const kv_key &k = churn[r.below(churn.size())];
                    kv_view v{};
                    bool pinned = kv_get(p, ks.ns, &k, &v) == 0;
                    int rm = kv_remove(p, ks.ns, &k);
                    if (rm != 0 && rm != -ENOENT && rm != -EBUSY)
                        board_->fail(slot, "kv_remove = %d", rm);
                    fill_block(k, b.data(), block_len(k));
                    kv_meta m = block_meta(k);
                    int pr = kv_put(p, ks.ns, &k, b.data(), block_len(k), &m);
                    if (pr < 0 && pr != -EBUSY) board_->fail(slot, "kv_put = %d", pr);
                    if (pinned) {
                        std::string e = check_view(k, v);
                        if (!e.empty()) board_->fail(slot, "churned view: %s", e.c_str());
                        if (kv_release(p, &v) != 0) board_->fail(slot, "kv_release failed");
                    }
                }
            }
            if (kv_pool_detach(p) != 0) board_->fail(slot, "detach failed");
            return board_->w[slot].fails.load() ? 1 : 0;
        };
    };

    uint64_t kills = 0;
    for (uint64_t round = 0; round < rounds && !HasFailure(); round++) {
        board_->stop.store(0);
        new (&board_->w[0]) WorkerCounters();
        new (&board_->w[1]) WorkerCounters();
        kids_.clear();
        pid_t a = spawn(30, storm(0, seed ^ mix64(round * 2)));
        pid_t b = spawn(30, storm(1, seed ^ mix64(round * 2 + 1)));
        ASSERT_GT(a, 0);
        ASSERT_GT(b, 0);
        kids_ = {a, b};
        // b must be attached before a dies, or b's attach would reap a.
        for (int i = 0; i < 100000 && board_->w[1].attached.load() == 0; i++) // up to 10 s
            usleep(100);
        ASSERT_EQ(board_->w[1].attached.load(), 1) << "survivor never attached\n"
                                                   << board_->messages();
        usleep(static_cast<useconds_t>(rng.below(5000)));
        int st = 0;
        kill(a, SIGKILL);
        EXPECT_TRUE(wait_child(a, 10000, &st));
        bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
        bool attached = board_->w[0].attached.load() == 1;
        uint32_t a_idx = board_->w[0].client_index.load(), b_idx = board_->w[1].client_index.load();
        uint64_t a_ctl =
            attached ? __atomic_load_n(&client_table(pool_)[a_idx].ctl, __ATOMIC_ACQUIRE) : 0;
        kills += killed;
        usleep(static_cast<useconds_t>(rng.below(2000)));
        int r = kv_reap(pool_); // while b keeps pinning the same blocks
        EXPECT_GE(r, 0);
        int r1 = r;
        board_->stop.store(1);
        EXPECT_TRUE(wait_child(b, 20000, &st)) << "survivor hung";
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << status_str(st) << "\n"
                                                           << board_->messages();
        kids_.clear();
        r = kv_reap(pool_);
        EXPECT_GE(r, 0);
        // Only the parent reaps here (b attached before a died): exactly once.
        if (killed && attached) {
            EXPECT_EQ(r1 + r, 1) << "kv_reap returned " << r1 << " then " << r;
        } else {
            EXPECT_LE(r1 + r, 1);
        }
        kv_usage u{};
        ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
        EXPECT_TRUE(quiescent(u, held));
        for (size_t i = 0; i < hot.size(); i++)
            EXPECT_EQ(check_view(hot[i], mine[i]), "");
        kv_stats s{};
        ASSERT_EQ(kv_pool_stats(pool_, &s), 0);
        EXPECT_EQ(s.clients, 1u);
        EXPECT_EQ(board_->failures.load(), 0u) << board_->messages();
        if (HasFailure())
            fprintf(
                stderr,
                "[pinstorm] round %" PRIu64 " failed; seed 0x%016" PRIx64
                " (victim pid %d killed %d attached %d client %u, slot ctl after death 0x%" PRIx64
                "; survivor pid %d client %u)\n%s",
                round, seed, a, killed, attached, a_idx, a_ctl, b, b_idx,
                dump_suspects(pool_).c_str());
    }
    EXPECT_GT(kills, 0u);
    for (auto &v : mine)
        EXPECT_EQ(kv_release(pool_, &v), 0);
    kv_usage u{};
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_TRUE(quiescent(u));
}

} // namespace
