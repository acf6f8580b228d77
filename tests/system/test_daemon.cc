// SPDX-License-Identifier: MIT
//
// kvpoold end to end: the real daemon on a private config, driven by the
// real kvctl and by libkv clients. Covers every kvctl verb in human and JSON
// form, reaping of killed clients, forced detach, runtime create/destroy,
// eviction by percent, reload, metrics, warm restart, permissions, and bad
// input on every surface (config, arguments, control socket).
#include "daemon_fixture.h"

#include <algorithm>
#include <dirent.h>
#include <grp.h>
#include <kv/kv.h>
#include <kvpool/control.h>
#include <nlohmann/json.hpp>
#include <pwd.h>
#include <set>
#include <sys/mman.h>

using namespace kvtest;
using nlohmann::json;

namespace {

kv_key key_of(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 7, i ^ 0xabcdef0123456789ULL};
}

struct Client {
    kv_pool *pool = nullptr;
    uint32_t ns = 0;
    std::string error;
    explicit Client(const std::string &path) {
        char err[512] = "";
        if (kv_pool_attach(path.c_str(), 0, &pool, err, sizeof err) != 0) {
            error = err;
            return;
        }
        kv_manifest m;
        kv_manifest_init(&m, "test-model", 16);
        kv_ns_register(pool, &m, &ns, nullptr);
    }
    ~Client() {
        if (pool) kv_pool_detach(pool);
    }
    int put(uint64_t i, size_t len) {
        std::vector<uint8_t> d(len, uint8_t(i));
        return kv_put(pool, ns, &(const kv_key &)key_of(i), d.data(), len, nullptr);
    }
};

// A child process that, as uid/gid, holds n idle control connections to
// sock until release() is called. finish() returns its exit status: how
// many of its connections the daemon closed meanwhile (0..n), or 100+ if it
// could not set itself up.
struct ConnectionHolder {
    pid_t pid = -1;
    int ready = -1, release_fd = -1;

    bool start(const std::string &sock, int uid, int gid, int n) {
        int r[2], rel[2];
        if (pipe(r) != 0 || pipe(rel) != 0) return false;
        pid = fork();
        if (pid == 0) {
            close(r[0]);
            close(rel[1]);
            if (setgroups(0, nullptr) != 0 || setgid(gid_t(gid)) != 0 || setuid(uid_t(uid)) != 0)
                _exit(100);
            std::vector<int> fds;
            for (int i = 0; i < n; i++) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                sockaddr_un sa{};
                sa.sun_family = AF_UNIX;
                strncpy(sa.sun_path, sock.c_str(), sizeof sa.sun_path - 1);
                if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0)
                    _exit(101);
                fds.push_back(fd);
            }
            char c = 'r';
            if (write(r[1], &c, 1) != 1) _exit(102);
            if (read(rel[0], &c, 1) < 0) _exit(103); // EOF or a byte: let go
            int closed = 0;
            for (int fd : fds) {
                pollfd pf{fd, POLLIN, 0};
                closed += poll(&pf, 1, 0) != 0; // readable means EOF: the daemon closed it
            }
            _exit(closed);
        }
        close(r[1]);
        close(rel[0]);
        ready = r[0], release_fd = rel[1];
        char c = 0;
        return pid > 0 && read(ready, &c, 1) == 1; // its connections are open
    }
    // Let go and wait: the exit status, or -1 if it did not exit normally.
    int finish() {
        char c = 'x';
        if (write(release_fd, &c, 1) != 1) return -1;
        close(release_fd);
        close(ready);
        int st = 0;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return -1;
        return WEXITSTATUS(st);
    }
};

json parse(const Proc &r) {
    try {
        return json::parse(r.out);
    } catch (const std::exception &e) {
        ADD_FAILURE() << "not JSON: " << e.what() << "\n" << r.out << r.err;
        return json::object();
    }
}

} // namespace

