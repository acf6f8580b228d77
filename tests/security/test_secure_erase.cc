// SPDX-License-Identifier: MIT
//
// Secure erase (KV_CREATE_F_SECURE_ERASE, uapi/PROTOCOL.md section 14):
// once a block's space is freed (remove, eviction, expiry, abort, a
// SIGKILLed writer's reaped reservation, a free killed half-way and
// finished by the reaper), a scan of the whole mapped region finds none of
// its distinctive bytes, and a reservation is all zero. The same scans on
// a pool without the flag find the bytes still there, which shows that the
// scan would see them.
#include "detail.h"
#include "erase_scan.h"
#include "pool_fixture.h"

#include <gtest/gtest.h>
#include <kv/kv.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace kvtest {
namespace {

using kv::detail::ErasePoint;
using kverase::all_zero;
using kverase::free_space_violation;

constexpr size_t kNeedle = 32; // bytes per probe: random data, so no false hit
constexpr size_t kProbes = 8;  // probes spread over the block
constexpr uint64_t kSeedBase = 0x5ec0de0000ULL;

// Where the mapped region is, for the scans.
struct Region {
    const uint8_t *base;
    uint64_t size;
};

Region region_of(kv_pool *p) {
    const kv_region_header *h = kv_pool_header(p);
    return {reinterpret_cast<const uint8_t *>(h), h->region_size};
}

// How many of the block's probes occur anywhere in the region. Probes are
// taken at spread offsets (the first and last bytes included), so a block
// zeroed only in part is caught too.
size_t probes_found(const Region &r, const std::vector<uint8_t> &data) {
    size_t found = 0;
    for (size_t i = 0; i < kProbes; i++) {
        const size_t off = (data.size() - kNeedle) * i / (kProbes - 1);
        if (memmem(r.base, r.size, data.data() + off, kNeedle)) found++;
    }
    return found;
}

class EraseTest : public PoolTest, public ::testing::WithParamInterface<bool> {
  protected:
    bool erase() const { return GetParam(); }
    void customize(kv_create_opts &o) override {
        o.size = 16 * MiB; // each scan reads the whole region: keep it small
        if (erase()) o.flags |= KV_CREATE_F_SECURE_ERASE;
    }
    static std::vector<uint8_t> block(uint64_t len, uint64_t i) {
        return payload(len, kSeedBase + i);
    }
    size_t found(const std::vector<uint8_t> &data) { return probes_found(region_of(pool_), data); }
    // After the block's space was freed: none of it with erase, all of it without.
    void expect_gone(const std::vector<uint8_t> &data, const char *what, bool whole = true) {
        if (erase()) {
            EXPECT_EQ(found(data), 0u) << what << ": freed bytes still readable in the region";
            if (whole) {
                EXPECT_EQ(free_space_violation(pool_), "") << what;
            }
        } else {
            EXPECT_EQ(found(data), kProbes) << what
                                            << ": without erase the bytes should remain "
                                               "(else this scan proves nothing)";
        }
    }

    // Fork a client that attaches, runs body with the erase crash hook armed
    // at `at` (if armed), and is SIGKILLed there or at the end of body.
    template <typename F>
    void in_killed_child(ErasePoint at, bool armed, F body) {
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            static ErasePoint target;
            target = at;
            kv_pool *p = nullptr;
            if (kv_pool_attach(path_.c_str(), KV_ATTACH_F_NO_REAP, &p, nullptr, 0) != 0) _exit(3);
            if (armed)
                kv::detail::erase_crash_hook = [](ErasePoint now) {
                    if (now == target) raise(SIGKILL);
                };
            body(p);
            raise(SIGKILL);
            _exit(4);
        }
        int st = 0;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "child status " << st;
    }
};

TEST_P(EraseTest, HeaderCarriesTheFeatureBit) {
    const kv_region_header *h = kv_pool_header(pool_);
    EXPECT_EQ(!!(h->incompat_features & KV_INCOMPAT_F_SECURE_ERASE), erase());
    EXPECT_EQ(h->abi_minor, KV_ABI_MINOR);
}

