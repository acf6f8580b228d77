// SPDX-License-Identifier: MIT
//
// kvpool benchmarks. Every figure is measured next to a baseline in this
// same binary (std::unordered_map, memcpy, XXH3 alone, Boost.Interprocess),
// so that on a shared, noisy machine the ratio is what to read.
// tests/bench/run_benchmarks.sh runs this and prints the ratios.
//
//  1 BM_GetRelease/keys:10000      get + release of present 64 KiB blocks, random keys
//                                  (keys:1000: a cache-resident working set, for context)
//    BM_GetRelease_UnorderedMap    baseline: std::unordered_map::find on the same keys
//  2 BM_GetRelease_Scaling         the same from 1 and then 2 forked processes
//  3 BM_Put2MiB_Rotate             put (copy + checksum) of 2 MiB under a fresh key, 127
//                                  keys kept live: destinations rotate over 256 MiB of pool
//    BM_Memcpy2MiB_Rotate          baseline (the target's): memcpy of 2 MiB into 128
//                                  destinations in turn, 256 MiB of prefaulted shared memory
//    BM_Memcpy2MiB_XXH3_Rotate     context: the same memcpy, then a separate XXH3-64 pass
//    BM_Put2MiB, BM_Memcpy2MiB     context: one destination reused, all in cache
//    BM_Memcpy2MiB_XXH3            context: the same, memcpy then XXH3-64
//  4 BM_ReserveCommit64KiB         reserve + commit(KV_COMMIT_F_CHECKSUM), no data written;
//                                  remove timed separately (counter remove_ns)
//    BM_CommitChecksum2MiB         commit without the flag: the checksum pass at commit
//    BM_XXH3_2MiB                  baseline: XXH3-64 of 2 MiB
//  5 BM_AllocFree_2Proc            2 processes: reserve+abort vs Boost.Interprocess
//                                  managed_shared_memory allocate+deallocate
//  6 BM_MatchPrefix/*              hash a 16,000-token chain and match its 1,000 keys
//    BM_MatchPrefix_Baseline       baseline: the same chain hashed inline with XXH3-128
//                                  + std::unordered_map::find of each key
//  7 BM_MetadataOverhead           (region_size - data_len) / region_size
// 10 BM_MixedSizesHeld             live bytes / capacity at steady state, block sizes
//                                  uniform in 4 KiB..1 MiB or 1 B..1 MiB
//    (its single_pct)              baseline: the same stream with one block size
//
// Single-process figures are per CPU-second of the benchmark thread (Google
// Benchmark's default; manually timed spans use the thread's CPU time too),
// so other tenants of the machine do not count against kvpool. Forked
// figures are wall-clock, with per-CPU-second companions and the share of
// the time the workers were on a CPU.
//
// Pools live under /dev/shm with unique names and are removed at exit.
#include "../../libkv/feed.h"
#include "bench_util.h"

#include <benchmark/benchmark.h>
#include <kv/kv.h>

#define XXH_INLINE_ALL
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>
#include <xxhash.h>

#ifdef KVBENCH_HAVE_BOOST
#include <boost/interprocess/managed_shared_memory.hpp>
#endif

namespace {

using kvbench::BenchPool;
using kvbench::make_key;
// Manually timed spans use the thread's CPU time: on a shared
// machine wall time also counts the other tenants. Nothing timed here blocks.
inline uint64_t cpu_now() {
    return kvbench::thread_cpu_ns();
}
using kvbench::PoolSpec;
using kvbench::Rng;
using kvbench::Worker;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// Forked benchmarks: phases of kPhaseSeconds, kRounds rounds of (subject,
// baseline) in ABBA order so drift on a shared machine hits both alike.
constexpr double kPhaseSeconds = 0.5;
constexpr int kRounds = 4;

std::string errstr(const char *what, int rc) {
    return std::string(what) + ": " + std::to_string(rc) + " (" + kv_strerror(rc) + ")";
}

void *alloc_touched(size_t len, uint64_t seed) {
    auto *p = static_cast<uint64_t *>(std::aligned_alloc(4096, len));
    Rng r(seed);
    for (size_t i = 0; i < len / 8; ++i)
        p[i] = r.next();
    return p;
}

// ---- Read fixture: 2 key sets x 10,000 present 64 KiB blocks -------------------

constexpr uint32_t kReadKeys = 10000;
constexpr uint64_t kReadBlock = 64 * KiB;

struct ReadFixture {
    std::unique_ptr<BenchPool> pool;
    std::vector<kv_key> keys[2]; // set 0: the single-process set; set 1: the second process's
    std::string error;
};

ReadFixture &read_fixture() {
    static ReadFixture f = [] {
        ReadFixture f;
        PoolSpec spec;
        spec.size = 2 * kReadKeys * kReadBlock + 256 * MiB;
        auto p = BenchPool::create(spec, "read");
        if (!p) {
            f.error = p.error();
            return f;
        }
        f.pool = std::move(*p);
        auto *data = static_cast<uint64_t *>(alloc_touched(kReadBlock, 1));
        for (int set = 0; set < 2; ++set) {
            for (uint32_t i = 0; i < kReadKeys; ++i) {
                kv_key k = make_key(static_cast<uint64_t>(set), i);
                data[0] = k.lo;
                data[1] = k.hi;
                int rc = kv_put(f.pool->get(), f.pool->ns(), &k, data, kReadBlock, nullptr);
                if (rc < 0) {
                    f.error = errstr("kv_put (read fixture)", rc);
                    break;
                }
                f.keys[set].push_back(k);
            }
        }
        std::free(data);
        return f;
    }();
    return f;
}

// ---- 1: get + release ------------------------------------------------------------

void BM_GetRelease(benchmark::State &state) {
    ReadFixture &f = read_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    kv_pool *p = f.pool->get();
    const uint32_t ns = f.pool->ns();
    const kv_key *keys = f.keys[0].data();
    const auto n = static_cast<uint32_t>(state.range(0));
    Rng rng(1);
    for (auto _ : state) {
        kv_view v;
        int rc = kv_get(p, ns, &keys[rng.below(n)], &v);
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_get", rc).c_str());
            break;
        }
        benchmark::DoNotOptimize(v.data);
        rc = kv_release(p, &v);
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_release", rc).c_str());
            break;
        }
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_GetRelease)->ArgName("keys")->Arg(kReadKeys)->Arg(1000);

struct KeyHash {
    size_t operator()(const kv_key &k) const noexcept {
        return k.lo ^ (k.hi * 0x9e3779b97f4a7c15ULL);
    }
};
struct KeyEq {
    bool operator()(const kv_key &a, const kv_key &b) const noexcept {
        return a.lo == b.lo && a.hi == b.hi;
    }
};

