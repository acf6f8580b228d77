// SPDX-License-Identifier: MIT
//
// Shared helpers for the unit suites: uniquely named pools under /dev/shm
// that are destroyed in TearDown whatever the test did, deterministic keys
// and payloads, and small wrappers that keep assertions short.
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <gtest/gtest.h>
#include <initializer_list>
#include <kv/kv.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace kvtest {

inline constexpr uint64_t KiB = 1024;
inline constexpr uint64_t MiB = 1024 * KiB;

// /dev/shm/kvpool-unit-<pid>-<n>-<tag>: unique across the processes of a
// parallel test run and across tests in one process.
inline std::string unique_pool_path(std::string_view tag) {
    static std::atomic<unsigned> counter{0};
    std::string t(tag.substr(0, 64));
    for (char &c : t)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return "/dev/shm/kvpool-unit-" + std::to_string(getpid()) + "-" +
           std::to_string(counter.fetch_add(1, std::memory_order_relaxed)) + "-" + t;
}

inline bool path_exists(const std::string &path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// Distinct, well-spread keys.
inline kv_key key_of(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 1, ~i ^ 0x5851f42d4c957f2dULL};
}

inline bool key_eq(const kv_key &a, const kv_key &b) {
    return a.lo == b.lo && a.hi == b.hi;
}

// Deterministic payload: different seeds give different bytes.
inline std::vector<uint8_t> payload(size_t len, uint64_t seed) {
    std::vector<uint8_t> v(len);
    uint64_t x = seed * 0x2545f4914f6cdd1dULL + 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < len; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v[i] = static_cast<uint8_t>((x * 0x2545f4914f6cdd1dULL) >> 56);
    }
    return v;
}

inline bool view_equals(const kv_view &v, const std::vector<uint8_t> &data) {
    return v.data != nullptr && v.length == data.size() &&
           std::memcmp(v.data, data.data(), data.size()) == 0;
}

inline std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

// True when msg names at least one of the words (case-insensitive).
inline bool mentions_any(const std::string &msg, std::initializer_list<const char *> words) {
    const std::string m = lower(msg);
    for (const char *w : words)
        if (m.find(lower(w)) != std::string::npos) return true;
    return false;
}

// Default geometry for unit tests: 64 MiB with 1 MiB slabs, so every suite
// runs in seconds.
inline kv_create_opts small_opts(uint64_t size = 64 * MiB, uint64_t slab = 1 * MiB) {
    kv_create_opts o;
    kv_create_opts_init(&o, size);
    o.slab_size = slab;
    o.numa_node = -1;
    return o;
}

// A fresh pool per test, attached once (pool_) with one namespace (ns_).
// Subclasses adjust the options in customize(). Extra attachments made with
// attach_another() and the file itself are released in TearDown, also after
// a failed assertion.
class PoolTest : public ::testing::Test {
  protected:
    virtual void customize(kv_create_opts &) {}

    void SetUp() override {
        path_ = unique_pool_path(::testing::UnitTest::GetInstance()->current_test_info()->name());
        opts_ = small_opts();
        customize(opts_);
        char msg[256] = "";
        int rc = kv_pool_create(path_.c_str(), &opts_, msg, sizeof msg);
        ASSERT_EQ(rc, 0) << "kv_pool_create(" << path_ << "): " << msg;
        created_ = true;
        msg[0] = '\0';
        rc = kv_pool_attach(path_.c_str(), 0, &pool_, msg, sizeof msg);
        ASSERT_EQ(rc, 0) << "kv_pool_attach: " << msg;
        ASSERT_NE(pool_, nullptr);
        kv_manifest m;
        kv_manifest_init(&m, "unit-test-model", 16);
        ASSERT_EQ(kv_ns_register(pool_, &m, &ns_, &seed_), 0);
    }

    void TearDown() override {
        for (kv_pool *p : others_) {
            EXPECT_EQ(kv_pool_detach(p), 0);
        }
        others_.clear();
        if (pool_) {
            EXPECT_EQ(kv_pool_detach(pool_), 0);
        }
        pool_ = nullptr;
        if (created_) {
            EXPECT_EQ(kv_pool_destroy(path_.c_str()), 0);
            unlink(path_.c_str()); // in case destroy is what failed
        }
    }

    // A second (third, ...) client of the same pool from this process.
    kv_pool *attach_another() {
        kv_pool *p = nullptr;
        char msg[256] = "";
        int rc = kv_pool_attach(path_.c_str(), 0, &p, msg, sizeof msg);
        EXPECT_EQ(rc, 0) << msg;
        if (rc == 0) others_.push_back(p);
        return rc == 0 ? p : nullptr;
    }
    // Detach a pool from attach_another() before TearDown.
    int detach_other(kv_pool *p) {
        std::erase(others_, p);
        return kv_pool_detach(p);
    }

    int put(uint64_t i, const std::vector<uint8_t> &data, const kv_meta *meta = nullptr) {
        kv_key k = key_of(i);
        return kv_put(pool_, ns_, &k, data.data(), data.size(), meta);
    }
    int get(uint64_t i, kv_view *v) {
        kv_key k = key_of(i);
        return kv_get(pool_, ns_, &k, v);
    }
    int contains(uint64_t i) {
        kv_key k = key_of(i);
        return kv_contains(pool_, ns_, &k);
    }

    kv_usage usage() {
        kv_usage u{};
        EXPECT_EQ(kv_pool_usage(pool_, &u), 0);
        return u;
    }
    kv_stats stats() {
        kv_stats s{};
        EXPECT_EQ(kv_pool_stats(pool_, &s), 0);
        return s;
    }
    // The invariants a quiescent pool must keep whatever happened before.
    void expect_consistent() {
        kv_usage u = usage();
        EXPECT_EQ(u.orphan_blocks, 0u);
        EXPECT_EQ(u.bad_links, 0u);
        EXPECT_EQ(u.unreachable, 0u);
        EXPECT_EQ(u.pins, u.journal_pins);
    }

    std::string path_;
    kv_create_opts opts_{};
    bool created_ = false;
    kv_pool *pool_ = nullptr;
    uint32_t ns_ = 0;
    uint64_t seed_ = 0;
    std::vector<kv_pool *> others_;
};

} // namespace kvtest