TEST_P(EraseTest, Remove) {
    const auto d = block(100 * KiB, 1);
    ASSERT_EQ(put(1, d), 0);
    ASSERT_EQ(found(d), kProbes) << "a committed block is in the region";
    const kv_key k = key_of(1);
    ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
    expect_gone(d, "remove");
}

// A remove while a reader holds a view: the bytes stay readable through the
// view, and are zeroed by the last release, which frees the block.
TEST_P(EraseTest, PinnedRemoveErasesAtLastRelease) {
    const auto d = block(64 * KiB, 2);
    ASSERT_EQ(put(2, d), 0);
    kv_view v{};
    ASSERT_EQ(get(2, &v), 0);
    const kv_key k = key_of(2);
    ASSERT_EQ(kv_remove(pool_, ns_, &k), 0);
    EXPECT_TRUE(view_equals(v, d)) << "a pinned view must stay intact after the remove";
    ASSERT_EQ(kv_release(pool_, &v), 0);
    expect_gone(d, "last release after remove");
}

TEST_P(EraseTest, Abort) {
    const auto d = block(200 * KiB, 3);
    kv_reservation r{};
    const kv_key k = key_of(3);
    ASSERT_EQ(kv_reserve(pool_, ns_, &k, d.size(), nullptr, &r), 0);
    memcpy(r.data, d.data(), d.size());
    ASSERT_EQ(kv_abort(pool_, &r), 0);
    expect_gone(d, "abort");
}

// Puts into a full pool evict the oldest blocks (the put path's eviction),
// and kv_evict_bytes (kvpoold's watermark pass, kvctl evict) evicts more.
TEST_P(EraseTest, Eviction) {
    constexpr uint64_t n = 120; // 30 MiB into 16 MiB
    std::vector<std::vector<uint8_t>> ds;
    for (uint64_t i = 0; i < n; i++) {
        ds.push_back(block(256 * KiB - 4096 * (i % 3), 100 + i));
        ASSERT_EQ(put(100 + i, ds.back()), 0);
    }
    ASSERT_GT(stats().evictions, 0u) << "the pool was meant to overflow";
    // Without erase, a block evicted by a put is mostly overwritten by the
    // puts that reused its space, so only the erase pool is checked here.
    uint64_t evicted = 0;
    for (uint64_t i = 0; i < n; i++)
        if (contains(100 + i) == 0) {
            evicted++;
            SCOPED_TRACE("put-path eviction of block " + std::to_string(i));
            if (erase()) {
                expect_gone(ds[i], "eviction by a put", false);
            }
        }
    EXPECT_GT(evicted, 0u);
    if (erase()) {
        EXPECT_EQ(free_space_violation(pool_), "");
    }
    std::vector<uint64_t> present;
    for (uint64_t i = 0; i < n; i++)
        if (contains(100 + i) == 1) present.push_back(i);
    ASSERT_GT(kv_evict_bytes(pool_, 4 * MiB), 0);
    uint64_t by_evict_bytes = 0;
    for (uint64_t i : present)
        if (contains(100 + i) == 0) {
            by_evict_bytes++;
            expect_gone(ds[i], "kv_evict_bytes", false);
        }
    EXPECT_GT(by_evict_bytes, 0u);
    if (erase()) {
        EXPECT_EQ(free_space_violation(pool_), "");
    }
}

