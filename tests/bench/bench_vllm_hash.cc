// SPDX-License-Identifier: MIT
//
// vLLM block hashes in libkv: a 1,000-block chain of 16-token blocks (the
// chain BM_MatchPrefix of bench_kv hashes), next to kvpool's own chain in
// the same binary.
//
//   BM_VllmChain/scheme:2   kv_vllm_block_hashes, sha256_cbor
//   BM_VllmChain/scheme:3   kv_vllm_block_hashes, xxhash_cbor
//   BM_VllmChainExtra/...   the same with extra keys on every block (a
//                           LoRA name and one multimodal (identifier, offset))
//   BM_KvpoolChain          baseline: kv_hash_chain (XXH3-128 over raw bytes)
//
// Times are per chain, CPU time of the benchmark thread. Token ids are
// spread over a 150k vocabulary, so most take a 5-byte CBOR head as in real
// prompts.
#include <benchmark/benchmark.h>
#include <cstdint>
#include <kv/kv.h>
#include <kv/kv.hpp>
#include <string>
#include <vector>

namespace {

constexpr uint32_t kBlockTokens = 16;
constexpr size_t kBlocks = 1000;

const std::vector<uint32_t> &chain_tokens() {
    static const std::vector<uint32_t> t = [] {
        std::vector<uint32_t> v(kBlocks * kBlockTokens);
        uint64_t x = 0x9e3779b97f4a7c15ULL;
        for (auto &tok : v) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            tok = static_cast<uint32_t>(x % 150000);
        }
        return v;
    }();
    return t;
}

void run_chain(benchmark::State &state, bool with_extra) {
    const auto scheme = static_cast<uint32_t>(state.range(0));
    const size_t hl = kv_vllm_hash_len(scheme);
    std::vector<uint8_t> root(KV_VLLM_HASH_MAX);
    if (kv_vllm_none_hash(scheme, "vllm-none-hash", 14, root.data()) != static_cast<int>(hl)) {
        state.SkipWithError("kv_vllm_none_hash failed");
        return;
    }
    root.resize(hl);
    std::vector<std::vector<uint8_t>> items;
    std::vector<const uint8_t *> ptrs;
    std::vector<size_t> lens;
    if (with_extra) {
        for (size_t i = 0; i < kBlocks; i++) {
            kv::cbor::Writer w;
            w.array(2).text("adapter-7").array(2).text("mm-" + std::to_string(i / 8)).integer(-3);
            items.push_back(w.take());
            ptrs.push_back(items.back().data());
            lens.push_back(items.back().size());
        }
    }
    const auto &t = chain_tokens();
    std::vector<uint8_t> out(kBlocks * hl);
    for (auto _ : state) {
        int64_t n = kv_vllm_block_hashes(scheme, root.data(), root.size(), t.data(), t.size(),
                                         kBlockTokens, with_extra ? ptrs.data() : nullptr,
                                         with_extra ? lens.data() : nullptr, out.data(), kBlocks);
        if (n != static_cast<int64_t>(kBlocks)) {
            state.SkipWithError(("kv_vllm_block_hashes returned " + std::to_string(n)).c_str());
            return;
        }
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.counters["per_block"] = benchmark::Counter(static_cast<double>(kBlocks),
                                                     benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}

void BM_VllmChain(benchmark::State &state) {
    run_chain(state, false);
}
BENCHMARK(BM_VllmChain)
    ->ArgName("scheme")
    ->Arg(KV_HASH_VLLM_SHA256_CBOR)
    ->Arg(KV_HASH_VLLM_XXHASH_CBOR)
    ->Unit(benchmark::kMicrosecond);

void BM_VllmChainExtra(benchmark::State &state) {
    run_chain(state, true);
}
BENCHMARK(BM_VllmChainExtra)
    ->ArgName("scheme")
    ->Arg(KV_HASH_VLLM_SHA256_CBOR)
    ->Arg(KV_HASH_VLLM_XXHASH_CBOR)
    ->Unit(benchmark::kMicrosecond);

void BM_KvpoolChain(benchmark::State &state) {
    const auto &t = chain_tokens();
    std::vector<kv_key> keys(kBlocks);
    for (auto _ : state) {
        size_t n = kv_hash_chain(0x1234, t.data(), t.size(), kBlockTokens, keys.data(), kBlocks);
        if (n != kBlocks) {
            state.SkipWithError("kv_hash_chain returned a short chain");
            return;
        }
        benchmark::DoNotOptimize(keys.data());
        benchmark::ClobberMemory();
    }
    state.counters["per_block"] = benchmark::Counter(static_cast<double>(kBlocks),
                                                     benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}
BENCHMARK(BM_KvpoolChain)->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();
