// SPDX-License-Identifier: MIT
//
// The remote tier's building blocks against a real 3-master Redis Cluster
// (tests/remote/redis_cluster.py): the value format (every rejection), the
// cluster client (routing across masters, MOVED after a reshard, ASK
// during a migration, a SIGKILLed master, a node restarted empty, a
// SIGSTOPped node, AUTH, bounded connections) and the two primitives that
// move blocks between a pool and the cluster (fetch_into_pool,
// upload_blocks), with real pools in /dev/shm.
//
// The cluster is started once for the whole program through the fixture's
// command line, with a watchdog that removes it if this process dies;
// tests that break a node put it back before they end.
#include "redis_cluster.h"
#include "remote_io.h"
#include "remote_keys.h"
#include "remote_value.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <set>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>
#include <xxhash.h>

using namespace kv::daemon;

namespace {

std::string fixture_script() {
    const char *s = std::getenv("KV_REDIS_CLUSTER");
    return s ? s : "tests/remote/redis_cluster.py";
}

// Runs a shell command; returns its exit status and stdout.
int sh(const std::string &cmd, std::string *out = nullptr) {
    FILE *f = popen(cmd.c_str(), "r");
    if (!f) return -1;
    std::string o;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        o.append(buf, n);
    int st = pclose(f);
    if (out) *out = o;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool have_redis() {
    return access("/usr/bin/redis-server", X_OK) == 0 && access("/usr/bin/redis-cli", X_OK) == 0;
}

// One private cluster, driven through redis_cluster.py.
struct Cluster {
    std::string dir;
    std::vector<std::string> seeds;
    std::string error;

    bool start(const std::string &extra = "") {
        char tmpl[] = "/tmp/kvpool-rc-XXXXXX";
        if (!mkdtemp(tmpl)) return false;
        dir = tmpl;
        rmdir(tmpl); // the fixture makes it, and removes it at stop
        std::string out;
        int rc = sh("/usr/bin/python3 " + fixture_script() + " start " + dir + " --watch-pid " +
                        std::to_string(getpid()) + " " + extra + " 2>&1",
                    &out);
        if (rc != 0) {
            error = out;
            return false;
        }
        size_t p = 0;
        while (p < out.size()) {
            size_t e = out.find('\n', p);
            if (e == std::string::npos) e = out.size();
            if (e > p) seeds.push_back(out.substr(p, e - p));
            p = e + 1;
        }
        return seeds.size() == 3;
    }
    void stop() {
        if (!dir.empty()) sh("/usr/bin/python3 " + fixture_script() + " stop " + dir);
        dir.clear();
    }
    int cmd(const std::string &args, std::string *out = nullptr) {
        return sh("/usr/bin/python3 " + fixture_script() + " " + args, out);
    }
    int node(const std::string &verb, int i) {
        return cmd(verb + " " + dir + " " + std::to_string(i));
    }
    int index_of(const std::string &addr) const {
        for (size_t i = 0; i < seeds.size(); i++)
            if (seeds[i] == addr) return int(i);
        return -1;
    }
};

Cluster *g_cluster = nullptr;

class ClusterEnv : public ::testing::Environment {
  public:
    void SetUp() override {
        if (!have_redis()) return;
        g_cluster = new Cluster;
        if (!g_cluster->start()) {
            std::fprintf(stderr, "cluster did not start: %s\n", g_cluster->error.c_str());
            g_cluster->stop();
            delete g_cluster;
            g_cluster = nullptr;
        }
    }
    void TearDown() override {
        if (g_cluster) g_cluster->stop();
        delete g_cluster;
        g_cluster = nullptr;
    }
};

[[maybe_unused]] const auto *g_env = ::testing::AddGlobalTestEnvironment(new ClusterEnv);

#define NEED_CLUSTER()                                                                             \
    do {                                                                                           \
        if (!have_redis()) GTEST_SKIP() << "redis-server/redis-cli not installed";                 \
        ASSERT_NE(g_cluster, nullptr) << "the cluster did not start";                              \
    } while (0)

ClusterOptions opts_for(const Cluster &c, uint32_t timeout_ms = 2000) {
    ClusterOptions o;
    o.seeds = c.seeds;
    o.timeout_ms = timeout_ms;
    return o;
}

std::vector<uint8_t> bytes_of(const std::string &s) {
    return {s.begin(), s.end()};
}

// SETs keys[i] = vals[i] (no head).
void set_all(ClusterClient &cc, const std::vector<std::string> &keys,
             const std::vector<std::vector<uint8_t>> &vals) {
    std::vector<SetItem> items;
    for (size_t i = 0; i < keys.size(); i++)
        items.push_back(SetItem{keys[i], {}, vals[i]});
    auto r = cc.set_many(items, 0);
    for (size_t i = 0; i < r.size(); i++)
        ASSERT_EQ(r[i].status, KeyStatus::Ok) << keys[i] << ": " << r[i].error;
}

std::vector<std::string> make_keys(const std::string &prefix, int n) {
    std::vector<std::string> k;
    for (int i = 0; i < n; i++)
        k.push_back(prefix + std::to_string(i));
    return k;
}

double secs_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// ---- value format -----------------------------------------------------------

kv_key K(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 1, ~i};
}

std::vector<uint8_t> make_value(const NsDigest &d, const kv_key &k,
                                const std::vector<uint8_t> &data) {
    kv_remote_header h = make_header(d, k, data.size(), XXH3_64bits(data.data(), data.size()));
    std::vector<uint8_t> v(sizeof h + data.size());
    std::memcpy(v.data(), &h, sizeof h);
    std::memcpy(v.data() + sizeof h, data.data(), data.size());
    return v;
}

TEST(RemoteValue, KeySlotMatchesRedis) {
    EXPECT_EQ(key_slot("foo"), 12182);
    EXPECT_EQ(key_slot("123456789"), 0x31c3 % 16384);
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
    EXPECT_EQ(key_slot("foo{}{bar}"), key_slot("foo{}{bar}")); // empty tag: whole key hashed
    EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));
    EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
}

TEST(RemoteValue, KeyNameIsPrefixDigestKey) {
    NsDigest d{0x1111222233334444ULL, 0xaaaabbbbccccddddULL};
    kv_key k{0x0102030405060708ULL, 0xf0e0d0c0b0a09080ULL};
    EXPECT_EQ(remote_key("kvpool:", d, k),
              "kvpool:aaaabbbbccccdddd1111222233334444:f0e0d0c0b0a090800102030405060708");
}

