// SPDX-License-Identifier: MIT
//
// kv_strerror for every code the API documents, and the message buffer
// contract (errbuf may be NULL, is NUL-terminated, is never overrun).
#include "pool_fixture.h"

#include <cerrno>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <set>
#include <string>

namespace kvtest {
namespace {

constexpr int kDocumentedCodes[] = {
    -EEXIST,  -EINVAL, -ENOMEM, -ENOSPC, -EPROTO,   -EBADMSG,
    -ENODATA, -EUSERS, -ENOENT, -EBUSY,  -EMSGSIZE, -ENOBUFS,
};

TEST(Strerror, DescribesEveryDocumentedCode) {
    std::set<std::string> seen;
    for (int code : kDocumentedCodes) {
        SCOPED_TRACE(code);
        const char *s = kv_strerror(code);
        ASSERT_NE(s, nullptr);
        EXPECT_GT(std::strlen(s), 0u);
        seen.insert(s);
    }
    EXPECT_EQ(seen.size(), std::size(kDocumentedCodes)) << "two codes share a description";
}

TEST(Strerror, SuccessDedupAndUnknownCodes) {
    for (int code : {0, KV_DEDUP, -EIO, -EACCES, -99999, 99999, -2147483647 - 1}) {
        SCOPED_TRACE(code);
        const char *s = kv_strerror(code);
        ASSERT_NE(s, nullptr);
        EXPECT_GT(std::strlen(s), 0u);
    }
    EXPECT_STRNE(kv_strerror(0), kv_strerror(-ENOENT));
}

class ErrbufTest : public ::testing::Test {
  protected:
    void SetUp() override { path_ = unique_pool_path("errbuf"); }
    void TearDown() override { unlink(path_.c_str()); }
    std::string path_;
};

TEST_F(ErrbufTest, MessageIsTruncatedNotOverrun) {
    kv_create_opts o = small_opts();
    o.slab_size = 3 * MiB;
    char buf[16];
    std::memset(buf, 'z', sizeof buf);
    EXPECT_EQ(kv_pool_create(path_.c_str(), &o, buf, 8), -EINVAL);
    EXPECT_NE(std::memchr(buf, '\0', 8), nullptr) << "not NUL-terminated within errlen";
    for (size_t i = 8; i < sizeof buf; i++)
        EXPECT_EQ(buf[i], 'z') << "overrun at " << i;

    std::memset(buf, 'z', sizeof buf);
    EXPECT_EQ(kv_pool_create(path_.c_str(), &o, buf, 1), -EINVAL);
    EXPECT_EQ(buf[0], '\0');
    EXPECT_EQ(buf[1], 'z');

    std::memset(buf, 'z', sizeof buf);
    EXPECT_EQ(kv_pool_create(path_.c_str(), &o, buf, 0), -EINVAL);
    EXPECT_EQ(buf[0], 'z') << "errlen 0 must not be written";
}

} // namespace
} // namespace kvtest