void BM_GetRelease_UnorderedMap(benchmark::State &state) {
    // The same keys and key sequence, with a (pointer, length) value as a
    // process-private cache would hold.
    struct Value {
        const void *data;
        uint64_t length;
    };
    static std::vector<char> blobs(kReadKeys);
    static std::unordered_map<kv_key, Value, KeyHash, KeyEq> map = [] {
        std::unordered_map<kv_key, Value, KeyHash, KeyEq> m;
        for (uint32_t i = 0; i < kReadKeys; ++i)
            m.emplace(make_key(0, i), Value{&blobs[i], kReadBlock});
        return m;
    }();
    std::vector<kv_key> keys;
    for (uint32_t i = 0; i < kReadKeys; ++i)
        keys.push_back(make_key(0, i));
    const auto n = static_cast<uint32_t>(keys.size());
    Rng rng(1);
    for (auto _ : state) {
        auto it = map.find(keys[rng.below(n)]);
        if (it == map.end()) [[unlikely]] {
            state.SkipWithError("key missing from the baseline map");
            break;
        }
        benchmark::DoNotOptimize(it->second);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_GetRelease_UnorderedMap);

// ---- 2: get + release, 1 vs 2 processes --------------------------------------------

int get_release_worker(Worker &w, const std::string &path, uint32_t ns,
                       const std::vector<kv_key> &keys) {
    kv_pool *p = nullptr;
    char msg[256] = "";
    int rc = kv_pool_attach(path.c_str(), 0, &p, msg, sizeof msg);
    if (rc < 0) return w.fail(rc, std::string("kv_pool_attach: ") + msg);
    const auto n = static_cast<uint32_t>(keys.size());
    Rng rng(100 + w.index());
    uint64_t ops = 0;
    int result = 0;
    w.start();
    while (!w.stopped() && result == 0) {
        for (int i = 0; i < 64; ++i) {
            kv_view v;
            rc = kv_get(p, ns, &keys[rng.below(n)], &v);
            if (rc != 0) [[unlikely]] {
                result = w.fail(rc, "kv_get");
                break;
            }
            benchmark::DoNotOptimize(v.data);
            rc = kv_release(p, &v);
            if (rc != 0) [[unlikely]] {
                result = w.fail(rc, "kv_release");
                break;
            }
        }
        ops += 64;
    }
    w.finish(ops);
    kv_pool_detach(p);
    return result;
}

void BM_GetRelease_Scaling(benchmark::State &state) {
    ReadFixture &f = read_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    const std::string path = f.pool->path();
    const uint32_t ns = f.pool->ns();
    kvbench::PhaseTotals one, two;
    std::string err;
    for (auto _ : state) {
        for (int r = 0; r < kRounds && err.empty(); ++r) {
            for (int leg = 0; leg < 2 && err.empty(); ++leg) {
                const unsigned procs = ((r + leg) % 2 == 0) ? 1 : 2; // ABBA
                auto res = kvbench::run_workers(procs, kPhaseSeconds, [&](Worker &w) {
                    return get_release_worker(w, path, ns, f.keys[w.index()]);
                });
                if (!res) {
                    err = res.error();
                    break;
                }
                (procs == 1 ? one : two).add(*res);
            }
        }
    }
    if (!err.empty()) {
        state.SkipWithError(err.c_str());
        return;
    }
    // scaling: wall-clock throughput, 2 processes over 1 (the target).
    // scaling_cpu: the same from ops per CPU-second, i.e. what 2 processes
    // would do if each had a core to itself; it separates contention inside
    // kvpool from other tenants taking the cores (cpu_share < ~0.95).
    state.counters["ops_per_s_1proc"] = one.ops_per_s / kRounds;
    state.counters["ops_per_s_2proc"] = two.ops_per_s / kRounds;
    state.counters["scaling"] = one.ops_per_s > 0 ? two.ops_per_s / one.ops_per_s : 0;
    state.counters["scaling_cpu"] =
        one.ops_per_cpu_s > 0 ? two.ops_per_cpu_s / one.ops_per_cpu_s : 0;
    state.counters["cpu_share_1proc"] = one.cpu_share / kRounds;
    state.counters["cpu_share_2proc"] = two.cpu_share / (2 * kRounds);
}
BENCHMARK(BM_GetRelease_Scaling)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- Write fixture: puts, reserves, commits ------------------------------------------

constexpr uint64_t kBig = 2 * MiB;

struct WriteFixture {
    std::unique_ptr<BenchPool> pool;
    void *src = nullptr; // 2 MiB of random bytes
    void *dst = nullptr; // 2 MiB, faulted in
    std::string error;
};

WriteFixture &write_fixture() {
    static WriteFixture f = [] {
        WriteFixture f;
        PoolSpec spec;
        spec.size = 256 * MiB;
        auto p = BenchPool::create(spec, "write");
        if (!p) {
            f.error = p.error();
            return f;
        }
        f.pool = std::move(*p);
        f.src = alloc_touched(kBig, 2);
        f.dst = alloc_touched(kBig, 3);
        return f;
    }();
    return f;
}

// Key sets, kept distinct across benchmarks sharing a pool and across calls.
uint64_t fresh_serial() {
    static uint64_t serial = 0;
    return serial++;
}

// ---- 3 (context): put 2 MiB vs memcpy 2 MiB, one destination, all in cache ---------------

// Both timed per iteration with the same clock (UseManualTime, thread CPU
// time as everywhere below), so the clock's cost is on both sides of the ratio.
// The put's key is removed after each put, so the next put reuses the same
// block: like the memcpy below, a copy from cache to cache (2 MiB source and
// 2 MiB destination fit in L2 + L3). The target is checked on the rotating
// pair further down.
void BM_Put2MiB(benchmark::State &state) {
    WriteFixture &f = write_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    kv_pool *p = f.pool->get();
    const uint32_t ns = f.pool->ns();
    for (auto _ : state) {
        kv_key k = make_key(30, fresh_serial());
        uint64_t t0 = cpu_now();
        int rc = kv_put(p, ns, &k, f.src, kBig, nullptr);
        uint64_t t1 = cpu_now();
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_put", rc).c_str());
            break;
        }
        rc = kv_remove(p, ns, &k); // the next put gets the same block back
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_remove", rc).c_str());
            break;
        }
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
}
BENCHMARK(BM_Put2MiB)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_Memcpy2MiB(benchmark::State &state) {
    WriteFixture &f = write_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    for (auto _ : state) {
        uint64_t t0 = cpu_now();
        std::memcpy(f.dst, f.src, kBig);
        benchmark::ClobberMemory();
        uint64_t t1 = cpu_now();
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
}
BENCHMARK(BM_Memcpy2MiB)->UseManualTime()->Unit(benchmark::kMicrosecond);

// What a put would cost done naively: copy, then checksum the copy.
void BM_Memcpy2MiB_XXH3(benchmark::State &state) {
    WriteFixture &f = write_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    for (auto _ : state) {
        uint64_t t0 = cpu_now();
        std::memcpy(f.dst, f.src, kBig);
        uint64_t h = XXH3_64bits(f.dst, kBig);
        benchmark::DoNotOptimize(h);
        uint64_t t1 = cpu_now();
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
}
BENCHMARK(BM_Memcpy2MiB_XXH3)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- 3 (the target): put 2 MiB into a pool larger than the caches ---------------------------
//
// The pairs above reuse one destination, so both sides copy from cache to
// cache. An engine writes KV blocks into a pool far larger than the caches,
// so the figure the target is checked on is this pair: the put keeps
// kRotateLive keys live and removes the oldest after each put, so successive
// puts land on kRotateBlocks distinct blocks (256 MiB, counted and reported
// as dest_blocks); the baseline memcpys the same source into kRotateBlocks
// destinations taken in turn from a region of the same size and kind
// (shared memory on tmpfs, prefaulted, as the pool). Only the put or the
// memcpy is timed; the remove is not.
constexpr uint32_t kRotateBlocks = 128;
constexpr uint32_t kRotateLive = kRotateBlocks - 1;

struct RotateFixture {
    std::unique_ptr<BenchPool> pool;
    uint8_t *region = nullptr; // kRotateBlocks * kBig bytes of shared memory
    std::string error;
};

RotateFixture &rotate_fixture() {
    static RotateFixture f = [] {
        RotateFixture f;
        PoolSpec spec;
        spec.size = uint64_t(kRotateBlocks) * kBig * 3 / 2; // room for the blocks and the tables
        auto p = BenchPool::create(spec, "rotate");
        if (!p) {
            f.error = p.error();
            return f;
        }
        f.pool = std::move(*p);
        const size_t len = size_t(kRotateBlocks) * kBig;
        int fd = memfd_create("kvbench-rotate", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, off_t(len)) != 0) {
            f.error = std::string("memfd: ") + std::strerror(errno);
            if (fd >= 0) close(fd);
            return f;
        }
        void *m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (m == MAP_FAILED) {
            f.error = std::string("mmap: ") + std::strerror(errno);
            return f;
        }
        std::memset(m, 0x5a, len); // fault every page in, as KV_CREATE_F_PREFAULT does
        f.region = static_cast<uint8_t *>(m);
        return f;
    }();
    return f;
}

void BM_Put2MiB_Rotate(benchmark::State &state) {
    WriteFixture &w = write_fixture();
    RotateFixture &f = rotate_fixture();
    if (!w.error.empty() || !f.error.empty()) {
        state.SkipWithError((w.error + f.error).c_str());
        return;
    }
    kv_pool *p = f.pool->get();
    const uint32_t ns = f.pool->ns();
    const uint64_t set = 50 + fresh_serial();
    std::vector<kv_key> live; // oldest first
    std::unordered_map<const void *, int> dest;
    uint64_t n = 0;
    auto put = [&](bool timed) -> int {
        kv_key k = make_key(set, n++);
        uint64_t t0 = cpu_now();
        int rc = kv_put(p, ns, &k, w.src, kBig, nullptr);
        uint64_t t1 = cpu_now();
        if (rc != 0) return rc;
        if (timed) state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
        kv_view v; // where it went (untimed)
        if ((rc = kv_get(p, ns, &k, &v)) != 0) return rc;
        dest[v.data]++;
        if ((rc = kv_release(p, &v)) != 0) return rc;
        live.push_back(k);
        if (live.size() > kRotateLive) {
            rc = kv_remove(p, ns, &live.front());
            live.erase(live.begin());
        }
        return rc;
    };
    for (uint32_t i = 0; i < kRotateLive; i++) { // fill, untimed
        if (int rc = put(false)) {
            state.SkipWithError(errstr("kv_put (fill)", rc).c_str());
            return;
        }
    }
    dest.clear();
    for (auto _ : state) {
        if (int rc = put(true)) [[unlikely]] {
            state.SkipWithError(errstr("kv_put/kv_remove", rc).c_str());
            break;
        }
    }
    for (const kv_key &k : live)
        kv_remove(p, ns, &k);
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
    state.counters["dest_blocks"] = static_cast<double>(dest.size());
}
BENCHMARK(BM_Put2MiB_Rotate)->UseManualTime()->Unit(benchmark::kMicrosecond);

template <bool Hash>
void BM_Memcpy2MiB_Rotate(benchmark::State &state) {
    WriteFixture &w = write_fixture();
    RotateFixture &f = rotate_fixture();
    if (!w.error.empty() || !f.error.empty()) {
        state.SkipWithError((w.error + f.error).c_str());
        return;
    }
    uint32_t i = 0;
    for (auto _ : state) {
        uint8_t *dst = f.region + uint64_t(i) * kBig;
        i = i + 1 == kRotateBlocks ? 0 : i + 1;
        uint64_t t0 = cpu_now();
        std::memcpy(dst, w.src, kBig);
        if constexpr (Hash) {
            uint64_t h = XXH3_64bits(dst, kBig);
            benchmark::DoNotOptimize(h);
        }
        benchmark::ClobberMemory();
        uint64_t t1 = cpu_now();
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
    state.counters["dest_blocks"] = kRotateBlocks;
}
// The baseline of the target.
BENCHMARK(BM_Memcpy2MiB_Rotate<false>)
    ->Name("BM_Memcpy2MiB_Rotate")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
// Context: the naive put, copy then a second pass to hash the copy.
BENCHMARK(BM_Memcpy2MiB_Rotate<true>)
    ->Name("BM_Memcpy2MiB_XXH3_Rotate")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- 4: reserve + commit overhead, commit-time checksum -------------------------------------

// A batch of kBatch fresh keys: reserve + commit(KV_COMMIT_F_CHECKSUM) each,
// timed as one span; then remove each, timed as another. No data is written.
// The reported time per iteration is for the whole batch of reserve+commit;
// the counters give nanoseconds per operation.
constexpr int kBatch = 256;
constexpr uint64_t kSmall = 64 * KiB;

void BM_ReserveCommit64KiB(benchmark::State &state) {
    WriteFixture &f = write_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    kv_pool *p = f.pool->get();
    const uint32_t ns = f.pool->ns();
    std::vector<kv_key> keys(kBatch);
    uint64_t rc_ns = 0, rm_ns = 0;
    for (auto _ : state) {
        for (auto &k : keys)
            k = make_key(40, fresh_serial());
        int rc = 0;
        const char *what = "";
        uint64_t t0 = cpu_now();
        for (auto &k : keys) {
            kv_reservation r;
            rc = kv_reserve(p, ns, &k, kSmall, nullptr, &r);
            if (rc != 0) [[unlikely]] {
                what = "kv_reserve";
                break;
            }
            rc = kv_commit(p, &r, KV_COMMIT_F_CHECKSUM, 0x6b7670006b767000ULL);
            if (rc != 0) [[unlikely]] {
                what = "kv_commit";
                break;
            }
        }
        uint64_t t1 = cpu_now();
        for (auto &k : keys) {
            if (rc != 0) break;
            rc = kv_remove(p, ns, &k);
            if (rc != 0) [[unlikely]]
                what = "kv_remove";
        }
        uint64_t t2 = cpu_now();
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr(what, rc).c_str());
            break;
        }
        rc_ns += t1 - t0;
        rm_ns += t2 - t1;
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    const double ops = static_cast<double>(state.iterations()) * kBatch;
    if (ops > 0) {
        state.counters["reserve_commit_ns"] = static_cast<double>(rc_ns) / ops;
        state.counters["remove_ns"] = static_cast<double>(rm_ns) / ops;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBatch);
}
BENCHMARK(BM_ReserveCommit64KiB)->UseManualTime()->Unit(benchmark::kMicrosecond);

// The commit-time checksum: reserve 2 MiB, write it (untimed, so the data is
// as warm as right after a producer wrote it), commit without the flag (timed).
void BM_CommitChecksum2MiB(benchmark::State &state) {
    WriteFixture &f = write_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    kv_pool *p = f.pool->get();
    const uint32_t ns = f.pool->ns();
    for (auto _ : state) {
        kv_key k = make_key(41, fresh_serial());
        kv_reservation r;
        int rc = kv_reserve(p, ns, &k, kBig, nullptr, &r);
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_reserve", rc).c_str());
            break;
        }
        std::memcpy(r.data, f.src, kBig);
        uint64_t t0 = cpu_now();
        rc = kv_commit(p, &r, 0, 0);
        uint64_t t1 = cpu_now();
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_commit", rc).c_str());
            break;
        }
        rc = kv_remove(p, ns, &k);
        if (rc != 0) [[unlikely]] {
            state.SkipWithError(errstr("kv_remove", rc).c_str());
            break;
        }
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
}
BENCHMARK(BM_CommitChecksum2MiB)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_XXH3_2MiB(benchmark::State &state) {
    WriteFixture &f = write_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    for (auto _ : state) {
        std::memcpy(f.dst, f.src, kBig); // untimed, as in BM_CommitChecksum2MiB
        benchmark::ClobberMemory();
        uint64_t t0 = cpu_now();
        uint64_t h = XXH3_64bits(f.dst, kBig);
        benchmark::DoNotOptimize(h);
        uint64_t t1 = cpu_now();
        state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBig));
}
BENCHMARK(BM_XXH3_2MiB)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---- 5: allocation + free from 2 processes: kvpool vs Boost.Interprocess ------------------