TEST(RemoteValue, DigestIsXxh3_128OfTheManifest) {
    kv_manifest m;
    kv_manifest_init(&m, "model-a", 16);
    XXH128_hash_t h = XXH3_128bits(&m, sizeof m);
    NsDigest d = ns_digest(m);
    EXPECT_EQ(d.lo, h.low64);
    EXPECT_EQ(d.hi, h.high64);
    kv_manifest_init(&m, "model-b", 16);
    EXPECT_NE(ns_digest(m), d);
}

TEST(RemoteValue, EveryFieldIsChecked) {
    NsDigest d{1, 2}, other{1, 3};
    kv_key k = K(7);
    std::vector<uint8_t> data(1000);
    for (size_t i = 0; i < data.size(); i++)
        data[i] = uint8_t(i * 31);
    auto good = make_value(d, k, data);
    auto check = [&](std::vector<uint8_t> v, const NsDigest &dd, const kv_key &kk) {
        return check_value(v, dd, kk).reject;
    };
    EXPECT_EQ(check(good, d, k), Reject::None);
    auto cv = check_value(good, d, k);
    EXPECT_EQ(cv.data.size(), data.size());
    EXPECT_EQ(0, std::memcmp(cv.data.data(), data.data(), data.size()));

    EXPECT_EQ(check(good, other, k), Reject::Namespace);
    EXPECT_EQ(check(good, d, K(8)), Reject::Key);
    EXPECT_EQ(check(make_value(d, K(8), data), d, k), Reject::Key); // another key's value
    auto v = good;
    v[sizeof(kv_remote_header) + 500] ^= 1;
    EXPECT_EQ(check(v, d, k), Reject::Checksum);
    v = good;
    v.resize(v.size() - 1);
    EXPECT_EQ(check(v, d, k), Reject::Truncated);
    v.resize(100);
    EXPECT_EQ(check(v, d, k), Reject::Truncated);
    EXPECT_EQ(check({}, d, k), Reject::Truncated);
    v = good;
    v.push_back(0);
    EXPECT_EQ(check(v, d, k), Reject::Length);

    auto with = [&](auto mutate) {
        auto x = good;
        kv_remote_header h;
        std::memcpy(&h, x.data(), sizeof h);
        mutate(h);
        std::memcpy(x.data(), &h, sizeof h);
        return check(x, d, k);
    };
    EXPECT_EQ(with([](kv_remote_header &h) { h.magic ^= 0x100; }), Reject::Magic);
    EXPECT_EQ(with([](kv_remote_header &h) { h.version = 2; }), Reject::Version);
    EXPECT_EQ(with([](kv_remote_header &h) { h.version = 0; }), Reject::Version);
    EXPECT_EQ(with([](kv_remote_header &h) { h.header_size = 136; }), Reject::HeaderSize);
    EXPECT_EQ(with([](kv_remote_header &h) { h.flags = 2; }), Reject::Flags);
    // Encrypted: a crypto block would take 128 of the bytes, leaving fewer
    // than length.
    EXPECT_EQ(with([](kv_remote_header &h) { h.flags = KV_REMOTE_F_ENCRYPTED; }),
              Reject::Truncated);
    EXPECT_EQ(with([](kv_remote_header &h) { h.reserved[7] = 1; }), Reject::Reserved);
    EXPECT_EQ(with([](kv_remote_header &h) { h.length = 0; }), Reject::Length);
    EXPECT_EQ(with([](kv_remote_header &h) { h.length += 1; }), Reject::Truncated);
    EXPECT_EQ(with([](kv_remote_header &h) { h.checksum ^= 1; }), Reject::Checksum);
    // Every rejection says what it saw.
    auto bad = check_value(good, other, k);
    EXPECT_NE(bad.detail.find("expected"), std::string::npos) << bad.detail;
    EXPECT_STREQ(reject_name(Reject::Checksum), "checksum");
}

// ---- cluster client ------------------------------------------------------------

TEST(RedisCluster, RoutesKeysAcrossAllMasters) {
    NEED_CLUSTER();
    ClusterClient cc(opts_for(*g_cluster));
    auto keys = make_keys("route:", 300);
    std::vector<std::vector<uint8_t>> vals;
    for (auto &k : keys)
        vals.push_back(bytes_of("value of " + k));
    set_all(cc, keys, vals);
    std::set<std::string> nodes;
    for (auto &k : keys)
        nodes.insert(cc.node_for(k));
    EXPECT_EQ(nodes.size(), 3u);
    for (auto &n : nodes)
        EXPECT_GE(g_cluster->index_of(n), 0) << n;

    auto miss = make_keys("route-missing:", 20);
    std::vector<std::string> all = keys;
    all.insert(all.end(), miss.begin(), miss.end());
    auto got = cc.get_many(all);
    ASSERT_EQ(got.size(), all.size());
    for (size_t i = 0; i < keys.size(); i++) {
        ASSERT_EQ(got[i].status, KeyStatus::Ok) << got[i].error;
        EXPECT_EQ(std::string(got[i].value().begin(), got[i].value().end()), "value of " + keys[i]);
    }
    for (size_t i = keys.size(); i < all.size(); i++)
        EXPECT_EQ(got[i].status, KeyStatus::Missing);
    EXPECT_EQ(cc.stats().moved, 0u);
    EXPECT_LE(cc.open_connections(), 3u);

    // Each key really is on the node its slot names (no redirects were
    // needed, and the node holds it locally).
    std::string out;
    int owner = g_cluster->index_of(cc.node_for(keys[0]));
    g_cluster->cmd("cli " + g_cluster->dir + " " + std::to_string(owner) + " GET " + keys[0], &out);
    EXPECT_EQ(out, "value of " + keys[0] + "\n");
}

TEST(RedisCluster, GetManyReadsAtMostMaxBytes) {
    NEED_CLUSTER();
    ClusterClient cc(opts_for(*g_cluster));
    set_all(cc, {"cap:big", "cap:small"},
            {std::vector<uint8_t>(100000, 'b'), std::vector<uint8_t>(10, 's')});
    auto got = cc.get_many(std::vector<std::string>{"cap:big", "cap:small", "cap:none"}, 1000);
    ASSERT_EQ(got[0].status, KeyStatus::Ok) << got[0].error;
    EXPECT_EQ(got[0].value().size(), 1000u);
    ASSERT_EQ(got[1].status, KeyStatus::Ok) << got[1].error;
    EXPECT_EQ(got[1].value().size(), 10u);
    EXPECT_EQ(got[2].status, KeyStatus::Missing);
}

