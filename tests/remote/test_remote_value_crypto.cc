// SPDX-License-Identifier: MIT
//
// Encrypted remote values (uapi/kvpool/remote.h, KV_REMOTE_F_ENCRYPTED)
// without a cluster: seal and open, every byte of the header and crypto
// block changed in turn, the ciphertext and tag changed, a value moved
// under another key, a wrong key under the right id, an unknown id, a
// plain value offered to an encrypted reader, and key rotation.
#include "remote_keys.h"
#include "remote_value.h"

#include <cstring>
#include <gtest/gtest.h>
#include <string>
#include <vector>
#include <xxhash.h>

using namespace kv::daemon;

namespace {

kv_key K(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 1, ~i};
}

// A block whose every 8 bytes differ: any 16 of them are distinctive.
std::vector<uint8_t> block(size_t len, uint64_t seed) {
    std::vector<uint8_t> d(len);
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 5;
    for (size_t k = 0; k < len; k += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        std::memcpy(d.data() + k, &x, std::min<size_t>(8, len - k));
    }
    return d;
}

std::vector<uint8_t> seal(const Keyring &kr, const NsDigest &d, const kv_key &k,
                          const std::vector<uint8_t> &data) {
    crypto::Aead aead;
    SealedHead head;
    std::vector<uint8_t> v(kSealedHeadBytes + data.size());
    EXPECT_EQ(seal_value(aead, kr, d, k, data, head, v.data() + kSealedHeadBytes), "");
    std::memcpy(v.data(), head.data(), head.size());
    return v;
}

std::vector<uint8_t> plain(const NsDigest &d, const kv_key &k, const std::vector<uint8_t> &data) {
    kv_remote_header h = make_header(d, k, data.size(), XXH3_64bits(data.data(), data.size()));
    std::vector<uint8_t> v(sizeof h + data.size());
    std::memcpy(v.data(), &h, sizeof h);
    std::memcpy(v.data() + sizeof h, data.data(), data.size());
    return v;
}

struct Opened {
    Reject reject = Reject::None;
    std::string detail;
    std::vector<uint8_t> bytes;
};

// What a reader with keyring kr does with a fetched value: check, then open.
Opened open(const std::vector<uint8_t> &value, const NsDigest &d, const kv_key &k,
            const Keyring *kr) {
    Opened o;
    CheckedValue v = check_header(value, d, k, kr);
    if (v.reject == Reject::None && v.encrypted) {
        crypto::Aead aead;
        o.bytes.assign(v.data.size(), 0xa5);
        open_value(aead, v, o.bytes.data());
        if (v.reject != Reject::None) {
            for (uint8_t b : o.bytes)
                EXPECT_EQ(b, 0) << "unauthenticated bytes left in the output";
        }
    } else if (v.reject == Reject::None) {
        o.bytes.assign(v.data.begin(), v.data.end());
    }
    o.reject = v.reject;
    o.detail = v.detail;
    return o;
}

bool contains(const std::vector<uint8_t> &hay, const uint8_t *needle, size_t n) {
    return memmem(hay.data(), hay.size(), needle, n) != nullptr;
}

class RemoteValueCrypto : public ::testing::Test {
  protected:
    void SetUp() override {
        a_ = kvtest::make_keyring({{"alpha-1", 1}}, "alpha-1");
        wrong_ = kvtest::make_keyring({{"alpha-1", 9}}, "alpha-1"); // same id, other bytes
        other_ = kvtest::make_keyring({{"beta-1", 2}}, "beta-1");
        rotated_ = kvtest::make_keyring({{"alpha-1", 1}, {"alpha-2", 3}}, "alpha-2");
        ASSERT_TRUE(a_ && wrong_ && other_ && rotated_);
    }
    std::shared_ptr<const Keyring> a_, wrong_, other_, rotated_;
    const NsDigest d_{0x1111, 0x2222};
};

TEST_F(RemoteValueCrypto, SealedValueOpensByteExactAndHidesTheBytes) {
    const auto data = block(4096, 1);
    const auto v = seal(*a_, d_, K(1), data);
    ASSERT_EQ(v.size(), size_t(KV_REMOTE_HEADER_SIZE_V1 + KV_REMOTE_CRYPTO_SIZE_V1) + data.size());
    kv_remote_header h;
    std::memcpy(&h, v.data(), sizeof h);
    EXPECT_EQ(h.flags, KV_REMOTE_F_ENCRYPTED);
    EXPECT_EQ(h.checksum, 0u);
    EXPECT_EQ(h.length, data.size());
    kv_remote_crypto c;
    std::memcpy(&c, v.data() + sizeof h, sizeof c);
    EXPECT_EQ(crypto::key_id_of(c.wrapped), "alpha-1");
    EXPECT_EQ(c.wrapped.alg, KV_CRYPTO_AES_256_GCM);
    EXPECT_EQ(c.reserved, 0u);

    auto o = open(v, d_, K(1), a_.get());
    ASSERT_EQ(o.reject, Reject::None) << o.detail;
    EXPECT_EQ(o.bytes, data);
    // No 16 consecutive bytes of the block are in the value.
    for (size_t off = 0; off + 16 <= data.size(); off += 16)
        ASSERT_FALSE(contains(v, data.data() + off, 16)) << "plaintext at block offset " << off;
    // Two seals of the same block differ (a fresh data key each).
    EXPECT_NE(seal(*a_, d_, K(1), data), v);
}