// An expired block is freed by a put of its key (which replaces it) and
// by eviction.
TEST_P(EraseTest, Expiry) {
    kv_put_opts po{};
    po.struct_size = sizeof po;
    po.ttl_ms = 1;
    const auto d1 = block(48 * KiB, 4), d2 = block(48 * KiB, 5), d1b = block(48 * KiB, 6);
    const kv_key k1 = key_of(4), k2 = key_of(5);
    ASSERT_EQ(kv_put_ex(pool_, ns_, &k1, d1.data(), d1.size(), &po), 0);
    ASSERT_EQ(kv_put_ex(pool_, ns_, &k2, d2.data(), d2.size(), &po), 0);
    usleep(5000);
    ASSERT_EQ(kv_put(pool_, ns_, &k1, d1b.data(), d1b.size(), nullptr), 0)
        << "replaces the expired";
    expect_gone(d1, "expired block replaced by a put");
    // Eviction of everything, the expired block among it (which is taken
    // first is the policy's business, tested with the policies).
    ASSERT_GT(kv_evict_bytes(pool_, 1 * MiB), 0);
    expect_gone(d2, "expired block evicted");
}

// A writer SIGKILLed with its reservation written: the reaper aborts the
// reservation and zeroes the block.
TEST_P(EraseTest, KilledWriterReaped) {
    const auto d = block(300 * KiB, 7);
    in_killed_child(ErasePoint::Begun, false, [&](kv_pool *p) {
        uint32_t ns;
        uint64_t seed;
        kv_manifest m;
        kv_manifest_init(&m, "unit-test-model", 16);
        if (kv_ns_register(p, &m, &ns, &seed) != 0) _exit(5);
        kv_reservation r{};
        const kv_key k = key_of(7);
        if (kv_reserve(p, ns, &k, d.size(), nullptr, &r) != 0) _exit(6);
        memcpy(r.data, d.data(), d.size());
    });
    ASSERT_EQ(found(d), kProbes) << "the dead writer's reservation is not freed until reaped";
    ASSERT_EQ(kv_reap(pool_), 1);
    expect_gone(d, "reaped reservation");
}

INSTANTIATE_TEST_SUITE_P(, EraseTest, ::testing::Bool(),
                         [](const auto &i) { return i.param ? "Erase" : "Plain"; });

// ---- Erase pools only --------------------------------------------------------

class ErasePoolTest : public PoolTest {
  protected:
    void customize(kv_create_opts &o) override {
        o.size = 32 * MiB;
        o.flags |= KV_CREATE_F_SECURE_ERASE;
    }
};

// Whatever was written and freed before, a reservation's whole block is
// zero (not only the length asked for).
TEST_F(ErasePoolTest, ReservationsAreAllZero) {
    for (uint64_t i = 0; i < 300; i++)
        ASSERT_EQ(put(i, payload(4096 + (i * 7919) % (600 * KiB), i)), 0);
    for (uint64_t i = 0; i < 300; i += 2) {
        const kv_key k = key_of(i);
        kv_remove(pool_, ns_, &k);
    }
    ASSERT_GT(kv_evict_bytes(pool_, 8 * MiB), 0);
    const kv_region_header *h = kv_pool_header(pool_);
    const auto *classes =
        reinterpret_cast<const kv_class *>(reinterpret_cast<const uint8_t *>(h) + h->class_off);
    std::vector<kv_reservation> rs;
    for (uint64_t i = 0; i < 30; i++) { // held at once: at most 12 MiB
        kv_reservation r{};
        const kv_key k = key_of(5000 + i);
        const uint64_t len = 4096 + (i * 104729) % (400 * KiB);
        ASSERT_EQ(kv_reserve(pool_, ns_, &k, len, nullptr, &r), 0);
        // The block's size: the smallest class that holds len.
        uint64_t bs = 0;
        for (uint32_t c = 0; c < h->n_classes && !bs; c++)
            if (classes[c].block_size >= len) bs = classes[c].block_size;
        ASSERT_TRUE(all_zero(r.data, bs)) << "reservation " << i << " of " << len << " bytes";
        rs.push_back(r);
    }
    for (auto &r : rs)
        ASSERT_EQ(kv_abort(pool_, &r), 0);
    EXPECT_EQ(free_space_violation(pool_), "");
    expect_consistent();
}

