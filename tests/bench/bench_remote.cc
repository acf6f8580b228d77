// SPDX-License-Identifier: MIT
//
// The remote tier's data path against a real Redis Cluster, each with its
// baseline in the same run:
//   BM_FetchIntoPool    fetch_into_pool of a chain of blocks (GET, check
//                       every header field, copy+hash into a reservation,
//                       commit), all blocks removed from the pool between
//                       iterations;
//   BM_PlainGet         a plain pipelined hiredis client GETting the same
//                       values, batch for batch, one connection per node,
//                       into private memory (copy=1: memcpy of each value
//                       into a private buffer; copy=0: the replies only);
//   BM_UploadBlocks     upload_blocks of the chain (pin, check, SET header
//                       + bytes from the pinned view);
//   BM_PlainSet         plain pipelined SETs of the same bytes from private
//                       memory;
//   .../enc:1           the same fetch and upload of encrypted values (the
//                       pool's key from a keyring, AES-256-GCM: seal into
//                       a buffer before the SET, decrypt into the
//                       reservation), against enc:0 in the same run;
//   BM_SealValue,       seal_value / check_header + open_value of one block
//   BM_OpenValue        in memory: the AES-GCM ceiling of the two paths.
// Bytes per second are the blocks' bytes.
//
// The cluster: KV_REDIS_SEEDS="host:port,..." names a running one;
// otherwise the bench starts a private 3-master cluster with
// tests/remote/redis_cluster.py (path in KV_REDIS_CLUSTER) and stops it at
// exit. KV_BENCH_BLOCK (bytes, default 2 MiB) and KV_BENCH_BLOCKS (default
// 32) size the chain. Example:
//   build-bench/tests/bench/bench_remote --benchmark_repetitions=3
#include "../remote/remote_keys.h"
#include "bench_util.h"
#include "redis_cluster.h"
#include "remote_io.h"
#include "remote_value.h"

#include <benchmark/benchmark.h>
#include <cstdio>
#include <cstdlib>
#include <hiredis/hiredis.h>
#include <map>
#include <string>
#include <vector>

using namespace kv::daemon;

namespace {

struct Env {
    std::string dir; // cluster started here ("" if KV_REDIS_SEEDS named one)
    std::vector<std::string> seeds;
    std::unique_ptr<kvbench::BenchPool> src, dst;
    NsDigest digest;
    std::vector<kv_key> keys;
    std::vector<std::string> names;
    std::vector<int> node_of;             // index into nodes, per key
    std::vector<std::string> plain_names; // BM_PlainSet's keys (its own, so it
    std::vector<int> plain_node_of;       // never overwrites the real values)
    std::vector<std::string> nodes;
    size_t block = 2u << 20;
    size_t n = 32;
    std::string prefix;
    std::string enc_prefix; // the encrypted copies of the chain
    std::shared_ptr<const Keyring> keyring;
};
Env g;

int sh(const std::string &cmd, std::string *out) {
    FILE *f = popen(cmd.c_str(), "r");
    if (!f) return -1;
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0)
        out->append(buf, r);
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> v;
    size_t p = 0;
    while (p <= s.size()) {
        size_t e = s.find(sep, p);
        if (e == std::string::npos) e = s.size();
        if (e > p) v.push_back(s.substr(p, e - p));
        p = e + 1;
    }
    return v;
}

