// SPDX-License-Identifier: MIT
//
// Multi-process stress: forked workers run a random mix of put, reserve +
// commit, reserve + abort, get (pinned views held across operations),
// release, remove, contains, match_prefix on shared chains, reap and evict
// against one pool small enough that eviction runs. Every block's bytes are a
// function of its key, so every read is checked byte for byte.
//
// When every worker has detached, the parent attaches and checks the exact
// accounting (kv_pool_usage) of the quiescent pool, reads back every key that
// was ever stored, and reconciles kv_pool_stats with the workers' own counts.
//
// Environment: KV_MP_SEED (repeat a run), KV_STRESS_OPS (ops per worker,
// default 20000), KV_STRESS_SECONDS (time bound, default 12).
#include "mp_common.h"

namespace {

using namespace kvmp;

struct StressParams {
    const char *tag;
    int workers;
    uint64_t pool_size;
    uint64_t slab_size;
    size_t n_rand;      // random keys shared by all workers
    unsigned n_prompts; // token sequences hashed into key chains
    unsigned families;  // prompts of one family share a prefix
    uint64_t seconds;
    uint64_t ops;
    unsigned max_held;
    uint32_t policy = KV_EVICT_PREFIX;
    uint64_t avg_block_size = 0; // 0: the library's default (16 KiB)
};

class StressTest : public MpTest {
  protected:
    void run_stress(const StressParams &sp);
};

void StressTest::run_stress(const StressParams &sp) {
    uint64_t seed = test_seed(sp.tag);
    ASSERT_TRUE(create_pool(sp.tag, sp.pool_size, sp.slab_size, sp.policy, sp.avg_block_size));
    ASSERT_TRUE(attach());
    ASSERT_EQ(kv_pool_header(pool_)->evict_policy, sp.policy);

    KeySpace ks;
    ASSERT_TRUE(build_keys(&ks, sp.n_rand, sp.n_prompts, sp.families));
    // Prompts p and p + families share their first 2 + (p % families) % 6
    // blocks, then differ: the chains must agree exactly that far.
    if (sp.n_prompts > sp.families) {
        const auto &a = ks.chains[0], &b = ks.chains[sp.families];
        ASSERT_GE(a.size(), 3u);
        ASSERT_GE(b.size(), 3u);
        EXPECT_TRUE(KeyEq()(a[0], b[0]) && KeyEq()(a[1], b[1]))
            << "kv_hash_chain: equal prefixes, different keys";
        EXPECT_FALSE(KeyEq()(a[2], b[2])) << "kv_hash_chain: different blocks, equal keys";
    }
    const kv_region_header *h = kv_pool_header(pool_);
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->slab_size, sp.slab_size);
    EXPECT_EQ(h->page_size, 4096u);
    EXPECT_EQ(h->backing, static_cast<uint32_t>(KV_BACKING_SHM));
    // The parent leaves while the workers run; the namespace must stay.
    detach();

    board_ = shared_new<Board>();
    ASSERT_NE(board_, nullptr);
    WorkloadCfg cfg;
    cfg.max_ops = env_u64("KV_STRESS_OPS", sp.ops);
    uint64_t seconds = env_u64("KV_STRESS_SECONDS", sp.seconds);
    cfg.deadline_ns = now_ns() + seconds * 1000000000ULL;
    cfg.max_held = sp.max_held;

    for (int i = 0; i < sp.workers; i++) {
        pid_t pid = spawn(static_cast<unsigned>(seconds + 60), [&, i] {
            Worker w(board_, i, ks, cfg, seed ^ mix64(static_cast<uint64_t>(i) + 1));
            return w.run(path_.c_str());
        });
        ASSERT_GT(pid, 0) << "fork: " << strerror(errno);
        kids_.push_back(pid);
    }
    for (int i = 0; i < sp.workers; i++) {
        int st = 0;
        bool exited = wait_child(kids_[i], static_cast<int>((seconds + 60) * 1000), &st);
        kids_[i] = 0;
        EXPECT_TRUE(exited) << "worker " << i
                            << " did not finish in time (hang?): " << status_str(st);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
            << "worker " << i << ": " << status_str(st);
    }
    EXPECT_EQ(board_->failures.load(), 0u) << board_->messages();