TEST_F(DaemonTest, StartsReadyAndLists) {
    ASSERT_TRUE(start_daemon(config()));
    EXPECT_NE(notified_.find("STATUS="), std::string::npos) << notified_;
    Proc r = ctl({"list"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("alpha"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("NAME"), std::string::npos) << r.out;
    Proc j = ctl({"--json", "list"});
    ASSERT_EQ(j.code, 0) << j.err;
    json doc = parse(j);
    ASSERT_EQ(doc["pools"].size(), 1u);
    EXPECT_EQ(doc["pools"][0]["name"], "alpha");
    EXPECT_EQ(doc["pools"][0]["page_size"], 4096);
    EXPECT_EQ(doc["pools"][0]["state"], "created");
    EXPECT_EQ(doc["pools"][0]["policy"], "prefix") << "the default policy";
    EXPECT_GT(doc["pools"][0]["capacity"].get<uint64_t>(), 32u << 20);
    // Log lines carry journald priority prefixes.
    EXPECT_NE(log().find("<5>kvpoold: ready"), std::string::npos) << log();
    EXPECT_EQ(stop_daemon(), 0);
    EXPECT_NE(log().find("stopped"), std::string::npos);
}

TEST_F(DaemonTest, ReadCommandsHumanAndJson) {
    ASSERT_TRUE(start_daemon(config()));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    for (uint64_t i = 0; i < 10; i++)
        ASSERT_EQ(c.put(i, 64 << 10), 0);
    kv_view v;
    ASSERT_EQ(kv_get(c.pool, c.ns, &(const kv_key &)key_of(3), &v), 0);

    Proc st = ctl({"--json", "status", "alpha"});
    ASSERT_EQ(st.code, 0) << st.err;
    json s = parse(st);
    EXPECT_EQ(s["entries"], 10);
    EXPECT_EQ(s["pins"], 1);
    EXPECT_EQ(s["hits"], 1);
    EXPECT_EQ(s["clients"], 1); // us; the daemon's own slot is not counted
    EXPECT_EQ(s["bytes_committed"], 10u * (64 << 10));
    Proc sh = ctl({"status", "alpha"});
    EXPECT_EQ(sh.code, 0) << sh.err;
    EXPECT_NE(sh.out.find("alpha"), std::string::npos) << sh.out;

    Proc en = ctl({"--json", "entries", "alpha"});
    ASSERT_EQ(en.code, 0) << en.err;
    json e = parse(en);
    EXPECT_EQ(e["count"], 10);
    EXPECT_EQ(e["truncated"], false);
    ASSERT_EQ(e["entries"].size(), 10u);
    int pinned = 0;
    for (const auto &row : e["entries"]) {
        EXPECT_EQ(row["length"], 64 << 10);
        EXPECT_EQ(row["state"], "committed");
        EXPECT_EQ(row["key"].get<std::string>().size(), 32u);
        pinned += row["pins"].get<int>();
    }
    EXPECT_EQ(pinned, 1);
    Proc enl = ctl({"--json", "entries", "alpha", "--limit", "3"});
    json el = parse(enl);
    EXPECT_EQ(el["entries"].size(), 3u);
    EXPECT_EQ(el["truncated"], true);
    EXPECT_EQ(ctl({"entries", "alpha"}).code, 0);

    Proc he = ctl({"--json", "health", "alpha"});
    ASSERT_EQ(he.code, 0) << he.err << he.out;
    json h = parse(he);
    EXPECT_EQ(h["healthy"], true) << he.out;
    EXPECT_EQ(h["usage"]["entries_committed"], 10);
    EXPECT_EQ(h["usage"]["orphan_blocks"], 0);
    EXPECT_EQ(ctl({"health", "alpha"}).code, 0);

    Proc cl = ctl({"--json", "clients", "alpha"});
    ASSERT_EQ(cl.code, 0) << cl.err;
    json cj = parse(cl);
    ASSERT_EQ(cj["clients"].size(), 1u) << cl.out;
    EXPECT_EQ(cj["clients"][0]["pid"], getpid());
    EXPECT_EQ(cj["clients"][0]["pins"], 1);
    EXPECT_EQ(cj["clients"][0]["alive"], true);
    Proc clh = ctl({"clients", "alpha"});
    EXPECT_EQ(clh.code, 0);
    EXPECT_NE(clh.out.find(std::to_string(getpid())), std::string::npos) << clh.out;

    Proc sa = ctl({"--json", "stats"});
    ASSERT_EQ(sa.code, 0) << sa.err;
    json sj = parse(sa);
    EXPECT_GT(sj["daemon"]["requests"].get<uint64_t>(), 5u);
    EXPECT_GT(sj["daemon"]["rss_bytes"].get<uint64_t>(), 0u);
    EXPECT_EQ(sj["pools"][0]["name"], "alpha");
    EXPECT_EQ(ctl({"stats"}).code, 0);
    Proc ve = ctl({"--json", "version"});
    EXPECT_EQ(ve.code, 0) << ve.err;
    EXPECT_EQ(parse(ve)["protocol"], KV_CTL_VERSION);
    kv_release(c.pool, &v);
}

TEST_F(DaemonTest, KilledClientIsReapedWithinOneSecond) {
    ASSERT_TRUE(start_daemon(config()));
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        ASSERT_EQ(c.put(1, 4096), 0);
    }
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        Client c(pool_path("alpha"));
        kv_view v;
        kv_key k = key_of(1);
        if (!c.pool || kv_get(c.pool, c.ns, &k, &v) != 0) _exit(1);
        kv_reservation r;
        kv_key k2 = key_of(2);
        if (kv_reserve(c.pool, c.ns, &k2, 8192, nullptr, &r) != 0) _exit(1);
        char b = 1;
        if (write(ready[1], &b, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    children_.push_back(child);
    char b;
    ASSERT_EQ(read(ready[0], &b, 1), 1);
    json before = parse(ctl({"--json", "clients", "alpha"}));
    ASSERT_EQ(before["clients"].size(), 1u);
    EXPECT_EQ(before["clients"][0]["pins"], 1);
    EXPECT_EQ(before["clients"][0]["reservations"], 1);
    EXPECT_GE(before["clients"][0]["bytes_reserved"].get<uint64_t>(), 8192u);

    Client probe(pool_path("alpha"));
    ASSERT_TRUE(probe.pool);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    children_.clear();
    const uint64_t t0 = mono_ms();
    // The daemon reaps by itself (reap_interval_ms = 100); the probe must not.
    // The reap is complete when the count is: it is bumped after the pins
    // and the reservation are given back.
    kv_stats st{};
    bool reaped = eventually(
        [&] {
            kv_usage u;
            kv_pool_usage(probe.pool, &u);
            kv_pool_stats(probe.pool, &st);
            return u.pins == 0 && u.entries_reserved == 0 && st.reaps >= 1;
        },
        1000);
    EXPECT_TRUE(reaped) << "the killed client was not reaped within " << mono_ms() - t0 << " ms";
    EXPECT_EQ(st.reaps, 1u); // counted in the daemon's slot, not ours
    EXPECT_TRUE(
        eventually([&] { return log().find("reaped 1 dead client") != std::string::npos; }, 1000))
        << log();
}

TEST_F(DaemonTest, DetachRefusesLiveClientUnlessKill) {
    ASSERT_TRUE(start_daemon(config()));
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        Client c(pool_path("alpha"));
        if (!c.pool || c.put(5, 4096) != 0) _exit(1);
        kv_view v;
        kv_key k = key_of(5);
        if (kv_get(c.pool, c.ns, &k, &v) != 0) _exit(1);
        char b = 1;
        if (write(ready[1], &b, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    children_.push_back(child);
    char b;
    ASSERT_EQ(read(ready[0], &b, 1), 1);
    Proc r = ctl({"detach", "alpha", "--pid", std::to_string(child)});
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("--kill"), std::string::npos) << r.err;
    EXPECT_EQ(kill(child, 0), 0) << "detach without --kill must not kill";
    Proc k = ctl({"--json", "detach", "alpha", "--pid", std::to_string(child), "--kill"});
    ASSERT_EQ(k.code, 0) << k.err;
    json j = parse(k);
    EXPECT_EQ(j["killed"], true);
    EXPECT_EQ(j["reaped"], 1);
    int st = 0;
    waitpid(child, &st, 0);
    children_.clear();
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    json cl = parse(ctl({"--json", "clients", "alpha"}));
    EXPECT_EQ(cl["clients"].size(), 0u) << cl.dump();
    // Not attached any more: its own exit code and message, not "no such pool" (5).
    Proc nf = ctl({"detach", "alpha", "--pid", std::to_string(child)});
    EXPECT_EQ(nf.code, 9) << nf.err;
    EXPECT_NE(nf.err.find("process " + std::to_string(child) + " is not attached to pool alpha"),
              std::string::npos)
        << nf.err;
}

TEST_F(DaemonTest, CreateAndDestroyAtRuntime) {
    ASSERT_TRUE(start_daemon(config()));
    Proc c = ctl(
        {"--json", "create", "beta", "--size", "32M", "--hugepages", "never", "--mode", "0640"});
    ASSERT_EQ(c.code, 0) << c.err;
    json j = parse(c);
    EXPECT_EQ(j["name"], "beta");
    EXPECT_EQ(j["origin"], "runtime");
    EXPECT_EQ(j["mode"], "0640");
    struct stat sb;
    ASSERT_EQ(stat(pool_path("beta").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0640u);
    {
        Client cl(pool_path("beta"));
        ASSERT_TRUE(cl.pool) << cl.error;
        EXPECT_EQ(cl.put(1, 4096), 0);
    }
    EXPECT_EQ(ctl({"create", "beta", "--size", "32M"}).code, 6);
    Proc bad = ctl({"create", "bad/name", "--size", "32M"});
    EXPECT_NE(bad.code, 0) << bad.err;
    EXPECT_NE(bad.err.find("bad/name"), std::string::npos) << bad.err;
    Proc small = ctl({"create", "tiny", "--size", "1M"});
    EXPECT_NE(small.code, 0);
    EXPECT_NE(small.err.find("16 MiB"), std::string::npos) << small.err;
    EXPECT_EQ(ctl({"destroy", "beta"}).code, 0);
    EXPECT_NE(stat(pool_path("beta").c_str(), &sb), 0);
    // The eviction policy is chosen at creation and shown in status.
    Proc lfu = ctl({"create", "gamma", "--size", "32M", "--hugepages", "never", "--policy", "lfu"});
    ASSERT_EQ(lfu.code, 0) << lfu.err;
    EXPECT_EQ(parse(ctl({"--json", "status", "gamma"}))["policy"], "lfu");
    EXPECT_NE(ctl({"status", "gamma"}).out.find("lfu"), std::string::npos);
    Proc badpol = ctl({"create", "delta", "--size", "32M", "--policy", "random"});
    EXPECT_EQ(badpol.code, 2);
    EXPECT_NE(badpol.err.find("--policy"), std::string::npos) << badpol.err;
    EXPECT_NE(badpol.err.find("random"), std::string::npos) << badpol.err;
    EXPECT_EQ(ctl({"destroy", "gamma"}).code, 0);
    EXPECT_EQ(ctl({"destroy", "beta"}).code, 5);
    EXPECT_EQ(ctl({"status", "beta"}).code, 5);
    json l = parse(ctl({"--json", "list"}));
    EXPECT_EQ(l["pools"].size(), 1u);
}

// Pools made with kvctl create are kept across restarts: re-attached when
// their region survived, re-created and restored from their snapshot when
// it did not (a reboot), and forgotten only by destroy.
TEST_F(DaemonTest, RuntimePoolsSurviveRestarts) {
    ASSERT_TRUE(start_daemon(config()));
    ASSERT_EQ(
        ctl({"create", "beta", "--size", "32M", "--hugepages", "never", "--policy", "lru"}).code,
        0);
    ASSERT_EQ(
        ctl({"create", "gamma", "--size", "16M", "--hugepages", "never", "--no-persist"}).code, 0);
    {
        Client c(pool_path("beta"));
        ASSERT_TRUE(c.pool) << c.error;
        for (uint64_t i = 0; i < 30; i++)
            ASSERT_EQ(c.put(i, 8192), 0);
    }
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_TRUE(start_daemon(config()));
    json s = parse(ctl({"--json", "status", "beta"}));
    EXPECT_EQ(s["origin"], "runtime");
    EXPECT_EQ(s["state"], "reattached");
    EXPECT_EQ(s["entries"], 30);
    EXPECT_EQ(s["policy"], "lru");
    EXPECT_EQ(ctl({"status", "gamma"}).code, 0) << log();
    // Same name again: the pool exists; its region is not rebuilt.
    EXPECT_EQ(ctl({"create", "beta", "--size", "32M"}).code, 6);
    EXPECT_EQ(parse(ctl({"--json", "status", "beta"}))["entries"], 30);
    // A reboot: the regions are gone, the snapshot taken at stop is not.
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_EQ(unlink(pool_path("beta").c_str()), 0);
    ASSERT_EQ(unlink(pool_path("gamma").c_str()), 0);
    ASSERT_TRUE(start_daemon(config()));
    s = parse(ctl({"--json", "status", "beta"}));
    EXPECT_EQ(s["state"], "restored");
    EXPECT_EQ(s["entries"], 30) << "not restored from its snapshot\n" << log();
    EXPECT_EQ(parse(ctl({"--json", "status", "gamma"}))["entries"], 0);
    // Destroyed, it stays gone.
    EXPECT_EQ(ctl({"destroy", "beta"}).code, 0);
    EXPECT_EQ(ctl({"destroy", "gamma"}).code, 0);
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_TRUE(start_daemon(config()));
    EXPECT_EQ(ctl({"status", "beta"}).code, 5);
    EXPECT_EQ(ctl({"status", "gamma"}).code, 5);
    struct stat sb;
    EXPECT_NE(stat((dir_ + "/state/runtime-pools.toml").c_str(), &sb), 0)
        << "an empty list leaves no file";
}

// A state directory where the list cannot be written: the pool is not
// made (it would vanish at the next restart), and kvctl says why.
TEST_F(DaemonTest, RuntimePoolThatCannotBeRememberedIsNotMade) {
    ASSERT_TRUE(start_daemon(config()));
    mkdir((dir_ + "/state").c_str(), 0750);
    ASSERT_EQ(mkdir((dir_ + "/state/runtime-pools.toml.tmp").c_str(), 0700), 0); // blocks the write
    Proc c = ctl({"create", "beta", "--size", "32M", "--hugepages", "never"});
    EXPECT_EQ(c.code, 1) << c.err;
    EXPECT_NE(c.err.find("runtime-pools.toml"), std::string::npos) << c.err;
    EXPECT_EQ(ctl({"status", "beta"}).code, 5);
    struct stat sb;
    EXPECT_NE(stat(pool_path("beta").c_str(), &sb), 0) << "the region was left behind";
}

// A cap on a pool's entry slots, from kvctl create and from the config.
TEST_F(DaemonTest, MaxEntriesCapsAPoolsEntrySlots) {
    ASSERT_TRUE(start_daemon(config("", "max_entries = 128\n")));
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["entry_slots"], 128);
    ASSERT_EQ(
        ctl({"create", "beta", "--size", "32M", "--hugepages", "never", "--max-entries", "100"})
            .code,
        0);
    EXPECT_EQ(parse(ctl({"--json", "status", "beta"}))["entry_slots"], 100);
    {
        Client c(pool_path("beta"));
        ASSERT_TRUE(c.pool) << c.error;
        for (uint64_t i = 0; i < 150; i++)
            ASSERT_EQ(c.put(i, 4096), 0);
    }
    EXPECT_EQ(parse(ctl({"--json", "status", "beta"}))["entries"], 100)
        << "more blocks than entry slots";
    Proc bad = ctl({"create", "gamma", "--size", "32M", "--max-entries", "10"});
    EXPECT_EQ(bad.code, 2) << bad.err;
    EXPECT_NE(bad.err.find("--max-entries"), std::string::npos) << bad.err;
    // Kept across a restart with the runtime pool's other settings.
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_EQ(unlink(pool_path("beta").c_str()), 0);
    ASSERT_TRUE(start_daemon(config("", "max_entries = 128\n")));
    EXPECT_EQ(parse(ctl({"--json", "status", "beta"}))["entry_slots"], 100);
}

TEST_F(DaemonTest, EvictPercentFreesThatShareOfUnpinnedBytes) {
    ASSERT_TRUE(start_daemon(config()));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    const size_t len = 64 << 10;
    for (uint64_t i = 0; i < 200; i++)
        ASSERT_EQ(c.put(i, len), 0);
    kv_view pinned;
    ASSERT_EQ(kv_get(c.pool, c.ns, &(const kv_key &)key_of(7), &pinned), 0);
    Proc r = ctl({"--json", "evict", "alpha", "--percent", "50"});
    ASSERT_EQ(r.code, 0) << r.err;
    json j = parse(r);
    const uint64_t unpinned = 199 * len;
    EXPECT_EQ(j["requested_bytes"], unpinned / 2);
    const uint64_t freed = j["freed_bytes"];
    EXPECT_GE(freed, unpinned / 2);
    EXPECT_LE(freed, unpinned / 2 + len) << "more than one block beyond the share";
    kv_usage u;
    kv_pool_usage(c.pool, &u);
    EXPECT_EQ(u.bytes_committed, 200 * len - freed);
    EXPECT_EQ(kv_view_verify(&pinned), 0);
    EXPECT_EQ(kv_contains(c.pool, c.ns, &(const kv_key &)key_of(7)), 1)
        << "a pinned block was evicted";
    // 0 percent is a no-op that says so, not a usage error.
    kv_pool_usage(c.pool, &u);
    const uint64_t before = u.bytes_committed;
    Proc zero = ctl({"--json", "evict", "alpha", "--percent", "0"});
    ASSERT_EQ(zero.code, 0) << zero.err;
    json z = parse(zero);
    EXPECT_EQ(z["requested_bytes"], 0);
    EXPECT_EQ(z["freed_bytes"], 0);
    Proc zh = ctl({"evict", "alpha", "--percent", "0%"});
    EXPECT_EQ(zh.code, 0) << zh.err;
    EXPECT_NE(zh.out.find("freed 0 B of 0 B requested"), std::string::npos) << zh.out;
    kv_pool_usage(c.pool, &u);
    EXPECT_EQ(u.bytes_committed, before) << "percent 0 evicted something";
    EXPECT_EQ(ctl({"evict", "alpha", "--percent", "101"}).code, 2);
    kv_release(c.pool, &pinned);
}

TEST_F(DaemonTest, BackgroundEvictionKeepsUsageUnderHighWatermark) {
    std::string pools = "high_watermark = 0.5\nlow_watermark = 0.3\n";
    ASSERT_TRUE(start_daemon(config("", pools)));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    const uint64_t cap = kv_pool_header(c.pool)->data_len;
    const size_t len = 256 << 10;
    for (uint64_t i = 0; i < cap * 6 / 10 / len; i++)
        ASSERT_GE(c.put(i, len), 0);
    bool below = eventually(
        [&] {
            kv_usage u;
            kv_pool_usage(c.pool, &u);
            // Once above 0.5 the pass evicts down to 0.3; puts racing with
            // it may refill up to, but not past, the high watermark.
            return double(u.bytes_committed) <= 0.5 * double(cap);
        },
        3000);
    EXPECT_TRUE(below) << log();
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_GT(s["background_evicted_bytes"].get<uint64_t>(), 0u);
}

// "used" is live bytes: aborted and reaped reservations never lower it, so
// the watermark pass still sees a pool that is over its high watermark.
TEST_F(DaemonTest, UsedBytesIgnoreAbortsAndReapedReservations) {
    std::string pools = "high_watermark = 0.8\nlow_watermark = 0.6\n";
    ASSERT_TRUE(start_daemon(config("", pools)));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    const uint64_t cap = kv_pool_header(c.pool)->data_len;
    const size_t len = 256 << 10;
    uint64_t i = 0;
    for (; i < cap * 7 / 10 / len; i++)
        ASSERT_EQ(c.put(i, len), 0);
    for (uint64_t k = 0; k < 40; k++) {
        kv_reservation r{};
        ASSERT_EQ(
            kv_reserve(c.pool, c.ns, &(const kv_key &)key_of(100000 + k), 512 << 10, nullptr, &r),
            0);
        ASSERT_EQ(kv_abort(c.pool, &r), 0);
    }
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) { // dies holding four reservations
        Client d(pool_path("alpha"));
        for (uint64_t k = 0; k < 4; k++) {
            kv_reservation r{};
            if (kv_reserve(d.pool, d.ns, &(const kv_key &)key_of(200000 + k), 512 << 10, nullptr,
                           &r) != 0)
                _exit(1);
        }
        raise(SIGKILL);
    }
    int st = 0;
    ASSERT_EQ(waitpid(child, &st, 0), child);
    ASSERT_TRUE(WIFSIGNALED(st)) << "child failed before it was killed: " << st;
    EXPECT_TRUE(eventually(
        [&] { return parse(ctl({"--json", "clients", "alpha"}))["clients"].size() == 1; }, 3000))
        << "the killed client was not reaped";
    kv_usage u;
    ASSERT_EQ(kv_pool_usage(c.pool, &u), 0);
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["used_bytes"].get<uint64_t>(),
              u.bytes_committed);
    // Past the high watermark: the background pass must notice and evict.
    for (; i < cap * 9 / 10 / len; i++)
        ASSERT_GE(c.put(i, len), 0);
    const bool below = eventually(
        [&] {
            kv_pool_usage(c.pool, &u);
            return double(u.bytes_committed) <= 0.8 * double(cap);
        },
        3000);
    EXPECT_TRUE(below) << "used " << u.bytes_committed << " of " << cap << "\n" << log();
}

TEST_F(DaemonTest, WarmRestartReattachesWithBlocks) {
    ASSERT_TRUE(start_daemon(config()));
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool);
        for (uint64_t i = 0; i < 20; i++)
            ASSERT_EQ(c.put(i, 8192), 0);
    }
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_TRUE(start_daemon(config()));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["state"], "reattached");
    EXPECT_EQ(s["entries"], 20);
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool);
    for (uint64_t i = 0; i < 20; i++) {
        kv_view v;
        ASSERT_EQ(kv_get(c.pool, c.ns, &(const kv_key &)key_of(i), &v), 0);
        EXPECT_EQ(kv_view_verify(&v), 0);
        EXPECT_EQ(static_cast<const uint8_t *>(v.data)[100], uint8_t(i));
        kv_release(c.pool, &v);
    }
}

// A size or policy change in the config never drops the blocks of a region
// that holds some: the region is served as it is and the log says how to
// apply the change; an empty, unattached one is rebuilt.
TEST_F(DaemonTest, ConfigChangeKeepsARegionThatHoldsBlocks) {
    ASSERT_TRUE(start_daemon(config()));
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool);
        for (uint64_t i = 0; i < 20; i++)
            ASSERT_EQ(c.put(i, 8192), 0);
    }
    ASSERT_EQ(stop_daemon(), 0);
    std::string cfg = config("", "eviction = \"lru\"\n");
    cfg.replace(cfg.find("\"64M\""), 5, "\"32M\"");
    ASSERT_TRUE(start_daemon(cfg));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["state"], "reattached");
    EXPECT_EQ(s["entries"], 20);
    EXPECT_EQ(s["size"], 64u << 20);
    EXPECT_NE(s["config_differs"].get<std::string>().find("config asks lru"), std::string::npos)
        << s.dump();
    EXPECT_NE(log().find("kept as it is"), std::string::npos) << log();
    EXPECT_EQ(log().find("rebuilding it"), std::string::npos) << log();
    // Emptied, it is rebuilt to the config at the next start.
    ASSERT_EQ(ctl({"evict", "alpha", "--percent", "100"}).code, 0);
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_TRUE(start_daemon(cfg));
    s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["state"], "created");
    EXPECT_EQ(s["size"], 32u << 20);
    EXPECT_EQ(s["policy"], "lru");
}