TEST(RedisCluster, OneConnectionServesThreeMasters) {
    NEED_CLUSTER();
    ClusterOptions o = opts_for(*g_cluster);
    o.max_connections = 1;
    ClusterClient cc(o);
    auto keys = make_keys("oneconn:", 60);
    std::vector<std::vector<uint8_t>> vals(keys.size(), bytes_of("x"));
    set_all(cc, keys, vals);
    auto got = cc.get_many(keys);
    for (auto &g : got)
        EXPECT_EQ(g.status, KeyStatus::Ok) << g.error;
    EXPECT_LE(cc.open_connections(), 1u);
    EXPECT_GE(cc.stats().connects, 3u);
}

TEST(RedisCluster, FollowsMovedAfterReshard) {
    NEED_CLUSTER();
    ClusterClient cc(opts_for(*g_cluster));
    auto keys = make_keys("moved:", 400);
    std::vector<std::vector<uint8_t>> vals;
    for (auto &k : keys)
        vals.push_back(bytes_of(k));
    set_all(cc, keys, vals);
    ASSERT_EQ(cc.stats().moved, 0u);
    // Move 400 slots (and their keys) from node 0 to node 1 behind the
    // client's back: its map is now wrong for them.
    ASSERT_EQ(0, g_cluster->cmd("reshard " + g_cluster->dir + " 0 1 400"));
    auto got = cc.get_many(keys);
    for (size_t i = 0; i < keys.size(); i++) {
        ASSERT_EQ(got[i].status, KeyStatus::Ok) << keys[i] << ": " << got[i].error;
        EXPECT_EQ(std::string(got[i].value().begin(), got[i].value().end()), keys[i]);
    }
    EXPECT_GT(cc.stats().moved, 0u);
    EXPECT_GE(cc.stats().refreshes, 2u);
    // The refreshed map needs no more redirects.
    uint64_t moved = cc.stats().moved;
    got = cc.get_many(keys);
    for (auto &g : got)
        EXPECT_EQ(g.status, KeyStatus::Ok);
    EXPECT_EQ(cc.stats().moved, moved);
    // Writes follow too: a fresh client's writes land where reads find them.
    ASSERT_EQ(0, g_cluster->cmd("reshard " + g_cluster->dir + " 1 2 200"));
    set_all(cc, keys, vals);
    ClusterClient fresh(opts_for(*g_cluster));
    got = fresh.get_many(keys);
    for (auto &g : got)
        EXPECT_EQ(g.status, KeyStatus::Ok);
    EXPECT_EQ(fresh.stats().moved, 0u);
}

TEST(RedisCluster, FollowsAskDuringMigration) {
    NEED_CLUSTER();
    ClusterClient cc(opts_for(*g_cluster));
    ASSERT_EQ(cc.refresh(), "");
    // Two keys in one slot (a hash tag): one is migrated, one stays.
    const std::string moved_key = "{ask-slot}a", staying = "{ask-slot}b", fresh_key = "{ask-slot}c";
    set_all(cc, {moved_key, staying}, {bytes_of("A"), bytes_of("B")});
    const uint16_t slot = key_slot(moved_key);
    const int src = g_cluster->index_of(cc.node_for(moved_key));
    ASSERT_GE(src, 0);
    const int dst = (src + 1) % 3;
    const std::string d = g_cluster->dir, s = std::to_string(slot);
    ASSERT_EQ(0, g_cluster->cmd("migrate-begin " + d + " " + s + " " + std::to_string(src) + " " +
                                std::to_string(dst)));
    ASSERT_EQ(0, g_cluster->cmd("migrate-keys " + d + " " + s + " " + std::to_string(src) + " " +
                                std::to_string(dst) + " " + moved_key));
    auto got = cc.get_many(std::vector<std::string>{moved_key, staying});
    EXPECT_EQ(got[0].status, KeyStatus::Ok) << got[0].error;
    EXPECT_EQ(got[1].status, KeyStatus::Ok) << got[1].error;
    EXPECT_GE(cc.stats().ask, 1u);
    EXPECT_EQ(cc.stats().moved, 0u); // ASK does not change the map
    EXPECT_EQ(g_cluster->index_of(cc.node_for(moved_key)), src);
    // A new key of a migrating slot is written on the importing node.
    uint64_t ask = cc.stats().ask;
    set_all(cc, {fresh_key}, {bytes_of("C")});
    EXPECT_GT(cc.stats().ask, ask);
    ASSERT_EQ(0, g_cluster->cmd("migrate-keys " + d + " " + s + " " + std::to_string(src) + " " +
                                std::to_string(dst) + " " + staying));
    ASSERT_EQ(0, g_cluster->cmd("migrate-end " + d + " " + s + " " + std::to_string(dst)));
    got = cc.get_many(std::vector<std::string>{moved_key, staying, fresh_key});
    for (auto &g : got)
        EXPECT_EQ(g.status, KeyStatus::Ok) << g.error;
    EXPECT_GE(cc.stats().moved, 1u);
    EXPECT_EQ(g_cluster->index_of(cc.node_for(moved_key)), dst);
}

