// SPDX-License-Identifier: MIT
//
// The change feed under crashes (uapi/PROTOCOL.md section 13): forked
// producers put, reserve and commit, remove and evict while the parent
// drains the feed, and are SIGKILLed at each step of the feed protocol
// (after the ticket, after the CAS, with the slot WRITING, after the
// publish) or at a random instant. After every round the parent reaps,
// drains to quiescence and checks the two invariants the daemon's sinks
// rely on:
//   - no Stored event (commit record or resync) ever names a key that was
//     never committed (a set of keys the producers only reserve and abort);
//   - the index rebuilt from the events equals the committed entries.
//
// Environment: KV_MP_SEED, KV_FEED_CRASH_ROUNDS (default 60).
#include "../../libkv/feed.h"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <map>
#include <random>
#include <string>
#include <sys/wait.h>
#include <tuple>
#include <unistd.h>
#include <vector>

namespace {

using kv::detail::FeedItem;
using kv::detail::FeedPoint;
using kv::detail::FeedReader;

constexpr uint64_t kCommitKeys = 300;
constexpr uint64_t kNeverBase = 1000000; // keys from here on are never committed
constexpr uint64_t kNeverKeys = 100;
constexpr int kProducers = 2;

kv_key key_of(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 1, ~i ^ 0x5851f42d4c957f2dULL};
}

using IndexKey = std::tuple<uint32_t, uint64_t, uint64_t>;

uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, nullptr, 0) : dflt;
}

// ---- The producer (a forked child) -------------------------------------------

FeedPoint g_die_at;
uint64_t g_die_after = 0; // 0: never (killed from outside, or runs to the end)
uint64_t g_hits = 0;

void die_hook(FeedPoint at) {
    if (at == g_die_at && ++g_hits == g_die_after) raise(SIGKILL);
}

[[noreturn]] void producer(const std::string &path, uint32_t ns, uint64_t seed, int point,
                           uint64_t after) {
    kv_pool *p = nullptr;
    char msg[256];
    if (kv_pool_attach(path.c_str(), 0, &p, msg, sizeof msg) != 0) _exit(2);
    if (after) {
        g_die_at = FeedPoint(point);
        g_die_after = after;
        kv::detail::feed_crash_hook = die_hook;
    }
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> buf(8192);
    std::vector<uint32_t> ids(16);
    for (int op = 0; op < 1500; op++) {
        const unsigned r = unsigned(rng() % 100);
        const uint64_t i = rng() % kCommitKeys;
        const kv_key k = key_of(i);
        const uint64_t len = 4096 * (1 + rng() % 2);
        for (size_t j = 0; j < ids.size(); j++)
            ids[j] = uint32_t(i * 16 + j);
        if (r < 45) {
            memset(buf.data(), int(i), len);
            kv_put_opts o{};
            o.struct_size = sizeof o;
            if (i) {
                o.flags = KV_PUT_F_PARENT;
                o.parent = key_of(i - 1);
            }
            o.n_token_ids = uint32_t(ids.size());
            o.token_ids = ids.data();
            kv_put_ex(p, ns, &k, buf.data(), len, &o);
        } else if (r < 60) {
            kv_reservation res{};
            if (kv_reserve(p, ns, &k, len, nullptr, &res) == 0) {
                memset(res.data, int(i), len);
                kv_commit_ex(p, &res, 0, 0, ids.data(), uint32_t(ids.size()));
            }
        } else if (r < 72) {
            const kv_key nk = key_of(kNeverBase + rng() % kNeverKeys);
            kv_reservation res{};
            if (kv_reserve(p, ns, &nk, 4096, nullptr, &res) == 0) {
                memset(res.data, 0xee, 4096);
                kv_abort(p, &res);
            }
        } else if (r < 90) {
            kv_remove(p, ns, &k);
        } else {
            kv_evict_bytes(p, 4096);
        }
    }
    kv_pool_detach(p);
    _exit(0);
}

// ---- The parent ---------------------------------------------------------------

class FeedCrashTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path_ = "/dev/shm/kvpool-mp-feed-" + std::to_string(getpid());
        kv_create_opts o;
        kv_create_opts_init(&o, 24ULL << 20); // small: puts evict
        o.slab_size = 1 << 20;
        o.feed_slots = 256; // small: bursts overflow it
        o.evict_policy = KV_EVICT_LRU;
        char msg[256] = "";
        ASSERT_EQ(kv_pool_create(path_.c_str(), &o, msg, sizeof msg), 0) << msg;
        ASSERT_EQ(kv_pool_attach(path_.c_str(), 0, &p_, msg, sizeof msg), 0) << msg;
        kv_manifest m;
        kv_manifest_init(&m, "feed-crash", 16);
        uint64_t seed;
        ASSERT_EQ(kv_ns_register(p_, &m, &ns_, &seed), 0);
    }
    void TearDown() override {
        for (pid_t k : kids_)
            if (k > 0) {
                kill(k, SIGKILL);
                waitpid(k, nullptr, 0);
            }
        if (p_) kv_pool_detach(p_);
        kv_pool_destroy(path_.c_str());
    }

    // Apply items to the index, checking the never-committed keys.
    void apply(const std::vector<FeedItem> &items, uint64_t round) {
        for (const FeedItem &it : items) {
            const IndexKey k{it.ns, it.key.hi, it.key.lo};
            switch (it.op) {
            case FeedItem::Op::Cleared:
                idx_.clear();
                break;
            case FeedItem::Op::Commit:
            case FeedItem::Op::Resync:
                ASSERT_FALSE(never_.contains(k))
                    << "round " << round << ": Stored event (ticket " << it.ticket
                    << ") for a block that was never committed";
                idx_[k] = it.length;
                break;
            default:
                idx_.erase(k);
            }
        }
    }
    std::map<IndexKey, uint64_t> committed() const {
        std::map<IndexKey, uint64_t> out;
        for (uint32_t e = 0; e < p_->hdr->n_entries; e++) {
            const kv_entry &en = p_->entries[e];
            if (kv::detail::Ctl::state(__atomic_load_n(&en.ctl, __ATOMIC_ACQUIRE)) !=
                KV_ENTRY_COMMITTED)
                continue;
            out[{en.ns_id, en.key_hi, en.key_lo}] = en.length;
        }
        return out;
    }

    std::string path_;
    kv_pool *p_ = nullptr;
    uint32_t ns_ = 0;
    std::vector<pid_t> kids_;
    std::map<IndexKey, uint64_t> idx_;
    std::map<IndexKey, bool> never_;
};

TEST_F(FeedCrashTest, KilledProducersNeverMisleadTheReader) {
    for (uint64_t i = 0; i < kNeverKeys; i++) {
        const kv_key k = key_of(kNeverBase + i);
        never_[{ns_, k.hi, k.lo}] = true;
    }
    const uint64_t seed = env_u64("KV_MP_SEED", uint64_t(time(nullptr)));
    const uint64_t rounds = env_u64("KV_FEED_CRASH_ROUNDS", 60);
    std::mt19937_64 rng(seed);
    printf("seed %llu, %llu rounds\n", (unsigned long long)seed, (unsigned long long)rounds);
    FeedReader r(p_, 20'000'000);
    uint64_t killed = 0;
    for (uint64_t round = 0; round < rounds; round++) {
        // Each producer dies at a feed step (its n-th passage), at a random
        // instant (the parent kills it), or not at all.
        std::vector<int> how(kProducers);
        for (int w = 0; w < kProducers; w++) {
            how[w] = int(rng() % 6); // 0..3: FeedPoint, 4: outside kill, 5: lives
            const uint64_t after = how[w] < 4 ? 1 + rng() % 400 : 0;
            const uint64_t s = rng();
            pid_t pid = fork();
            ASSERT_GE(pid, 0);
            if (pid == 0) producer(path_, ns_, s, how[w], after);
            kids_.push_back(pid);
        }
        const uint64_t outside_kill_ms = 1 + rng() % 40;
        const uint64_t t0 = kv::detail::now_ns();
        size_t live = kids_.size();
        std::vector<FeedItem> items;
        while (live) {
            items.clear();
            r.poll(items, 512);
            apply(items, round);
            if (HasFatalFailure()) return;
            for (int w = 0; w < kProducers; w++) {
                if (kids_[w] <= 0) continue;
                if (how[w] == 4 && kv::detail::now_ns() - t0 > outside_kill_ms * 1000000) {
                    kill(kids_[w], SIGKILL);
                    how[w] = 5;
                }
                int st;
                if (waitpid(kids_[w], &st, WNOHANG) == kids_[w]) {
                    if (WIFSIGNALED(st))
                        killed++;
                    else
                        ASSERT_EQ(WEXITSTATUS(st), 0) << "producer failed";
                    kids_[w] = 0;
                    live--;
                }
            }
            usleep(500);
        }
        kids_.clear();
        kv_reap(p_); // the dead producers' reservations, pins and feed slots
        // Quiescent now: drain until the reader has every ticket (a
        // ticket a dead producer never published costs a grace time).
        const uint64_t deadline = kv::detail::now_ns() + 3'000'000'000ULL;
        for (;;) {
            items.clear();
            r.poll(items, 4096);
            apply(items, round);
            if (HasFatalFailure()) return;
            if (items.empty() && r.cursor() > r.head()) {
                // One more poll: a drop counted by the reap resyncs here.
                items.clear();
                r.poll(items, 4096);
                apply(items, round);
                if (items.empty()) break;
            }
            ASSERT_LT(kv::detail::now_ns(), deadline) << "round " << round << ": reader wedged";
            usleep(1000);
        }
        ASSERT_EQ(idx_, committed()) << "round " << round << " (seed " << seed
                                     << "): the index rebuilt from the feed differs";
    }
    const auto &st = r.stats();
    printf("%llu producers killed; reader: %llu records, %llu NOPs, %llu resyncs (drops %llu, "
           "laps %llu, grace %llu)\n",
           (unsigned long long)killed, (unsigned long long)st.records, (unsigned long long)st.nops,
           (unsigned long long)st.resyncs, (unsigned long long)st.lost_drops,
           (unsigned long long)st.lost_laps, (unsigned long long)st.lost_grace);
    EXPECT_GT(killed, 0u);
    EXPECT_GT(st.lost_grace + st.lost_drops, 0u) << "no round exercised a dead producer";
}

} // namespace
