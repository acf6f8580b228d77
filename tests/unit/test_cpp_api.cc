// SPDX-License-Identifier: MIT
//
// The header-only C++ wrapper <kv/kv.hpp>: RAII release of views, abort of
// uncommitted reservations, detach of pools, and std::expected errors.
#include "pool_fixture.h"

#include <cerrno>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.hpp>
#include <span>
#include <unistd.h>
#include <vector>

namespace kvtest {
namespace {

std::span<const std::byte> as_bytes(const std::vector<uint8_t> &v) {
    return std::as_bytes(std::span<const uint8_t>(v));
}

class CppApiTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path_ = unique_pool_path("cpp-api");
        auto created = kv::Pool::create(path_, small_opts());
        ASSERT_TRUE(created.has_value()) << created.error().message;
    }
    void TearDown() override { unlink(path_.c_str()); }

    // Usage seen through a separate C-API client.
    kv_usage usage() {
        kv_pool *p = nullptr;
        kv_usage u{};
        EXPECT_EQ(kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0), 0);
        if (p) {
            EXPECT_EQ(kv_pool_usage(p, &u), 0);
            kv_pool_detach(p);
        }
        return u;
    }

    std::string path_;
};

TEST_F(CppApiTest, CreateReportsErrors) {
    kv_create_opts o = small_opts();
    o.slab_size = 3 * MiB;
    auto r = kv::Pool::create(unique_pool_path("cpp-bad"), o);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, -EINVAL);
    EXPECT_FALSE(r.error().message.empty());

    auto a = kv::Pool::attach("/dev/shm/kvpool-unit-does-not-exist");
    ASSERT_FALSE(a.has_value());
    EXPECT_EQ(a.error().code, -ENOENT);
}

TEST_F(CppApiTest, PutGetViewReleasesOnScopeExit) {
    auto pool = kv::Pool::attach(path_);
    ASSERT_TRUE(pool.has_value()) << pool.error().message;
    kv_manifest m;
    kv_manifest_init(&m, "cpp", 16);
    auto ns = pool->ns(m);
    ASSERT_TRUE(ns.has_value());

    const auto data = payload(6000, 1);
    const kv::Meta meta{.tokens = 16, .priority = 2, .user_tag = 9};
    auto put = pool->put(*ns, key_of(1), as_bytes(data), &meta);
    ASSERT_TRUE(put.has_value());
    EXPECT_EQ(*put, kv::PutResult::Stored);
    auto again = pool->put(*ns, key_of(1), as_bytes(data));
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, kv::PutResult::Deduplicated);
    EXPECT_TRUE(pool->contains(*ns, key_of(1)));

    {
        auto v = pool->get(*ns, key_of(1));
        ASSERT_TRUE(v.has_value());
        ASSERT_EQ(v->bytes().size(), data.size());
        EXPECT_EQ(std::memcmp(v->bytes().data(), data.data(), data.size()), 0);
        EXPECT_EQ(v->meta().tokens, 16u);
        EXPECT_TRUE(v->verify());
        EXPECT_EQ(usage().pins, 1u);
        kv::View moved = std::move(*v);
        EXPECT_EQ(usage().pins, 1u);
    }
    EXPECT_EQ(usage().pins, 0u) << "View did not release on destruction";

    auto missing = pool->get(*ns, key_of(2));
    ASSERT_FALSE(missing.has_value());
    EXPECT_EQ(missing.error().code, -ENOENT);

    auto bad = pool->put(*ns, key_of(3), std::span<const std::byte>());
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, -EMSGSIZE);

    EXPECT_EQ(pool->remove(*ns, key_of(1)), 0);
    EXPECT_EQ(pool->remove(*ns, key_of(1)), -ENOENT);
    EXPECT_EQ(pool->reap(), 0);
}