// The issue's reproduction: max_clients = 4 and four engines attached
// while kvpoold was stopped. kvpoold must serve the region as it is: no
// rebuild, the engines' blocks and mapping intact.
TEST_F(DaemonTest, FullClientTableAtStartKeepsThePool) {
    const std::string cfg = config("", "max_clients = 4\n");
    ASSERT_TRUE(start_daemon(cfg));
    ASSERT_EQ(stop_daemon(), 0);
    struct stat before{};
    ASSERT_EQ(stat(pool_path("alpha").c_str(), &before), 0);
    for (int k = 0; k < 4; k++) {
        int ready[2];
        ASSERT_EQ(pipe(ready), 0);
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) { // an engine: attach, store a block, stay attached
            Client e(pool_path("alpha"));
            if (!e.pool || e.put(uint64_t(k), 4096) != 0) _exit(1);
            if (write(ready[1], "r", 1) != 1) _exit(2);
            pause();
            _exit(0);
        }
        children_.push_back(pid);
        char c;
        ASSERT_EQ(read(ready[0], &c, 1), 1) << "engine " << k << " failed to attach";
        close(ready[0]);
        close(ready[1]);
    }
    ASSERT_TRUE(start_daemon(cfg));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["state"], "reattached") << log();
    EXPECT_EQ(s["entries"], 4);
    EXPECT_EQ(s["clients"], 4);
    struct stat after{};
    ASSERT_EQ(stat(pool_path("alpha").c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino) << "the region was rebuilt";
    EXPECT_EQ(log().find("rebuilding"), std::string::npos) << log();
}

// A region without a daemon slot (made by an older kvpoold, or by hand)
// whose every slot is held by a live engine: kvpoold leaves it alone, says
// why, and serves it as soon as a slot frees.
TEST_F(DaemonTest, RegionWithEveryClientSlotHeldWaits) {
    kv_create_opts o;
    kv_create_opts_init(&o, 64 << 20);
    o.max_clients = 2;
    o.evict_policy = KV_EVICT_PREFIX;
    mkdir(shm_.c_str(), 0755);
    char err[256] = "";
    ASSERT_EQ(kv_pool_create(pool_path("alpha").c_str(), &o, err, sizeof err), 0) << err;
    Client first(pool_path("alpha")), second(pool_path("alpha"));
    ASSERT_TRUE(first.pool && second.pool) << first.error << second.error;
    ASSERT_EQ(first.put(1, 4096), 0);
    ASSERT_TRUE(start_daemon(config("", "max_clients = 2\n")));
    EXPECT_EQ(ctl({"status", "alpha"}).code, 5) << "served without a client slot?";
    EXPECT_NE(log().find("it is kept as it is, with its blocks"), std::string::npos) << log();
    EXPECT_EQ(kv_contains(first.pool, first.ns, &(const kv_key &)key_of(1)), 1);
    kv_pool_detach(second.pool);
    second.pool = nullptr;
    EXPECT_TRUE(eventually([&] { return ctl({"status", "alpha"}).code == 0; }, 3000)) << log();
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["state"], "reattached");
    EXPECT_EQ(s["entries"], 1);
}

// A creator killed between building NAME.creating.PID and renaming it
// leaves that file (memory, on /dev/shm): kvpoold removes it at start when
// its PID is gone, and leaves one whose creator still runs.
TEST_F(DaemonTest, StaleCreationFilesAreRemoved) {
    mkdir(shm_.c_str(), 0755);
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, nullptr, 0);
    const std::string stale = pool_path("alpha") + ".creating." + std::to_string(dead);
    const std::string live = pool_path("alpha") + ".creating." + std::to_string(getpid());
    spit(stale, "half-built region");
    spit(live, "another creator's region");
    ASSERT_TRUE(start_daemon(config()));
    EXPECT_NE(access(stale.c_str(), F_OK), 0) << stale << " is still there";
    EXPECT_EQ(access(live.c_str(), F_OK), 0) << "removed a file whose creator runs";
    EXPECT_NE(log().find("left by a creator that died"), std::string::npos) << log();
    unlink(live.c_str());
}

// Found by going through every input surface (tests/BAD_INPUT.md).
TEST_F(DaemonTest, RefusesBadRequestsFoundByTheInputReview) {
    ASSERT_TRUE(start_daemon(config()));
    // A second kvpoold on the same control socket must not take it over.
    Proc second = run({kvpoold_, "--config", cfg_path_}, -1, -1, 20);
    EXPECT_EQ(second.code, 1) << second.err;
    EXPECT_NE(second.err.find("another kvpoold (pid " + std::to_string(daemon_) + ")"),
              std::string::npos)
        << second.err;
    EXPECT_EQ(ctl({"list"}).code, 0) << "the first daemon lost its socket";
    // Nor touch its pools: with alpha's size changed, opening alpha would
    // rebuild the region the first daemon serves (it did, before the socket
    // was checked first). A committed block must survive.
    {
        kv_pool *p = nullptr;
        ASSERT_EQ(kv_pool_attach(pool_path("alpha").c_str(), 0, &p, nullptr, 0), 0);
        kv_manifest man;
        kv_manifest_init(&man, "second-daemon", 16);
        uint32_t ns = 0;
        ASSERT_EQ(kv_ns_register(p, &man, &ns, nullptr), 0);
        const kv_key k{0x5ec0, 0xd};
        const char data[] = "committed before the second kvpoold";
        ASSERT_EQ(kv_put(p, ns, &k, data, sizeof data, nullptr), 0);
        std::string cfg2 = slurp(cfg_path_);
        const std::string from = "size = \"64M\"";
        const auto at = cfg2.find(from);
        ASSERT_NE(at, std::string::npos);
        cfg2.replace(at, from.size(), "size = \"96M\"");
        spit(dir_ + "/second.toml", cfg2);
        Proc resized = run({kvpoold_, "--config", dir_ + "/second.toml"}, -1, -1, 20);
        EXPECT_EQ(resized.code, 1) << resized.err;
        EXPECT_NE(resized.err.find("another kvpoold"), std::string::npos) << resized.err;
        kv_pool_detach(p);
        // Through the path, as the next client sees it (a rebuild replaces
        // the file: a mapping of the old one would still show the block).
        ASSERT_EQ(kv_pool_attach(pool_path("alpha").c_str(), 0, &p, nullptr, 0), 0);
        kv_view v{};
        EXPECT_EQ(kv_get(p, ns, &k, &v), 0) << "the second kvpoold rebuilt the first one's pool";
        if (v.data) {
            EXPECT_EQ(memcmp(v.data, data, sizeof data), 0);
            kv_release(p, &v);
        }
        kv_pool_detach(p);
    }
    // setuid, setgid and sticky bits on a runtime pool.
    Proc m = ctl({"create", "s", "--size", "32M", "--hugepages", "never", "--mode", "4660"});
    EXPECT_EQ(m.code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("setuid"), std::string::npos) << m.err;
    EXPECT_NE(access(pool_path("s").c_str(), F_OK), 0);
    // A missing snapshot file is a failed request (exit 1), not "no such pool" (5).
    Proc r = ctl({"restore", "alpha", "--path", dir_ + "/nope.kvsnap"});
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(dir_ + "/nope.kvsnap: No such file"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("restore alpha: restore alpha"), std::string::npos) << r.err;
    // Nor is a file that is not a snapshot a protocol error (7).
    spit(dir_ + "/state/junk.kvsnap", std::string(8192, 'x'));
    Proc j = ctl({"restore", "alpha", "--path", dir_ + "/state/junk.kvsnap"});
    EXPECT_EQ(j.code, 1) << j.err;
    EXPECT_NE(j.err.find("junk.kvsnap"), std::string::npos) << j.err;
}

// A region a newer kvpool made (ABI major above ours, or unknown
// incompatible features) is refused with a message, never rebuilt.
TEST_F(DaemonTest, RegionOfANewerKvpoolIsKeptNotRebuilt) {
    ASSERT_TRUE(start_daemon(config()));
    ASSERT_EQ(stop_daemon(), 0);
    const std::string path = pool_path("alpha");
    for (int variant = 0; variant < 3; variant++) {
        kv_region_header h{};
        int fd = open(path.c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pread(fd, &h, sizeof h, 0), ssize_t(sizeof h));
        kv_region_header newer = h;
        if (variant == 0)
            newer.abi_major = KV_ABI_MAJOR + 1;
        else if (variant == 1)
            newer.incompat_features |= 1ULL << 40;
        else
            newer.evict_policy = KV_EVICT_MAX + 1; // a policy a newer minor added
        ASSERT_EQ(pwrite(fd, &newer, sizeof newer, 0), ssize_t(sizeof newer));
        Proc r = run({kvpoold_, "--config", cfg_path_}, -1, -1, 20);
        EXPECT_EQ(r.code, 1) << r.err;
        EXPECT_NE(r.err.find("made by a newer kvpool"), std::string::npos) << r.err;
        kv_region_header after{};
        ASSERT_EQ(pread(fd, &after, sizeof after, 0), ssize_t(sizeof after));
        EXPECT_EQ(memcmp(&after, &newer, sizeof after), 0) << "the region was touched";
        ASSERT_EQ(pwrite(fd, &h, sizeof h, 0), ssize_t(sizeof h)); // ours again
        close(fd);
    }
    ASSERT_TRUE(start_daemon(config()));
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["state"], "reattached");
}

TEST_F(DaemonTest, ReloadAddsPoolsAndRefusesUnsafeChanges) {
    ASSERT_TRUE(start_daemon(config()));
    std::string cfg =
        config("", "\n[[pool]]\nname = \"gamma\"\nsize = \"32M\"\nhugepages = \"never\"\n"
                   "prefault = false\n");
    cfg.replace(cfg.find("\"64M\""), 5, "\"128M\"");
    spit(cfg_path_, cfg);
    kill(daemon_, SIGHUP);
    EXPECT_TRUE(eventually([&] { return ctl({"status", "gamma"}).code == 0; }, 5000)) << log();
    EXPECT_TRUE(
        eventually([&] { return log().find("refused: pool alpha") != std::string::npos; }, 2000))
        << log();
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_LT(s["size"].get<uint64_t>(), 100u << 20) << "alpha must keep its size";
    // A broken config on reload keeps the running one.
    spit(cfg_path_, "this is not toml = = =");
    kill(daemon_, SIGHUP);
    EXPECT_TRUE(eventually([&] { return log().find("reload refused") != std::string::npos; }, 3000))
        << log();
    EXPECT_EQ(ctl({"status", "alpha"}).code, 0);
}

TEST_F(DaemonTest, MetricsEndpointServesPrometheusText) {
    std::string msock = dir_ + "/metrics";
    ASSERT_TRUE(start_daemon(config("metrics = \"unix:" + msock + "\"\n")));
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, msock.c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(write(fd, req, sizeof req - 1), ssize_t(sizeof req - 1));
    std::string resp;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        resp.append(buf, size_t(n));
    close(fd);
    EXPECT_EQ(resp.rfind("HTTP/1.1 200 OK", 0), 0u) << resp;
    EXPECT_NE(resp.find("kvpool_capacity_bytes{pool=\"alpha\"}"), std::string::npos) << resp;
    EXPECT_NE(resp.find("# TYPE kvpool_hits_total counter"), std::string::npos);
    EXPECT_NE(resp.find("kvpool_info{pool=\"alpha\",policy=\"prefix\"} 1"), std::string::npos)
        << resp;
    EXPECT_NE(resp.find("kvpoold_resident_bytes"), std::string::npos);
}