std::string setup() {
    if (const char *b = std::getenv("KV_BENCH_BLOCK")) g.block = std::strtoull(b, nullptr, 0);
    if (const char *b = std::getenv("KV_BENCH_BLOCKS")) g.n = std::strtoull(b, nullptr, 0);
    if (const char *s = std::getenv("KV_REDIS_SEEDS")) {
        g.seeds = split(s, ',');
    } else {
        const char *script = std::getenv("KV_REDIS_CLUSTER");
        std::string sc = script ? script : "tests/remote/redis_cluster.py";
        g.dir = "/tmp/kvpool-bench-redis-" + std::to_string(getpid());
        std::string out;
        if (sh("/usr/bin/python3 " + sc + " start " + g.dir + " --watch-pid " +
                   std::to_string(getpid()),
               &out) != 0)
            return "redis_cluster.py start failed: " + out;
        g.seeds = split(out, '\n');
        std::atexit([] {
            std::string o;
            const char *script = std::getenv("KV_REDIS_CLUSTER");
            sh(std::string("/usr/bin/python3 ") +
                   (script ? script : "tests/remote/redis_cluster.py") + " stop " + g.dir,
               &o);
        });
    }
    kvbench::PoolSpec spec;
    spec.size = g.n * g.block * 2 + (64ULL << 20);
    spec.slab_size = std::max<uint64_t>(4ULL << 20, g.block);
    spec.avg_block_size = g.block;
    auto a = kvbench::BenchPool::create(spec, "remote-src");
    if (!a) return a.error();
    auto b = kvbench::BenchPool::create(spec, "remote-dst");
    if (!b) return b.error();
    g.src = std::move(*a);
    g.dst = std::move(*b);
    kv_manifest m;
    kv_ns_get(g.src->get(), g.src->ns(), &m, nullptr);
    g.digest = ns_digest(m);
    g.prefix = "bench" + std::to_string(getpid()) + ":";
    std::vector<uint8_t> data(g.block);
    kvbench::Rng rng{42};
    for (size_t i = 0; i < g.n; i++) {
        for (size_t k = 0; k + 8 <= data.size(); k += 8) {
            uint64_t x = rng.next();
            std::memcpy(&data[k], &x, 8);
        }
        g.keys.push_back(kvbench::make_key(7, i));
        kv_put_opts po{};
        po.struct_size = sizeof po;
        if (i) {
            po.flags = KV_PUT_F_PARENT;
            po.parent = g.keys[i - 1];
        }
        int rc = kv_put_ex(g.src->get(), g.src->ns(), &g.keys[i], data.data(), data.size(), &po);
        if (rc != 0) return "kv_put_ex: " + std::to_string(rc);
        g.names.push_back(remote_key(g.prefix, g.digest, g.keys[i]));
    }
    ClusterOptions o;
    o.seeds = g.seeds;
    ClusterClient cc(o);
    std::vector<UploadItem> items;
    for (auto &k : g.keys)
        items.push_back(UploadItem{g.src->ns(), k, g.digest});
    UploadOptions uo;
    uo.key_prefix = g.prefix;
    auto ur = upload_blocks(cc, g.src->get(), items, uo);
    if (ur.uploaded != g.n) return "upload: " + ur.error;
    g.keyring = kvtest::make_keyring({{"bench-1", 1}}, "bench-1");
    if (!g.keyring) return "make_keyring failed";
    g.enc_prefix = "benchenc" + std::to_string(getpid()) + ":";
    uo.key_prefix = g.enc_prefix;
    uo.keyring = g.keyring.get();
    ur = upload_blocks(cc, g.src->get(), items, uo);
    if (ur.uploaded != g.n) return "encrypted upload: " + ur.error;
    auto index = [&](const std::string &name) {
        std::string node = cc.node_for(name);
        auto it = std::find(g.nodes.begin(), g.nodes.end(), node);
        if (it == g.nodes.end()) {
            g.nodes.push_back(node);
            it = g.nodes.end() - 1;
        }
        return int(it - g.nodes.begin());
    };
    for (auto &name : g.names) {
        g.node_of.push_back(index(name));
        g.plain_names.push_back(name + ":plain");
        g.plain_node_of.push_back(index(g.plain_names.back()));
    }
    return "";
}

constexpr uint32_t kBatch = 16;

