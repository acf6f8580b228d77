// SPDX-License-Identifier: MIT
//
// Namespaces: kv_manifest_init, kv_manifest_seed, kv_ns_register, kv_ns_get.
#include "pool_fixture.h"

#include <cerrno>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <xxhash.h>

namespace kvtest {
namespace {

class NamespaceTest : public PoolTest {
  protected:
    int reg(const kv_manifest &m, uint32_t *id, uint64_t *seed = nullptr) {
        return kv_ns_register(pool_, &m, id, seed);
    }
};

TEST(ManifestInit, FillsAValidManifest) {
    kv_manifest m;
    std::memset(&m, 0xcc, sizeof m);
    kv_manifest_init(&m, "llama-3-8b", 16);
    EXPECT_STREQ(reinterpret_cast<const char *>(m.model_name), "llama-3-8b");
    for (size_t i = std::strlen("llama-3-8b"); i < sizeof m.model_name; i++)
        EXPECT_EQ(m.model_name[i], 0) << "model_name is NUL-padded, byte " << i;
    EXPECT_EQ(m.block_tokens, 16u);
    EXPECT_EQ(m.tp_rank, 0u);
    EXPECT_EQ(m.tp_world, 1u);
    EXPECT_EQ(m.hash_scheme, static_cast<uint32_t>(KV_HASH_XXH3_128_CHAINED));
    for (uint64_t r : m.reserved)
        EXPECT_EQ(r, 0u);
    for (uint8_t b : m.weights_fingerprint)
        EXPECT_EQ(b, 0u);
}

TEST(ManifestInit, LongModelNameIsTruncated) {
    const std::string longname(200, 'x');
    kv_manifest m;
    kv_manifest_init(&m, longname.c_str(), 8);
    EXPECT_EQ(m.model_name[0], 'x');
    EXPECT_EQ(m.block_tokens, 8u) << "model name overflowed into later fields";
    EXPECT_EQ(m.weights_fingerprint[0], 0u) << "model name overflowed into later fields";
}

TEST(ManifestSeed, IsXXH3OfTheManifestBytes) {
    kv_manifest m;
    kv_manifest_init(&m, "seed-model", 16);
    EXPECT_EQ(kv_manifest_seed(&m), XXH3_64bits(&m, sizeof m));
    kv_manifest m2 = m;
    m2.hash_seed = 1;
    EXPECT_NE(kv_manifest_seed(&m2), kv_manifest_seed(&m));
}

TEST_F(NamespaceTest, SameManifestSameId) {
    kv_manifest m;
    kv_manifest_init(&m, "unit-test-model", 16); // the fixture's namespace
    uint32_t id = 1234;
    uint64_t seed = 0;
    ASSERT_EQ(reg(m, &id, &seed), 0);
    EXPECT_EQ(id, ns_);
    EXPECT_EQ(seed, seed_);
    EXPECT_EQ(seed, kv_manifest_seed(&m));
    ASSERT_EQ(reg(m, &id), 0) << "seed_out is optional";
    EXPECT_EQ(id, ns_);

    // Another client finds the same namespace.
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    uint32_t id2 = 0;
    ASSERT_EQ(kv_ns_register(other, &m, &id2, nullptr), 0);
    EXPECT_EQ(id2, ns_);
}

TEST_F(NamespaceTest, EveryFieldMatters) {
    kv_manifest base;
    kv_manifest_init(&base, "unit-test-model", 16);
    struct Variant {
        const char *what;
        void (*apply)(kv_manifest &);
    };
    const Variant variants[] = {
        {"model_name", [](kv_manifest &m) { kv_manifest_init(&m, "other-model", 16); }},
        {"block_tokens", [](kv_manifest &m) { m.block_tokens = 32; }},
        {"tp_rank",
         [](kv_manifest &m) {
             m.tp_world = 2;
             m.tp_rank = 1;
         }},
        {"tp_world", [](kv_manifest &m) { m.tp_world = 2; }},
        {"dtype",
         [](kv_manifest &m) {
             m.dtype = m.dtype == KV_DTYPE_FP8_E4M3 ? KV_DTYPE_FP32 : KV_DTYPE_FP8_E4M3;
         }},
        {"kv_layout", [](kv_manifest &m) { m.kv_layout = 3; }},
        {"hash_seed", [](kv_manifest &m) { m.hash_seed = 42; }},
        {"weights_fingerprint", [](kv_manifest &m) { m.weights_fingerprint[31] = 1; }},
    };
    std::vector<uint32_t> ids = {ns_};
    std::vector<uint64_t> seeds = {seed_};
    for (const Variant &v : variants) {
        SCOPED_TRACE(v.what);
        kv_manifest m = base;
        v.apply(m);
        uint32_t id = 0;
        uint64_t seed = 0;
        ASSERT_EQ(reg(m, &id, &seed), 0);
        for (uint32_t prev : ids)
            EXPECT_NE(id, prev);
        for (uint64_t prev : seeds)
            EXPECT_NE(seed, prev);
        EXPECT_LT(id, kv_pool_header(pool_)->max_namespaces);
        ids.push_back(id);
        seeds.push_back(seed);
        uint32_t again = 0;
        ASSERT_EQ(reg(m, &again), 0);
        EXPECT_EQ(again, id);
    }
}

TEST_F(NamespaceTest, KeysAreIndependentPerNamespace) {
    kv_manifest m;
    kv_manifest_init(&m, "second-model", 16);
    uint32_t ns2 = 0;
    ASSERT_EQ(reg(m, &ns2), 0);
    ASSERT_NE(ns2, ns_);
    const kv_key k = key_of(1);
    const auto a = payload(5000, 1);
    const auto b = payload(7000, 2);
    ASSERT_EQ(kv_put(pool_, ns_, &k, a.data(), a.size(), nullptr), 0);
    EXPECT_EQ(kv_contains(pool_, ns2, &k), 0);
    kv_view v{};
    EXPECT_EQ(kv_get(pool_, ns2, &k, &v), -ENOENT);
    ASSERT_EQ(kv_put(pool_, ns2, &k, b.data(), b.size(), nullptr), 0)
        << "not a dedup across namespaces";

    ASSERT_EQ(kv_get(pool_, ns_, &k, &v), 0);
    EXPECT_TRUE(view_equals(v, a));
    EXPECT_EQ(kv_release(pool_, &v), 0);
    ASSERT_EQ(kv_get(pool_, ns2, &k, &v), 0);
    EXPECT_TRUE(view_equals(v, b));
    EXPECT_EQ(kv_release(pool_, &v), 0);

    ASSERT_EQ(kv_remove(pool_, ns2, &k), 0);
    EXPECT_EQ(kv_contains(pool_, ns_, &k), 1);
    EXPECT_EQ(kv_contains(pool_, ns2, &k), 0);
    expect_consistent();
}

TEST_F(NamespaceTest, InvalidManifestsAreEINVAL) {
    struct Bad {
        const char *what;
        void (*apply)(kv_manifest &);
    };
    const Bad bad[] = {
        {"block_tokens 0", [](kv_manifest &m) { m.block_tokens = 0; }},
        {"tp_world == tp_rank",
         [](kv_manifest &m) {
             m.tp_rank = 2;
             m.tp_world = 2;
         }},
        {"tp_world < tp_rank",
         [](kv_manifest &m) {
             m.tp_rank = 3;
             m.tp_world = 1;
         }},
        {"tp_world 0", [](kv_manifest &m) { m.tp_world = 0; }},
        {"reserved[0]", [](kv_manifest &m) { m.reserved[0] = 1; }},
        {"reserved[3]", [](kv_manifest &m) { m.reserved[3] = 1ULL << 63; }},
        {"unknown hash_scheme", [](kv_manifest &m) { m.hash_scheme = 99; }},
    };
    for (const Bad &b : bad) {
        SCOPED_TRACE(b.what);
        kv_manifest m;
        kv_manifest_init(&m, "invalid", 16);
        b.apply(m);
        uint32_t id = 0xdeadbeef;
        EXPECT_EQ(reg(m, &id), -EINVAL);
    }
    // Nothing was registered by the failed attempts.
    kv_manifest probe;
    for (uint32_t id = 0; id < kv_pool_header(pool_)->max_namespaces; id++) {
        if (id == ns_) continue;
        EXPECT_EQ(kv_ns_get(pool_, id, &probe, nullptr), -ENOENT) << id;
    }
}

TEST_F(NamespaceTest, GetReturnsTheManifest) {
    kv_manifest m;
    kv_manifest_init(&m, "get-model", 64);
    m.dtype = KV_DTYPE_FP8_E4M3;
    m.tp_world = 4;
    m.tp_rank = 3;
    m.hash_seed = 0x1234;
    std::memset(m.weights_fingerprint, 0x5e, sizeof m.weights_fingerprint);
    uint32_t id = 0;
    uint64_t seed = 0;
    ASSERT_EQ(reg(m, &id, &seed), 0);

    kv_manifest out;
    std::memset(&out, 0xff, sizeof out);
    uint64_t seed2 = 0;
    ASSERT_EQ(kv_ns_get(pool_, id, &out, &seed2), 0);
    EXPECT_EQ(std::memcmp(&out, &m, sizeof m), 0);
    EXPECT_EQ(seed2, seed);
    ASSERT_EQ(kv_ns_get(pool_, id, &out, nullptr), 0) << "seed_out is optional";

    EXPECT_EQ(kv_ns_get(pool_, id + 1, &out, nullptr), -ENOENT);
    EXPECT_EQ(kv_ns_get(pool_, kv_pool_header(pool_)->max_namespaces, &out, nullptr), -ENOENT);
    EXPECT_EQ(kv_ns_get(pool_, 0xffffffffu, &out, nullptr), -ENOENT);
}

class SmallNamespaceTable : public PoolTest {
  protected:
    void customize(kv_create_opts &o) override { o.max_namespaces = 4; }
};

TEST_F(SmallNamespaceTable, FullTableIsENOSPC) {
    ASSERT_EQ(kv_pool_header(pool_)->max_namespaces, 4u);
    // The fixture registered one already.
    for (uint32_t i = 1; i < 4; i++) {
        kv_manifest m;
        kv_manifest_init(&m, "fill", i + 1);
        uint32_t id = 0;
        ASSERT_EQ(kv_ns_register(pool_, &m, &id, nullptr), 0) << i;
        EXPECT_LT(id, 4u);
    }
    kv_manifest m;
    kv_manifest_init(&m, "one-too-many", 16);
    uint32_t id = 0;
    EXPECT_EQ(kv_ns_register(pool_, &m, &id, nullptr), -ENOSPC);
    // Existing namespaces are still found.
    kv_manifest_init(&m, "fill", 2);
    EXPECT_EQ(kv_ns_register(pool_, &m, &id, nullptr), 0);
    kv_manifest_init(&m, "unit-test-model", 16);
    ASSERT_EQ(kv_ns_register(pool_, &m, &id, nullptr), 0);
    EXPECT_EQ(id, ns_);
}

} // namespace
} // namespace kvtest