TEST(RedisCluster, KilledMasterErrorsThenComesBackEmpty) {
    NEED_CLUSTER();
    ClusterClient cc(opts_for(*g_cluster, 1000));
    auto keys = make_keys("kill:", 150);
    std::vector<std::vector<uint8_t>> vals(keys.size(), bytes_of("v"));
    set_all(cc, keys, vals);
    const int victim = 2;
    ASSERT_EQ(0, g_cluster->node("kill", victim));
    auto t0 = std::chrono::steady_clock::now();
    auto got = cc.get_many(keys);
    EXPECT_LT(secs_since(t0), 3.0);
    size_t errors = 0, ok = 0;
    for (size_t i = 0; i < keys.size(); i++) {
        bool on_victim = g_cluster->index_of(cc.node_for(keys[i])) == victim;
        if (on_victim) {
            EXPECT_EQ(got[i].status, KeyStatus::Error);
            EXPECT_NE(got[i].error.find(g_cluster->seeds[victim]), std::string::npos)
                << got[i].error;
            errors++;
        } else {
            EXPECT_EQ(got[i].status, KeyStatus::Ok) << got[i].error;
            ok++;
        }
    }
    EXPECT_GT(errors, 0u);
    EXPECT_GT(ok, 0u);
    EXPECT_GT(cc.stats().connect_errors + cc.stats().io_errors, 0u);
    // Writes to the dead node fail too, the others succeed.
    std::vector<SetItem> items;
    for (size_t i = 0; i < keys.size(); i++)
        items.push_back(SetItem{keys[i], {}, vals[i]});
    auto sr = cc.set_many(items, 0);
    for (size_t i = 0; i < keys.size(); i++)
        EXPECT_EQ(sr[i].status == KeyStatus::Ok,
                  g_cluster->index_of(cc.node_for(keys[i])) != victim);

    // Back, with no data (nothing persisted): its keys are misses, the
    // client reconnects by itself.
    ASSERT_EQ(0, g_cluster->node("restart", victim));
    got = cc.get_many(keys);
    for (size_t i = 0; i < keys.size(); i++) {
        bool on_victim = g_cluster->index_of(cc.node_for(keys[i])) == victim;
        EXPECT_EQ(got[i].status, on_victim ? KeyStatus::Missing : KeyStatus::Ok)
            << keys[i] << ": " << got[i].error;
    }
}

// A node that restarts between two calls leaves the client a connection
// that fails on first use. The client reconnects and sends that node's
// batch once more (GET and SET are idempotent), so a restart between
// calls costs no error: reads are misses (it came back empty), writes land.
TEST(RedisCluster, NodeRestartedBetweenCallsIsReconnected) {
    NEED_CLUSTER();
    ClusterClient cc(opts_for(*g_cluster, 1000));
    auto keys = make_keys("bounce:", 150);
    std::vector<std::vector<uint8_t>> vals(keys.size(), bytes_of("v"));
    set_all(cc, keys, vals); // a connection to every master is now open
    const int victim = 1;
    ASSERT_EQ(0, g_cluster->node("restart", victim));
    auto got = cc.get_many(keys);
    size_t on_victim = 0;
    for (size_t i = 0; i < keys.size(); i++) {
        const bool v = g_cluster->index_of(cc.node_for(keys[i])) == victim;
        on_victim += v;
        EXPECT_EQ(got[i].status, v ? KeyStatus::Missing : KeyStatus::Ok)
            << keys[i] << ": " << got[i].error;
    }
    EXPECT_GT(on_victim, 0u);
    EXPECT_GT(cc.stats().resends, 0u);
    ASSERT_EQ(0, g_cluster->node("restart", victim));
    std::vector<SetItem> items;
    for (size_t i = 0; i < keys.size(); i++)
        items.push_back(SetItem{keys[i], {}, vals[i]});
    auto sr = cc.set_many(items, 0);
    for (size_t i = 0; i < keys.size(); i++)
        EXPECT_EQ(sr[i].status, KeyStatus::Ok) << keys[i] << ": " << sr[i].error;
}

TEST(RedisCluster, StoppedNodeTimesOutBounded) {
    NEED_CLUSTER();
    const uint32_t timeout_ms = 300;
    ClusterClient cc(opts_for(*g_cluster, timeout_ms));
    auto keys = make_keys("stop:", 150);
    std::vector<std::vector<uint8_t>> vals(keys.size(), std::vector<uint8_t>(4096, 7));
    set_all(cc, keys, vals);
    const int victim = 1;
    ASSERT_EQ(0, g_cluster->node("sigstop", victim));
    struct Cont {
        ~Cont() { g_cluster->node("sigcont", 1); }
    } cont;
    auto t0 = std::chrono::steady_clock::now();
    auto got = cc.get_many(keys);
    double t = secs_since(t0);
    // One timeout for the node's replies (the map refresh comes at the
    // next call).
    EXPECT_LT(t, 3 * timeout_ms / 1000.0) << t;
    size_t errors = 0;
    for (size_t i = 0; i < keys.size(); i++) {
        bool on_victim = g_cluster->index_of(cc.node_for(keys[i])) == victim;
        EXPECT_EQ(got[i].status, on_victim ? KeyStatus::Error : KeyStatus::Ok);
        errors += on_victim;
    }
    EXPECT_GT(errors, 0u);
    // Next call: refresh may try the stopped node, then the keys time out
    // again: still bounded.
    t0 = std::chrono::steady_clock::now();
    std::vector<SetItem> items;
    for (size_t i = 0; i < keys.size(); i++)
        items.push_back(SetItem{keys[i], {}, vals[i]});
    auto sr = cc.set_many(items, 0);
    t = secs_since(t0);
    // The map refresh asks the node that just failed last.
    EXPECT_LT(t, 2 * timeout_ms / 1000.0 + 0.3) << t;
    g_cluster->node("sigcont", victim);
    got = cc.get_many(keys);
    for (auto &g : got)
        EXPECT_EQ(g.status, KeyStatus::Ok) << g.error;
}

TEST(RedisCluster, AuthWithUserAndPassword) {
    if (!have_redis()) GTEST_SKIP() << "redis-server/redis-cli not installed";
    Cluster c;
    ASSERT_TRUE(c.start("--user alice --password s3cret")) << c.error;
    struct Stop {
        Cluster &c;
        ~Stop() { c.stop(); }
    } stop{c};
    ClusterOptions o = opts_for(c, 1000);
    o.username = "alice";
    o.password = "s3cret";
    {
        ClusterClient cc(o);
        auto keys = make_keys("auth:", 30);
        std::vector<std::vector<uint8_t>> vals(keys.size(), bytes_of("x"));
        set_all(cc, keys, vals);
        auto got = cc.get_many(keys);
        for (auto &g : got)
            EXPECT_EQ(g.status, KeyStatus::Ok) << g.error;
    }
    {
        ClusterOptions bad = o;
        bad.password = "wrong";
        ClusterClient cc(bad);
        auto got = cc.get_many(make_keys("auth:", 3));
        for (auto &g : got) {
            EXPECT_EQ(g.status, KeyStatus::Error);
            EXPECT_NE(g.error.find("AUTH"), std::string::npos) << g.error;
        }
        EXPECT_NE(cc.refresh(), "");
        EXPECT_GT(cc.stats().connect_errors, 0u);
    }
    {
        ClusterOptions none = o;
        none.username.clear();
        none.password.clear();
        ClusterClient cc(none);
        auto got = cc.get_many(make_keys("auth:", 3));
        for (auto &g : got) {
            EXPECT_EQ(g.status, KeyStatus::Error);
            EXPECT_NE(g.error.find("NOAUTH"), std::string::npos) << g.error;
        }
    }
}