TEST_F(DaemonTest, MetricsRefusesNonLoopbackTcp) {
    Proc r = run({kvpoold_, "--check-config", "--config", "/nonexistent/kvpoold.toml"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("/nonexistent/kvpoold.toml"), std::string::npos) << r.err;
    spit(dir_ + "/bad.toml", config("metrics = \"tcp:0.0.0.0:9464\"\n"));
    Proc b = run({kvpoold_, "--config", dir_ + "/bad.toml"});
    EXPECT_EQ(b.code, 1);
    EXPECT_NE(b.err.find("loopback"), std::string::npos) << b.err;
}

TEST_F(DaemonTest, BadConfigsFailWithAMessage) {
    struct Case {
        std::string text, expect;
    };
    const Case cases[] = {
        {config() + "sise = \"1G\"\n", "sise"},
        {config() + "\n[[pool]]\nname = \"alpha\"\nsize = \"32M\"\n", "alpha"},
        {"[daemon]\nreap_interval_ms = \"fast\"\n", "reap_interval_ms"},
        {"[[pool]]\nname = \"x\"\nsize = \"12Q\"\n", "12Q"},
        {"[[pool]]\nname = \"x\"\nsize = \"64M\"\nhugepages = \"sometimes\"\n", "sometimes"},
        {"[[pool]]\nname = \"x\"\nsize = \"64M\"\neviction = \"random\"\n", "random"},
        {"not toml at all [", "syntax"},
        // Parses, but the daemon would refuse it on this machine.
        {config("", "numa_node = 1000\n"), "numa_node 1000"},
        {config("", "slab_size = \"1G\"\n"), "too small"},
    };
    for (const Case &c : cases) {
        spit(dir_ + "/bad.toml", c.text);
        Proc r = run({kvpoold_, "--check-config", "--config", dir_ + "/bad.toml"});
        EXPECT_EQ(r.code, 1) << c.text;
        EXPECT_NE(r.err.find(c.expect), std::string::npos) << "config:\n"
                                                           << c.text << "\nstderr: " << r.err;
        EXPECT_NE(r.err.find("<3>"), std::string::npos)
            << "error priority prefix missing: " << r.err;
    }
    spit(dir_ + "/good.toml", config());
    Proc g = run({kvpoold_, "--check-config", "--config", dir_ + "/good.toml"});
    EXPECT_EQ(g.code, 0) << g.err;
    // A missing admin group: kvpoold starts (warning; only root may create
    // pools), so --check-config accepts it too, with the same warning.
    spit(dir_ + "/nogroup.toml", "[daemon]\nadmin_group = \"no-such-group-kvpool\"\n[[pool]]\nname "
                                 "= \"x\"\nsize = \"64M\"\n");
    Proc ng = run({kvpoold_, "--check-config", "--config", dir_ + "/nogroup.toml"});
    EXPECT_EQ(ng.code, 0) << ng.err;
    EXPECT_NE(ng.err.find("<4>"), std::string::npos) << ng.err;
    EXPECT_NE(ng.err.find("no-such-group-kvpool"), std::string::npos) << ng.err;
    EXPECT_NE(ng.err.find("only root could create pools"), std::string::npos) << ng.err;
    EXPECT_NE(ng.out.find("valid, 1 pool"), std::string::npos) << ng.out;
    EXPECT_EQ(run({kvpoold_, "--bogus"}).code, 2);
    // A pool that requires hugepages where there is no hugetlbfs: start fails, says how to fix.
    spit(dir_ + "/huge.toml",
         "[daemon]\ncontrol_socket = \"" + sock_ + "\"\nshm_dir = \"" + shm_ +
             "\"\nhugepage_dir = \"" + dir_ +
             "/huge\"\nadmin_group = \"root\"\n"
             "[[pool]]\nname = \"h\"\nsize = \"64M\"\nhugepages = \"require\"\n");
    Proc h = run({kvpoold_, "--config", dir_ + "/huge.toml"});
    EXPECT_EQ(h.code, 1);
    EXPECT_NE(h.err.find("hugetlbfs"), std::string::npos) << h.err;
}

TEST_F(DaemonTest, GarbageOnTheControlSocketNeverHurtsTheDaemon) {
    ASSERT_TRUE(start_daemon(config()));
    auto connect_raw = [&] {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        strncpy(sa.sun_path, sock_.c_str(), sizeof sa.sun_path - 1);
        EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0);
        timeval tv{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return fd;
    };
    auto reply = [](int fd, kv_ctl_hdr *h, kv_ctl_response *r, std::string *msg) {
        if (read(fd, h, sizeof *h) != ssize_t(sizeof *h)) return false;
        if (read(fd, r, sizeof *r) != ssize_t(sizeof *r)) return false;
        msg->resize(r->body_len);
        size_t got = 0;
        while (got < r->body_len) {
            ssize_t n = read(fd, msg->data() + got, r->body_len - got);
            if (n <= 0) return false;
            got += size_t(n);
        }
        return true;
    };
    kv_ctl_hdr h;
    kv_ctl_response r;
    std::string msg;
    { // bad magic: error reply, then the connection closes
        int fd = connect_raw();
        const char junk[] = "GET / HTTP/1.0\r\n\r\n";
        ASSERT_EQ(write(fd, junk, sizeof junk), ssize_t(sizeof junk));
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EPROTO));
        EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
        char b;
        EXPECT_EQ(read(fd, &b, 1), 0);
        close(fd);
    }
    { // oversized length: refused before any body is read
        int fd = connect_raw();
        kv_ctl_hdr big{KV_CTL_MAGIC, KV_CTL_VERSION, KV_CTL_OP_LIST, 0xffffffffU, 9};
        ASSERT_EQ(write(fd, &big, sizeof big), ssize_t(sizeof big));
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EMSGSIZE));
        EXPECT_EQ(h.seq, 9u);
        close(fd);
    }
    { // wrong version, unknown op, short body, reserved bits, unterminated name
        int fd = connect_raw();
        kv_ctl_hdr v2{KV_CTL_MAGIC, 2, KV_CTL_OP_LIST, 0, 1};
        ASSERT_EQ(write(fd, &v2, sizeof v2), ssize_t(sizeof v2));
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EPROTO));
        EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
        close(fd);

        fd = connect_raw();
        auto send_req = [&](uint16_t op, const kv_ctl_request &q, uint32_t len) {
            kv_ctl_hdr hh{KV_CTL_MAGIC, KV_CTL_VERSION, op, len, 5};
            std::string buf(reinterpret_cast<const char *>(&hh), sizeof hh);
            buf.append(reinterpret_cast<const char *>(&q), std::min<size_t>(len, sizeof q));
            buf.resize(sizeof hh + len, '\0');
            ASSERT_EQ(write(fd, buf.data(), buf.size()), ssize_t(buf.size()));
        };
        kv_ctl_request q{};
        send_req(200, q, sizeof q);
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EOPNOTSUPP));
        send_req(KV_CTL_OP_LIST, q, 8);
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EPROTO));
        q.reserved[3] = 1;
        send_req(KV_CTL_OP_LIST, q, sizeof q);
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EINVAL));
        q = {};
        memset(q.pool, 'a', sizeof q.pool);
        send_req(KV_CTL_OP_STATUS, q, sizeof q);
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, uint32_t(EINVAL));
        q = {};
        send_req(KV_CTL_OP_LIST, q, sizeof q); // and the connection still works
        ASSERT_TRUE(reply(fd, &h, &r, &msg));
        EXPECT_EQ(r.error, 0u) << msg;
        close(fd);
    }
    { // random bytes, a half message left hanging, and a burst of connections
        uint64_t x = 0x12345678;
        for (int i = 0; i < 50; i++) {
            int fd = connect_raw();
            std::string b(size_t(1 + i * 13), '\0');
            for (char &ch : b) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                ch = char(x);
            }
            if (i % 2) memcpy(b.data(), "KCTL", std::min<size_t>(4, b.size())); // plausible magic
            ssize_t w = write(fd, b.data(), b.size());
            (void)w;
            close(fd);
        }
        int hang = connect_raw();
        kv_ctl_hdr part{KV_CTL_MAGIC, KV_CTL_VERSION, KV_CTL_OP_LIST, sizeof(kv_ctl_request), 1};
        ASSERT_EQ(write(hang, &part, sizeof part), ssize_t(sizeof part));
        Proc ok = ctl({"list"}); // a half-sent request elsewhere must not stall anyone
        EXPECT_EQ(ok.code, 0) << ok.err;
        close(hang);
    }
    EXPECT_EQ(kill(daemon_, 0), 0) << "kvpoold died";
    EXPECT_EQ(ctl({"status", "alpha"}).code, 0);
}

// An unprivileged user can read status but cannot change pools, and cannot
// attach to a pool whose mode excludes it.
// A user who made shm_dir, a region file or state_dir before kvpoold first
// ran must not get a pool served from it: kvpoold refuses to start, names
// the file and its owner, and touches nothing.
TEST_F(DaemonTest, FilesOfOtherUsersAreNotAdopted) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a test user";
    int uid = -1, gid = -1;
    std::string why;
    if (!make_test_user(&uid, &gid, &why)) GTEST_SKIP() << why;
    const std::string cfg = dir_ + "/kvpoold.toml";
    spit(cfg, config());
    auto refused = [&](const std::string &what) {
        Proc d = run({kvpoold_, "--config", cfg});
        EXPECT_EQ(d.code, 1) << d.err;
        EXPECT_NE(d.err.find(what), std::string::npos) << d.err;
    };
    kv_create_opts o;
    kv_create_opts_init(&o, 64 << 20);
    char err[256] = "";
    // 1. The user made shm_dir (and a region in it).
    ASSERT_EQ(mkdir(shm_.c_str(), 0755), 0);
    ASSERT_EQ(kv_pool_create(pool_path("alpha").c_str(), &o, err, sizeof err), 0) << err;
    ASSERT_EQ(chown(shm_.c_str(), uid_t(uid), gid_t(gid)), 0);
    ASSERT_EQ(chown(pool_path("alpha").c_str(), uid_t(uid), gid_t(gid)), 0);
    refused("shm_dir " + shm_ + " owned by uid " + std::to_string(uid));
    struct stat sb;
    ASSERT_EQ(stat(pool_path("alpha").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_uid, uid_t(uid)) << "the file was re-owned";
    // 2. shm_dir is kvpoold's, the region file is the user's.
    ASSERT_EQ(chown(shm_.c_str(), 0, 0), 0);
    refused("region " + pool_path("alpha") + " owned by uid " + std::to_string(uid));
    ASSERT_EQ(stat(pool_path("alpha").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_uid, uid_t(uid));
    // 3. A world-writable shm_dir.
    ASSERT_EQ(unlink(pool_path("alpha").c_str()), 0);
    ASSERT_EQ(chmod(shm_.c_str(), 0777), 0);
    refused("has mode 0777");
    // 4. state_dir made by the user.
    ASSERT_EQ(chmod(shm_.c_str(), 0755), 0);
    ASSERT_EQ(mkdir((dir_ + "/state").c_str(), 0755), 0);
    ASSERT_EQ(chown((dir_ + "/state").c_str(), uid_t(uid), gid_t(gid)), 0);
    refused("state_dir " + dir_ + "/state owned by uid " + std::to_string(uid));
    ASSERT_EQ(chown((dir_ + "/state").c_str(), 0, 0), 0);
    EXPECT_TRUE(start_daemon(config())) << "trusted directories must be used";
}

// ExecStartPre= raises vm.nr_hugepages for the pools; ExecStopPost= must
// lower it again by what was added, and no further.
TEST_F(DaemonTest, HugepagesReservedAtStartAreReleasedAtStop) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to change vm.nr_hugepages";
    auto nr = [] {
        uint64_t v = 0;
        std::ifstream f("/proc/sys/vm/nr_hugepages");
        f >> v;
        return v;
    };
    auto set_nr = [](uint64_t v) {
        std::ofstream f("/proc/sys/vm/nr_hugepages");
        f << v << '\n';
    };
    const uint64_t before = nr();
    cleanups_.push_back([=] { set_nr(before); });
    const std::string cfg = dir_ + "/kvpoold.toml";
    spit(cfg, config("", "[[pool]]\nname = \"beta\"\nsize = \"32M\"\nhugepages = \"prefer\"\n"));
    Proc r = run({kvpoold_, "--reserve-hugepages", "--config", cfg});
    ASSERT_EQ(r.code, 0) << r.err;
    const uint64_t raised = nr();
    if (raised == before) GTEST_SKIP() << "the kernel gave no hugepages: " << r.err;
    EXPECT_NE(slurp(dir_ + "/state/hugepages-reserved"), "") << r.err;
    // The operator reserves two more by hand meanwhile: those must stay.
    set_nr(raised + 2);
    const uint64_t with_mine = nr();
    Proc rel = run({kvpoold_, "--release-hugepages", "--config", cfg});
    EXPECT_EQ(rel.code, 0) << rel.err;
    EXPECT_EQ(nr(), before + (with_mine - raised)) << rel.err;
    struct stat sb;
    EXPECT_NE(stat((dir_ + "/state/hugepages-reserved").c_str(), &sb), 0)
        << "all released: no record left";
    rel = run({kvpoold_, "--release-hugepages", "--config", cfg});
    EXPECT_EQ(rel.code, 0) << rel.err;
    EXPECT_EQ(nr(), before + (with_mine - raised)) << "a second release lowered it again";
}

TEST_F(DaemonTest, UnprivilegedUserReadsButCannotChange) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a test user";
    int uid = -1, gid = -1;
    std::string why;
    if (!make_test_user(&uid, &gid, &why)) GTEST_SKIP() << why;
    ASSERT_TRUE(start_daemon(config()));
    Proc st = ctl({"status", "alpha"}, uid, gid);
    EXPECT_EQ(st.code, 0) << st.err;
    Proc ls = ctl({"--json", "list"}, uid, gid);
    EXPECT_EQ(ls.code, 0) << ls.err;
    Proc d = ctl({"destroy", "alpha"}, uid, gid);
    EXPECT_EQ(d.code, 4) << d.out << d.err;
    EXPECT_NE(d.err.find("root"), std::string::npos) << d.err;
    EXPECT_EQ(ctl({"evict", "alpha", "--percent", "10"}, uid, gid).code, 4);
    EXPECT_EQ(ctl({"create", "mine", "--size", "32M"}, uid, gid).code, 4);
    struct stat sb;
    EXPECT_EQ(stat(pool_path("alpha").c_str(), &sb), 0) << "pool destroyed by an unprivileged user";
    // Attaching as that user: the pool file is root:root 0660.
    pid_t child = fork();
    if (child == 0) {
        if (setgroups(0, nullptr) != 0 || setgid(gid_t(gid)) != 0 || setuid(uid_t(uid)) != 0)
            _exit(3);
        kv_pool *p = nullptr;
        char err[256];
        int rc = kv_pool_attach(pool_path("alpha").c_str(), 0, &p, err, sizeof err);
        _exit(rc == -EACCES ? 0 : 1);
    }
    int wst = 0;
    waitpid(child, &wst, 0);
    EXPECT_TRUE(WIFEXITED(wst) && WEXITSTATUS(wst) == 0)
        << "attach as an outsider must fail with EACCES";
}

