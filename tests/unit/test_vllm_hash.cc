// SPDX-License-Identifier: MIT
//
// vLLM block hashes (kv_vllm_* and kv::cbor / kv::vllm_* of kv.hpp) against
// vectors computed by vLLM's own recipe in Python:
//   sha256_cbor(x) = hashlib.sha256(cbor2.dumps(x, canonical=True)).digest()
//   xxhash_cbor(x) = xxhash.xxh3_128_digest(cbor2.dumps(x, canonical=True))
//   NONE_HASH = H(seed); hash(i) = H((hash(i-1) or NONE_HASH, tuple(block i), extra or None))
// Linked against the shared library, so every call also checks that
// libkv.map exports it.
#include "pool_fixture.h"

#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <kv/kv.hpp>
#include <string>
#include <thread>
#include <vector>

namespace kvtest {
namespace {

constexpr uint32_t kSha = KV_HASH_VLLM_SHA256_CBOR;
constexpr uint32_t kXx = KV_HASH_VLLM_XXHASH_CBOR;

std::vector<uint8_t> unhex(std::string_view s) {
    std::vector<uint8_t> v;
    for (size_t i = 0; i + 1 < s.size(); i += 2)
        v.push_back(static_cast<uint8_t>(std::stoul(std::string(s.substr(i, 2)), nullptr, 16)));
    return v;
}

std::string hex(std::span<const uint8_t> b) {
    static const char d[] = "0123456789abcdef";
    std::string s;
    for (uint8_t c : b) {
        s += d[c >> 4];
        s += d[c & 15];
    }
    return s;
}

std::vector<uint8_t> none_hash(uint32_t scheme, std::string_view seed) {
    std::vector<uint8_t> h(KV_VLLM_HASH_MAX);
    int rc = kv_vllm_none_hash(scheme, seed.data(), seed.size(), h.data());
    EXPECT_GT(rc, 0) << kv_strerror(rc);
    h.resize(rc > 0 ? static_cast<size_t>(rc) : 0);
    return h;
}

// Hash len(tokens) / block_size blocks under parent, without extra keys.
std::vector<uint8_t> chain(uint32_t scheme, const std::vector<uint8_t> &parent,
                           const std::vector<uint32_t> &tokens, uint32_t block_size) {
    const size_t hl = kv_vllm_hash_len(scheme);
    std::vector<uint8_t> out(tokens.size() / block_size * hl);
    int64_t n =
        kv_vllm_block_hashes(scheme, parent.data(), parent.size(), tokens.data(), tokens.size(),
                             block_size, nullptr, nullptr, out.data(), tokens.size() / block_size);
    EXPECT_EQ(n, static_cast<int64_t>(tokens.size() / block_size))
        << kv_strerror(static_cast<int>(n));
    return out;
}

TEST(VllmHash, HashLengths) {
    EXPECT_EQ(kv_vllm_hash_len(kSha), 32u);
    EXPECT_EQ(kv_vllm_hash_len(kXx), 16u);
    EXPECT_EQ(kv_vllm_hash_len(0), 0u);
    EXPECT_EQ(kv_vllm_hash_len(KV_HASH_XXH3_128_CHAINED),
              0u); // kvpool's own chain is not a vLLM scheme
    EXPECT_EQ(kv_vllm_hash_len(KV_HASH_MAX + 1), 0u);
}

// The vectors: vLLM with PYTHONHASHSEED=vllm-none-hash (and =0).
TEST(VllmHash, Sha256CborFixedVectors) {
    const auto root = none_hash(kSha, "vllm-none-hash");
    EXPECT_EQ(hex(root), "9bd96a485ad84efdafb72ee48a1d7a69bcead0f8f0433173941b276b9581eef0");
    EXPECT_EQ(hex(none_hash(kSha, "0")),
              "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e");

    const auto h = chain(kSha, root, {1, 2, 3, 4}, 4);
    EXPECT_EQ(hex(h), "58d0879dff3800f65f8c5fd449d73048c0f7699dd238a03b84b146b151d55111");
    // vLLM's KV-event form (int.from_bytes(h, "big") & (2**64 - 1)) is the key's low half.
    const kv_key k = kv_vllm_key(h.data(), h.size());
    EXPECT_EQ(k.lo, 9561501211280363793ULL);
    EXPECT_EQ(k.hi, 0xc0f7699dd238a03bULL);
}

TEST(VllmHash, XxhashCborFixedVectors) {
    const auto root = none_hash(kXx, "vllm-none-hash");
    EXPECT_EQ(hex(root), "a4e364baa0791a6f63bbf917db9b700d");
    EXPECT_EQ(hex(none_hash(kXx, "0")), "1ebe36576dcb573f26b99533a20aaeca");
    EXPECT_EQ(hex(chain(kXx, root, {1, 2, 3, 4}, 4)), "47d46a11b8224574dbb8a1b02b1374b7");
}

TEST(VllmHash, EmptySeed) {
    EXPECT_EQ(hex(none_hash(kSha, "")),
              "8d33f520a3c4cef80d2453aef81b612bfe1cb44c8b2025630ad38662763f13d3");
    uint8_t out[32];
    EXPECT_EQ(kv_vllm_none_hash(kSha, nullptr, 0, out), 32);
    EXPECT_EQ(hex(out), "8d33f520a3c4cef80d2453aef81b612bfe1cb44c8b2025630ad38662763f13d3");
}

// Token ids on every CBOR head width (0, 23, 24, 255, 256, 65535, 65536,
// 2^32-1), extra keys with text, bytes, a negative offset and nested tuples
// on block 0, None on block 1, and the partial third block left out.
const std::vector<uint32_t> &mixed_tokens() {
    static const std::vector<uint32_t> t = [] {
        std::vector<uint32_t> v{0, 23, 24, 255, 256, 65535, 65536, 0xffffffffu};
        for (uint32_t i = 0; i < 32; i++)
            v.push_back(100000 + i);
        return v; // 40 tokens: 2 full blocks of 16 and 8 left over
    }();
    return t;
}

// cbor2.dumps(("lora-a", ("mm-0", -3), "salt", b"\x01\x02"), canonical=True)
constexpr std::string_view kExtra0 = "84666c6f72612d6182646d6d2d30226473616c74420102";

TEST(VllmHash, ExtraKeysAndHeadWidths) {
    const auto extra0 = unhex(kExtra0);
    const uint8_t *extra[2] = {extra0.data(), nullptr};
    const size_t extra_len[2] = {extra0.size(), 0};
    struct Case {
        uint32_t scheme;
        const char *h0, *h1;
    } cases[] = {
        {kSha, "d0ed492cdf690f022f330d1efb9794e255a66feeb85df0776c9bf00b80d14e4e",
         "d51fbf6214f8ec6de62f94c07b4bd161f8e73c89bf8a7011338d1988351dd69a"},
        {kXx, "71935a3bb6112ac8d68627e64f318be4", "41ed484c1176487ac83e26719cdd127d"},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.scheme);
        const auto root = none_hash(c.scheme, "vllm-none-hash");
        const size_t hl = kv_vllm_hash_len(c.scheme);
        std::vector<uint8_t> out(3 * hl, 0xee);
        const auto &t = mixed_tokens();
        ASSERT_EQ(kv_vllm_block_hashes(c.scheme, root.data(), root.size(), t.data(), t.size(), 16,
                                       extra, extra_len, out.data(), 3),
                  2);
        EXPECT_EQ(hex({out.data(), hl}), c.h0);
        EXPECT_EQ(hex({out.data() + hl, hl}), c.h1);
        EXPECT_EQ(out[2 * hl], 0xee) << "wrote past the last full block";

        // The C++ wrapper, extra keys built with kv::cbor::Writer.
        kv::cbor::Writer w;
        w.array(4).text("lora-a").array(2).text("mm-0").integer(-3).text("salt");
        const uint8_t b[] = {1, 2};
        w.bytes(b);
        ASSERT_EQ(hex(w.data()), kExtra0);
        const std::span<const uint8_t> ex[] = {w.data(), {}};
        auto r = kv::vllm_block_hashes(c.scheme, root, t, 16, ex);
        ASSERT_TRUE(r.has_value()) << r.error().message;
        ASSERT_EQ(r->size(), 2u);
        EXPECT_EQ(hex((*r)[0]), c.h0);
        EXPECT_EQ(hex((*r)[1]), c.h1);
        const kv_key k = r->key(1);
        const kv_key k2 = kv_vllm_key(out.data() + hl, hl);
        EXPECT_TRUE(key_eq(k, k2));
    }
}

// Hashing a chain at once equals hashing it block by block, each under the
// previous hash; max_blocks cuts the chain, a partial tail is not hashed.
TEST(VllmHash, ChainEqualsBlockByBlock) {
    for (uint32_t scheme : {kSha, kXx}) {
        const size_t hl = kv_vllm_hash_len(scheme);
        const auto root = none_hash(scheme, "seed-x");
        std::vector<uint32_t> t(16 * 50 + 7);
        for (size_t i = 0; i < t.size(); i++)
            t[i] = static_cast<uint32_t>(i * 2654435761u);
        const auto all = chain(scheme, root, t, 16);
        ASSERT_EQ(all.size(), 50 * hl);
        std::vector<uint8_t> parent = root, one(hl);
        for (size_t i = 0; i < 50; i++) {
            ASSERT_EQ(kv_vllm_block_hashes(scheme, parent.data(), parent.size(), t.data() + 16 * i,
                                           16, 16, nullptr, nullptr, one.data(), 1),
                      1);
            ASSERT_EQ(0, memcmp(one.data(), all.data() + i * hl, hl)) << "block " << i;
            parent = one;
        }
        std::vector<uint8_t> cut(50 * hl, 0);
        EXPECT_EQ(kv_vllm_block_hashes(scheme, root.data(), root.size(), t.data(), t.size(), 16,
                                       nullptr, nullptr, cut.data(), 3),
                  3);
        EXPECT_EQ(0, memcmp(cut.data(), all.data(), 3 * hl));
        EXPECT_EQ(cut[3 * hl], 0);
        // Fewer tokens than a block: nothing to hash, not an error.
        EXPECT_EQ(kv_vllm_block_hashes(scheme, root.data(), root.size(), t.data(), 15, 16, nullptr,
                                       nullptr, cut.data(), 50),
                  0);
        EXPECT_EQ(kv_vllm_block_hashes(scheme, root.data(), root.size(), nullptr, 0, 16, nullptr,
                                       nullptr, nullptr, 0),
                  0);
        // A parent of another length (vLLM's random 32-byte NONE_HASH under xxhash_cbor).
        std::vector<uint8_t> p32(32, 0x5a);
        EXPECT_EQ(kv_vllm_block_hashes(scheme, p32.data(), p32.size(), t.data(), 32, 16, nullptr,
                                       nullptr, cut.data(), 2),
                  2);
    }
}

TEST(VllmHash, Key) {
    const auto h = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    kv_key k = kv_vllm_key(h.data(), 32);
    EXPECT_EQ(k.hi, 0x1011121314151617ULL);
    EXPECT_EQ(k.lo, 0x18191a1b1c1d1e1fULL);
    k = kv_vllm_key(h.data(), 16); // a 16-byte (xxhash_cbor) hash is the key as it is
    EXPECT_EQ(k.hi, 0x0001020304050607ULL);
    EXPECT_EQ(k.lo, 0x08090a0b0c0d0e0fULL);
    k = kv_vllm_key(h.data(), 3); // shorter: zero-extended on the left
    EXPECT_EQ(k.hi, 0u);
    EXPECT_EQ(k.lo, 0x000102ULL);
    k = kv_vllm_key(nullptr, 0);
    EXPECT_EQ(k.hi | k.lo, 0u);
}

TEST(VllmHash, SeedIdAndManifest) {
    uint64_t id = 0;
    ASSERT_EQ(kv_vllm_seed_id(kSha, "vllm-none-hash", 14, &id), 0);
    EXPECT_EQ(id, 0x9bd96a485ad84efdULL);
    ASSERT_EQ(kv_vllm_seed_id(kXx, "vllm-none-hash", 14, &id), 0);
    EXPECT_EQ(id, 0xa4e364baa0791a6fULL);
    ASSERT_EQ(kv_vllm_seed_id(kSha, "0", 1, &id), 0);
    EXPECT_EQ(id, 0x4e1195df020de59eULL);
    EXPECT_EQ(kv_vllm_seed_id(7, "0", 1, &id), -EINVAL);
    EXPECT_EQ(kv_vllm_seed_id(kSha, "0", 1, nullptr), -EINVAL);

    kv_manifest m;
    kv_manifest_init(&m, "llama", 16);
    ASSERT_EQ(kv_manifest_set_vllm(&m, kSha, "0", 1), 0);
    EXPECT_EQ(m.hash_scheme, static_cast<uint32_t>(kSha));
    EXPECT_EQ(m.hash_seed, 0x4e1195df020de59eULL);
    kv_manifest before = m;
    EXPECT_EQ(kv_manifest_set_vllm(&m, 0, "0", 1), -EINVAL);
    EXPECT_EQ(0, memcmp(&before, &m, sizeof m)) << "a failed call changed the manifest";
    EXPECT_EQ(kv_manifest_set_vllm(nullptr, kSha, "0", 1), -EINVAL);
}

// A pool takes namespaces of both vLLM schemes, and seeds that differ make
// different namespaces.
class VllmNamespace : public PoolTest {};

TEST_F(VllmNamespace, RegistersBySchemeAndSeed) {
    kv_manifest a, b, c;
    kv_manifest_init(&a, "llama", 16);
    b = c = a;
    ASSERT_EQ(kv_manifest_set_vllm(&a, kSha, "0", 1), 0);
    ASSERT_EQ(kv_manifest_set_vllm(&b, kSha, "1", 1), 0);
    ASSERT_EQ(kv_manifest_set_vllm(&c, kXx, "0", 1), 0);
    uint32_t ia = 0, ib = 0, ic = 0, ia2 = 0;
    ASSERT_EQ(kv_ns_register(pool_, &a, &ia, nullptr), 0);
    ASSERT_EQ(kv_ns_register(pool_, &b, &ib, nullptr), 0);
    ASSERT_EQ(kv_ns_register(pool_, &c, &ic, nullptr), 0);
    ASSERT_EQ(kv_ns_register(pool_, &a, &ia2, nullptr), 0);
    EXPECT_EQ(ia, ia2);
    EXPECT_NE(ia, ib);
    EXPECT_NE(ia, ic);
    EXPECT_NE(ib, ic);
    a.hash_scheme = KV_HASH_MAX + 1;
    EXPECT_EQ(kv_ns_register(pool_, &a, &ia, nullptr), -EINVAL);
}

TEST(VllmHash, BadArguments) {
    const auto root = none_hash(kSha, "s");
    const uint32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t out[64];
    const uint8_t *p = root.data();
    const size_t pl = root.size();
    uint8_t h[32];
    for (uint32_t bad : {0u, 1u, 4u, 0xffffffffu}) {
        SCOPED_TRACE(bad);
        EXPECT_EQ(kv_vllm_none_hash(bad, "s", 1, h), -EINVAL);
        EXPECT_EQ(kv_vllm_block_hashes(bad, p, pl, t, 8, 4, nullptr, nullptr, out, 2), -EINVAL);
    }
    EXPECT_EQ(kv_vllm_none_hash(kSha, "s", 1, nullptr), -EINVAL);
    EXPECT_EQ(kv_vllm_none_hash(kSha, nullptr, 1, h), -EINVAL);
    EXPECT_EQ(kv_vllm_block_hashes(kSha, p, pl, t, 8, 0, nullptr, nullptr, out, 2),
              -EINVAL); // block_size 0
    EXPECT_EQ(kv_vllm_block_hashes(kSha, nullptr, pl, t, 8, 4, nullptr, nullptr, out, 2),
              -EINVAL); // no parent
    EXPECT_EQ(kv_vllm_block_hashes(kSha, p, 0, t, 8, 4, nullptr, nullptr, out, 2),
              -EINVAL); // empty parent
    EXPECT_EQ(kv_vllm_block_hashes(kSha, p, pl, nullptr, 8, 4, nullptr, nullptr, out, 2),
              -EINVAL); // no tokens
    EXPECT_EQ(kv_vllm_block_hashes(kSha, p, pl, t, 8, 4, nullptr, nullptr, nullptr, 2),
              -EINVAL); // no out
    const uint8_t null_item = 0xf6;
    const uint8_t *ex[2] = {&null_item, &null_item};
    EXPECT_EQ(kv_vllm_block_hashes(kSha, p, pl, t, 8, 4, ex, nullptr, out, 2),
              -EINVAL); // lengths missing
}

// Extra keys must be one well-formed canonical CBOR item each; a bad one
// fails the call before any hash is written.
TEST(VllmHash, MalformedExtraKeys) {
    const auto root = none_hash(kXx, "s");
    const uint32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const char *bad[] = {
        "82",         // array of 2, empty
        "8201",       // array of 2, one item
        "9f01ff",     // indefinite-length array
        "7f6161ff",   // indefinite-length text
        "1817",       // 23 in the two-byte form
        "190017",     // 23 in the three-byte form
        "1a0000ffff", // 65535 in the five-byte form
        "1b00000000ffffffff",
        "1c",   // reserved additional info
        "6261", // text of 2 bytes, 1 present
        "0101", // two items
        "f800", // simple value below 32 in the two-byte form
        "c2",   // tag without its item
        "a101", // map with a key and no value
    };
    for (const char *b : bad) {
        SCOPED_TRACE(b);
        const auto item = unhex(b);
        const uint8_t *ex[2] = {nullptr, item.data()};
        const size_t len[2] = {0, item.size()};
        uint8_t out[32];
        memset(out, 0xee, sizeof out);
        EXPECT_EQ(kv_vllm_block_hashes(kXx, root.data(), root.size(), t, 8, 4, ex, len, out, 2),
                  -EINVAL);
        EXPECT_EQ(out[0], 0xee) << "a hash was written before the bad item was found";
    }
    // Items of every kind the checker walks through, well-formed: accepted.
    const char *good[] = {"f6",
                          "f5",
                          "f4",
                          "f820",
                          "f93c00",
                          "fa3f800000",
                          "fb3ff0000000000000",
                          "c249010000000000000000",
                          "a1616101",
                          "80",
                          "40",
                          "60",
                          "3bffffffffffffffff"};
    for (const char *g : good) {
        SCOPED_TRACE(g);
        const auto item = unhex(g);
        const uint8_t *ex[1] = {item.data()};
        const size_t len[1] = {item.size()};
        uint8_t out[16];
        EXPECT_EQ(kv_vllm_block_hashes(kXx, root.data(), root.size(), t, 4, 4, ex, len, out, 1), 1);
    }
    // Nesting: 64 levels below the top are taken, 65 refused (no deep recursion).
    for (size_t depth : {65u, 66u}) {
        std::vector<uint8_t> item(depth - 1, 0x81);
        item.push_back(0xf6);
        const uint8_t *ex[1] = {item.data()};
        const size_t len[1] = {item.size()};
        uint8_t out[16];
        EXPECT_EQ(kv_vllm_block_hashes(kXx, root.data(), root.size(), t, 4, 4, ex, len, out, 1),
                  depth == 65 ? 1 : -EINVAL)
            << depth << " levels";
    }
}

// cbor::Writer against cbor2.dumps(..., canonical=True).
TEST(VllmHash, CborWriterMatchesCbor2) {
    kv::cbor::Writer w;
    // [(-5, "a", b"b", None, -24, -25, 2**64 - 1, -2**64)]
    const uint8_t b[] = {'b'};
    w.array(1)
        .array(8)
        .integer(-5)
        .text("a")
        .bytes(b)
        .null()
        .integer(-24)
        .integer(-25)
        .uint(UINT64_MAX)
        .negint(UINT64_MAX);
    EXPECT_EQ(hex(w.data()), "81882461614162f63738181bffffffffffffffff3bffffffffffffffff");
    w.clear();
    const uint8_t one[] = {1, 0, 0, 0, 0, 0, 0, 0, 0};
    w.bignum(false, one); // 2**64
    EXPECT_EQ(hex(w.data()), "c249010000000000000000");
    w.clear();
    w.bignum(true, one); // -2**64 - 1
    EXPECT_EQ(hex(w.data()), "c349010000000000000000");
    w.clear();
    w.boolean(true).boolean(false).integer(INT64_MIN).uint(255).uint(256).uint(65536);
    EXPECT_EQ(hex(w.data()), "f5f43b7fffffffffffffff18ff1901001a00010000");
}

// The SHA-256 context is per thread: threads hashing at once agree.
TEST(VllmHash, ConcurrentThreadsAgree) {
    std::vector<uint32_t> t(16 * 200);
    for (size_t i = 0; i < t.size(); i++)
        t[i] = static_cast<uint32_t>(i);
    const auto root = none_hash(kSha, "vllm-none-hash");
    const auto want = chain(kSha, root, t, 16);
    std::vector<int> ok(4, 0);
    std::vector<std::thread> th;
    for (int k = 0; k < 4; k++)
        th.emplace_back([&, k] {
            int good = 1;
            for (int rep = 0; rep < 20; rep++) {
                std::vector<uint8_t> out(want.size());
                good &= kv_vllm_block_hashes(kSha, root.data(), root.size(), t.data(), t.size(), 16,
                                             nullptr, nullptr, out.data(), 200) == 200 &&
                        out == want;
            }
            ok[k] = good;
        });
    for (auto &x : th)
        x.join();
    for (int k = 0; k < 4; k++)
        EXPECT_EQ(ok[k], 1) << "thread " << k;
}

} // namespace
} // namespace kvtest