void BM_FetchIntoPool(benchmark::State &state) {
    ClusterOptions o;
    o.seeds = g.seeds;
    ClusterClient cc(o);
    const bool enc = state.range(1) != 0;
    FetchOptions fo;
    fo.key_prefix = enc ? g.enc_prefix : g.prefix;
    fo.keyring = enc ? g.keyring.get() : nullptr;
    fo.batch = uint32_t(state.range(0));
    kv_pool *p = g.dst->get();
    // Warm up, untimed: connections, the slot map, the pool's slabs.
    for (auto &k : g.keys)
        kv_remove(p, g.dst->ns(), &k);
    fetch_into_pool(cc, p, g.dst->ns(), g.digest, g.keys, 0, fo);
    for (auto _ : state) {
        state.PauseTiming();
        for (auto &k : g.keys)
            kv_remove(p, g.dst->ns(), &k);
        state.ResumeTiming();
        FetchResult r = fetch_into_pool(cc, p, g.dst->ns(), g.digest, g.keys, 0, fo);
        if (r.fetched != g.n) {
            state.SkipWithError(("fetch: " + r.error).c_str());
            break;
        }
    }
    state.SetBytesProcessed(int64_t(state.iterations() * g.n * g.block));
    state.counters["block_KiB"] = double(g.block >> 10);
}

std::vector<redisContext *> connect_nodes() {
    std::vector<redisContext *> c;
    for (auto &n : g.nodes) {
        size_t colon = n.rfind(':');
        c.push_back(redisConnect(n.substr(0, colon).c_str(), std::atoi(n.c_str() + colon + 1)));
    }
    return c;
}

void BM_PlainGet(benchmark::State &state) {
    const bool copy = state.range(1) != 0;
    const size_t batch = size_t(state.range(0));
    std::vector<redisContext *> ctx = connect_nodes();
    std::vector<uint8_t> priv(g.n * g.block);
    std::memset(priv.data(), 1, priv.size()); // fault it in before timing
    // One pass: GET every block, a batch at a time, one pipeline per node.
    auto pass = [&] {
        for (size_t i = 0; i < g.n; i += batch) {
            size_t e = std::min(g.n, i + batch);
            for (size_t k = i; k < e; k++) {
                const char *argv[2] = {"GET", g.names[k].c_str()};
                size_t argl[2] = {3, g.names[k].size()};
                redisAppendCommandArgv(ctx[size_t(g.node_of[k])], 2, argv, argl);
            }
            for (size_t k = i; k < e; k++) {
                void *raw = nullptr;
                if (redisGetReply(ctx[size_t(g.node_of[k])], &raw) != REDIS_OK || !raw ||
                    static_cast<redisReply *>(raw)->type != REDIS_REPLY_STRING)
                    return false;
                auto *r = static_cast<redisReply *>(raw);
                if (copy) std::memcpy(priv.data() + k * g.block, r->str, std::min(r->len, g.block));
                benchmark::DoNotOptimize(r->str);
                freeReplyObject(r);
            }
        }
        return true;
    };
    pass(); // warm up, untimed, as BM_FetchIntoPool does
    for (auto _ : state) {
        if (!pass()) {
            state.SkipWithError("GET failed");
            break;
        }
    }
    for (auto *c : ctx)
        redisFree(c);
    state.SetBytesProcessed(int64_t(state.iterations() * g.n * g.block));
}

void BM_UploadBlocks(benchmark::State &state) {
    ClusterOptions o;
    o.seeds = g.seeds;
    ClusterClient cc(o);
    std::vector<UploadItem> items;
    for (auto &k : g.keys)
        items.push_back(UploadItem{g.src->ns(), k, g.digest});
    const bool enc = state.range(1) != 0;
    UploadOptions uo;
    uo.key_prefix = enc ? g.enc_prefix : g.prefix;
    uo.keyring = enc ? g.keyring.get() : nullptr;
    uo.batch_bytes = uint64_t(state.range(0)) * g.block;
    for (auto _ : state) {
        auto r = upload_blocks(cc, g.src->get(), items, uo);
        if (r.uploaded != g.n) {
            state.SkipWithError(("upload: " + r.error).c_str());
            break;
        }
    }
    state.SetBytesProcessed(int64_t(state.iterations() * g.n * g.block));
}

