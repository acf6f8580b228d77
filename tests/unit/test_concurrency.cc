// SPDX-License-Identifier: MIT
//
// Several clients of one pool, each driven by its own thread, in a pool
// small enough that eviction and slab rebalancing run all the time. Every
// key's payload is a function of the key, so any view that holds other
// bytes is a bug. Afterwards the quiescent pool must be exactly consistent.
// (Long-running and multi-process versions live in tests/stress and
// tests/mp; this one is sized to take a second or two.)
#include "pool_fixture.h"

#include <atomic>
#include <cerrno>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <xxhash.h>

namespace kvtest {
namespace {

constexpr uint64_t kSizes[] = {4 * KiB, 10 * KiB, 64 * KiB, 200 * KiB};
constexpr uint64_t kKeys = 1500;

uint64_t size_of(uint64_t id) {
    return kSizes[id % std::size(kSizes)];
}

class ConcurrencyTest : public PoolTest {
  protected:
    void customize(kv_create_opts &o) override {
        o.size = 24 * MiB;
        o.slab_size = 1 * MiB;
        o.max_clients = 16;
        o.pins_per_client = 64;
    }

    void SetUp() override {
        PoolTest::SetUp();
        if (HasFatalFailure()) return;
        for (uint64_t id = 0; id < kKeys; id++)
            data_.push_back(payload(size_of(id), id));
    }

    // One client's random mix of every data-path call. Returns a failure
    // description or "".
    std::string worker(kv_pool *p, uint64_t seed, int ops) {
        std::mt19937_64 rng(seed);
        auto bad = [](const char *what, uint64_t id, int rc) {
            return std::string(what) + " id " + std::to_string(id) + " rc " + std::to_string(rc);
        };
        for (int op = 0; op < ops; op++) {
            const uint64_t id = rng() % kKeys;
            const kv_key k = key_of(id);
            const auto &d = data_[id];
            switch (rng() % 10) {
            case 0:
            case 1:
            case 2:
            case 3: {
                int rc = kv_put(p, ns_, &k, d.data(), d.size(), nullptr);
                if (rc != 0 && rc != KV_DEDUP && rc != -EBUSY) return bad("put", id, rc);
                break;
            }
            case 4:
            case 5: {
                kv_view v{};
                int rc = kv_get(p, ns_, &k, &v);
                if (rc == -ENOENT) break;
                if (rc != 0) return bad("get", id, rc);
                std::string err;
                if (!view_equals(v, d))
                    err = bad("get: wrong bytes", id, 0);
                else if (v.checksum != XXH3_64bits(d.data(), d.size()))
                    err = bad("get: wrong checksum", id, 0);
                rc = kv_release(p, &v);
                if (rc != 0) return bad("release", id, rc);
                if (!err.empty()) return err;
                break;
            }
            case 6: {
                int rc = kv_remove(p, ns_, &k);
                if (rc != 0 && rc != -ENOENT && rc != -EBUSY) return bad("remove", id, rc);
                break;
            }
            case 7:
            case 8: {
                kv_reservation r{};
                int rc = kv_reserve(p, ns_, &k, d.size(), nullptr, &r);
                if (rc == KV_DEDUP || rc == -EBUSY) break;
                if (rc != 0) return bad("reserve", id, rc);
                std::memcpy(r.data, d.data(), d.size());
                rc = (rng() % 4 == 0) ? kv_abort(p, &r) : kv_commit(p, &r, 0, 0);
                if (rc != 0) return bad("commit/abort", id, rc);
                break;
            }
            default: {
                kv_key keys[4];
                for (uint64_t i = 0; i < 4; i++)
                    keys[i] = key_of((id + i) % kKeys);
                kv_view views[4];
                int m = kv_match_prefix(p, ns_, keys, 4, KV_MATCH_F_PIN, views);
                if (m < 0 || m > 4) return bad("match_prefix", id, m);
                std::string err;
                for (int i = 0; i < m; i++) {
                    if (!view_equals(views[i], data_[(id + uint64_t(i)) % kKeys]))
                        err = bad("match_prefix: wrong bytes", id, i);
                    if (kv_release(p, &views[i]) != 0) err = bad("match_prefix release", id, i);
                }
                if (!err.empty()) return err;
                break;
            }
            }
        }
        return "";
    }