TEST(RedisCluster, NoSeedAnswers) {
    ClusterOptions o;
    o.seeds = {"127.0.0.1:1", "not-an-address"};
    o.timeout_ms = 200;
    ClusterClient cc(o);
    auto t0 = std::chrono::steady_clock::now();
    auto got = cc.get_many(make_keys("x", 5));
    EXPECT_LT(secs_since(t0), 1.0);
    for (auto &g : got) {
        EXPECT_EQ(g.status, KeyStatus::Error);
        EXPECT_NE(g.error.find("127.0.0.1:1"), std::string::npos) << g.error;
    }
}

// ---- pool <-> cluster -------------------------------------------------------------

struct Pool {
    std::string path;
    kv_pool *pool = nullptr;
    uint32_t ns = 0;
    kv_manifest m{};
    NsDigest digest;

    explicit Pool(const char *tag, const char *model = "remote-model") {
        static int seq = 0;
        path = "/dev/shm/kvtest-remote-" + std::to_string(getpid()) + "-" + tag + "-" +
               std::to_string(seq++);
        kv_create_opts co;
        kv_create_opts_init(&co, 96ULL << 20);
        char err[256] = "";
        if (kv_pool_create(path.c_str(), &co, err, sizeof err) != 0) {
            ADD_FAILURE() << "kv_pool_create " << path << ": " << err;
            return;
        }
        if (kv_pool_attach(path.c_str(), 0, &pool, err, sizeof err) != 0) {
            ADD_FAILURE() << "kv_pool_attach: " << err;
            return;
        }
        kv_manifest_init(&m, model, 16);
        EXPECT_EQ(0, kv_ns_register(pool, &m, &ns, nullptr));
        digest = ns_digest(m);
    }
    ~Pool() {
        if (pool) kv_pool_detach(pool);
        kv_pool_destroy(path.c_str());
    }
};

std::vector<uint8_t> block_bytes(uint64_t i, size_t len) {
    std::vector<uint8_t> d(len);
    uint64_t x = i * 0x9e3779b97f4a7c15ULL + 3;
    for (size_t k = 0; k < len; k += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        std::memcpy(d.data() + k, &x, std::min<size_t>(8, len - k));
    }
    return d;
}

// Puts a chain of n blocks of len bytes under keys base..base+n-1.
std::vector<kv_key> put_chain(Pool &p, uint64_t base, size_t n, size_t len) {
    std::vector<kv_key> keys;
    for (size_t i = 0; i < n; i++) {
        keys.push_back(K(base + i));
        auto d = block_bytes(base + i, len);
        kv_put_opts po{};
        po.struct_size = sizeof po;
        po.meta.tokens = 16;
        if (i) {
            po.flags = KV_PUT_F_PARENT;
            po.parent = keys[i - 1];
        }
        EXPECT_EQ(0, kv_put_ex(p.pool, p.ns, &keys[i], d.data(), d.size(), &po));
    }
    return keys;
}

std::vector<UploadItem> items_for(const Pool &p, const std::vector<kv_key> &keys) {
    std::vector<UploadItem> items;
    for (auto &k : keys) {
        UploadItem it;
        it.ns = p.ns;
        it.key = k;
        it.digest = p.digest;
        items.push_back(it);
    }
    return items;
}

void expect_block(Pool &p, const kv_key &k, uint64_t i, size_t len) {
    kv_view v;
    ASSERT_EQ(0, kv_get(p.pool, p.ns, &k, &v));
    auto d = block_bytes(i, len);
    EXPECT_EQ(v.length, len);
    EXPECT_EQ(0, std::memcmp(v.data, d.data(), len));
    EXPECT_EQ(0, kv_view_verify(&v));
    EXPECT_EQ(v.meta.tokens, 16u);
    kv_release(p.pool, &v);
}

UploadOptions upload_opts(const std::string &prefix) {
    UploadOptions o;
    o.key_prefix = prefix;
    return o;
}
FetchOptions fetch_opts(const std::string &prefix, uint32_t batch = 4) {
    FetchOptions o;
    o.key_prefix = prefix;
    o.batch = batch;
    return o;
}

TEST(RemoteIo, ChainRoundTripsBetweenTwoPools) {
    NEED_CLUSTER();
    Pool a("a"), b("b");
    ASSERT_TRUE(a.pool && b.pool);
    const size_t len = 256 << 10, n = 10;
    auto keys = put_chain(a, 1000, n, len);
    ClusterClient up(opts_for(*g_cluster)), down(opts_for(*g_cluster));
    const std::string prefix = "rt" + std::to_string(getpid()) + ":";
    auto items = items_for(a, keys);
    items[0].length = len; // the expected length is checked when given
    auto ur = upload_blocks(up, a.pool, items, upload_opts(prefix));
    EXPECT_EQ(ur.uploaded, n) << ur.error;
    EXPECT_EQ(ur.bytes, n * len);
    for (auto s : ur.status)
        EXPECT_EQ(s, UploadStatus::Uploaded);

    // Host B has the first two blocks already; it fetches from 2 on.
    put_chain(b, 1000, 2, len);
    auto fr = fetch_into_pool(down, b.pool, b.ns, b.digest, keys, 2, fetch_opts(prefix));
    EXPECT_EQ(fr.committed, n - 2) << fr.error;
    EXPECT_EQ(fr.fetched, n - 2);
    EXPECT_EQ(fr.missing + fr.rejected + fr.errors, 0u);
    EXPECT_EQ(fr.bytes, (n - 2) * len);
    for (size_t i = 0; i < n; i++)
        expect_block(b, keys[i], 1000 + i, len);
    // The parent is the previous key of the chain: kv_match_prefix sees it whole.
    EXPECT_EQ(kv_match_prefix(b.pool, b.ns, keys.data(), n, 0, nullptr), int(n));

    // Again from 0: everything is present already.
    fr = fetch_into_pool(down, b.pool, b.ns, b.digest, keys, 0, fetch_opts(prefix));
    EXPECT_EQ(fr.committed, n);
    EXPECT_EQ(fr.present, n);
    EXPECT_EQ(fr.fetched, 0u);

    // A namespace with another manifest finds nothing under its own digest,
    // and a digest that is not the namespace's is refused outright.
    Pool c("c", "another-model");
    fr = fetch_into_pool(down, c.pool, c.ns, c.digest, keys, 0, fetch_opts(prefix));
    EXPECT_EQ(fr.committed, 0u);
    EXPECT_EQ(fr.missing, 1u);
    fr = fetch_into_pool(down, c.pool, c.ns, a.digest, keys, 0, fetch_opts(prefix));
    EXPECT_EQ(fr.errors, 1u);
    EXPECT_EQ(fr.committed, 0u);
    EXPECT_EQ(kv_contains(c.pool, c.ns, &keys[0]), 0);
}