// PutOptions reaches kv_put_ex / kv_reserve_ex: metadata, the parent link
// (the parent is then evicted after its child in a PREFIX pool, the
// default) and the time to live.
TEST_F(CppApiTest, PutOptionsCarryParentAndTtl) {
    // A table of at most 64 entries is sampled whole, so the victim order is
    // exact (a larger table is sampled: the order is then approximate).
    const std::string path = unique_pool_path("cpp-put-opts");
    kv_create_opts o = small_opts();
    o.avg_block_size = 1 * MiB;
    ASSERT_TRUE(kv::Pool::create(path, o).has_value());
    struct Unlink {
        std::string p;
        ~Unlink() { unlink(p.c_str()); }
    } unlink_at_exit{path};
    auto pool = kv::Pool::attach(path);
    ASSERT_TRUE(pool.has_value()) << pool.error().message;
    ASSERT_LE(kv_pool_header(pool->get())->n_entries, 64u);
    ASSERT_EQ(kv_pool_header(pool->get())->evict_policy, uint32_t(KV_EVICT_PREFIX));
    kv_manifest m;
    kv_manifest_init(&m, "cpp", 16);
    const uint32_t ns = pool->ns(m).value();
    const auto data = payload(4096, 3);

    const kv::Meta meta{.tokens = 7, .priority = 0, .user_tag = 5};
    ASSERT_TRUE(
        pool->put(ns, key_of(1), as_bytes(data), kv::PutOptions{.meta = &meta}).has_value());
    const kv::Key parent = key_of(1);
    {
        auto r = pool->reserve(ns, key_of(2), data.size(), kv::PutOptions{.parent = &parent});
        ASSERT_TRUE(r.has_value()) << r.error().message;
        std::memcpy(r->bytes().data(), data.data(), data.size());
        ASSERT_EQ(r->commit(), 0);
    }
    EXPECT_EQ(pool->get(ns, key_of(1)).value().meta().tokens, 7u);
    // The child is evicted first: the parent has a live child.
    ASSERT_GT(kv_evict_bytes(pool->get(), 1), 0);
    EXPECT_FALSE(pool->contains(ns, key_of(2)));
    EXPECT_TRUE(pool->contains(ns, key_of(1)));

    ASSERT_TRUE(pool->put(ns, key_of(3), as_bytes(data), kv::PutOptions{.ttl_ms = 1}).has_value());
    for (int i = 0; i < 200 && pool->contains(ns, key_of(3)); i++)
        usleep(10000);
    EXPECT_FALSE(pool->contains(ns, key_of(3))) << "ttl_ms = 1 never expired";
    auto gone = pool->get(ns, key_of(3));
    ASSERT_FALSE(gone.has_value());
    EXPECT_EQ(gone.error().code, -ENOENT);
}

TEST_F(CppApiTest, ReservationCommitsOrAbortsOnScopeExit) {
    auto pool = kv::Pool::attach(path_);
    ASSERT_TRUE(pool.has_value());
    kv_manifest m;
    kv_manifest_init(&m, "cpp", 16);
    const uint32_t ns = pool->ns(m).value();

    {
        auto r = pool->reserve(ns, key_of(1), 8192);
        ASSERT_TRUE(r.has_value());
        std::memset(r->bytes().data(), 0x42, r->bytes().size());
        EXPECT_EQ(usage().entries_reserved, 1u);
        // Dropped without commit.
    }
    EXPECT_EQ(usage().entries_reserved, 0u) << "Reservation did not abort on destruction";
    EXPECT_FALSE(pool->contains(ns, key_of(1)));

    {
        auto r = pool->reserve(ns, key_of(1), 8192);
        ASSERT_TRUE(r.has_value());
        std::memset(r->bytes().data(), 0x42, r->bytes().size());
        EXPECT_EQ(r->commit(), 0);
    }
    EXPECT_TRUE(pool->contains(ns, key_of(1)));
    auto dup = pool->reserve(ns, key_of(1), 8192);
    ASSERT_FALSE(dup.has_value());
    EXPECT_EQ(dup.error().code, KV_DEDUP);

    const kv::Key keys[] = {key_of(1), key_of(2)};
    EXPECT_EQ(pool->match_prefix(ns, keys), 1u);
}

TEST_F(CppApiTest, PoolDetachesOnDestructionAndMove) {
    {
        auto a = kv::Pool::attach(path_);
        ASSERT_TRUE(a.has_value());
        kv::Pool b = std::move(*a);
        EXPECT_NE(b.get(), nullptr);
        kv_stats s{};
        ASSERT_EQ(kv_pool_stats(b.get(), &s), 0);
        EXPECT_EQ(s.clients, 1u);
    }
    kv_pool *p = nullptr;
    ASSERT_EQ(kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0), 0);
    kv_stats s{};
    EXPECT_EQ(kv_pool_stats(p, &s), 0);
    EXPECT_EQ(s.clients, 1u) << "a kv::Pool leaked its client slot";
    EXPECT_EQ(kv_pool_detach(p), 0);
}

} // namespace
} // namespace kvtest