// The control socket is open to every local user, so one user may hold at
// most kMaxPerUser (32) connections: a user holding 32 idle ones gets the
// 33rd closed at once, while root and the others are still served, and the
// user is served again once it lets go.
TEST_F(DaemonTest, PerUserConnectionCap) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a test user";
    int uid = -1, gid = -1;
    std::string why;
    if (!make_test_user(&uid, &gid, &why)) GTEST_SKIP() << why;
    ASSERT_TRUE(start_daemon(config()));
    constexpr int kCap = 32; // daemon/control_server.h kMaxPerUser
    ConnectionHolder holder; // the user, holding kCap idle connections
    const bool started = holder.start(sock_, uid, gid, kCap);
    if (holder.pid > 0) children_.push_back(holder.pid);
    ASSERT_TRUE(started) << "the holder could not open its connections";

    // Refused with the reason on the wire (control.h, KV_CTL_OP_REFUSED):
    // kvctl says why and exits 3, "cannot connect".
    Proc over = ctl({"status", "alpha"}, uid, gid);
    EXPECT_EQ(over.code, 3) << "connection " << kCap + 1 << " of one user: " << over.out
                            << over.err;
    EXPECT_NE(over.err.find("too many connections: uid " + std::to_string(uid) + " holds 32"),
              std::string::npos)
        << over.err;
    Proc root = ctl({"status", "alpha"});
    EXPECT_EQ(root.code, 0) << "root was locked out by a user's connections: " << root.err;
    EXPECT_TRUE(eventually([&] { return log().find("refused") != std::string::npos; }, 5000))
        << "no log line for the refused connection:\n"
        << log();

    // Every one of its connections was kept open while it held them.
    EXPECT_EQ(holder.finish(), 0)
        << "the daemon closed some of the holder's connections (or it failed)";
    children_.pop_back();
    // Its connections are gone (the daemon sees the hang-ups): served again.
    EXPECT_TRUE(eventually([&] { return ctl({"status", "alpha"}, uid, gid).code == 0; }, 5000));
}

// 8 users at their cap of 32 take all 256 connections; a 9th user is still
// served: the daemon closes the oldest idle connection of a largest holder
// to make room (fair shares), and says so in its log.
TEST_F(DaemonTest, NinthUserIsServedWhenEightHoldEveryConnection) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to take other uids";
    ASSERT_TRUE(start_daemon(config()));
    constexpr int kUsers = 8,
                  kCap = 32; // daemon/control_server.h: 8 x kMaxPerUser = kMaxConnections
    const int base_uid = 61000 + getpid() % 1000 * 10;
    std::vector<ConnectionHolder> holders(kUsers);
    for (int u = 0; u < kUsers; u++) {
        const bool started = holders[size_t(u)].start(sock_, base_uid + u, base_uid + u, kCap);
        if (holders[size_t(u)].pid > 0) children_.push_back(holders[size_t(u)].pid);
        ASSERT_TRUE(started) << "holder " << u << " could not open its connections";
    }
    // All 256 are taken; the daemon has seen every one (a status from root,
    // served from its reserve, is answered after the accepts before it).
    ASSERT_EQ(ctl({"status", "alpha"}).code, 0);

    const int ninth = base_uid + kUsers;
    Proc p = ctl({"status", "alpha"}, ninth, ninth);
    EXPECT_EQ(p.code, 0) << "a 9th user was locked out by 8 users' idle connections: " << p.err;
    EXPECT_TRUE(eventually([&] { return log().find("idle one(s)") != std::string::npos; }, 5000))
        << log();

    int closed = 0;
    for (size_t u = 0; u < holders.size(); u++) {
        const int n = holders[u].finish();
        ASSERT_TRUE(n >= 0 && n < 100) << "holder " << u << " exit " << n;
        closed += n;
    }
    children_.clear();
    EXPECT_EQ(closed, 1) << "exactly one idle connection is closed to serve the 9th user";
}

// A pool that requires hugepages, on a private hugetlbfs mount, with the
// pages reserved by `kvpoold --reserve-hugepages` as the unit's
// ExecStartPre= does. The machine's nr_hugepages and mounts are restored
// whatever happens.
TEST_F(DaemonTest, HugepagePoolWithReservedPages) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to mount hugetlbfs and reserve hugepages";
    const std::string huge = dir_ + "/huge";
    mkdir(huge.c_str(), 0755);
    if (run({"/bin/mount", "-t", "hugetlbfs", "none", huge}).code != 0)
        GTEST_SKIP() << "cannot mount hugetlbfs here";
    cleanups_.push_back([huge] { run({"/bin/umount", "-l", huge}); });
    const std::string nr_path = "/proc/sys/vm/nr_hugepages";
    const std::string nr_before = slurp(nr_path);
    cleanups_.push_back([nr_path, nr_before] { spit(nr_path, nr_before); });

    std::string cfg = config();
    const std::string never = "hugepages = \"never\"";
    cfg.replace(cfg.find(never), never.size(), "hugepages = \"require\"");
    spit(dir_ + "/huge.toml", cfg);
    Proc r = run({kvpoold_, "--reserve-hugepages", "--config", dir_ + "/huge.toml"});
    if (r.code != 0 && r.err.find("the kernel gave") != std::string::npos)
        GTEST_SKIP() << "the kernel would not reserve hugepages: " << r.err;
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_TRUE(start_daemon(cfg));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["backing"], "hugetlbfs") << s.dump();
    EXPECT_GT(s["page_size"].get<uint64_t>(), 4096u);
    EXPECT_EQ(s["path"], huge + "/alpha");
    Client c(huge + "/alpha");
    ASSERT_TRUE(c.pool) << c.error;
    ASSERT_EQ(c.put(1, 1 << 20), 0);
    kv_view v;
    ASSERT_EQ(kv_get(c.pool, c.ns, &(const kv_key &)key_of(1), &v), 0);
    EXPECT_EQ(kv_view_verify(&v), 0);
    kv_release(c.pool, &v);
    EXPECT_EQ(stop_daemon(), 0);
    kv_pool_detach(c.pool);
    c.pool = nullptr;
    unlink((huge + "/alpha").c_str()); // give the pages back before the mount goes
}

// ---- Persistence through the daemon ------------------------------------------

namespace {

// Block i: length and bytes are functions of i alone. Few distinct size
// classes, so a 64 MiB pool (4 MiB slabs) holds them all without evicting.
size_t snap_len(uint64_t i) {
    static const size_t lens[] = {5000, 64 << 10, 200000, 128 << 10, 4096};
    return lens[i % 5];
}
std::vector<uint8_t> snap_bytes(uint64_t i) {
    std::vector<uint8_t> d(snap_len(i));
    uint64_t x = i * 0x9e3779b97f4a7c15ULL + 1;
    for (auto &b : d) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b = uint8_t(x);
    }
    return d;
}

void put_snap_blocks(Client &c, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        auto d = snap_bytes(i);
        kv_meta m{uint32_t(i), uint32_t(i % 5), i * 3};
        kv_key k = key_of(i);
        ASSERT_EQ(kv_put(c.pool, c.ns, &k, d.data(), d.size(), &m), 0);
    }
}

// Every block present with its bytes and metadata.
::testing::AssertionResult check_snap_blocks(Client &c, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        kv_view v;
        kv_key k = key_of(i);
        if (int rc = kv_get(c.pool, c.ns, &k, &v); rc != 0)
            return ::testing::AssertionFailure() << "block " << i << ": " << kv_strerror(rc);
        auto d = snap_bytes(i);
        bool same = v.length == d.size() && memcmp(v.data, d.data(), d.size()) == 0 &&
                    kv_view_verify(&v) == 0 && v.meta.tokens == uint32_t(i) &&
                    v.meta.priority == uint32_t(i % 5) && v.meta.user_tag == i * 3;
        kv_release(c.pool, &v);
        if (!same) return ::testing::AssertionFailure() << "block " << i << " differs";
    }
    return ::testing::AssertionSuccess();
}

uint64_t snap_total(uint64_t n) {
    uint64_t t = 0;
    for (uint64_t i = 0; i < n; i++)
        t += snap_len(i);
    return t;
}

} // namespace

TEST_F(DaemonTest, PersistAndRestoreOnDemand) {
    ASSERT_TRUE(start_daemon(config()));
    const uint64_t n = 60;
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, n);
    }
    Proc p = ctl({"--json", "persist", "alpha"});
    ASSERT_EQ(p.code, 0) << p.err << log();
    json pj = parse(p);
    EXPECT_EQ(pj["blocks"], n);
    EXPECT_EQ(pj["bytes"], snap_total(n));
    const std::string file = dir_ + "/state/alpha.kvsnap";
    EXPECT_EQ(pj["path"], file);
    struct stat sb;
    ASSERT_EQ(stat(file.c_str(), &sb), 0);
    EXPECT_NE(stat((file + ".tmp").c_str(), &sb), 0) << "temporary file left behind";
    json st = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(st["snapshot"]["last_persist"]["ok"], true) << st.dump();
    EXPECT_NE(ctl({"status", "alpha"}).out.find("last persist"), std::string::npos);

    // Empty the pool, then restore from the snapshot.
    ASSERT_EQ(ctl({"destroy", "alpha"}).code, 0);
    ASSERT_EQ(ctl({"create", "alpha", "--size", "64M", "--hugepages", "never"}).code, 0);
    Proc r = ctl({"--json", "restore", "alpha", "--path", file});
    ASSERT_EQ(r.code, 0) << r.err << log();
    json rj = parse(r);
    EXPECT_EQ(rj["blocks"], n);
    EXPECT_EQ(rj["dropped"], 0);
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["state"], "restored");
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    EXPECT_TRUE(check_snap_blocks(c, n));

    // A truncated snapshot restores its verified part, and kvctl says so
    // with exit 8 (not 0, which a script would take for a whole restore).
    {
        const std::string cut = dir_ + "/state/cut.kvsnap";
        std::string bytes = slurp(file);
        ASSERT_GT(bytes.size(), 8192u);
        spit(cut, bytes.substr(0, bytes.size() / 2));
        ASSERT_EQ(ctl({"destroy", "alpha"}).code, 0);
        ASSERT_EQ(ctl({"create", "alpha", "--size", "64M", "--hugepages", "never"}).code, 0);
        Proc t = ctl({"restore", "alpha", "--path", cut});
        EXPECT_EQ(t.code, 8) << t.out << t.err << log();
        EXPECT_NE(t.err.find("truncated or damaged"), std::string::npos) << t.err;
        EXPECT_NE(t.out.find("quarantined"), std::string::npos) << t.out; // moved aside
        spit(cut, bytes.substr(0, bytes.size() / 2));
        Proc tj = ctl({"--json", "restore", "alpha", "--path", cut});
        EXPECT_EQ(tj.code, 8) << tj.err;
        EXPECT_EQ(parse(tj)["truncated"], true) << tj.out;
        EXPECT_NE(ctl({"status", "alpha"}).out.find("file truncated or damaged"),
                  std::string::npos);
    }

    // Bad paths: relative, missing file.
    Proc rel = ctl({"persist", "alpha", "--path", "relative.kvsnap"});
    EXPECT_NE(rel.code, 0);
    EXPECT_NE(rel.err.find("absolute"), std::string::npos) << rel.err;
    Proc miss = ctl({"restore", "alpha", "--path", dir_ + "/nope.kvsnap"});
    EXPECT_NE(miss.code, 0);
    EXPECT_NE(miss.err.find("nope.kvsnap"), std::string::npos) << miss.err;
}

TEST_F(DaemonTest, PersistOnStopAndRestoreOnStart) {
    const std::string pools = "persist_on_stop = true\nrestore_on_start = true\n";
    ASSERT_TRUE(start_daemon(config("", pools)));
    const uint64_t n = 80;
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, n);
    }
    ASSERT_EQ(stop_daemon(), 0) << log();
    EXPECT_NE(log().find("persist pool alpha"), std::string::npos) << log();
    // A reboot: the region is gone, the snapshot is not.
    ASSERT_EQ(unlink(pool_path("alpha").c_str()), 0);
    ASSERT_TRUE(start_daemon(config("", pools)));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["state"], "restored") << s.dump();
    EXPECT_EQ(s["entries"], n);
    EXPECT_EQ(s["snapshot"]["last_restore"]["blocks"], n);
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    EXPECT_TRUE(check_snap_blocks(c, n));
    // A warm restart re-attaches and does not restore over live data.
    ASSERT_EQ(stop_daemon(), 0);
    ASSERT_TRUE(start_daemon(config("", pools)));
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["state"], "reattached");
}

TEST_F(DaemonTest, FailedPersistKeepsThePreviousSnapshotAndTheBlocks) {
    ASSERT_TRUE(start_daemon(config()));
    const uint64_t n = 40;
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, n);
    }
    ASSERT_EQ(ctl({"persist", "alpha"}).code, 0) << log();
    const std::string file = dir_ + "/state/alpha.kvsnap";
    const std::string before = slurp(file);
    ASSERT_GT(before.size(), snap_total(n));
    ASSERT_EQ(stop_daemon(), 0);
    daemon_env_ = {"KVPOOL_FAULT_IO_NTH=4"}; // the 4th io request fails with EIO
    ASSERT_TRUE(start_daemon(config()));
    Proc p = ctl({"persist", "alpha"});
    EXPECT_EQ(p.code, 1) << p.out << p.err;
    EXPECT_NE(p.err.find("alpha.kvsnap"), std::string::npos) << p.err;
    EXPECT_EQ(slurp(file), before) << "the previous snapshot changed";
    struct stat sb;
    EXPECT_NE(stat((file + ".tmp").c_str(), &sb), 0) << "temporary file left behind";
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["snapshot"]["last_persist"]["ok"], false) << s.dump();
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    EXPECT_TRUE(check_snap_blocks(c, n)) << "a failed persist must not touch committed blocks";
}