// Each process keeps a window of live allocations: per operation it frees
// the oldest and allocates the next size of a shared sequence (uniform in
// 4 KiB..2 MiB; worker i starts at a different offset). window 1 is
// allocate-then-free.
constexpr uint64_t kAllocRegion = 1 * GiB;
constexpr size_t kSizes = 4096; // power of two

struct AllocFixture {
    std::unique_ptr<BenchPool> pool;
    std::vector<uint64_t> sizes;
#ifdef KVBENCH_HAVE_BOOST
    std::string bip_name;
    std::unique_ptr<boost::interprocess::managed_shared_memory> bip;
#endif
    std::string error;
    ~AllocFixture() {
#ifdef KVBENCH_HAVE_BOOST
        bip.reset();
        if (!bip_name.empty()) {
            boost::interprocess::shared_memory_object::remove(bip_name.c_str());
            kvbench::Cleanup::remove("/dev/shm/" + bip_name);
        }
#endif
    }
};

AllocFixture &alloc_fixture() {
    static AllocFixture f;
    static bool done = false;
    if (done) return f;
    done = true;
    Rng r(5);
    for (size_t i = 0; i < kSizes; ++i)
        f.sizes.push_back(4 * KiB + r.below(2 * MiB - 4 * KiB + 1));
    PoolSpec spec;
    spec.size = kAllocRegion;
    auto p = BenchPool::create(spec, "alloc");
    if (!p) {
        f.error = p.error();
        return f;
    }
    f.pool = std::move(*p);
#ifdef KVBENCH_HAVE_BOOST
    namespace bip = boost::interprocess;
    f.bip_name = kvbench::unique_name("bip");
    try {
        bip::shared_memory_object::remove(f.bip_name.c_str());
        kvbench::Cleanup::add("/dev/shm/" + f.bip_name);
        f.bip = std::make_unique<bip::managed_shared_memory>(bip::create_only, f.bip_name.c_str(),
                                                             kAllocRegion);
        // Fault the segment in, as KV_CREATE_F_PREFAULT does for the pool.
        size_t len = f.bip->get_free_memory() - 1 * MiB;
        void *all = f.bip->allocate(len, std::nothrow);
        if (all) {
            std::memset(all, 0, len);
            f.bip->deallocate(all);
        }
    } catch (const std::exception &e) {
        f.error = std::string("Boost.Interprocess: ") + e.what();
    }
#endif
    return f;
}

