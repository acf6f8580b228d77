// SPDX-License-Identifier: MIT
//
// secure_erase in kvpoold (uapi/PROTOCOL.md section 14): a pool configured
// with it is created with the region bit and says so in status; blocks the
// daemon's background (watermark) eviction frees are zeroed, so a scan of
// the pool file finds none of their bytes. The same pool without it keeps
// the bytes, which shows that the scan would see them.
#include "../system/daemon_fixture.h"

#include <cstring>
#include <kv/kv.h>
#include <nlohmann/json.hpp>
#include <vector>

namespace {

using nlohmann::json;
using namespace kvtest;

json parse(const Proc &r) {
    try {
        return json::parse(r.out);
    } catch (const std::exception &e) {
        ADD_FAILURE() << "not JSON: " << e.what() << "\n" << r.out << r.err;
        return json::object();
    }
}

std::vector<uint8_t> distinctive(size_t len, uint64_t seed) {
    std::vector<uint8_t> v(len);
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
    for (auto &b : v) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b = uint8_t(x >> 24);
    }
    return v;
}

class EraseDaemonTest : public DaemonTest, public ::testing::WithParamInterface<bool> {};

TEST_P(EraseDaemonTest, BackgroundEvictionErases) {
    const bool erase = GetParam();
    const std::string pools = std::string("high_watermark = 0.5\nlow_watermark = 0.3\n") +
                              "secure_erase = " + (erase ? "true" : "false") + "\n";
    ASSERT_TRUE(start_daemon(config("", pools)));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["secure_erase"], erase) << s.dump();

    kv_pool *p = nullptr;
    char err[256] = "";
    ASSERT_EQ(kv_pool_attach(pool_path("alpha").c_str(), 0, &p, err, sizeof err), 0) << err;
    const kv_region_header *h = kv_pool_header(p);
    EXPECT_EQ(!!(h->incompat_features & KV_INCOMPAT_F_SECURE_ERASE), erase);
    kv_manifest m;
    kv_manifest_init(&m, "erase-daemon-model", 16);
    uint32_t ns = 0;
    uint64_t seed = 0;
    ASSERT_EQ(kv_ns_register(p, &m, &ns, &seed), 0);
    // 60% of the capacity: past the high watermark, so the daemon's pass
    // evicts down to the low one (the oldest first).
    const size_t len = 256 << 10;
    const uint64_t n = h->data_len * 6 / 10 / len;
    std::vector<std::vector<uint8_t>> blocks;
    for (uint64_t i = 0; i < n; i++) {
        blocks.push_back(distinctive(len, i + 1));
        const kv_key k{i + 1, 0x5ec};
        ASSERT_GE(kv_put(p, ns, &k, blocks.back().data(), len, nullptr), 0);
    }
    uint64_t evicted = 0;
    const uint64_t deadline = mono_ms() + 5000;
    for (; mono_ms() < deadline; usleep(20000)) {
        evicted = 0;
        for (uint64_t i = 0; i < n; i++) {
            const kv_key k{i + 1, 0x5ec};
            evicted += kv_contains(p, ns, &k) == 0;
        }
        if (evicted * len * 10 >= h->data_len * 2) break; // 20% of the capacity gone
    }
    ASSERT_GT(evicted, 0u) << "the background pass evicted nothing\n" << log();
    const uint8_t *region = reinterpret_cast<const uint8_t *>(h);
    uint64_t readable = 0;
    for (uint64_t i = 0; i < n; i++) {
        const kv_key k{i + 1, 0x5ec};
        if (kv_contains(p, ns, &k) != 0) continue;
        // Two 32-byte probes: the block's first and last bytes.
        const uint8_t *b = blocks[i].data();
        readable += memmem(region, h->region_size, b, 32) != nullptr ||
                    memmem(region, h->region_size, b + len - 32, 32) != nullptr;
    }
    if (erase) {
        EXPECT_EQ(readable, 0u) << evicted << " evicted by the daemon, " << readable
                                << " still readable";
    } else {
        // Puts made after the pass started may reuse some of the space.
        EXPECT_GT(readable, 0u) << "without secure_erase evicted bytes should remain";
    }
    kv_pool_detach(p);
}

// kvctl create --secure-erase: the runtime pool has the region bit, says
// so in status, and keeps it across a restart (runtime-pools.toml).
TEST_F(DaemonTest, KvctlCreateSecureErase) {
    ASSERT_TRUE(start_daemon(config()));
    Proc r = ctl({"create", "erased", "--size", "32M", "--secure-erase", "--no-persist"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    r = ctl({"create", "plain", "--size", "32M", "--no-persist"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_EQ(parse(ctl({"--json", "status", "erased"}))["secure_erase"], true);
    EXPECT_EQ(parse(ctl({"--json", "status", "plain"}))["secure_erase"], false);
    EXPECT_EQ(stop_daemon(), 0);
    ASSERT_TRUE(start_daemon(config()));
    json s = parse(ctl({"--json", "status", "erased"}));
    EXPECT_EQ(s["secure_erase"], true) << s.dump();
    EXPECT_EQ(s["config_differs"], "") << s.dump();
    kv_pool *p = nullptr;
    char err[256] = "";
    ASSERT_EQ(kv_pool_attach(pool_path("erased").c_str(), 0, &p, err, sizeof err), 0) << err;
    EXPECT_TRUE(kv_pool_header(p)->incompat_features & KV_INCOMPAT_F_SECURE_ERASE);
    kv_pool_detach(p);
}

INSTANTIATE_TEST_SUITE_P(, EraseDaemonTest, ::testing::Bool(),
                         [](const auto &i) { return i.param ? "Erase" : "Plain"; });

} // namespace