TEST_F(DaemonTest, DaemonKilledMidPersistLeavesThePreviousSnapshot) {
    std::string cfg = config();
    cfg.replace(cfg.find("\"64M\""), 5, "\"512M\"");
    ASSERT_TRUE(start_daemon(cfg));
    const uint64_t n = 40;
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, n);
    }
    ASSERT_EQ(ctl({"persist", "alpha"}).code, 0) << log();
    const std::string file = dir_ + "/state/alpha.kvsnap";
    const std::string before = slurp(file);
    { // much more data, so the next persist takes a while
        Client c(pool_path("alpha"));
        std::vector<uint8_t> big(2 << 20, 0x5a);
        for (uint64_t i = 1000; i < 1200; i++) {
            kv_key k = key_of(i);
            ASSERT_GE(kv_put(c.pool, c.ns, &k, big.data(), big.size(), nullptr), 0);
        }
    }
    pid_t kv = fork();
    if (kv == 0) {
        execl(kvctl_.c_str(), kvctl_.c_str(), "--socket", sock_.c_str(), "persist", "alpha",
              nullptr);
        _exit(127);
    }
    usleep(30000);
    kill(daemon_, SIGKILL);
    waitpid(daemon_, nullptr, 0);
    daemon_ = -1;
    int st = 0;
    waitpid(kv, &st, 0);
    // Either the persist finished before the kill (a whole new snapshot) or
    // the old one is untouched; never a torn file at the snapshot's path.
    const std::string after = slurp(file);
    if (after != before) {
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
            << "snapshot changed by a killed persist";
    }
    ASSERT_TRUE(start_daemon(cfg));
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["state"], "reattached");
    ASSERT_EQ(ctl({"destroy", "alpha"}).code, 0);
    ASSERT_EQ(ctl({"create", "alpha", "--size", "512M", "--hugepages", "never"}).code, 0);
    Proc r = ctl({"--json", "restore", "alpha", "--path", file});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(parse(r)["dropped"], 0);
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    EXPECT_TRUE(check_snap_blocks(c, n));
    // And the daemon can persist again over the leftover temporary file.
    EXPECT_EQ(ctl({"persist", "alpha"}).code, 0) << log();
}

// A member of one pool's group reaches only that pool's snapshots: not
// another pool's file by its path (restore would serve its blocks through
// this pool, persist would replace them), not a file of another pool put
// where this pool's names lead, and snapshot files are mode 0640 in the
// pool's group. Root may restore another pool's snapshot with --force only.
TEST_F(DaemonTest, GroupMemberReachesOnlyItsPoolsSnapshots) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create a test user";
    int uid = -1, gid = -1;
    std::string why;
    if (!make_test_user(&uid, &gid, &why)) GTEST_SKIP() << why;
    const group *gr = getgrgid(gid_t(gid));
    ASSERT_NE(gr, nullptr) << "no group " << gid;
    const std::string probe_cfg =
        "\n[[pool]]\nname = \"probe\"\nsize = \"64M\"\nhugepages = \"never\"\n"
        "prefault = false\ngroup = \"" +
        std::string(gr->gr_name) + "\"\nmode = \"0660\"\n";
    ASSERT_TRUE(start_daemon(config("", probe_cfg)));
    const uint64_t n = 20;
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, n);
    }
    ASSERT_EQ(ctl({"persist", "alpha"}).code, 0) << log();
    const std::string state = dir_ + "/state/";
    const std::string secret = state + "alpha.kvsnap";
    const std::string before = slurp(secret);
    struct stat sb{};
    ASSERT_EQ(stat(secret.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0640u);
    EXPECT_EQ(sb.st_gid, 0u) << "alpha's group is root";

    // alpha's snapshot by its path, as a member of probe's group only.
    Proc r = ctl({"restore", "probe", "--path", secret}, uid, gid);
    EXPECT_EQ(r.code, 4) << r.out << r.err;
    EXPECT_NE(r.err.find("may only name pool probe's snapshots"), std::string::npos) << r.err;
    EXPECT_EQ(parse(ctl({"--json", "status", "probe"}))["entries"], 0)
        << "alpha's blocks reached probe";
    Proc w = ctl({"persist", "probe", "--path", secret}, uid, gid);
    EXPECT_EQ(w.code, 4) << w.out << w.err;
    EXPECT_EQ(slurp(secret), before) << "alpha's snapshot was replaced";
    for (const std::string bad :
         {"probe@../alpha.kvsnap", "probe@.kvsnap", "probe@..kvsnap", "probe@a@b.kvsnap",
          "probe.kvsnap.spare", "probe@t.kvsnap.tmp", "probex.kvsnap", "alpha@probe.kvsnap"}) {
        Proc b = ctl({"persist", "probe", "--path", state + bad}, uid, gid);
        EXPECT_EQ(b.code, 4) << bad << ": " << b.out << b.err;
    }

    // probe's own files: the default and a tagged one, mode 0640 in probe's group.
    {
        Client c(pool_path("probe"));
        ASSERT_TRUE(c.pool) << c.error;
        ASSERT_EQ(c.put(5000, 8192), 0);
    }
    Proc own = ctl({"persist", "probe"}, uid, gid);
    ASSERT_EQ(own.code, 0) << own.err << log();
    ASSERT_EQ(stat((state + "probe.kvsnap").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0640u);
    EXPECT_EQ(sb.st_gid, gid_t(gid)) << "a snapshot of probe belongs to probe's group";
    const std::string tagged = state + "probe@before-upgrade.kvsnap";
    ASSERT_EQ(ctl({"persist", "probe", "--path", tagged}, uid, gid).code, 0) << log();
    Proc back = ctl({"--json", "restore", "probe", "--path", tagged}, uid, gid);
    EXPECT_EQ(back.code, 0) << back.out << back.err;

    // alpha's snapshot put (by root) under a name probe's group may use:
    // the header says where it came from.
    const std::string planted = state + "probe@planted.kvsnap";
    spit(planted, before);
    Proc f = ctl({"restore", "probe", "--path", planted}, uid, gid);
    EXPECT_EQ(f.code, 4) << f.out << f.err;
    EXPECT_NE(f.err.find("written from pool \"alpha\", not from pool \"probe\""), std::string::npos)
        << f.err;
    Proc ff = ctl({"restore", "probe", "--path", planted, "--force"}, uid, gid);
    EXPECT_EQ(ff.code, 4) << ff.out << ff.err;
    EXPECT_NE(ff.err.find("only root"), std::string::npos) << ff.err;
    EXPECT_EQ(parse(ctl({"--json", "status", "probe"}))["entries"], 1)
        << "alpha's blocks reached probe";
    // Root too needs --force.
    Proc rr = ctl({"restore", "probe", "--path", planted});
    EXPECT_EQ(rr.code, 4) << rr.out << rr.err;
    EXPECT_NE(rr.err.find("\"alpha\""), std::string::npos) << rr.err;
    EXPECT_NE(rr.err.find("--force"), std::string::npos) << rr.err;
    Proc rf = ctl({"--json", "restore", "probe", "--path", planted, "--force"});
    EXPECT_EQ(rf.code, 0) << rf.out << rf.err;
    EXPECT_EQ(parse(rf)["blocks"], n);
}

namespace {
// Files in dir whose name starts with prefix.
std::vector<std::string> files_with_prefix(const std::string &dir, const std::string &prefix) {
    std::vector<std::string> out;
    if (DIR *d = opendir(dir.c_str())) {
        while (dirent *e = readdir(d))
            if (std::string(e->d_name).rfind(prefix, 0) == 0) out.push_back(dir + "/" + e->d_name);
        closedir(d);
    }
    return out;
}
} // namespace

// A snapshot that did not restore whole (one bit flipped in its header) is
// moved aside, logged and never written over: the persist at stop writes a
// new file instead of making the damaged one its spare, and the persists
// after that never recycle it. On demand too: a restore that dropped a
// damaged block says where the file went.
TEST_F(DaemonTest, DamagedSnapshotIsKeptAsideNotOverwritten) {
    const std::string pools = "persist_on_stop = true\nrestore_on_start = true\n";
    ASSERT_TRUE(start_daemon(config("", pools)));
    const uint64_t n = 30;
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, n);
    }
    ASSERT_EQ(stop_daemon(), 0) << log();
    const std::string state = dir_ + "/state", file = state + "/alpha.kvsnap";
    std::string damaged = slurp(file);
    ASSERT_GT(damaged.size(), 4096u);
    damaged[120] ^= 0x01; // in the header's pool_name: the header checksum fails
    spit(file, damaged);
    ASSERT_EQ(unlink(pool_path("alpha").c_str()), 0); // a reboot
    ASSERT_TRUE(start_daemon(config("", pools)));
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["snapshot"]["last_restore"]["ok"], false) << s.dump();
    auto bad = files_with_prefix(state, "alpha.kvsnap.bad-");
    ASSERT_EQ(bad.size(), 1u) << "the damaged snapshot was not moved aside; log:\n" << log();
    EXPECT_EQ(s["snapshot"]["last_restore"]["quarantined"], bad[0]) << s.dump();
    EXPECT_EQ(slurp(bad[0]), damaged);
    EXPECT_NE(log().find("did not restore whole: moved to " + bad[0]), std::string::npos) << log();
    struct stat sb{};
    EXPECT_NE(stat(file.c_str(), &sb), 0) << "the damaged file is still at the pool's path";

    // Persist at stop, then twice on demand (the second recycles a spare):
    // the damaged file stays as it is.
    {
        Client c(pool_path("alpha"));
        ASSERT_TRUE(c.pool) << c.error;
        put_snap_blocks(c, 5);
    }
    ASSERT_EQ(stop_daemon(), 0) << log();
    ASSERT_TRUE(start_daemon(config("", pools)));
    ASSERT_EQ(ctl({"persist", "alpha"}).code, 0) << log();
    Proc again = ctl({"--json", "persist", "alpha"});
    ASSERT_EQ(again.code, 0) << again.err << log();
    EXPECT_EQ(parse(again)["recycled_spare"], true) << again.out;
    EXPECT_EQ(slurp(bad[0]), damaged) << "the damaged snapshot was written over";
    EXPECT_EQ(files_with_prefix(state, "alpha.kvsnap.bad-").size(), 1u);

    // On demand: one block's bytes damaged. The good blocks are restored
    // (exit 8) and the file is moved aside.
    const std::string copy = state + "/alpha@copy.kvsnap";
    std::string part = slurp(file);
    part[4096 + 8192 + 100] ^= 0x01; // the first block's data, behind segment 0's head
    spit(copy, part);
    ASSERT_EQ(ctl({"destroy", "alpha"}).code, 0);
    ASSERT_EQ(ctl({"create", "alpha", "--size", "64M", "--hugepages", "never"}).code, 0);
    Proc r = ctl({"--json", "restore", "alpha", "--path", copy});
    EXPECT_EQ(r.code, 8) << r.out << r.err;
    json rj = parse(r);
    EXPECT_EQ(rj["blocks"], 4);
    EXPECT_EQ(rj["dropped_corrupt"], 1) << r.out;
    EXPECT_EQ(rj["dropped_no_room"], 0) << r.out;
    EXPECT_NE(r.err.find("1 block(s) dropped (1 failed verification, 0 found no room in the pool"),
              std::string::npos)
        << r.err;
    auto moved = files_with_prefix(state, "alpha@copy.kvsnap.bad-");
    ASSERT_EQ(moved.size(), 1u) << r.out;
    EXPECT_EQ(rj["quarantined"], moved[0]);
    EXPECT_EQ(slurp(moved[0]), part);
}

// ---- Every request bounded in work and reply --------------------------------

namespace {

// A raw control connection: requests as kvctl sends them, replies read whole.
struct RawCtl {
    int fd = -1;
    explicit RawCtl(const std::string &sock) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        strncpy(sa.sun_path, sock.c_str(), sizeof sa.sun_path - 1);
        if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
            close(fd);
            fd = -1;
            return;
        }
        timeval tv{20, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    ~RawCtl() {
        if (fd >= 0) close(fd);
    }
    static std::string message(uint16_t op, const kv_ctl_request &q, uint32_t seq) {
        kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, op, sizeof q, seq};
        std::string m(reinterpret_cast<const char *>(&h), sizeof h);
        m.append(reinterpret_cast<const char *>(&q), sizeof q);
        return m;
    }
    bool send_all(const std::string &m) {
        size_t done = 0;
        while (done < m.size()) {
            ssize_t n = send(fd, m.data() + done, m.size() - done, MSG_NOSIGNAL);
            if (n <= 0) return false;
            done += size_t(n);
        }
        return true;
    }
    bool read_all(void *p, size_t n) {
        auto *b = static_cast<char *>(p);
        while (n) {
            ssize_t k = read(fd, b, n);
            if (k <= 0) return false;
            b += k, n -= size_t(k);
        }
        return true;
    }
    // One reply: its header, error and body (a body longer than a frame
    // may hold is read anyway, so the test can report its size).
    bool reply(kv_ctl_hdr *h, uint32_t *error, std::string *body) {
        kv_ctl_response r{};
        if (!read_all(h, sizeof *h) || h->length < sizeof r || !read_all(&r, sizeof r))
            return false;
        body->resize(h->length - sizeof r);
        *error = r.error;
        return read_all(body->data(), body->size());
    }
};

std::string entries_config(const std::string &base) {
    // 512 MiB with 4 KiB average blocks: more than KV_CTL_ENTRIES_MAX_SCAN
    // entry slots, mostly empty (a sparse table), and room for the blocks.
    return base +
           "\n[[pool]]\nname = \"many\"\nsize = \"512M\"\nhugepages = \"never\"\nprefault = false\n"
           "avg_block_size = \"4K\"\ngroup = \"root\"\n";
}

// Send a long request (op on pool "many") on one connection, then a status
// of alpha on another: the status must be answered first, while the long
// one is still at work. Returns the long request's reply body.
std::string long_op_lets_status_through(const std::string &sock, uint16_t op, kv_ctl_request q) {
    RawCtl a(sock), b(sock);
    EXPECT_GE(a.fd, 0);
    EXPECT_GE(b.fd, 0);
    memcpy(q.pool, "many", 5);
    EXPECT_TRUE(a.send_all(RawCtl::message(op, q, 1)));
    kv_ctl_request s{};
    memcpy(s.pool, "alpha", 6);
    EXPECT_TRUE(b.send_all(RawCtl::message(KV_CTL_OP_STATUS, s, 2)));
    pollfd p[2] = {{a.fd, POLLIN, 0}, {b.fd, POLLIN, 0}};
    EXPECT_GT(poll(p, 2, 20000), 0);
    EXPECT_TRUE(p[1].revents & POLLIN) << "the status was not answered first";
    EXPECT_FALSE(p[0].revents & POLLIN) << "the long request was answered before the status";
    kv_ctl_hdr h{};
    uint32_t err = 0;
    std::string body;
    EXPECT_TRUE(b.reply(&h, &err, &body));
    EXPECT_EQ(err, 0u) << body;
    body.clear();
    EXPECT_TRUE(a.reply(&h, &err, &body));
    EXPECT_EQ(err, 0u) << body;
    EXPECT_EQ(h.op, op);
    return body;
}

} // namespace