    // Totals the workers counted themselves.
    WorkerCounters t{};
    uint64_t ops = 0;
    for (int i = 0; i < sp.workers; i++) {
        const WorkerCounters &c = board_->w[i];
        EXPECT_EQ(c.done.load(), 1) << "worker " << i << " did not detach";
        ops += c.ops;
        t.puts_stored += c.puts_stored;
        t.commits += c.commits;
        t.dedups += c.dedups;
        t.busy += c.busy;
        t.nospc += c.nospc;
        t.gets += c.gets;
        t.get_hits += c.get_hits;
        t.get_misses += c.get_misses;
        t.removes_ok += c.removes_ok;
        t.aborts += c.aborts;
        t.matches += c.matches;
        t.matched_blocks += c.matched_blocks;
        t.bytes_committed += c.bytes_committed;
        t.bytes_aborted += c.bytes_aborted;
        t.bytes_raced += c.bytes_raced;
        t.max_held = std::max(t.max_held.load(), c.max_held.load());
    }
    fprintf(stderr,
            "[%s] %" PRIu64 " ops: %" PRIu64 " stored by put, %" PRIu64 " committed, %" PRIu64
            " dedup, %" PRIu64 " busy, %" PRIu64 " nospc, %" PRIu64 " gets (%" PRIu64
            " hits), %" PRIu64 " removes, %" PRIu64 " aborts, %" PRIu64 " matches (%" PRIu64
            " blocks), %" PRIu64 " MiB committed, max %" PRIu64 " pins held\n",
            sp.tag, ops, t.puts_stored.load(), t.commits.load(), t.dedups.load(), t.busy.load(),
            t.nospc.load(), t.gets.load(), t.get_hits.load(), t.removes_ok.load(), t.aborts.load(),
            t.matches.load(), t.matched_blocks.load(), t.bytes_committed.load() / kMiB,
            t.max_held.load());
    EXPECT_GT(ops, 0u);
    // Nothing is pinned beyond a few hundred blocks, far below the pool size:
    // kv_put documents -ENOSPC only when evicting every unpinned block fails.
    EXPECT_EQ(t.nospc.load(), 0u)
        << "kv_put/kv_reserve returned -ENOSPC with most of the pool evictable";

    ASSERT_TRUE(attach());
    EXPECT_EQ(kv_reap(pool_), 0) << "every worker detached normally: nobody to reap";

    kv_usage u{};
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_TRUE(quiescent(u));
    EXPECT_TRUE(kids_consistent(pool_));

    WalkResult w = walk_all(pool_, ks);
    EXPECT_EQ(w.bad, 0u) << "first error: " << w.first_error;
    EXPECT_EQ(w.found, u.entries_committed) << "committed entries the key walk did not find";
    EXPECT_EQ(w.bytes, u.bytes_committed);

    kv_stats s{};
    ASSERT_EQ(kv_pool_stats(pool_, &s), 0);
    fprintf(stderr, "[%s] stats: %s\n[%s] usage: %s\n", sp.tag, stats_str(s).c_str(), sp.tag,
            usage_str(u).c_str());
    uint64_t walked = ks.all().size();
    EXPECT_EQ(s.clients, 1u);
    EXPECT_EQ(s.gets, s.hits + s.misses);
    EXPECT_GE(s.gets, t.gets + walked);
    EXPECT_GE(s.hits, t.get_hits + w.found);
    EXPECT_GE(s.misses, t.get_misses + (walked - w.found));
    EXPECT_EQ(s.puts, t.puts_stored + t.commits) << "stats.puts counts blocks committed";
    EXPECT_EQ(s.dedups, t.dedups.load());
    EXPECT_EQ(s.removes, t.removes_ok.load());
    EXPECT_EQ(s.bytes_committed, t.bytes_committed.load());
    EXPECT_EQ(s.reaps, 0u);
    EXPECT_LE(u.block_bytes_used, s.capacity);
    // Every committed byte is still committed or was freed (removed or
    // evicted). bytes_freed may also count aborted reservations and the
    // blocks of puts that lost a race for their key (KV_DEDUP / -EBUSY after
    // allocating), but nothing else.
    ASSERT_GE(s.bytes_committed, u.bytes_committed);
    uint64_t gone = s.bytes_committed - u.bytes_committed;
    EXPECT_GE(s.bytes_freed, gone) << "committed bytes vanished without being freed";
    EXPECT_LE(s.bytes_freed, gone + t.bytes_aborted + t.bytes_raced)
        << "bytes_freed " << s.bytes_freed << " exceeds removed/evicted " << gone << " + aborted "
        << t.bytes_aborted << " + lost races " << t.bytes_raced;
    if (t.bytes_committed > s.capacity + 64 * kMiB) {
        EXPECT_GT(s.evictions, 0u)
            << "committed " << t.bytes_committed << " bytes into " << s.capacity;
    }
    if (sp.avg_block_size) { // the entry table was the limit, not the data area
        EXPECT_GT(s.evictions, 0u) << "the entry table never filled";
        EXPECT_LT(u.block_bytes_used, s.capacity / 2)
            << "the data area filled, not (only) the entry table";
    }
}