TEST(RemoteIo, FetchStopsAtTheFirstHole) {
    NEED_CLUSTER();
    Pool a("a"), b("b");
    const size_t len = 64 << 10, n = 8;
    auto keys = put_chain(a, 2000, n, len);
    ClusterClient cc(opts_for(*g_cluster));
    const std::string prefix = "hole" + std::to_string(getpid()) + ":";
    auto ur = upload_blocks(cc, a.pool, items_for(a, keys), upload_opts(prefix));
    ASSERT_EQ(ur.uploaded, n) << ur.error;
    const std::string k5 = remote_key(prefix, a.digest, keys[5]);
    ASSERT_EQ(0, g_cluster->cmd("cli " + g_cluster->dir + " 0 -c DEL " + k5));
    auto fr = fetch_into_pool(cc, b.pool, b.ns, b.digest, keys, 0, fetch_opts(prefix, 3));
    EXPECT_EQ(fr.committed, 5u);
    EXPECT_EQ(fr.missing, 1u);
    for (size_t i = 0; i < n; i++)
        EXPECT_EQ(kv_contains(b.pool, b.ns, &keys[i]), i < 5 ? 1 : 0);
}

TEST(RemoteIo, EveryBadValueIsRejectedAndNeverCommitted) {
    NEED_CLUSTER();
    Pool a("a"), b("b");
    Pool other("o", "other-model");
    const size_t len = 32 << 10;
    auto keys = put_chain(a, 3000, 2, len);
    ClusterClient cc(opts_for(*g_cluster));
    const std::string prefix = "bad" + std::to_string(getpid()) + ":";
    ASSERT_EQ(upload_blocks(cc, a.pool, items_for(a, keys), upload_opts(prefix)).uploaded, 2u);
    const std::string k1 = remote_key(prefix, a.digest, keys[1]);
    auto good = cc.get_many(std::vector<std::string>{remote_key(prefix, a.digest, keys[0]), k1});
    ASSERT_EQ(good[1].status, KeyStatus::Ok);
    const std::vector<uint8_t> v0(good[0].value().begin(), good[0].value().end());
    const std::vector<uint8_t> v1(good[1].value().begin(), good[1].value().end());
    auto data1 = block_bytes(3001, len);

    struct Case {
        const char *what;
        std::vector<uint8_t> value;
        Reject expect;
    };
    std::vector<Case> cases;
    cases.push_back({"another key's value", v0, Reject::Key});
    cases.push_back(
        {"wrong namespace", make_value(other.digest, keys[1], data1), Reject::Namespace});
    auto flipped = v1;
    flipped[sizeof(kv_remote_header) + len / 2] ^= 0x20;
    cases.push_back({"flipped byte", flipped, Reject::Checksum});
    auto truncated = v1;
    truncated.resize(truncated.size() - 4096);
    cases.push_back({"truncated", truncated, Reject::Truncated});
    auto magic = v1;
    magic[0] ^= 0xff;
    cases.push_back({"bad magic", magic, Reject::Magic});
    auto version = v1;
    version[8] = 9;
    cases.push_back({"bad version", version, Reject::Version});
    cases.push_back({"not ours at all", bytes_of("hello"), Reject::Truncated});
    // Well formed, but larger than the pool's largest block (its slab).
    cases.push_back(
        {"oversize", make_value(b.digest, keys[1], block_bytes(1, 5u << 20)), Reject::Oversize});

    for (auto &c : cases) {
        SCOPED_TRACE(c.what);
        set_all(cc, {k1}, {c.value});
        auto fr = fetch_into_pool(cc, b.pool, b.ns, b.digest, keys, 0, fetch_opts(prefix));
        EXPECT_EQ(fr.committed, 1u); // block 0 is fine
        EXPECT_EQ(fr.rejected, 1u) << fr.error;
        EXPECT_EQ(fr.rejected_by[size_t(c.expect)], 1u) << fr.error;
        EXPECT_FALSE(fr.error.empty());
        EXPECT_EQ(kv_contains(b.pool, b.ns, &keys[1]), 0);
        kv_usage u;
        ASSERT_EQ(0, kv_pool_usage(b.pool, &u));
        EXPECT_EQ(u.entries_reserved, 0u);
        EXPECT_EQ(u.entries_committed, 1u);
    }
    // The good value goes in.
    set_all(cc, {k1}, {v1});
    auto fr = fetch_into_pool(cc, b.pool, b.ns, b.digest, keys, 0, fetch_opts(prefix));
    EXPECT_EQ(fr.committed, 2u) << fr.error;
    expect_block(b, keys[1], 3001, len);
}