// kvctl lists a pool of many blocks, page by page, whole: before paging one
// request built every row in the daemon's loop, and beyond about 4,000 rows
// the reply exceeded a frame (kvctl exit 7).
TEST_F(DaemonTest, EntriesListsAPoolOfManyBlocks) {
    ASSERT_TRUE(start_daemon(entries_config(config())));
    constexpr uint64_t kBlocks = 20000;
    Proc fill = run({env_or("KVFILL", "build/tools/kvfill"), "--pool", pool_path("many"), "--bytes",
                     std::to_string(kBlocks * 4096), "--block", "4096"});
    ASSERT_EQ(fill.code, 0) << fill.out << fill.err;

    Proc js = ctl({"--json", "entries", "many"});
    ASSERT_EQ(js.code, 0) << js.err;
    json doc = parse(js);
    EXPECT_EQ(doc["pool"], "many");
    EXPECT_EQ(doc["count"], kBlocks);
    EXPECT_EQ(doc["truncated"], false);
    ASSERT_EQ(doc["entries"].size(), kBlocks);
    std::set<std::string> keys;
    for (const auto &e : doc["entries"])
        keys.insert(e["key"].get<std::string>());
    EXPECT_EQ(keys.size(), kBlocks) << "a block listed twice or missed";

    Proc human = ctl({"entries", "many"});
    ASSERT_EQ(human.code, 0) << human.err;
    EXPECT_EQ(size_t(std::count(human.out.begin(), human.out.end(), '\n')), kBlocks + 1)
        << "header + one line a row";
    EXPECT_EQ(human.err, "");

    // --limit limits the rows of the whole listing, across pages.
    Proc lim = ctl({"--json", "entries", "many", "--limit", "5000"});
    ASSERT_EQ(lim.code, 0) << lim.err;
    json l = parse(lim);
    EXPECT_EQ(l["entries"].size(), 5000u);
    EXPECT_EQ(l["count"], 5000);
    EXPECT_EQ(l["truncated"], true);
    Proc limh = ctl({"entries", "many", "--limit", "3000"});
    EXPECT_EQ(limh.code, 0) << limh.err;
    EXPECT_EQ(std::count(limh.out.begin(), limh.out.end(), '\n'), 3001);
    EXPECT_NE(limh.err.find("showing the first 3000 entries"), std::string::npos) << limh.err;
}

// One ENTRIES request asking for every row gets a bounded page: at most
// KV_CTL_ENTRIES_MAX_ROWS rows, a reply within KV_CTL_MAX_BODY, at most
// KV_CTL_ENTRIES_MAX_SCAN slots examined; following next_cursor visits every
// block once. A cursor past the table, or on another op, is refused.
TEST_F(DaemonTest, EntriesRequestIsBoundedInRowsBytesAndSlots) {
    ASSERT_TRUE(start_daemon(entries_config(config())));
    constexpr uint64_t kBlocks = 20000;
    Proc fill = run({env_or("KVFILL", "build/tools/kvfill"), "--pool", pool_path("many"), "--bytes",
                     std::to_string(kBlocks * 4096), "--block", "4096"});
    ASSERT_EQ(fill.code, 0) << fill.out << fill.err;
    RawCtl c(sock_);
    ASSERT_GE(c.fd, 0);
    kv_ctl_request q{};
    memcpy(q.pool, "many", 5);
    q.arg = UINT64_MAX; // "every row", as kvctl --limit 100000000 sent
    uint64_t rows = 0, pages = 0, slots = 0;
    std::set<std::string> keys;
    for (uint32_t seq = 1;; seq++) {
        ASSERT_TRUE(c.send_all(RawCtl::message(KV_CTL_OP_ENTRIES, q, seq)));
        kv_ctl_hdr h{};
        uint32_t err = 0;
        std::string body;
        ASSERT_TRUE(c.reply(&h, &err, &body)) << "page " << pages;
        ASSERT_EQ(err, 0u) << body;
        EXPECT_LE(h.length, KV_CTL_MAX_BODY) << "page " << pages << " is larger than a frame";
        json page = json::parse(body);
        ASSERT_TRUE(page.contains("next_cursor")) << body.substr(0, 200);
        EXPECT_LE(page["entries"].size(), KV_CTL_ENTRIES_MAX_ROWS);
        slots = page["entry_slots"];
        for (const auto &e : page["entries"]) {
            EXPECT_GE(e["index"].get<uint64_t>(), q.cursor);
            keys.insert(e["key"].get<std::string>());
        }
        rows += page["entries"].size();
        pages++;
        if (page["next_cursor"].is_null()) break;
        const uint64_t next = page["next_cursor"];
        EXPECT_GT(next, q.cursor);
        EXPECT_LE(next - q.cursor, uint64_t(KV_CTL_ENTRIES_MAX_SCAN))
            << "more slots examined than the cap";
        ASSERT_LT(pages, 10000u);
        q.cursor = next;
    }
    EXPECT_EQ(rows, kBlocks);
    EXPECT_EQ(keys.size(), kBlocks);
    EXPECT_GT(slots, uint64_t(KV_CTL_ENTRIES_MAX_SCAN))
        << "the pool should have a table larger than one scan";
    EXPECT_GE(pages, (kBlocks + KV_CTL_ENTRIES_MAX_ROWS - 1) / KV_CTL_ENTRIES_MAX_ROWS);

    kv_ctl_hdr h{};
    uint32_t err = 0;
    std::string body;
    q.cursor = slots + 1;
    ASSERT_TRUE(c.send_all(RawCtl::message(KV_CTL_OP_ENTRIES, q, 7)));
    ASSERT_TRUE(c.reply(&h, &err, &body));
    EXPECT_EQ(err, uint32_t(EINVAL));
    EXPECT_NE(body.find("cursor " + std::to_string(slots + 1)), std::string::npos) << body;
    q.cursor = 5;
    ASSERT_TRUE(c.send_all(RawCtl::message(KV_CTL_OP_STATUS, q, 8)));
    ASSERT_TRUE(c.reply(&h, &err, &body));
    EXPECT_EQ(err, uint32_t(EINVAL));
    EXPECT_NE(body.find("cursor 5"), std::string::npos) << body;
}

// A peer that pipelines many requests and does not read its replies holds
// at most one reply in the daemon: requests are taken one at a time, each
// once the reply before it is in the kernel's hands. (All of a pipeline was
// answered in one turn of the loop, every reply buffered: 300 pages of
// entries took the daemon's RSS from 25 MB to 176 MB.) Read afterwards, the
// replies all come, in order.
TEST_F(DaemonTest, PipelinedRequestsHoldOneReplyAtATime) {
    ASSERT_TRUE(start_daemon(entries_config(config())));
    Proc fill = run({env_or("KVFILL", "build/tools/kvfill"), "--pool", pool_path("many"), "--bytes",
                     std::to_string(20000 * 4096), "--block", "4096"});
    ASSERT_EQ(fill.code, 0) << fill.out << fill.err;
    ASSERT_EQ(ctl({"entries", "many"}).code, 0); // the entry table's pages are now resident
    auto rss = [&] {
        return parse(ctl({"--json", "stats"}))["daemon"]["rss_bytes"].get<uint64_t>();
    };
    const uint64_t before = rss();

    RawCtl c(sock_);
    ASSERT_GE(c.fd, 0);
    kv_ctl_request q{};
    memcpy(q.pool, "many", 5);
    q.arg = KV_CTL_ENTRIES_MAX_ROWS; // about 600 KB a reply
    constexpr uint32_t kRequests = 300;
    std::string pipeline;
    for (uint32_t seq = 1; seq <= kRequests; seq++)
        pipeline += RawCtl::message(KV_CTL_OP_ENTRIES, q, seq);
    ASSERT_TRUE(c.send_all(pipeline));
    kv_ctl_hdr h{};
    uint32_t err = 0;
    std::string body;
    ASSERT_TRUE(c.reply(&h, &err, &body)); // the daemon has begun on the pipeline
    EXPECT_EQ(h.seq, 1u);
    const uint64_t during = rss();
    EXPECT_LT(during, before + (64ULL << 20))
        << "RSS " << before << " -> " << during << ": the replies of the pipeline were buffered";
    for (uint32_t seq = 2; seq <= kRequests; seq++) {
        ASSERT_TRUE(c.reply(&h, &err, &body)) << "reply " << seq;
        ASSERT_EQ(h.seq, seq);
        ASSERT_EQ(err, 0u) << body;
    }
    EXPECT_EQ(kill(daemon_, 0), 0);
}

// An EVICT of more than kEvictChunkBytes (256 MiB) is done a chunk per
// turn of the loop, so a request that arrives meanwhile is answered first
// (it waited for the whole evict, as the loop did).
TEST_F(DaemonTest, LargeEvictLetsOtherRequestsThrough) {
    ASSERT_TRUE(start_daemon(entries_config(config())));
    Proc fill = run({env_or("KVFILL", "build/tools/kvfill"), "--pool", pool_path("many"), "--bytes",
                     "400M", "--block", "4096"});
    ASSERT_EQ(fill.code, 0) << fill.out << fill.err;
    kv_ctl_request q{};
    q.arg = 100;
    const std::string body = long_op_lets_status_through(sock_, KV_CTL_OP_EVICT, q);
    ASSERT_FALSE(HasFailure()) << body;
    json j = json::parse(body);
    EXPECT_GT(j["requested_bytes"].get<uint64_t>(), 256ULL << 20)
        << "the evict should take more than one chunk";
    EXPECT_GE(j["freed_bytes"].get<uint64_t>(), j["requested_bytes"].get<uint64_t>());
}

// The entries listing says how each block was used, in the terms of the
// pool's policy (control.h, ENTRY), and status says the free bytes and
// when the pool was created.
TEST_F(DaemonTest, EntriesShowAccessAndStatusShowsFreeAndCreated) {
    const uint64_t started_ns = uint64_t(time(nullptr) - 1) * 1000000000ULL;
    ASSERT_TRUE(start_daemon(config()));
    for (const char *policy : {"prefix", "lfu", "clock", "fifo"}) {
        SCOPED_TRACE(policy);
        const std::string name = std::string("p-") + policy;
        ASSERT_EQ(
            ctl({"create", name, "--size", "32M", "--hugepages", "never", "--policy", policy}).code,
            0);
        Client c(pool_path(name));
        ASSERT_TRUE(c.pool) << c.error;
        for (uint64_t i = 0; i < 4; i++)
            ASSERT_EQ(c.put(i, 4096), 0);
        for (int n = 0; n < 3; n++) { // block 2 is read three times
            kv_view v;
            ASSERT_EQ(kv_get(c.pool, c.ns, &(const kv_key &)key_of(2), &v), 0);
            kv_release(c.pool, &v);
        }
        json e = parse(ctl({"--json", "entries", name}));
        ASSERT_EQ(e["entries"].size(), 4u);
        char hot[40];
        const kv_key k2 = key_of(2);
        snprintf(hot, sizeof hot, "%016llx%016llx", (unsigned long long)k2.hi,
                 (unsigned long long)k2.lo);
        for (const auto &row : e["entries"]) {
            const bool is_hot = row["key"] == hot;
            ASSERT_TRUE(row.contains("last_access_s") && row.contains("access_count") &&
                        row.contains("referenced"))
                << row.dump();
            if (std::string(policy) == "prefix") {
                ASSERT_TRUE(row["last_access_s"].is_number()) << row.dump();
                EXPECT_GE(row["last_access_s"].get<double>(), 0.0);
                EXPECT_LE(row["last_access_s"].get<double>(), row["age_s"].get<double>() + 1.0)
                    << row.dump();
                EXPECT_TRUE(row["access_count"].is_null());
            } else if (std::string(policy) == "lfu") {
                EXPECT_EQ(row["access_count"], is_hot ? 4 : 1)
                    << row.dump(); // the commit, then each get
                EXPECT_TRUE(row["last_access_s"].is_null());
            } else if (std::string(policy) == "clock") {
                EXPECT_EQ(row["referenced"], is_hot) << row.dump();
            } else {
                EXPECT_TRUE(row["last_access_s"].is_null() && row["access_count"].is_null() &&
                            row["referenced"].is_null())
                    << "FIFO records no access: " << row.dump();
            }
        }
        if (std::string(policy) == "prefix") { // the block read last was used last
            double hot_idle = 1e9, cold_idle = 1e9;
            for (const auto &row : e["entries"]) {
                const double idle = row["last_access_s"].get<double>();
                if (row["key"] == hot)
                    hot_idle = idle;
                else
                    cold_idle = std::min(cold_idle, idle);
            }
            EXPECT_LT(hot_idle, cold_idle);
        }
        Proc h = ctl({"entries", name});
        EXPECT_NE(h.out.find("ACCESS"), std::string::npos) << h.out;
    }
    json s = parse(ctl({"--json", "status", "alpha"}));
    EXPECT_EQ(s["free_bytes"].get<uint64_t>() + s["used_bytes"].get<uint64_t>(),
              s["capacity"].get<uint64_t>());
    ASSERT_TRUE(s["create_time_ns"].is_number()) << s.dump();
    EXPECT_GE(s["create_time_ns"].get<uint64_t>(), started_ns);
    EXPECT_LE(s["create_time_ns"].get<uint64_t>(), uint64_t(time(nullptr) + 1) * 1000000000ULL);
    EXPECT_EQ(s["created"].get<std::string>().size(), 20u) << s["created"]; // 2024-05-01T12:34:56Z
    Proc sh = ctl({"status", "alpha"});
    EXPECT_NE(sh.out.find("free:"), std::string::npos) << sh.out;
    EXPECT_NE(sh.out.find("created:"), std::string::npos) << sh.out;
}