int kv_alloc_worker(Worker &w, const std::string &path, uint32_t ns,
                    const std::vector<uint64_t> &sizes, unsigned window) {
    kv_pool *p = nullptr;
    char msg[256] = "";
    int rc = kv_pool_attach(path.c_str(), 0, &p, msg, sizeof msg);
    if (rc < 0) return w.fail(rc, std::string("kv_pool_attach: ") + msg);
    const uint64_t set = 1000 + w.index() + 16 * static_cast<uint64_t>(getpid());
    uint64_t serial = 0;
    size_t si = w.index() * 1237;
    std::vector<kv_reservation> win(window);
    int result = 0;
    for (auto &r : win) {
        kv_key k = make_key(set, serial++);
        rc = kv_reserve(p, ns, &k, sizes[si++ % kSizes], nullptr, &r);
        if (rc != 0) {
            result = w.fail(rc, "kv_reserve (window)");
            kv_pool_detach(p);
            return result;
        }
    }
    uint64_t ops = 0;
    unsigned h = 0;
    w.start();
    while (!w.stopped() && result == 0) {
        for (int i = 0; i < 32; ++i) {
            rc = kv_abort(p, &win[h]);
            if (rc != 0) [[unlikely]] {
                result = w.fail(rc, "kv_abort");
                break;
            }
            kv_key k = make_key(set, serial++);
            rc = kv_reserve(p, ns, &k, sizes[si++ % kSizes], nullptr, &win[h]);
            if (rc != 0) [[unlikely]] {
                result = w.fail(rc, "kv_reserve");
                break;
            }
            h = h + 1 == window ? 0 : h + 1;
        }
        ops += 32;
    }
    w.finish(ops);
    if (result == 0)
        for (auto &r : win)
            kv_abort(p, &r);
    kv_pool_detach(p);
    return result;
}

#ifdef KVBENCH_HAVE_BOOST
int bip_alloc_worker(Worker &w, const std::string &name, const std::vector<uint64_t> &sizes,
                     unsigned window) {
    namespace bip = boost::interprocess;
    try {
        bip::managed_shared_memory seg(bip::open_only, name.c_str());
        size_t si = w.index() * 1237;
        std::vector<void *> win(window);
        for (auto &a : win) {
            a = seg.allocate(sizes[si++ % kSizes], std::nothrow);
            if (!a) return w.fail(-ENOMEM, "managed_shared_memory::allocate (window)");
        }
        uint64_t ops = 0;
        unsigned h = 0;
        int result = 0;
        w.start();
        while (!w.stopped() && result == 0) {
            for (int i = 0; i < 32; ++i) {
                seg.deallocate(win[h]);
                win[h] = seg.allocate(sizes[si++ % kSizes], std::nothrow);
                if (!win[h]) [[unlikely]] {
                    result = w.fail(-ENOMEM, "managed_shared_memory::allocate");
                    break;
                }
                h = h + 1 == window ? 0 : h + 1;
            }
            ops += 32;
        }
        w.finish(ops);
        for (auto *a : win)
            if (a) seg.deallocate(a);
        return result;
    } catch (const std::exception &e) {
        return w.fail(-EIO, std::string("Boost.Interprocess: ") + e.what());
    }
}
#endif

void BM_AllocFree_2Proc(benchmark::State &state) {
#ifndef KVBENCH_HAVE_BOOST
    state.SkipWithError("built without Boost.Interprocess (the baseline)");
    return;
#else
    AllocFixture &f = alloc_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    const auto window = static_cast<unsigned>(state.range(0));
    const std::string path = f.pool->path();
    const uint32_t ns = f.pool->ns();
    kvbench::PhaseTotals kv, bip;
    std::string err;
    for (auto _ : state) {
        for (int r = 0; r < kRounds && err.empty(); ++r) {
            for (int leg = 0; leg < 2 && err.empty(); ++leg) {
                const bool is_kv = (r + leg) % 2 == 0; // ABBA
                auto res = is_kv ? kvbench::run_workers(2, kPhaseSeconds,
                                                        [&](Worker &w) {
                                                            return kv_alloc_worker(w, path, ns,
                                                                                   f.sizes, window);
                                                        })
                                 : kvbench::run_workers(2, kPhaseSeconds, [&](Worker &w) {
                                       return bip_alloc_worker(w, f.bip_name, f.sizes, window);
                                   });
                if (!res) {
                    err = std::string(is_kv ? "kvpool: " : "boost: ") + res.error();
                    break;
                }
                (is_kv ? kv : bip).add(*res);
            }
        }
    }
    if (!err.empty()) {
        state.SkipWithError(err.c_str());
        return;
    }
    // ratio: wall-clock throughput (the target). ratio_cpu: per CPU-second;
    // it flatters Boost, whose contended mutex sleeps instead of spending CPU.
    state.counters["kv_ops_per_s"] = kv.ops_per_s / kRounds;
    state.counters["bip_ops_per_s"] = bip.ops_per_s / kRounds;
    state.counters["ratio"] = bip.ops_per_s > 0 ? kv.ops_per_s / bip.ops_per_s : 0;
    state.counters["ratio_cpu"] = bip.ops_per_cpu_s > 0 ? kv.ops_per_cpu_s / bip.ops_per_cpu_s : 0;
    state.counters["kv_cpu_share"] = kv.cpu_share / (2 * kRounds);
    state.counters["bip_cpu_share"] = bip.cpu_share / (2 * kRounds);
#endif
}
BENCHMARK(BM_AllocFree_2Proc)
    ->ArgName("window")
    ->Arg(1)
    ->Arg(8)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- 6: match_prefix over a 1,000-block chain -------------------------------------------------

constexpr uint32_t kBlockTokens = 16;
constexpr size_t kChainBlocks = 1000;
constexpr size_t kChainTokens = kChainBlocks * kBlockTokens;

struct MatchFixture {
    std::unique_ptr<BenchPool> pool;
    std::vector<uint32_t> tokens;
    std::vector<kv_key> keys;
    std::string error;
};