TEST(RemoteIo, UploadBatchesStayWithinThePinBudget) {
    NEED_CLUSTER();
    // 64 small blocks, 16 pins per client: one batch of all would run out.
    std::string path = "/dev/shm/kvtest-remote-" + std::to_string(getpid()) + "-pins";
    kv_create_opts co;
    kv_create_opts_init(&co, 32ULL << 20);
    co.pins_per_client = 16;
    char err[256] = "";
    ASSERT_EQ(0, kv_pool_create(path.c_str(), &co, err, sizeof err)) << err;
    kv_pool *pool = nullptr;
    ASSERT_EQ(0, kv_pool_attach(path.c_str(), 0, &pool, err, sizeof err)) << err;
    struct Gone {
        std::string p;
        kv_pool *h;
        ~Gone() {
            kv_pool_detach(h);
            kv_pool_destroy(p.c_str());
        }
    } gone{path, pool};
    kv_manifest m;
    kv_manifest_init(&m, "pins", 16);
    uint32_t ns = 0;
    ASSERT_EQ(0, kv_ns_register(pool, &m, &ns, nullptr));
    std::vector<UploadItem> items;
    for (uint64_t i = 0; i < 64; i++) {
        UploadItem it;
        it.ns = ns;
        it.key = K(7000 + i);
        it.digest = ns_digest(m);
        auto d = block_bytes(i, 4096);
        ASSERT_EQ(0, kv_put(pool, ns, &it.key, d.data(), d.size(), nullptr));
        items.push_back(it);
    }
    ClusterClient cc(opts_for(*g_cluster));
    UploadOptions uo = upload_opts("pins" + std::to_string(getpid()) + ":");
    uo.batch_blocks = 16;
    auto ur = upload_blocks(cc, pool, items, uo);
    EXPECT_EQ(ur.uploaded, 64u) << ur.error;
    uo.batch_blocks = 64; // more than the budget: the pins run out
    ur = upload_blocks(cc, pool, items, uo);
    EXPECT_LT(ur.uploaded, 64u);
    EXPECT_NE(ur.error.find("kv_get"), std::string::npos) << ur.error;
}

TEST(RemoteIo, UploadSkipsGoneAndChangedBlocks) {
    NEED_CLUSTER();
    Pool a("a");
    const size_t len = 16 << 10;
    auto keys = put_chain(a, 4000, 4, len);
    ASSERT_EQ(0, kv_remove(a.pool, a.ns, &keys[1]));
    auto items = items_for(a, keys);
    items[2].length = len + 1;   // not the length the event announced
    items[3].entry = 0xfffffff0; // another entry than the one holding it
    UploadItem wrong = items[0];
    wrong.digest.lo ^= 1; // not the namespace's manifest: never published
    items.push_back(wrong);
    ClusterClient cc(opts_for(*g_cluster));
    const std::string prefix = "skip" + std::to_string(getpid()) + ":";
    auto ur = upload_blocks(cc, a.pool, items, upload_opts(prefix));
    EXPECT_EQ(ur.uploaded, 1u);
    EXPECT_EQ(ur.gone, 1u);
    EXPECT_EQ(ur.changed, 2u);
    EXPECT_EQ(ur.status[0], UploadStatus::Uploaded);
    EXPECT_EQ(ur.status[1], UploadStatus::Gone);
    EXPECT_EQ(ur.status[2], UploadStatus::Changed);
    EXPECT_EQ(ur.status[3], UploadStatus::Changed);
    EXPECT_EQ(ur.status[4], UploadStatus::Error);
    EXPECT_EQ(ur.errors, 1u);
    EXPECT_NE(ur.error.find("digest"), std::string::npos) << ur.error;
    auto got = cc.get_many(std::vector<std::string>{remote_key(prefix, wrong.digest, keys[0])});
    EXPECT_EQ(got[0].status, KeyStatus::Missing);
    // No pin is left behind.
    kv_usage u;
    ASSERT_EQ(0, kv_pool_usage(a.pool, &u));
    EXPECT_EQ(u.pins, 0u);
}

TEST(RemoteIo, UploadToADeadMasterFailsOnlyItsBlocks) {
    NEED_CLUSTER();
    Pool a("a"), b("b");
    const size_t len = 16 << 10, n = 40;
    auto keys = put_chain(a, 5000, n, len);
    ClusterClient cc(opts_for(*g_cluster, 1000));
    ASSERT_EQ(cc.refresh(), "");
    const std::string prefix = "dead" + std::to_string(getpid()) + ":";
    const int victim = 0;
    ASSERT_EQ(0, g_cluster->node("kill", victim));
    struct Back {
        ~Back() { g_cluster->node("restart", 0); }
    } back;
    auto ur = upload_blocks(cc, a.pool, items_for(a, keys), upload_opts(prefix));
    size_t on_victim = 0;
    for (size_t i = 0; i < n; i++) {
        bool v = g_cluster->index_of(cc.node_for(remote_key(prefix, a.digest, keys[i]))) == victim;
        on_victim += v;
        EXPECT_EQ(ur.status[i], v ? UploadStatus::Error : UploadStatus::Uploaded);
    }
    EXPECT_GT(on_victim, 0u);
    EXPECT_EQ(ur.errors, on_victim);
    EXPECT_FALSE(ur.error.empty());
    kv_usage u;
    ASSERT_EQ(0, kv_pool_usage(a.pool, &u));
    EXPECT_EQ(u.pins, 0u);
    // A fetch stops at the first block that was not stored (an error: its
    // node is down), having committed the ones before it.
    auto fr = fetch_into_pool(cc, b.pool, b.ns, b.digest, keys, 0, fetch_opts(prefix));
    size_t first_bad = 0;
    while (first_bad < n && ur.status[first_bad] == UploadStatus::Uploaded)
        first_bad++;
    EXPECT_EQ(fr.committed, first_bad);
    EXPECT_EQ(fr.errors, 1u);
}