void BM_PlainSet(benchmark::State &state) {
    const size_t batch = size_t(state.range(0));
    std::vector<redisContext *> ctx = connect_nodes();
    std::vector<uint8_t> priv(g.block + sizeof(kv_remote_header), 3);
    const auto &names = g.plain_names;
    bool ok = true;
    for (auto _ : state) {
        for (size_t i = 0; i < g.n && ok; i += batch) {
            size_t e = std::min(g.n, i + batch);
            for (size_t k = i; k < e; k++) {
                const char *argv[3] = {"SET", names[k].c_str(),
                                       reinterpret_cast<const char *>(priv.data())};
                size_t argl[3] = {3, names[k].size(), priv.size()};
                redisAppendCommandArgv(ctx[size_t(g.plain_node_of[k])], 3, argv, argl);
            }
            for (size_t k = i; k < e; k++) {
                void *raw = nullptr;
                if (redisGetReply(ctx[size_t(g.plain_node_of[k])], &raw) != REDIS_OK || !raw) {
                    ok = false;
                    break;
                }
                freeReplyObject(raw);
            }
        }
        if (!ok) {
            state.SkipWithError("SET failed");
            break;
        }
    }
    for (auto *c : ctx)
        redisFree(c);
    state.SetBytesProcessed(int64_t(state.iterations() * g.n * g.block));
}

// One block sealed as upload_blocks seals it (fresh data key, wrap, GCM).
void BM_SealValue(benchmark::State &state) {
    std::vector<uint8_t> data(g.block, 7), out(g.block);
    crypto::Aead aead;
    SealedHead head;
    const kv_key k = g.keys[0];
    for (auto _ : state) {
        std::string err = seal_value(aead, *g.keyring, g.digest, k, data, head, out.data());
        if (!err.empty()) {
            state.SkipWithError(err.c_str());
            break;
        }
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(int64_t(state.iterations() * g.block));
}

// One sealed block checked and opened as fetch_into_pool opens it.
void BM_OpenValue(benchmark::State &state) {
    std::vector<uint8_t> data(g.block, 7), value(kSealedHeadBytes + g.block), out(g.block);
    crypto::Aead aead;
    SealedHead head;
    const kv_key k = g.keys[0];
    if (!seal_value(aead, *g.keyring, g.digest, k, data, head, value.data() + kSealedHeadBytes)
             .empty()) {
        state.SkipWithError("seal_value failed");
        return;
    }
    std::memcpy(value.data(), head.data(), head.size());
    for (auto _ : state) {
        CheckedValue v = check_header(value, g.digest, k, g.keyring.get());
        if (v.reject != Reject::None || open_value(aead, v, out.data()) != Reject::None) {
            state.SkipWithError(("open: " + v.detail).c_str());
            break;
        }
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(int64_t(state.iterations() * g.block));
}

} // namespace

BENCHMARK(BM_PlainSet)->Arg(kBatch)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UploadBlocks)
    ->ArgNames({"batch", "enc"})
    ->Args({kBatch, 0})
    ->Args({kBatch, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PlainGet)
    ->Args({kBatch, 1})
    ->Args({kBatch, 0})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FetchIntoPool)
    ->ArgNames({"batch", "enc"})
    ->Args({kBatch, 0})
    ->Args({kBatch, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SealValue)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_OpenValue)->UseRealTime()->Unit(benchmark::kMillisecond);

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::string err = setup();
    if (!err.empty()) {
        std::fprintf(stderr, "bench_remote: %s\n", err.c_str());
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    g.src.reset();
    g.dst.reset();
    g.keyring.reset();
    return 0;
}