MatchFixture &match_fixture() {
    static MatchFixture f = [] {
        MatchFixture f;
        PoolSpec spec;
        spec.size = 64 * MiB;
        auto p = BenchPool::create(spec, "match");
        if (!p) {
            f.error = p.error();
            return f;
        }
        f.pool = std::move(*p);
        Rng r(6);
        for (size_t i = 0; i < kChainTokens; ++i)
            f.tokens.push_back(r.below(150000));
        f.keys.resize(kChainBlocks);
        size_t n = kv_hash_chain(f.pool->seed(), f.tokens.data(), f.tokens.size(), kBlockTokens,
                                 f.keys.data(), f.keys.size());
        if (n != kChainBlocks) {
            f.error = "kv_hash_chain returned " + std::to_string(n) + ", expected " +
                      std::to_string(kChainBlocks);
            return f;
        }
        std::vector<uint8_t> block(4 * KiB, 0x5a);
        for (const auto &k : f.keys) {
            int rc = kv_put(f.pool->get(), f.pool->ns(), &k, block.data(), block.size(), nullptr);
            if (rc < 0) {
                f.error = errstr("kv_put (match fixture)", rc);
                break;
            }
        }
        return f;
    }();
    return f;
}

enum class Match {
    HashOnly,          // kv_hash_chain alone
    MatchOnly,         // kv_match_prefix alone, keys precomputed
    HashMatch,         // the target: hash + match
    HashMatchPin,      // with KV_MATCH_F_PIN; releasing the 1,000 views is timed too
    HashMatchPinNoRel, // with KV_MATCH_F_PIN; the releases are outside the timing
};

void BM_MatchPrefix(benchmark::State &state, Match mode) {
    MatchFixture &f = match_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    kv_pool *p = f.pool->get();
    const uint32_t ns = f.pool->ns();
    const uint64_t seed = f.pool->seed();
    std::vector<kv_key> keys = f.keys;
    std::vector<kv_view> views(kChainBlocks);
    const bool pin = mode == Match::HashMatchPin || mode == Match::HashMatchPinNoRel;
    for (auto _ : state) {
        if (mode != Match::MatchOnly) {
            size_t n = kv_hash_chain(seed, f.tokens.data(), kChainTokens, kBlockTokens, keys.data(),
                                     kChainBlocks);
            benchmark::DoNotOptimize(n);
        }
        if (mode == Match::HashOnly) {
            benchmark::ClobberMemory();
            continue;
        }
        int m = kv_match_prefix(p, ns, keys.data(), kChainBlocks, pin ? KV_MATCH_F_PIN : 0U,
                                pin ? views.data() : nullptr);
        if (m != static_cast<int>(kChainBlocks)) [[unlikely]] {
            state.SkipWithError(("kv_match_prefix returned " + std::to_string(m) + ", expected " +
                                 std::to_string(kChainBlocks))
                                    .c_str());
            break;
        }
        if (pin) {
            if (mode == Match::HashMatchPinNoRel) state.PauseTiming();
            for (int i = 0; i < m; ++i)
                kv_release(p, &views[static_cast<size_t>(i)]);
            if (mode == Match::HashMatchPinNoRel) state.ResumeTiming();
        }
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChainBlocks));
}
BENCHMARK_CAPTURE(BM_MatchPrefix, hash_only, Match::HashOnly)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MatchPrefix, match_only, Match::MatchOnly)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MatchPrefix, hash_match, Match::HashMatch)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MatchPrefix, hash_match_pin_release_timed, Match::HashMatchPin)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MatchPrefix, hash_match_pin_release_untimed, Match::HashMatchPinNoRel)
    ->Unit(benchmark::kMicrosecond);

// The same work without kvpool: key(i) = XXH3-128(seed, key(i-1) || tokens)
// computed inline on a stack buffer, then a lookup of each key in a
// process-private hash map. Also checks kv_hash_chain against that formula.
void BM_MatchPrefix_Baseline(benchmark::State &state) {
    MatchFixture &f = match_fixture();
    if (!f.error.empty()) {
        state.SkipWithError(f.error.c_str());
        return;
    }
    const uint64_t seed = f.pool->seed();
    std::unordered_map<kv_key, uint32_t, KeyHash, KeyEq> map;
    for (uint32_t i = 0; i < kChainBlocks; ++i)
        map.emplace(f.keys[i], i);
    std::vector<kv_key> keys(kChainBlocks);
    for (auto _ : state) {
        kv_key prev{0, 0};
        for (size_t i = 0; i < kChainBlocks; ++i) {
            uint8_t buf[16 + 4 * kBlockTokens];
            std::memcpy(buf, &prev, 16);
            std::memcpy(buf + 16, &f.tokens[i * kBlockTokens], 4 * kBlockTokens);
            XXH128_hash_t h = XXH3_128bits_withSeed(buf, sizeof buf, seed);
            prev = kv_key{h.low64, h.high64};
            keys[i] = prev;
        }
        size_t m = 0;
        while (m < kChainBlocks && map.find(keys[m]) != map.end())
            ++m;
        if (m != kChainBlocks) [[unlikely]] {
            state.SkipWithError(
                ("inline XXH3-128 chain differs from kv_hash_chain at block " + std::to_string(m))
                    .c_str());
            break;
        }
        benchmark::DoNotOptimize(m);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kChainBlocks));
}
BENCHMARK(BM_MatchPrefix_Baseline)->Unit(benchmark::kMicrosecond);

// ---- 7: metadata overhead ---------------------------------------------------------------------

