// SPDX-License-Identifier: MIT
//
// daemon/crypto.h and keyring.h: AES-256-GCM round trips and every way a
// sealed part or a wrapped key must fail to open; key files and
// credentials, and each reason a key is refused.
#include "crypto.h"
#include "keyring.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace kvtest {
namespace {

using namespace kv::daemon;
using crypto::Aead;
using crypto::Key;

Key key_of(uint8_t fill) {
    Key k;
    k.bytes.fill(fill);
    return k;
}

std::vector<uint8_t> pattern(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i++)
        v[i] = uint8_t(i * 131 + 7);
    return v;
}

TEST(Crypto, SealOpenRoundTripInPlaceAndApart) {
    Aead a;
    const Key k = key_of(1);
    const auto iv = crypto::make_iv(3, 5, 42);
    const std::vector<uint8_t> aad{1, 2, 3};
    for (size_t n : {size_t(0), size_t(1), size_t(4096), size_t(65536 + 13)}) {
        const auto plain = pattern(n);
        std::vector<uint8_t> ct(n);
        crypto::Tag tag;
        ASSERT_TRUE(a.seal(k, iv, aad, plain.data(), ct.data(), n, tag));
        if (n >= 16) {
            EXPECT_NE(ct, plain);
        }
        std::vector<uint8_t> back(n);
        ASSERT_TRUE(a.open(k, iv, aad, ct.data(), back.data(), n, tag)) << n;
        EXPECT_EQ(back, plain);
        // In place, both ways.
        auto buf = plain;
        ASSERT_TRUE(a.seal(k, iv, aad, buf.data(), buf.data(), n, tag));
        EXPECT_EQ(buf, ct);
        ASSERT_TRUE(a.open(k, iv, aad, buf.data(), buf.data(), n, tag));
        EXPECT_EQ(buf, plain);
    }
}

TEST(Crypto, OpenRefusesAnyChange) {
    Aead a;
    const Key k = key_of(7);
    const auto iv = crypto::make_iv(1, 0, 9);
    const std::vector<uint8_t> aad{9, 9, 9, 9};
    const auto plain = pattern(300);
    std::vector<uint8_t> ct(plain.size()), out(plain.size());
    crypto::Tag tag;
    ASSERT_TRUE(a.seal(k, iv, aad, plain.data(), ct.data(), ct.size(), tag));
    for (size_t i = 0; i < ct.size(); i++) {
        auto bad = ct;
        bad[i] ^= 0x01;
        EXPECT_FALSE(a.open(k, iv, aad, bad.data(), out.data(), bad.size(), tag)) << i;
    }
    for (size_t i = 0; i < tag.size(); i++) {
        auto bad = tag;
        bad[i] ^= 0x80;
        EXPECT_FALSE(a.open(k, iv, aad, ct.data(), out.data(), ct.size(), bad)) << i;
    }
    auto bad_aad = aad;
    bad_aad[2] = 0;
    EXPECT_FALSE(a.open(k, iv, bad_aad, ct.data(), out.data(), ct.size(), tag));
    EXPECT_FALSE(a.open(k, crypto::make_iv(1, 0, 10), aad, ct.data(), out.data(), ct.size(), tag));
    EXPECT_FALSE(a.open(k, crypto::make_iv(2, 0, 9), aad, ct.data(), out.data(), ct.size(), tag));
    EXPECT_FALSE(a.open(key_of(8), iv, aad, ct.data(), out.data(), ct.size(), tag));
    EXPECT_TRUE(a.open(k, iv, aad, ct.data(), out.data(), ct.size(), tag));
}

TEST(Crypto, IvsAreDistinctPerPart) {
    EXPECT_NE(crypto::make_iv(1, 0, 0), crypto::make_iv(2, 0, 0));
    EXPECT_NE(crypto::make_iv(1, 1, 0), crypto::make_iv(1, 0, 1));
    EXPECT_NE(crypto::make_iv(1, 0, 1ULL << 40), crypto::make_iv(1, 0, 0));
    const auto iv = crypto::make_iv(0xab, 0x123456, 0x0102030405060708ULL);
    EXPECT_EQ(iv[3], 0xab);
    EXPECT_EQ(iv[0], 0x56);
    EXPECT_EQ(iv[4], 0x08);
    EXPECT_EQ(iv[11], 0x01);
}

TEST(Crypto, WrapUnwrap) {
    Aead a;
    const Key pool = key_of(0x55);
    auto dk = crypto::new_data_key();
    ASSERT_TRUE(dk) << dk.error();
    auto dk2 = crypto::new_data_key();
    ASSERT_TRUE(dk2);
    EXPECT_NE(dk->bytes, dk2->bytes); // fresh each time
    kv_wrapped_key w;
    ASSERT_TRUE(crypto::wrap_key(a, pool, "alpha-1", 0x1234, *dk, w));
    EXPECT_EQ(crypto::key_id_of(w), "alpha-1");
    EXPECT_EQ(w.alg, KV_CRYPTO_AES_256_GCM);
    Key out;
    ASSERT_TRUE(crypto::unwrap_key(a, pool, 0x1234, w, out));
    EXPECT_EQ(out.bytes, dk->bytes);
    // Another pool key, another container kind, a renamed key id, any
    // flipped byte: refused, and nothing of the data key is left behind.
    EXPECT_FALSE(crypto::unwrap_key(a, key_of(0x56), 0x1234, w, out));
    EXPECT_EQ(out.bytes, Key{}.bytes);
    EXPECT_FALSE(crypto::unwrap_key(a, pool, 0x1235, w, out));
    for (size_t i = 0; i < sizeof w; i++) {
        kv_wrapped_key bad = w;
        reinterpret_cast<uint8_t *>(&bad)[i] ^= 0x04;
        EXPECT_FALSE(crypto::unwrap_key(a, pool, 0x1234, bad, out)) << "byte " << i;
    }
    EXPECT_FALSE(crypto::wrap_key(a, pool, "", 1, *dk, w));
    EXPECT_FALSE(crypto::wrap_key(a, pool, std::string(32, 'a'), 1, *dk, w));
    EXPECT_FALSE(crypto::wrap_key(a, pool, "a/b", 1, *dk, w));
}