// Encrypted pools through the cluster: what is stored is ciphertext; a
// host with the key reads it byte-exact; a wrong key, an unknown key id, a
// pool without keys and plaintext offered to an encrypted pool are refused
// by reason and leave nothing in the pool; after a rotation both keys'
// values read.
TEST(RemoteIo, EncryptedValuesRoundTripAndRefuseEveryOtherReader) {
    NEED_CLUSTER();
    auto k1 = kvtest::make_keyring({{"k1", 1}}, "k1");
    auto wrong = kvtest::make_keyring({{"k1", 8}}, "k1");
    auto other = kvtest::make_keyring({{"k9", 9}}, "k9");
    auto rotated = kvtest::make_keyring({{"k1", 1}, {"k2", 2}}, "k2");
    ASSERT_TRUE(k1 && wrong && other && rotated);
    Pool a("a"), b("b");
    const size_t len = 64 << 10, n = 6;
    auto keys = put_chain(a, 6000, n, len);
    ClusterClient cc(opts_for(*g_cluster));
    const std::string prefix = "enc" + std::to_string(getpid()) + ":";
    UploadOptions uo = upload_opts(prefix);
    uo.keyring = k1.get();
    auto ur = upload_blocks(cc, a.pool, items_for(a, keys), uo);
    ASSERT_EQ(ur.uploaded, n) << ur.error;
    EXPECT_EQ(ur.bytes, n * len);

    // The store holds ciphertext: no 32 bytes of any block are in its value.
    std::vector<std::string> names;
    for (auto &k : keys)
        names.push_back(remote_key(prefix, a.digest, k));
    auto stored = cc.get_many(names);
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(stored[i].status, KeyStatus::Ok);
        auto v = stored[i].value();
        EXPECT_EQ(v.size(), kSealedHeadBytes + len);
        auto d = block_bytes(6000 + i, len);
        for (size_t off = 0; off + 32 <= len; off += 4096)
            EXPECT_EQ(memmem(v.data(), v.size(), d.data() + off, 32), nullptr)
                << "block " << i << " offset " << off;
    }

    auto expect_refused = [&](const Keyring *kr, Reject why, const char *what) {
        SCOPED_TRACE(what);
        Pool c("c");
        FetchOptions fo = fetch_opts(prefix);
        fo.keyring = kr;
        auto fr = fetch_into_pool(cc, c.pool, c.ns, c.digest, keys, 0, fo);
        EXPECT_EQ(fr.committed, 0u);
        EXPECT_EQ(fr.rejected, 1u) << fr.error;
        EXPECT_EQ(fr.rejected_by[size_t(why)], 1u) << fr.error;
        kv_usage u;
        ASSERT_EQ(0, kv_pool_usage(c.pool, &u));
        EXPECT_EQ(u.entries_reserved, 0u);
        EXPECT_EQ(u.entries_committed, 0u);
    };
    expect_refused(wrong.get(), Reject::Decrypt, "the wrong key under the same id");
    expect_refused(other.get(), Reject::KeyId, "another key id");
    expect_refused(nullptr, Reject::KeyId, "a pool without keys");

    FetchOptions fo = fetch_opts(prefix);
    fo.keyring = k1.get();
    auto fr = fetch_into_pool(cc, b.pool, b.ns, b.digest, keys, 0, fo);
    EXPECT_EQ(fr.committed, n) << fr.error;
    EXPECT_EQ(fr.fetched, n);
    for (size_t i = 0; i < n; i++)
        expect_block(b, keys[i], 6000 + i, len);

    // Plaintext written under an encrypted pool's key is refused.
    const std::string plain_prefix = "encplain" + std::to_string(getpid()) + ":";
    ASSERT_EQ(upload_blocks(cc, a.pool, items_for(a, keys), upload_opts(plain_prefix)).uploaded, n);
    {
        Pool c("c");
        FetchOptions po = fetch_opts(plain_prefix);
        po.keyring = k1.get();
        auto pr = fetch_into_pool(cc, c.pool, c.ns, c.digest, keys, 0, po);
        EXPECT_EQ(pr.committed, 0u);
        EXPECT_EQ(pr.rejected_by[size_t(Reject::Plaintext)], 1u) << pr.error;
        EXPECT_EQ(kv_contains(c.pool, c.ns, &keys[0]), 0);
    }

    // Rotation: host A now seals with k2 and keeps k1; a reader with both
    // reads the old chain and the new one, a reader with k1 only the old.
    auto keys2 = put_chain(a, 6100, 3, len);
    uo.keyring = rotated.get();
    ASSERT_EQ(upload_blocks(cc, a.pool, items_for(a, keys2), uo).uploaded, 3u);
    Pool r("r");
    FetchOptions ro = fetch_opts(prefix);
    ro.keyring = rotated.get();
    EXPECT_EQ(fetch_into_pool(cc, r.pool, r.ns, r.digest, keys, 0, ro).committed, n);
    EXPECT_EQ(fetch_into_pool(cc, r.pool, r.ns, r.digest, keys2, 0, ro).committed, 3u);
    for (size_t i = 0; i < 3; i++)
        expect_block(r, keys2[i], 6100 + i, len);
    Pool old("old");
    fr = fetch_into_pool(cc, old.pool, old.ns, old.digest, keys2, 0, fo);
    EXPECT_EQ(fr.committed, 0u);
    EXPECT_EQ(fr.rejected_by[size_t(Reject::KeyId)], 1u) << fr.error;
}

TEST(RedisCluster, CallTimeoutBoundsAStoppedNode) {
    NEED_CLUSTER();
    ClusterOptions o = opts_for(*g_cluster, 5000);
    o.call_timeout_ms = 400;
    ClusterClient cc(o);
    auto keys = make_keys("deadline:", 90);
    std::vector<std::vector<uint8_t>> vals(keys.size(), bytes_of("d"));
    set_all(cc, keys, vals);
    const int victim = 0;
    ASSERT_EQ(0, g_cluster->node("sigstop", victim));
    struct Cont {
        ~Cont() { g_cluster->node("sigcont", 0); }
    } cont;
    auto t0 = std::chrono::steady_clock::now();
    auto got = cc.get_many(keys);
    double t = secs_since(t0);
    EXPECT_LT(t, 1.2) << t; // not the 5 s of timeout_ms
    for (size_t i = 0; i < keys.size(); i++) {
        if (g_cluster->index_of(cc.node_for(keys[i])) != victim) continue;
        EXPECT_EQ(got[i].status, KeyStatus::Error);
        EXPECT_NE(got[i].error.find("deadline"), std::string::npos) << got[i].error;
    }
    // fetch_into_pool's own deadline bounds it the same way.
    Pool a("a");
    FetchOptions fo;
    fo.key_prefix = "deadline-fetch:";
    fo.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    ClusterClient slow(opts_for(*g_cluster, 5000));
    std::vector<kv_key> chain;
    for (uint64_t i = 0; i < 40; i++)
        chain.push_back(K(9000 + i));
    t0 = std::chrono::steady_clock::now();
    auto fr = fetch_into_pool(slow, a.pool, a.ns, a.digest, chain, 0, fo);
    t = secs_since(t0);
    EXPECT_LT(t, 1.2) << t;
    EXPECT_EQ(fr.committed, 0u);
    EXPECT_EQ(fr.errors + fr.missing, 1u) << fr.error;
    g_cluster->node("sigcont", victim);
    got = cc.get_many(keys);
    for (auto &g : got)
        EXPECT_EQ(g.status, KeyStatus::Ok) << g.error;
}

} // namespace