// The time reported is create + attach + detach + destroy of the pool.
void BM_MetadataOverhead(benchmark::State &state) {
    PoolSpec spec;
    spec.size = static_cast<uint64_t>(state.range(0)) * GiB;
    spec.avg_block_size = static_cast<uint64_t>(state.range(1)) * KiB;
    spec.prefault = false;
    double overhead = 0, entries = 0, data_mib = 0;
    for (auto _ : state) {
        auto p = BenchPool::create(spec, "meta");
        if (!p) {
            state.SkipWithError(p.error().c_str());
            return;
        }
        const kv_region_header *h = kv_pool_header((*p)->get());
        overhead = 100.0 * static_cast<double>(h->region_size - h->data_len) /
                   static_cast<double>(h->region_size);
        entries = h->n_entries;
        data_mib = static_cast<double>(h->data_len) / MiB;
    }
    state.counters["overhead_pct"] = overhead;
    state.counters["n_entries"] = entries;
    state.counters["data_MiB"] = data_mib;
}
// avg_block_KiB 0: the library's default (16 KiB).
BENCHMARK(BM_MetadataOverhead)
    ->ArgNames({"size_GiB", "avg_block_KiB"})
    ->ArgsProduct({{1, 4}, {0, 64}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

} // namespace

// ---- 8: eviction's share of a put ----------------------------------------------
//
// Put chained blocks (each names the previous as parent, chains of 16) into
// one pool of the default policy (prefix-aware, sampled eviction), full, at
// steady state, in batches of two kinds that alternate:
//   full  the pool is full, so every put evicts inline (the policy's
//         sampled choice, kill, free) before it copies; the benchmark's
//         time is this put's;
//   room  before the batch, as many blocks as it will put are removed,
//         untimed, so its puts find free blocks and do not evict (and
//         leave the pool full again for the next full batch).
// Both copy into blocks written long ago (cold in the caches), in the same
// pool and so the same memory, and should differ only by the eviction,
// which also means where the blocks are: sampled victims lie anywhere in
// the pool, so with room_oldest:0 the blocks removed are drawn at random
// too; room_oldest:1 removes the oldest blocks, which lie side by side
// (they were put in a row), a kinder baseline for the cache and TLB
// (reported for context). One pool, not a full one beside one with room:
// two pools created one after the other can differ in write speed by the
// placement of their memory alone, which would swamp the difference. Only
// the puts are timed, in batches (thread CPU time, read once per batch:
// reading that clock is a syscall, a sizeable share of one small put).
// Below 1 MiB a room batch removes 32 blocks, more than the 8 block hints
// a process keeps per class (store.cc, note_remove), so the removes end
// the eviction streak and the first puts of the next full batch search the
// slab table before they evict: a little more than a pool that stays full
// pays. The 8 removes of a 2 MiB room batch fit, so there the streak goes
// on. Counters: room_us, the put of a room batch; full_over_room, the sum
// of the full batches' put times over the room batches' (the target:
// <= 1.10); full_minus_room_us, their
// difference per put; evictions_per_put, in the full batches (1) and in
// the room batches (0); remove_us, one of the removes that make room (wall
// time), which is a floor for the difference: an eviction removes its
// victim as kv_remove does, only found by sampling instead of by key.
void BM_PutSteady(benchmark::State &state) {
    const uint64_t block = uint64_t(state.range(0)) * KiB;
    const bool room_random = state.range(1) == 0;
    const uint64_t blocks = uint64_t(state.range(2)) * MiB / block; // capacity
    PoolSpec spec;
    spec.size = blocks * block + 64 * MiB;
    spec.slab_size =
        std::max<uint64_t>(block, 1 * MiB); // entry table: the default (16 KiB average)
    auto bp = BenchPool::create(spec, "steady");
    if (!bp) {
        state.SkipWithError(bp.error().c_str());
        return;
    }
    kv_pool *p = (*bp)->get();
    const uint32_t ns = (*bp)->ns();
    void *src = alloc_touched(block, 5);
    // Blocks the pool holds: its data area's, or its entry table's when
    // that fills first (blocks no larger than avg_block_size, 16 KiB here).
    const uint64_t cap =
        std::min<uint64_t>(kv_pool_header(p)->data_len / block, kv_pool_header(p)->n_entries);
    std::deque<kv_key> live;
    uint64_t serial = 0;
    auto put = [&] {
        kv_key k = make_key(80, serial);
        kv_put_opts o{};
        o.struct_size = sizeof o;
        if (serial % 16) { // chains of 16 blocks
            o.flags = KV_PUT_F_PARENT;
            o.parent = make_key(80, serial - 1);
        }
        serial++;
        int rc = kv_put_ex(p, ns, &k, src, block, &o);
        live.push_back(k);
        return rc;
    };
    // Warm up: fill to capacity and one more round (which evicts).
    for (uint64_t i = 0; i < 2 * cap; i++) {
        if (int rc = put(); rc < 0) {
            state.SkipWithError(errstr("kv_put_ex (warm-up)", rc).c_str());
            std::free(src);
            return;
        }
        if (live.size() > cap) live.pop_front(); // evicted long ago
    }
    const uint64_t batch = block >= MiB ? 8 : 32;
    kvbench::Rng rng{0x5eed};
    uint64_t spent[2] = {0, 0}, evictions[2] = {0, 0}, puts = 0; // [0] full, [1] room
    uint64_t remove_ns = 0, removes = 0; // the untimed removes that make room, timed apart
    // A batch of timed puts of kind i; false (and the benchmark skipped) on an error.
    auto run_batch = [&](uint32_t i) {
        kv_stats s0{}, s1{};
        kv_pool_stats(p, &s0);
        int rc = 0;
        const uint64_t t0 = cpu_now();
        for (uint64_t j = 0; j < batch && rc >= 0; j++)
            rc = put();
        spent[i] += cpu_now() - t0;
        kv_pool_stats(p, &s1);
        evictions[i] += s1.evictions - s0.evictions;
        while (live.size() > cap)
            live.pop_front();
        if (rc < 0) state.SkipWithError(errstr("kv_put_ex", rc).c_str());
        return rc >= 0;
    };
    while (state.KeepRunningBatch(int64_t(batch))) {
        // Room for a batch (untimed), then the batch.
        for (uint64_t j = 0; j < batch && !live.empty();) {
            size_t at = room_random ? size_t(rng.next() % live.size()) : 0;
            // Wall clock (vDSO, tens of ns), not the thread CPU clock the
            // batches use: that one is a system call, as long as a remove.
            const uint64_t r0 = kvbench::now_ns();
            int rc = kv_remove(p, ns, &live[at]);
            const uint64_t r1 = kvbench::now_ns();
            live.erase(live.begin() + std::ptrdiff_t(at));
            if (rc == 0) { // (a key evicted already frees nothing: draw again)
                j++;
                remove_ns += r1 - r0;
                removes++;
            }
        }
        if (!run_batch(1)) break;
        // The pool is full again: a batch that evicts.
        const uint64_t before_full = spent[0];
        if (!run_batch(0)) break;
        state.SetIterationTime(static_cast<double>(spent[0] - before_full) * 1e-9);
        puts += batch;
    }
    if (puts) {
        state.counters["room_us"] = double(spent[1]) * 1e-3 / double(puts);
        state.counters["full_over_room"] = spent[1] ? double(spent[0]) / double(spent[1]) : 0;
        state.counters["evictions_per_put"] = double(evictions[0]) / double(puts);
        state.counters["room_evictions_per_put"] = double(evictions[1]) / double(puts);
        // What an eviction cannot avoid: a victim is removed as kv_remove
        // removes a block. (full - room) per put minus this is the cost of
        // choosing the victim and of the evicting put's own detours.
        state.counters["remove_us"] = removes ? double(remove_ns) * 1e-3 / double(removes) : 0;
        state.counters["full_minus_room_us"] =
            double(spent[0] - std::min(spent[0], spent[1])) * 1e-3 / double(puts);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * block));
    std::free(src);
}
BENCHMARK(BM_PutSteady)
    ->ArgNames({"block_KiB", "room_oldest", "data_MiB"})
    // A small pool (64 KiB x 1024, 2 MiB x 64) and a 1 GiB one: the small
    // one fits in a server CPU's L3, so room made by random removes hands
    // its puts blocks written recently (still cached) while a victim, the
    // oldest, is not; in 1 GiB neither is.
    // Blocks of 4 and 16 KiB fill the default entry table (one entry per
    // 16 KiB of data) before the data area: every put into the full pool
    // needs an entry first, and the entry table's eviction path is measured.
    ->Args({4, 0, 64})
    ->Args({4, 1, 64})
    ->Args({16, 0, 64})
    ->Args({16, 1, 64})
    ->Args({16, 0, 1024})
    ->Args({16, 1, 1024})
    ->Args({64, 0, 64})
    ->Args({64, 1, 64})
    ->Args({64, 0, 1024})
    ->Args({64, 1, 1024})
    // Between the two: where eviction's fixed cost (a remove's work and the
    // victim's choice) becomes small next to the copy.
    ->Args({256, 0, 1024})
    ->Args({256, 1, 1024})
    ->Args({2048, 0, 128})
    ->Args({2048, 1, 128})
    ->Args({2048, 0, 1024})
    ->Args({2048, 1, 1024})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- 8b: the change feed's cost on a put -------------------------------------------
//
// The same steady puts (a full pool, every put evicting, chains of 16 with
// 16 token ids each) into two pools that differ only in their change feed
// (4096 slots vs none), in alternating batches of one run, timed with the
// thread's CPU clock: feed_over_none is the ratio of the mean put cost
// with the feed to without (PROTOCOL.md section 13 states the targets:
// <= 1.05 at 64 KiB, <= 1.01 at 2 MiB). A reader drains the feed pool
// every millisecond from another thread, as kvpoold does, so the records'
// lines move between cores as they would in production.
// Two pools that differ in one setting, timed in one run: each iteration
// puts a batch into each (put(0), put(1)), alternating which goes first
// so neither always follows the other's batch, and adds the thread CPU
// time of each batch to spent[f] and its puts to puts[f]. The iteration's
// manual time is both batches'. Returns the first error of put, or 0.
template <typename Put>
int alternate_puts(benchmark::State &state, uint64_t batch, Put &put, uint64_t spent[2],
                   uint64_t puts[2]) {
    int rc = 0;
    int first = 0;
    for (auto _ : state) {
        uint64_t it_ns = 0;
        first ^= 1;
        for (int k = 0; k < 2 && rc >= 0; k++) {
            const int f = first ^ k;
            const uint64_t t0 = cpu_now();
            for (uint64_t j = 0; j < batch && rc >= 0; j++)
                rc = put(f);
            const uint64_t dt = cpu_now() - t0;
            spent[f] += dt;
            puts[f] += batch;
            it_ns += dt;
        }
        if (rc < 0) break;
        state.SetIterationTime(double(it_ns) * 1e-9);
    }
    return rc;
}