TEST(Crypto, KeyIdField) {
    kv_wrapped_key w{};
    EXPECT_EQ(crypto::key_id_of(w), "");
    std::memset(w.key_id, 'a', sizeof w.key_id); // no NUL
    EXPECT_EQ(crypto::key_id_of(w), "");
    std::memset(w.key_id, 0, sizeof w.key_id);
    w.key_id[0] = 'k';
    w.key_id[5] = 'x'; // garbage after the NUL
    EXPECT_EQ(crypto::key_id_of(w), "");
    EXPECT_TRUE(crypto::valid_key_id("alpha-2026.12_1"));
    EXPECT_FALSE(crypto::valid_key_id("al pha"));
}

TEST(Keyring, ParseKeyBytes) {
    std::string raw(32, '\x01');
    auto k = parse_key_bytes(raw);
    ASSERT_TRUE(k);
    EXPECT_EQ(k->bytes[31], 1);
    const std::string hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
    for (const std::string &h : {hex, hex + "\n", hex + "\r\n"}) {
        auto kh = parse_key_bytes(h);
        ASSERT_TRUE(kh) << kh.error();
        EXPECT_EQ(kh->bytes[0], 0);
        EXPECT_EQ(kh->bytes[31], 0x1f);
    }
    auto shortk = parse_key_bytes("abc");
    ASSERT_FALSE(shortk);
    EXPECT_NE(shortk.error().find("holds 3 bytes"), std::string::npos) << shortk.error();
    auto nothex = parse_key_bytes(std::string(63, 'a') + "g");
    ASSERT_FALSE(nothex);
    EXPECT_NE(nothex.error().find("not a hex digit at byte 63"), std::string::npos)
        << nothex.error();
}

class KeyringFiles : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/kvpool-keyring-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        ::unsetenv("CREDENTIALS_DIRECTORY");
        std::filesystem::remove_all(dir_);
    }
    std::string write(const std::string &name, const std::string &bytes, mode_t mode = 0600) {
        const std::string p = dir_ + "/" + name;
        std::ofstream(p, std::ios::binary) << bytes;
        EXPECT_EQ(chmod(p.c_str(), mode), 0);
        return p;
    }
    std::string dir_;
};

TEST_F(KeyringFiles, LoadsFilesAndCredentials) {
    EncryptionConfig ec;
    ec.enabled = true;
    ec.key = "new";
    ec.keys.push_back({"new", write("new.key", std::string(64, 'b') + "\n"), ""});
    write("old-cred", std::string(32, '\x07'));
    ec.keys.push_back({"old", "", "old-cred"});
    ::setenv("CREDENTIALS_DIRECTORY", dir_.c_str(), 1);
    auto ring = load_keyring(ec);
    ASSERT_TRUE(ring) << ring.error();
    EXPECT_EQ(ring->current_id(), "new");
    EXPECT_EQ(ring->current().bytes[0], 0xbb);
    ASSERT_NE(ring->find("old"), nullptr);
    EXPECT_EQ(ring->find("old")->bytes[5], 7);
    EXPECT_EQ(ring->find("none"), nullptr);
    EXPECT_EQ(ring->ids(), "new, old");
}

TEST_F(KeyringFiles, RefusesUnsafeOrBadKeys) {
    EncryptionConfig ec;
    ec.enabled = true;
    ec.key = "k";
    const std::string p = write("k.key", std::string(32, 'x'));
    ec.keys.push_back({"k", p, ""});
    auto expect_refused = [&](const std::string &words) {
        auto r = load_keyring(ec);
        ASSERT_FALSE(r) << words;
        EXPECT_NE(r.error().find(words), std::string::npos) << r.error();
        EXPECT_NE(r.error().find("key \"k\""), std::string::npos) << r.error();
    };
    ASSERT_EQ(chmod(p.c_str(), 0604), 0);
    expect_refused("mode 0604, readable or writable by others");
    ASSERT_EQ(chmod(p.c_str(), 0620), 0);
    expect_refused("writable by its group");
    ASSERT_EQ(chmod(p.c_str(), 0640), 0); // group read is the operator's choice
    EXPECT_TRUE(load_keyring(ec));
    if (geteuid() == 0) {
        ASSERT_EQ(chown(p.c_str(), 65534, 0), 0);
        expect_refused("owned by uid 65534; expected root");
        ASSERT_EQ(chown(p.c_str(), 0, 0), 0);
    }
    const std::string link = dir_ + "/link.key";
    ASSERT_EQ(symlink(p.c_str(), link.c_str()), 0);
    ec.keys[0].file = link;
    expect_refused(link); // O_NOFOLLOW: a symlink could point anywhere
    ec.keys[0].file = write("short.key", "0123");
    expect_refused("holds 4 bytes");
    ec.keys[0].file = dir_ + "/absent.key";
    expect_refused("No such file");
    ec.keys[0].file.clear();
    ec.keys[0].credential = "cred";
    ::unsetenv("CREDENTIALS_DIRECTORY");
    expect_refused("$CREDENTIALS_DIRECTORY is not set");
}

} // namespace
} // namespace kvtest