TEST_F(RemoteValueCrypto, EveryHeadByteChangedIsRefused) {
    const auto data = block(512, 2);
    const auto good = seal(*a_, d_, K(2), data);
    for (size_t i = 0; i < kSealedHeadBytes; i++) {
        for (uint8_t bit : {uint8_t(0x01), uint8_t(0x80)}) {
            auto v = good;
            v[i] ^= bit;
            auto o = open(v, d_, K(2), a_.get());
            EXPECT_NE(o.reject, Reject::None) << "byte " << i << " ^ " << int(bit);
            EXPECT_FALSE(o.detail.empty()) << "byte " << i;
        }
    }
}

TEST_F(RemoteValueCrypto, ChangedCiphertextOrTagIsADecryptRefusal) {
    const auto data = block(1000, 3);
    const auto good = seal(*a_, d_, K(3), data);
    for (size_t i : {kSealedHeadBytes, kSealedHeadBytes + 500, good.size() - 1,
                     size_t(KV_REMOTE_AAD_SIZE), kSealedHeadBytes - 1}) {
        auto v = good;
        v[i] ^= 0x10;
        auto o = open(v, d_, K(3), a_.get());
        EXPECT_EQ(o.reject, Reject::Decrypt) << "byte " << i << ": " << o.detail;
        EXPECT_NE(o.detail.find("alpha-1"), std::string::npos) << o.detail;
    }
    auto v = good;
    v.pop_back();
    EXPECT_EQ(open(v, d_, K(3), a_.get()).reject, Reject::Truncated);
    v = good;
    v.resize(kSealedHeadBytes - 1);
    EXPECT_EQ(open(v, d_, K(3), a_.get()).reject, Reject::Truncated);
}

TEST_F(RemoteValueCrypto, AValueMovedUnderAnotherKeyFails) {
    const auto data = block(256, 4);
    const auto v = seal(*a_, d_, K(4), data);
    // As stored under K(5)'s name: its header names K(4).
    EXPECT_EQ(open(v, d_, K(5), a_.get()).reject, Reject::Key);
    EXPECT_EQ(open(v, NsDigest{0x1111, 0x2223}, K(4), a_.get()).reject, Reject::Namespace);
    // With its header rewritten to name K(5) and another namespace: the AAD
    // no longer matches.
    auto moved = v;
    kv_remote_header h;
    std::memcpy(&h, moved.data(), sizeof h);
    h.key_lo = K(5).lo;
    h.key_hi = K(5).hi;
    h.ns_digest_hi = 0x3333;
    std::memcpy(moved.data(), &h, sizeof h);
    EXPECT_EQ(open(moved, NsDigest{0x1111, 0x3333}, K(5), a_.get()).reject, Reject::Decrypt);
}

TEST_F(RemoteValueCrypto, KeysDecideWhoReads) {
    const auto data = block(2048, 5);
    const auto v = seal(*a_, d_, K(6), data);
    auto o = open(v, d_, K(6), wrong_.get()); // the same id, other bytes
    EXPECT_EQ(o.reject, Reject::Decrypt);
    EXPECT_NE(o.detail.find("alpha-1"), std::string::npos) << o.detail;
    o = open(v, d_, K(6), other_.get()); // the id is not configured
    EXPECT_EQ(o.reject, Reject::KeyId);
    EXPECT_NE(o.detail.find("alpha-1"), std::string::npos) << o.detail;
    EXPECT_NE(o.detail.find("beta-1"), std::string::npos) << o.detail;
    o = open(v, d_, K(6), nullptr); // a pool without keys
    EXPECT_EQ(o.reject, Reject::KeyId);
    EXPECT_EQ(check_value(v, d_, K(6)).reject, Reject::KeyId);
    // A plain value, well formed, is refused by an encrypted reader before
    // its bytes are looked at, and accepted by a plain one.
    const auto p = plain(d_, K(6), data);
    EXPECT_EQ(open(p, d_, K(6), a_.get()).reject, Reject::Plaintext);
    EXPECT_EQ(open(p, d_, K(6), nullptr).reject, Reject::None);
    EXPECT_STREQ(reject_name(Reject::Plaintext), "plaintext");
    EXPECT_STREQ(reject_name(Reject::KeyId), "key_id");
    EXPECT_STREQ(reject_name(Reject::Decrypt), "decrypt");
}

TEST_F(RemoteValueCrypto, RotationKeepsOldValuesReadable) {
    const auto old_data = block(300, 6), new_data = block(300, 7);
    const auto old_v = seal(*a_, d_, K(7), old_data);       // written with alpha-1
    const auto new_v = seal(*rotated_, d_, K(8), new_data); // written with alpha-2
    kv_remote_crypto c;
    std::memcpy(&c, new_v.data() + KV_REMOTE_HEADER_SIZE_V1, sizeof c);
    EXPECT_EQ(crypto::key_id_of(c.wrapped), "alpha-2");
    auto o = open(old_v, d_, K(7), rotated_.get());
    ASSERT_EQ(o.reject, Reject::None) << o.detail;
    EXPECT_EQ(o.bytes, old_data);
    o = open(new_v, d_, K(8), rotated_.get());
    ASSERT_EQ(o.reject, Reject::None) << o.detail;
    EXPECT_EQ(o.bytes, new_data);
    // A host still on alpha-1 alone cannot read what alpha-2 sealed.
    EXPECT_EQ(open(new_v, d_, K(8), a_.get()).reject, Reject::KeyId);
}

} // namespace