void BM_PutFeed(benchmark::State &state) {
    const uint64_t block = uint64_t(state.range(0)) * KiB;
    const uint64_t blocks = uint64_t(state.range(1)) * MiB / block;
    std::unique_ptr<BenchPool> pools[2]; // [0] no feed, [1] feed
    for (int f = 0; f < 2; f++) {
        PoolSpec spec;
        spec.size = blocks * block + 64 * MiB;
        spec.slab_size = std::max<uint64_t>(block, 1 * MiB);
        spec.feed_slots = f ? 4096 : 0;
        auto bp = BenchPool::create(spec, f ? "feed-on" : "feed-off");
        if (!bp) {
            state.SkipWithError(bp.error().c_str());
            return;
        }
        pools[f] = std::move(*bp);
    }
    void *src = alloc_touched(block, 7);
    uint32_t ids[16];
    uint64_t serial[2] = {0, 0};
    auto put = [&](int f) {
        kv_pool *p = pools[f]->get();
        const kv_key k = make_key(81, serial[f]);
        kv_put_opts o{};
        o.struct_size = sizeof o;
        if (serial[f] % 16) {
            o.flags = KV_PUT_F_PARENT;
            o.parent = make_key(81, serial[f] - 1);
        }
        for (uint32_t i = 0; i < 16; i++)
            ids[i] = uint32_t(serial[f] * 16 + i);
        o.n_token_ids = 16;
        o.token_ids = ids;
        serial[f]++;
        return kv_put_ex(p, pools[f]->ns(), &k, src, block, &o);
    };
    const uint64_t cap = std::min<uint64_t>(kv_pool_header(pools[0]->get())->data_len / block,
                                            kv_pool_header(pools[0]->get())->n_entries);
    for (int f = 0; f < 2; f++)
        for (uint64_t i = 0; i < 2 * cap; i++)
            if (int rc = put(f); rc < 0) {
                state.SkipWithError(errstr("kv_put_ex (warm-up)", rc).c_str());
                std::free(src);
                return;
            }
    std::atomic<bool> stop{false};
    std::thread reader([&] {
        kv::detail::FeedReader r(pools[1]->get());
        std::vector<kv::detail::FeedItem> items;
        while (!stop.load(std::memory_order_relaxed)) { // relaxed: a stop flag
            items.clear();
            r.poll(items, 8192);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    const uint64_t batch = block >= MiB ? 8 : 32;
    uint64_t spent[2] = {0, 0}, puts[2] = {0, 0};
    const int rc = alternate_puts(state, batch, put, spent, puts);
    stop.store(true, std::memory_order_relaxed);
    reader.join();
    if (rc < 0) state.SkipWithError(errstr("kv_put_ex", rc).c_str());
    if (puts[0] && puts[1]) {
        const double off = double(spent[0]) / double(puts[0]),
                     on = double(spent[1]) / double(puts[1]);
        state.counters["none_us"] = off * 1e-3;
        state.counters["feed_us"] = on * 1e-3;
        state.counters["feed_over_none"] = on / off;
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 2 * batch * block));
    std::free(src);
}
BENCHMARK(BM_PutFeed)
    ->ArgNames({"block_KiB", "data_MiB"})
    ->Args({64, 64})
    ->Args({2048, 128})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- 8c: secure erase's cost on a put ----------------------------------------------
//
// Puts into two full pools (every put evicts the oldest block) that differ
// only in KV_CREATE_F_SECURE_ERASE, in alternating batches of one run,
// timed with the thread's CPU clock as BM_PutFeed: erase_over_plain is the
// ratio of the mean put cost with erase to without. With erase each put
// zeroes its victim's block (a memset of the block size) before it copies
// its own data in (PROTOCOL.md section 14).
void BM_PutSecureErase(benchmark::State &state) {
    const uint64_t block = uint64_t(state.range(0)) * KiB;
    const uint64_t blocks = uint64_t(state.range(1)) * MiB / block;
    std::unique_ptr<BenchPool> pools[2]; // [0] plain, [1] secure erase
    for (int f = 0; f < 2; f++) {
        PoolSpec spec;
        spec.size = blocks * block + 64 * MiB;
        spec.slab_size = std::max<uint64_t>(block, 1 * MiB);
        spec.secure_erase = f == 1;
        auto bp = BenchPool::create(spec, f ? "erase-on" : "erase-off");
        if (!bp) {
            state.SkipWithError(bp.error().c_str());
            return;
        }
        pools[f] = std::move(*bp);
    }
    void *src = alloc_touched(block, 7);
    uint64_t serial[2] = {0, 0};
    auto put = [&](int f) {
        const kv_key k = make_key(83, serial[f]++);
        return kv_put(pools[f]->get(), pools[f]->ns(), &k, src, block, nullptr);
    };
    const uint64_t cap = std::min<uint64_t>(kv_pool_header(pools[0]->get())->data_len / block,
                                            kv_pool_header(pools[0]->get())->n_entries);
    for (int f = 0; f < 2; f++)
        for (uint64_t i = 0; i < 2 * cap; i++)
            if (int rc = put(f); rc < 0) {
                state.SkipWithError(errstr("kv_put (warm-up)", rc).c_str());
                std::free(src);
                return;
            }
    const uint64_t batch = block >= MiB ? 8 : 32;
    uint64_t spent[2] = {0, 0}, puts[2] = {0, 0}, evictions[2] = {0, 0};
    kv_stats s0[2]{};
    for (int f = 0; f < 2; f++)
        kv_pool_stats(pools[f]->get(), &s0[f]);
    const int rc = alternate_puts(state, batch, put, spent, puts);
    if (rc < 0) state.SkipWithError(errstr("kv_put", rc).c_str());
    for (int f = 0; f < 2; f++) {
        kv_stats s{};
        kv_pool_stats(pools[f]->get(), &s);
        evictions[f] = s.evictions - s0[f].evictions;
    }
    if (puts[0] && puts[1]) {
        const double off = double(spent[0]) / double(puts[0]),
                     on = double(spent[1]) / double(puts[1]);
        state.counters["plain_us"] = off * 1e-3;
        state.counters["erase_us"] = on * 1e-3;
        state.counters["erase_over_plain"] = on / off;
        // Every put should evict: a ratio below 1 means the pools were not full.
        state.counters["evictions_per_put"] =
            double(evictions[0] + evictions[1]) / double(puts[0] + puts[1]);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 2 * batch * block));
    std::free(src);
}
BENCHMARK(BM_PutSecureErase)
    ->ArgNames({"block_KiB", "data_MiB"})
    ->Args({64, 64})
    ->Args({64, 1024})
    ->Args({2048, 128})
    ->Args({2048, 1024})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- 9: removes among puts into a full pool ---------------------------------------
//
// An engine that drops blocks (kv_remove) while it puts new ones, into a
// full pool: batches of "remove one live block, put two" alternate with
// batches of puts only, which all evict. 16 KiB blocks fill the entry table
// first (one entry per 16 KiB of data), 64 KiB ones the data area. In the
// mixed batches half the puts take the entry and block the remove freed
// (kv_pool::freed_entries, freed_blocks) and evict nothing, and the other
// half evict as the put-only batches do: a mixed put should cost at most
// what a put-only one does (mixed_over_full <= 1). Only the puts are timed
// (wall clock, per pair: reading the thread-CPU clock is a syscall); the
// removes, of random live blocks, are not. A remove must not end the puts'
// short searches (store.cc, note_remove): if it did, the second put of each
// pair would scan 4096 entries (16 KiB) or read every slab's line (64 KiB)
// before it evicted, and mixed_over_full would exceed 1.
void BM_PutRemoveMix(benchmark::State &state) {
    const uint64_t block = uint64_t(state.range(0)) * KiB;
    const uint64_t data = uint64_t(state.range(1)) * MiB;
    PoolSpec spec;
    spec.size = data + 64 * MiB;
    spec.slab_size = 1 * MiB; // entry table: the default (one entry per 16 KiB)
    auto bp = BenchPool::create(spec, "mix");
    if (!bp) {
        state.SkipWithError(bp.error().c_str());
        return;
    }
    kv_pool *p = (*bp)->get();
    const uint32_t ns = (*bp)->ns();
    void *src = alloc_touched(block, 6);
    const uint64_t cap =
        std::min<uint64_t>(kv_pool_header(p)->data_len / block, kv_pool_header(p)->n_entries);
    std::vector<kv_key> live; // a superset of the pool's blocks (evicted ones stay until drawn)
    uint64_t serial = 0;
    auto put = [&] {
        kv_key k = make_key(90, serial++);
        int rc = kv_put(p, ns, &k, src, block, nullptr);
        live.push_back(k);
        return rc;
    };
    for (uint64_t i = 0; i < 2 * cap; i++) // fill, then a round that evicts
        if (int rc = put(); rc < 0) {
            state.SkipWithError(errstr("kv_put (warm-up)", rc).c_str());
            std::free(src);
            return;
        }
    constexpr uint64_t kPairs = 16;
    kvbench::Rng rng{0x313};
    uint64_t spent[2] = {0, 0}, evictions[2] = {0, 0}, puts = 0; // [0] puts only, [1] mixed
    int rc = 0;
    while (rc >= 0 && state.KeepRunningBatch(int64_t(2 * kPairs))) {
        kv_stats s0{}, s1{};
        kv_pool_stats(p, &s0);
        for (uint64_t j = 0; j < kPairs && rc >= 0;) {
            const size_t at = size_t(rng.next() % live.size());
            const int r = kv_remove(p, ns, &live[at]);
            live[at] = live.back();
            live.pop_back();
            if (r != 0) continue; // evicted already: draw again
            const uint64_t t0 = kvbench::now_ns();
            rc = put();
            if (rc >= 0) rc = put();
            spent[1] += kvbench::now_ns() - t0;
            j++;
        }
        kv_pool_stats(p, &s1);
        evictions[1] += s1.evictions - s0.evictions;
        s0 = s1;
        const uint64_t t0 = kvbench::now_ns();
        for (uint64_t j = 0; j < 2 * kPairs && rc >= 0; j++)
            rc = put();
        const uint64_t t1 = kvbench::now_ns();
        spent[0] += t1 - t0;
        kv_pool_stats(p, &s1);
        evictions[0] += s1.evictions - s0.evictions;
        state.SetIterationTime(double(t1 - t0) * 1e-9);
        puts += 2 * kPairs;
        if (live.size() > 4 * cap)
            live.erase(live.begin(), live.begin() + std::ptrdiff_t(live.size() - 2 * cap));
    }
    if (rc < 0) state.SkipWithError(errstr("kv_put", rc).c_str());
    if (puts) {
        state.counters["full_us"] = double(spent[0]) * 1e-3 / double(puts);
        state.counters["mixed_us"] = double(spent[1]) * 1e-3 / double(puts);
        state.counters["mixed_over_full"] = spent[0] ? double(spent[1]) / double(spent[0]) : 0;
        state.counters["evictions_per_put"] = double(evictions[0]) / double(puts);
        state.counters["mixed_evictions_per_put"] = double(evictions[1]) / double(puts);
    }
    std::free(src);
}
BENCHMARK(BM_PutRemoveMix)
    ->ArgNames({"block_KiB", "data_MiB"})
    ->Args({16, 64})
    ->Args({16, 1024})
    ->Args({64, 64})
    ->Args({64, 1024})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// ---- 10: capacity held with mixed block sizes -------------------------------------
//
// A stream of puts of fresh keys, each of a size drawn uniformly from a
// range, into a pool of pool_MiB (the size a user asks for; the default
// 4 MiB slabs, policy and entry table): once 3x the pool's data area has
// been put (steady state: every put evicts), the live bytes
// (kv_pool_live_bytes) are sampled after each put for another 1x.
// held_pct is their mean over the data area (kv_stats.capacity), min_pct
// the lowest sample; single_pct is the same figure for a stream of blocks
// of one size (512 KiB, the mean of 4 KiB..1 MiB, which packs a slab
// exactly), measured first in the same run, and of_single their ratio.
// evicted_per_put counts the blocks evicted per put at steady state (a
// slab retired for another class counts every block it held). Sizes:
// dist 1, 4 KiB..1 MiB; dist 2, 1 B..1 MiB. One pass each (Iterations(1)):
// the figures are counts, not times.
struct Held {
    double mean = 0, min = 0, evicted_per_put = 0;
    std::string error;
};

Held fill_and_hold(uint64_t pool_bytes, uint64_t lo, uint64_t hi, uint64_t seed, const void *src) {
    Held r;
    PoolSpec spec;
    spec.size = pool_bytes;
    auto bp = BenchPool::create(spec, "held");
    if (!bp) {
        r.error = bp.error();
        return r;
    }
    kv_pool *p = (*bp)->get();
    const uint32_t ns = (*bp)->ns();
    kv_stats st{};
    kv_pool_stats(p, &st);
    const double cap = double(st.capacity);
    kvbench::Rng rng{seed};
    uint64_t put_bytes = 0, serial = 0, samples = 0;
    double sum = 0, lowest = 1e300;
    kv_stats s0{};
    uint64_t measured_puts = 0;
    while (put_bytes < 4 * st.capacity) {
        const uint64_t len = lo + rng.next() % (hi - lo + 1);
        const kv_key k = make_key(100, serial++);
        const int rc = kv_put(p, ns, &k, src, len, nullptr);
        if (rc < 0) {
            r.error = errstr("kv_put", rc);
            return r;
        }
        const bool warm = put_bytes >= 3 * st.capacity;
        put_bytes += len;
        if (!warm) {
            if (put_bytes >= 3 * st.capacity) kv_pool_stats(p, &s0);
            continue;
        }
        uint64_t live = 0;
        kv_pool_live_bytes(p, &live);
        sum += double(live);
        lowest = std::min(lowest, double(live));
        samples++;
        measured_puts++;
    }
    kv_stats s1{};
    kv_pool_stats(p, &s1);
    r.mean = samples ? 100.0 * sum / double(samples) / cap : 0;
    r.min = samples ? 100.0 * lowest / cap : 0;
    r.evicted_per_put =
        measured_puts ? double(s1.evictions - s0.evictions) / double(measured_puts) : 0;
    return r;
}

void BM_MixedSizesHeld(benchmark::State &state) {
    const uint64_t pool = uint64_t(state.range(0)) * MiB;
    const uint64_t lo = state.range(1) == 1 ? 4 * KiB : 1;
    void *src = alloc_touched(1 * MiB, 7);
    for (auto _ : state) {
        const Held single = fill_and_hold(pool, 512 * KiB, 512 * KiB, 0x5151, src);
        const Held mixed = fill_and_hold(pool, lo, 1 * MiB, 0x4d49, src);
        if (!single.error.empty() || !mixed.error.empty()) {
            state.SkipWithError((single.error + mixed.error).c_str());
            break;
        }
        state.counters["held_pct"] = mixed.mean;
        state.counters["min_pct"] = mixed.min;
        state.counters["single_pct"] = single.mean;
        state.counters["of_single"] = single.mean > 0 ? mixed.mean / single.mean : 0;
        state.counters["evicted_per_put"] = mixed.evicted_per_put;
        state.counters["single_evicted_per_put"] = single.evicted_per_put;
    }
    std::free(src);
}
BENCHMARK(BM_MixedSizesHeld)
    ->ArgNames({"pool_MiB", "dist"})
    ->ArgsProduct({{16, 64, 256, 1024}, {1, 2}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