    std::vector<std::vector<uint8_t>> data_;
};

TEST_F(ConcurrencyTest, ClientsInThreadsKeepThePoolConsistent) {
    constexpr int kClients = 4;
    std::vector<kv_pool *> clients = {pool_};
    for (int i = 1; i < kClients; i++) {
        kv_pool *p = attach_another();
        ASSERT_NE(p, nullptr);
        clients.push_back(p);
    }
    std::vector<std::string> errors(kClients);
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; i++)
        threads.emplace_back([&, i] { errors[i] = worker(clients[i], 1000 + i, 4000); });
    for (auto &t : threads)
        t.join();
    for (int i = 0; i < kClients; i++)
        EXPECT_EQ(errors[i], "") << "client " << i;

    kv_usage u = usage();
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.journal_pins, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.entries_dead, 0u);
    EXPECT_EQ(u.blocks_used, u.entries_committed);
    EXPECT_EQ(u.orphan_blocks, 0u);
    EXPECT_EQ(u.bad_links, 0u);
    EXPECT_EQ(u.unreachable, 0u);
    EXPECT_GT(stats().evictions, 0u) << "the pool was meant to be under pressure";

    // Whatever survived holds the right bytes.
    uint64_t present = 0;
    for (uint64_t id = 0; id < kKeys; id++) {
        kv_view v{};
        const kv_key k = key_of(id);
        int rc = kv_get(pool_, ns_, &k, &v);
        if (rc == -ENOENT) continue;
        ASSERT_EQ(rc, 0) << id;
        present++;
        EXPECT_TRUE(view_equals(v, data_[id])) << id;
        EXPECT_EQ(kv_view_verify(&v), 0) << id;
        EXPECT_EQ(kv_release(pool_, &v), 0);
    }
    EXPECT_EQ(present, u.entries_committed);
}

TEST_F(ConcurrencyTest, OneClientManyThreads) {
    constexpr int kThreads = 4;
    std::vector<std::string> errors(kThreads);
    std::vector<std::thread> threads;
    // pins_per_client 64 is shared by the threads: 4 x (at most 4) pins fit.
    for (int i = 0; i < kThreads; i++)
        threads.emplace_back([&, i] { errors[i] = worker(pool_, 2000 + i, 3000); });
    for (auto &t : threads)
        t.join();
    for (int i = 0; i < kThreads; i++)
        EXPECT_EQ(errors[i], "") << "thread " << i;
    kv_usage u = usage();
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    expect_consistent();
}

TEST_F(ConcurrencyTest, RacingRegistrationsAgreeOnIds) {
    constexpr int kClients = 6;
    std::vector<kv_pool *> clients;
    for (int i = 0; i < kClients; i++) {
        kv_pool *p = attach_another();
        ASSERT_NE(p, nullptr);
        clients.push_back(p);
    }
    constexpr int kManifests = 5;
    std::vector<std::vector<uint32_t>> ids(kClients, std::vector<uint32_t>(kManifests, 0));
    std::vector<int> rcs(kClients, 0);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < kClients; c++) {
        threads.emplace_back([&, c] {
            ready++;
            while (ready.load() < kClients) {
            }
            for (int j = 0; j < kManifests; j++) {
                const int m_idx = (j + c) % kManifests; // different orders
                kv_manifest m;
                kv_manifest_init(&m, ("race-" + std::to_string(m_idx)).c_str(), 16);
                int rc = kv_ns_register(clients[c], &m, &ids[c][m_idx], nullptr);
                if (rc != 0) rcs[c] = rc;
            }
        });
    }
    for (auto &t : threads)
        t.join();
    for (int c = 0; c < kClients; c++) {
        EXPECT_EQ(rcs[c], 0) << c;
        for (int j = 0; j < kManifests; j++)
            EXPECT_EQ(ids[c][j], ids[0][j]) << c << "/" << j;
    }
    for (int a = 0; a < kManifests; a++) {
        EXPECT_NE(ids[0][a], ns_);
        for (int b = a + 1; b < kManifests; b++)
            EXPECT_NE(ids[0][a], ids[0][b]);
    }
    // Exactly the fixture's namespace and the five raced ones exist.
    kv_manifest out;
    int registered = 0;
    for (uint32_t id = 0; id < kv_pool_header(pool_)->max_namespaces; id++)
        if (kv_ns_get(pool_, id, &out, nullptr) == 0) registered++;
    EXPECT_EQ(registered, 1 + kManifests);
}

} // namespace
} // namespace kvtest