// A process SIGKILLed at each point of an erase (before it, half-way, all
// zeroed but the block not yet freed), in each role that frees: a remover,
// a client aborting its own reservation, a reaper aborting a dead writer's
// reservation, and a put evicting from a full pool. Whoever finishes the
// free (the next reaper) zeroes the block; a fresh reservation never sees
// the old bytes.
class EraseCrashTest : public ErasePoolTest,
                       public ::testing::WithParamInterface<std::tuple<ErasePoint, int>> {
  protected:
    template <typename F>
    void killed_at(ErasePoint at, F body) {
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            static ErasePoint target;
            target = at;
            // Armed before the attach, which reaps (the Reaper role).
            kv::detail::erase_crash_hook = [](ErasePoint now) {
                if (now == target) raise(SIGKILL);
            };
            kv_pool *p = nullptr;
            if (kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0) != 0) _exit(3);
            body(p);
            _exit(4); // the hook was not reached
        }
        int st = 0;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
            << "child status " << st << " (exit 4: the erase point was never reached)";
    }
    static uint32_t child_ns(kv_pool *p) {
        uint32_t ns;
        uint64_t seed;
        kv_manifest m;
        kv_manifest_init(&m, "unit-test-model", 16);
        if (kv_ns_register(p, &m, &ns, &seed) != 0) _exit(5);
        return ns;
    }
};

TEST_P(EraseCrashTest, KilledInsideTheErase) {
    const auto [at, role] = GetParam();
    const auto d = payload(512 * KiB, kSeedBase + 77);
    const kv_key k = key_of(77);
    if (role == 0) { // a remover
        ASSERT_EQ(put(77, d), 0);
        killed_at(at, [&](kv_pool *p) { kv_remove(p, child_ns(p), &k); });
    } else if (role == 1) { // a client aborting its own reservation
        killed_at(at, [&](kv_pool *p) {
            kv_reservation r{};
            if (kv_reserve(p, child_ns(p), &k, d.size(), nullptr, &r) != 0) _exit(6);
            memcpy(r.data, d.data(), d.size());
            kv_abort(p, &r);
        });
    } else if (role == 3) { // a put evicting its victim from a full pool
        ASSERT_EQ(put(77, d), 0);
        killed_at(at, [&](kv_pool *p) {
            const uint32_t ns = child_ns(p);
            const std::vector<uint8_t> filler(d.size(), 0x5a);
            for (uint64_t i = 0; i < 1000; i++) { // the first eviction's erase kills us
                const kv_key ki = key_of(1000 + i);
                if (kv_put(p, ns, &ki, filler.data(), filler.size(), nullptr) < 0) _exit(7);
            }
        });
    } else { // a reaper (an attach reaps) aborting a dead writer's reservation
        const pid_t w = fork();
        ASSERT_GE(w, 0);
        if (w == 0) {
            kv_pool *p = nullptr;
            if (kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0) != 0) _exit(3);
            kv_reservation r{};
            if (kv_reserve(p, child_ns(p), &k, d.size(), nullptr, &r) != 0) _exit(6);
            memcpy(r.data, d.data(), d.size());
            raise(SIGKILL);
            _exit(4);
        }
        int st = 0;
        ASSERT_EQ(waitpid(w, &st, 0), w);
        ASSERT_TRUE(WIFSIGNALED(st));
        killed_at(at, [&](kv_pool *) {}); // its attach reaps the writer
    }
    // The evictor's victim is the policy's choice: block 77 or a filler.
    const bool victim_known = role != 3;
    if (at == ErasePoint::Begun && victim_known) {
        EXPECT_EQ(probes_found(region_of(pool_), d), kProbes) << "killed before the first zero";
    }
    EXPECT_GE(kv_reap(pool_), 1);
    if (victim_known) {
        EXPECT_EQ(contains(77), 0);
    }
    if (contains(77) == 0) {
        EXPECT_EQ(probes_found(region_of(pool_), d), 0u) << "the reaper must finish the erase";
    }
    EXPECT_EQ(free_space_violation(pool_), "");
    kv_reservation r{};
    const kv_key fresh = key_of(99999);
    ASSERT_EQ(kv_reserve(pool_, ns_, &fresh, d.size(), nullptr, &r), 0);
    EXPECT_TRUE(all_zero(r.data, d.size()));
    ASSERT_EQ(kv_abort(pool_, &r), 0);
    expect_consistent();
}