TEST_F(StressTest, FourWorkersRandomOps) {
    run_stress({"stress", 4, 256 * kMiB, 1 * kMiB, 8192, 96, 12, 12, 20000, 32});
}

// Few keys, many writers: reserve/put/remove races on the same keys, -EBUSY
// and KV_DEDUP on nearly every write.
// The same load under each sampled policy (prefix runs above): eviction
// under multi-process put/get keeps every invariant, chain links included.
TEST_F(StressTest, FourWorkersEachPolicy) {
    for (uint32_t policy : {KV_EVICT_LRU, KV_EVICT_LFU, KV_EVICT_FIFO, KV_EVICT_PRIORITY}) {
        SCOPED_TRACE(kv_evict_policy_name(policy));
        StressParams sp{"policy", 4, 64 * kMiB, 1 * kMiB, 2048, 48, 8, 3, 8000, 16};
        sp.policy = policy;
        run_stress(sp);
        TearDown();
        if (HasFatalFailure()) return;
    }
}

// The entry table fills first: avg_block_size 256 KiB gives one entry per
// 256 KiB of the data area (236 here), and blocks are mostly 4-32 KiB
// (block_len: 70% of keys; 95% are under 128 KiB). Every put into the
// full pool then takes the entry-table path (store.cc, claim_with_eviction:
// evict, claim the victim's entry and block directly; short rolling scans;
// entries freed by the worker's own removes first), in four processes at
// once, under the same checks as above.
TEST_F(StressTest, FourWorkersEntryTableFull) {
    StressParams sp{"entries", 4, 64 * kMiB, 1 * kMiB, 2048, 48, 8, 4, 10000, 16};
    sp.avg_block_size = 256 * kKiB;
    run_stress(sp);
}

TEST_F(StressTest, FourWorkersHotKeys) {
    run_stress({"hotkeys", 4, 64 * kMiB, 1 * kMiB, 24, 8, 2, 4, 20000, 8});
}

// After the workers are gone a second generation attaches, reads everything
// the first left (content unchanged), and finds the namespace intact.
TEST_F(StressTest, SecondGenerationReadsFirst) {
    uint64_t seed = test_seed("generations");
    ASSERT_TRUE(create_pool("gen", 64 * kMiB, 1 * kMiB));
    ASSERT_TRUE(attach());
    KeySpace ks;
    ASSERT_TRUE(build_keys(&ks, 256, 16, 4));
    detach();
    board_ = shared_new<Board>();
    ASSERT_NE(board_, nullptr);
    WorkloadCfg cfg;
    cfg.max_ops = 3000;
    cfg.deadline_ns = now_ns() + 5000000000ULL;
    for (int gen = 0; gen < 2; gen++) {
        kids_.clear();
        for (int i = 0; i < 2; i++) {
            int idx = gen * 2 + i;
            pid_t pid = spawn(60, [&, idx] {
                Worker w(board_, idx, ks, cfg, seed + static_cast<uint64_t>(idx));
                return w.run(path_.c_str());
            });
            ASSERT_GT(pid, 0);
            kids_.push_back(pid);
        }
        for (pid_t &pid : kids_) {
            int st = 0;
            EXPECT_TRUE(wait_child(pid, 60000, &st)) << "hang: " << status_str(st);
            pid = 0;
            EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << status_str(st);
        }
        ASSERT_TRUE(attach());
        kv_usage u{};
        ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
        EXPECT_TRUE(quiescent(u)) << "after generation " << gen;
        WalkResult w = walk_all(pool_, ks);
        EXPECT_EQ(w.bad, 0u) << w.first_error;
        EXPECT_EQ(w.found, u.entries_committed);
        EXPECT_EQ(w.bytes, u.bytes_committed);
        kv_stats s{};
        ASSERT_EQ(kv_pool_stats(pool_, &s), 0);
        EXPECT_EQ(s.clients, 1u);
        EXPECT_EQ(s.gets, s.hits + s.misses);
        detach();
    }
    EXPECT_EQ(board_->failures.load(), 0u) << board_->messages();
}

} // namespace