namespace {

// Send one HTTP request to the metrics socket; the whole answer.
std::string http(const std::string &msock, const std::string &request) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, msock.c_str(), sizeof sa.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
        close(fd);
        return "connect failed";
    }
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (write(fd, request.data(), request.size()) != ssize_t(request.size())) {
        close(fd);
        return "write failed";
    }
    std::string resp;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        resp.append(buf, size_t(n));
    close(fd);
    return resp;
}

// The value of one sample line "NAME{pool=\"POOL\"} VALUE", or -1.
double sample(const std::string &text, const std::string &name, const std::string &pool) {
    const std::string head = name + "{pool=\"" + pool + "\"} ";
    const size_t at = text.find("\n" + head);
    return at == std::string::npos ? -1 : std::strtod(text.c_str() + at + 1 + head.size(), nullptr);
}

} // namespace

// The endpoint serves /metrics to GET and HEAD only (any path got the
// metrics, and HEAD got 400).
TEST_F(DaemonTest, MetricsServesOnlyMetricsToGetAndHead) {
    const std::string msock = dir_ + "/metrics";
    ASSERT_TRUE(start_daemon(config("metrics = \"unix:" + msock + "\"\n")));
    const std::string get = http(msock, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(get.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << get;
    const size_t body = get.find("\r\n\r\n") + 4;
    const std::string head = http(msock, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
    EXPECT_EQ(head.find("\r\n\r\n") + 4, head.size()) << "HEAD got a body: " << head;
    EXPECT_NE(head.find("Content-Length: "), std::string::npos) << head;
    EXPECT_NE(get.find("Content-Length: " + std::to_string(get.size() - body)), std::string::npos);
    EXPECT_EQ(http(msock, "GET /metrics?name[]=x HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
    for (const char *path : {"/", "/metric", "/metrics/x", "/favicon.ico"}) {
        const std::string r = http(msock, std::string("GET ") + path + " HTTP/1.1\r\n\r\n");
        EXPECT_EQ(r.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << path << ": " << r;
        EXPECT_EQ(r.find("kvpool_"), std::string::npos) << path << ": the metrics were served";
    }
    for (const char *method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
        const std::string r = http(msock, std::string(method) + " /metrics HTTP/1.1\r\n\r\n");
        EXPECT_EQ(r.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << method << ": " << r;
        EXPECT_NE(r.find("Allow: GET, HEAD\r\n"), std::string::npos) << r;
    }
    EXPECT_EQ(http(msock, "hello\r\n\r\n").rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u);
    EXPECT_EQ(http(msock, std::string(9000, 'x')).rfind("HTTP/1.1 431 ", 0), 0u);
}

// Persist and restore counts and last-success times (so an operator can
// alert on a stale snapshot), dedups and removes, and kvpool_clients
// counting the clients as kvctl does, without the daemon's own slot.
TEST_F(DaemonTest, MetricsCountSnapshotsDedupsRemovesAndClients) {
    const std::string msock = dir_ + "/metrics";
    ASSERT_TRUE(start_daemon(config("metrics = \"unix:" + msock + "\"\n")));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    ASSERT_EQ(c.put(1, 4096), 0);
    ASSERT_EQ(c.put(2, 4096), 0);
    EXPECT_EQ(c.put(1, 4096), 1) << "a second put of the key is a dedup";
    ASSERT_EQ(kv_remove(c.pool, c.ns, &(const kv_key &)key_of(2)), 0);
    auto scrape = [&] {
        const std::string r = http(msock, "GET /metrics HTTP/1.1\r\n\r\n");
        return r.substr(std::min(r.size(), r.find("\r\n\r\n") + 4));
    };
    std::string m = scrape();
    EXPECT_EQ(sample(m, "kvpool_dedups_total", "alpha"), 1) << m;
    EXPECT_EQ(sample(m, "kvpool_removes_total", "alpha"), 1) << m;
    EXPECT_EQ(sample(m, "kvpool_clients", "alpha"), 1) << m;
    EXPECT_EQ(parse(ctl({"--json", "status", "alpha"}))["clients"], 1);
    EXPECT_EQ(sample(m, "kvpool_persists_total", "alpha"), 0) << m;
    EXPECT_EQ(sample(m, "kvpool_last_persist_success_timestamp_seconds", "alpha"), 0) << m;

    const double before = double(time(nullptr) - 1);
    ASSERT_EQ(ctl({"persist", "alpha"}).code, 0);
    EXPECT_NE(ctl({"persist", "alpha", "--path", dir_ + "/no/such/dir/x.kvsnap"}).code, 0);
    ASSERT_EQ(ctl({"restore", "alpha"}).code, 0);
    m = scrape();
    EXPECT_EQ(sample(m, "kvpool_persists_total", "alpha"), 1) << m;
    EXPECT_EQ(sample(m, "kvpool_persist_failures_total", "alpha"), 1) << m;
    EXPECT_GE(sample(m, "kvpool_last_persist_success_timestamp_seconds", "alpha"), before) << m;
    EXPECT_LE(sample(m, "kvpool_last_persist_success_timestamp_seconds", "alpha"),
              double(time(nullptr) + 1));
    EXPECT_EQ(sample(m, "kvpool_restores_total", "alpha"), 1) << m;
    EXPECT_EQ(sample(m, "kvpool_restore_failures_total", "alpha"), 0) << m;
    EXPECT_GE(sample(m, "kvpool_last_restore_success_timestamp_seconds", "alpha"), before) << m;
    EXPECT_NE(m.find("# TYPE kvpool_persists_total counter"), std::string::npos);
}

// A request trickled a byte at a time never looked idle and was accepted
// however long it took: it must arrive whole within the request deadline
// (kRequestDeadlineMs, 10 s; checked every 5 s), or the connection is
// closed with a log line. Other clients are served meanwhile.
TEST_F(DaemonTest, TrickledRequestIsClosedAtTheDeadline) {
    ASSERT_TRUE(start_daemon(config()));
    RawCtl c(sock_);
    ASSERT_GE(c.fd, 0);
    kv_ctl_request q{};
    const std::string msg = RawCtl::message(KV_CTL_OP_LIST, q, 1);
    const uint64_t start = mono_ms();
    bool closed = false;
    size_t sent = 0;
    // One byte every 200 ms: the whole request would take 86 s.
    while (!closed && mono_ms() - start < 30000 && sent < msg.size()) {
        if (send(c.fd, msg.data() + sent, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        sent++;
        pollfd p{c.fd, POLLIN, 0};
        if (poll(&p, 1, 200) > 0) {
            char b;
            closed = read(c.fd, &b, 1) <= 0; // EOF or reset: the daemon closed it
        }
    }
    const uint64_t took = mono_ms() - start;
    EXPECT_TRUE(closed) << "still open after " << took << " ms and " << sent << " bytes";
    EXPECT_GE(took, 10000u) << "closed before the deadline";
    EXPECT_TRUE(
        eventually([&] { return log().find("is still incomplete") != std::string::npos; }, 2000))
        << log();
    EXPECT_EQ(ctl({"list"}).code, 0);
}

// user_tag is a uint64 the client chose: the entries listing gives it as a
// string of decimal digits, which every JSON parser keeps exact (a number
// above 2^53 is rounded to a double by most: 2^53 + 1 read back as 2^53).
TEST_F(DaemonTest, EntriesGiveUserTagAsADecimalString) {
    ASSERT_TRUE(start_daemon(config()));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    const uint64_t tags[] = {0, 9007199254740993ULL, UINT64_MAX};
    std::vector<uint8_t> d(4096, 1);
    for (uint64_t i = 0; i < 3; i++) {
        const kv_meta meta{1, 0, tags[i]};
        const kv_key k = key_of(i);
        ASSERT_EQ(kv_put(c.pool, c.ns, &k, d.data(), d.size(), &meta), 0);
    }
    json e = parse(ctl({"--json", "entries", "alpha"}));
    ASSERT_EQ(e["entries"].size(), 3u) << e.dump();
    std::set<std::string> seen;
    for (const auto &row : e["entries"]) {
        ASSERT_TRUE(row["user_tag"].is_string()) << row.dump();
        seen.insert(row["user_tag"].get<std::string>());
    }
    EXPECT_EQ(seen, (std::set<std::string>{"0", "9007199254740993", "18446744073709551615"}));
}

namespace {

// Flip one byte of block i's data through a mapping of the region file of
// its own, as a stray write from any process that maps the pool would.
::testing::AssertionResult scribble(Client &c, const std::string &path, uint64_t i) {
    kv_view v;
    const kv_key k = key_of(i);
    if (kv_get(c.pool, c.ns, &k, &v) != 0) return ::testing::AssertionFailure() << "no block " << i;
    const auto *base = reinterpret_cast<const char *>(kv_pool_header(c.pool));
    const uint64_t off = uint64_t(static_cast<const char *>(v.data) - base) + v.length / 2;
    const uint64_t region = kv_pool_header(c.pool)->region_size;
    kv_release(c.pool, &v);
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return ::testing::AssertionFailure() << path << ": " << strerror(errno);
    void *m = mmap(nullptr, region, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return ::testing::AssertionFailure() << "mmap: " << strerror(errno);
    static_cast<char *>(m)[off] ^= 0x5a;
    munmap(m, region);
    return ::testing::AssertionSuccess();
}

std::string key_hex(uint64_t i) {
    const kv_key k = key_of(i);
    char b[40];
    snprintf(b, sizeof b, "%016llx%016llx", (unsigned long long)k.hi, (unsigned long long)k.lo);
    return b;
}

} // namespace

// health reads the tables only, so a byte scribbled into a committed block
// passes it (and it says where to look); verify reads every block, reports
// the bad one with a non-zero exit, and --remove removes it and nothing
// else.
TEST_F(DaemonTest, VerifyFindsAndRemovesAScribbledBlock) {
    ASSERT_TRUE(start_daemon(config()));
    Client c(pool_path("alpha"));
    ASSERT_TRUE(c.pool) << c.error;
    for (uint64_t i = 0; i < 50; i++)
        ASSERT_EQ(c.put(i, 64 << 10), 0);
    Proc clean = ctl({"verify", "alpha"});
    EXPECT_EQ(clean.code, 0) << clean.out << clean.err;
    EXPECT_NE(clean.out.find("50 blocks (3.1 MiB) checked"), std::string::npos) << clean.out;
    EXPECT_NE(clean.out.find("every checksum matches"), std::string::npos) << clean.out;

    ASSERT_TRUE(scribble(c, pool_path("alpha"), 7));
    Proc h = ctl({"health", "alpha"});
    EXPECT_EQ(h.code, 0) << h.out << h.err;
    EXPECT_NE(h.out.find("kvctl verify alpha"), std::string::npos) << h.out;

    Proc v = ctl({"verify", "alpha"});
    EXPECT_EQ(v.code, 1) << v.out << v.err;
    EXPECT_NE(v.out.find("1 failed the checksum"), std::string::npos) << v.out;
    EXPECT_NE(v.out.find(key_hex(7)), std::string::npos) << v.out;
    json j = parse(ctl({"--json", "verify", "alpha"}));
    EXPECT_EQ(j["checked"], 50);
    EXPECT_EQ(j["checked_bytes"], 50 * (64 << 10));
    EXPECT_EQ(j["bad_count"], 1);
    EXPECT_EQ(j["removed"], 0);
    ASSERT_EQ(j["bad"].size(), 1u) << j.dump();
    EXPECT_EQ(j["bad"][0]["key"], key_hex(7));
    EXPECT_EQ(j["bad"][0]["length"], 64 << 10);
    EXPECT_EQ(j["bad"][0]["ns"], c.ns);
    EXPECT_EQ(kv_contains(c.pool, c.ns, &(const kv_key &)key_of(7)), 1)
        << "removed without --remove";

    Proc r = ctl({"verify", "alpha", "--remove"});
    EXPECT_EQ(r.code, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("removed 1 bad blocks"), std::string::npos) << r.out;
    EXPECT_EQ(kv_contains(c.pool, c.ns, &(const kv_key &)key_of(7)), 0);
    for (uint64_t i = 0; i < 50; i++) {
        if (i == 7) continue;
        EXPECT_EQ(kv_contains(c.pool, c.ns, &(const kv_key &)key_of(i)), 1) << i;
    }
    Proc after = ctl({"verify", "alpha"});
    EXPECT_EQ(after.code, 0) << after.out << after.err;
    EXPECT_NE(after.out.find("49 blocks"), std::string::npos) << after.out;
}

// A verify of a large pool is done in chunks across turns of the daemon's
// loop: a status sent after it on another connection is answered first.
TEST_F(DaemonTest, LargeVerifyLetsOtherRequestsThrough) {
    ASSERT_TRUE(start_daemon(entries_config(config())));
    Proc fill = run({env_or("KVFILL", "build/tools/kvfill"), "--pool", pool_path("many"), "--bytes",
                     "400M", "--block", "4096"});
    ASSERT_EQ(fill.code, 0) << fill.out << fill.err;
    const std::string body = long_op_lets_status_through(sock_, KV_CTL_OP_VERIFY, kv_ctl_request{});
    ASSERT_FALSE(HasFailure()) << body;
    json j = json::parse(body);
    EXPECT_GT(j["checked_bytes"].get<uint64_t>(), 4 * KV_CTL_VERIFY_CHUNK_BYTES)
        << "the verify should take several chunks";
    EXPECT_EQ(j["bad_count"], 0) << body;
    EXPECT_EQ(j["checked"].get<uint64_t>() * 4096, j["checked_bytes"].get<uint64_t>());
}