std::string crash_name(const ::testing::TestParamInfo<std::tuple<ErasePoint, int>> &i) {
    static const char *const at[] = {"Begun", "Half", "Zeroed"};
    static const char *const role[] = {"Remover", "Aborter", "Reaper", "Evictor"};
    return std::string(at[int(std::get<0>(i.param))]) + role[std::get<1>(i.param)];
}

INSTANTIATE_TEST_SUITE_P(, EraseCrashTest,
                         ::testing::Combine(::testing::Values(ErasePoint::Begun, ErasePoint::Half,
                                                              ErasePoint::Zeroed),
                                            ::testing::Values(0, 1, 2, 3)),
                         crash_name);

// Writers SIGKILLed at random instructions while they put, remove, abort
// and evict distinctive blocks: after each round's reap, free space is all
// zero and no removed block's bytes remain anywhere.
TEST_F(ErasePoolTest, RandomKillsLeaveFreeSpaceZero) {
    const int rounds = 12;
    uint64_t rng = uint64_t(time(nullptr)) * 0x9e3779b97f4a7c15ULL;
    auto next = [&] { return rng = rng * 6364136223846793005ULL + 1442695040888963407ULL; };
    for (int round = 0; round < rounds && !HasFailure(); round++) {
        std::vector<pid_t> kids;
        for (int w = 0; w < 2; w++) {
            const uint64_t wseed = next();
            const pid_t pid = fork();
            ASSERT_GE(pid, 0);
            if (pid == 0) {
                kv_pool *p = nullptr;
                if (kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0) != 0) _exit(3);
                uint32_t ns;
                uint64_t seed;
                kv_manifest m;
                kv_manifest_init(&m, "unit-test-model", 16);
                if (kv_ns_register(p, &m, &ns, &seed) != 0) _exit(5);
                uint64_t x = wseed | 1;
                for (uint64_t n = 0;; n++) {
                    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                    const kv_key k = key_of(x % 512);
                    const uint64_t len = 4096 + x % (700 * KiB);
                    switch ((x >> 32) % 4) {
                    case 0:
                    case 1: {
                        kv_reservation r{};
                        if (kv_reserve(p, ns, &k, len, nullptr, &r) != 0) break;
                        memset(r.data, 0xa5, len);
                        if ((x >> 40) % 3)
                            kv_commit(p, &r, 0, 0);
                        else
                            kv_abort(p, &r);
                        break;
                    }
                    case 2:
                        kv_remove(p, ns, &k);
                        break;
                    default:
                        kv_evict_bytes(p, len);
                    }
                }
            }
            kids.push_back(pid);
        }
        usleep(useconds_t(2000 + next() % 30000));
        for (pid_t pid : kids) {
            kill(pid, SIGKILL);
            int st = 0;
            waitpid(pid, &st, 0);
        }
        kv_reap(pool_);
        ASSERT_EQ(free_space_violation(pool_), "") << "round " << round;
        expect_consistent();
    }
    // Every block the workers wrote holds 0xa5 bytes: remove them all and
    // nothing of them is left in the region.
    for (uint64_t i = 0; i < 512; i++) {
        const kv_key k = key_of(i);
        kv_remove(pool_, ns_, &k);
    }
    const std::vector<uint8_t> marker(4096, 0xa5);
    const Region r = region_of(pool_);
    EXPECT_EQ(memmem(r.base, r.size, marker.data(), marker.size()), nullptr);
    EXPECT_EQ(free_space_violation(pool_), "");
}

} // namespace
} // namespace kvtest
