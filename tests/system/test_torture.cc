// SPDX-License-Identifier: MIT
//
// Crash torture with the daemon in the loop. Every round runs client
// processes under the random workload of the multi-process tests
// (tests/mp/mp_common.h: put, reserve + commit/abort, get, match_prefix
// with pins, remove, held views, open reservations) on a pool kvpoold
// serves, and SIGKILLs some of them at a random moment. Rounds of two
// kinds also kill kvpoold itself:
//   - persist: `kvctl persist` is started and kvpoold SIGKILLed a random
//     time later (before, during or after the write); kvpoold is restarted
//     and re-attaches the pool;
//   - restore: kvpoold is SIGKILLed, the pool's region removed (a reboot),
//     kvpoold started so that it restores the snapshot, and SIGKILLed again
//     a random time later (while creating the pool, restoring, or after);
//     the next start re-attaches what the killed one left, or creates and
//     restores anew.
// After every round, with the survivors stopped and the dead reaped:
//   - every committed block is intact: content (a function of its key),
//     checksum, and the index agrees with kv_contains (walk_all);
//   - the blocks the test itself kept pinned through the round are unchanged;
//   - accounting is exact and nothing leaked: no orphan block, no pin, no
//     reservation, no dead entry, blocks used == entries committed, the
//     index consistent (quiescent);
//   - the newest complete snapshot is restorable: restored into a second
//     pool, with nothing dropped, nothing truncated, every block intact;
//   - no stray file is left in the pool or snapshot directories.
// KV_TORTURE_ROUNDS sets the number of rounds (default 16: the CI run);
// tests/system/run_torture.sh runs 1,000. KV_MP_SEED repeats a run.
#include "../mp/mp_common.h"
#include "daemon_fixture.h"

#include <algorithm>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/stat.h>

namespace {

using namespace kvmp;
using kvtest::mono_ms;
using kvtest::Proc;
using nlohmann::json;

constexpr int kWorkers = 3;
constexpr unsigned kHeldByTest = 6;

std::set<std::string> list_dir(const std::string &dir) {
    std::set<std::string> names;
    if (DIR *d = opendir(dir.c_str())) {
        while (dirent *e = readdir(d))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                names.insert(e->d_name);
        closedir(d);
    }
    return names;
}

std::string join(const std::set<std::string> &s) {
    std::string out;
    for (const auto &x : s)
        out += (out.empty() ? "" : ", ") + x;
    return out;
}

class TortureTest : public kvtest::DaemonTest {
  protected:
    void SetUp() override {
        DaemonTest::SetUp();
        board_ = shared_new<Board>();
        ASSERT_NE(board_, nullptr);
        cfg_ = config("", "slab_size = \"1M\"\nrestore_on_start = true\n");
    }
    void TearDown() override {
        for (pid_t &pid : kids_)
            if (pid > 0) {
                kill(pid, SIGKILL);
                waitpid(pid, nullptr, 0);
            }
        detach();
        DaemonTest::TearDown();
        shared_delete(board_);
    }

    std::string snapshot() const { return dir_ + "/state/alpha.kvsnap"; }

    ::testing::AssertionResult attach_pool(const std::string &name, kv_pool **out, KeySpace *ks) {
        char err[256] = "";
        int rc = kv_pool_attach(pool_path(name).c_str(), 0, out, err, sizeof err);
        if (rc != 0)
            return ::testing::AssertionFailure()
                   << "attach " << name << ": " << kv_strerror(rc) << ": " << err;
        kv_manifest m = test_manifest();
        uint32_t ns = 0;
        uint64_t seed = 0;
        rc = kv_ns_register(*out, &m, &ns, &seed);
        if (rc != 0) return ::testing::AssertionFailure() << "kv_ns_register: " << kv_strerror(rc);
        if (ks) ks->build(seed, ns, 2048, 48, 8);
        return ::testing::AssertionSuccess();
    }
    void detach() {
        if (pool_) kv_pool_detach(pool_);
        pool_ = nullptr;
    }

    pid_t start_worker(int slot, const KeySpace &ks, const WorkloadCfg &cfg, uint64_t seed) {
        new (&board_->w[slot]) WorkerCounters();
        const std::string path = pool_path("alpha");
        pid_t pid = spawn(60, [&, slot, seed] {
            Worker w(board_, slot, ks, cfg, seed);
            return w.run(path.c_str());
        });
        if (pid > 0) kids_.push_back(pid);
        return pid;
    }

    // kvpoold without waiting for READY=1 (so it can be killed while it
    // creates and restores); its log goes where start_daemon's does.
    pid_t launch_daemon() {
        pid_t pid = fork();
        if (pid == 0) {
            int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            dup2(fd, 2);
            unsetenv("NOTIFY_SOCKET");
            execl(kvpoold_.c_str(), kvpoold_.c_str(), "--config", cfg_path_.c_str(), nullptr);
            _exit(127);
        }
        return pid;
    }
    void kill_daemon() {
        if (daemon_ <= 0) return;
        kill(daemon_, SIGKILL);
        waitpid(daemon_, nullptr, 0);
        daemon_ = -1;
    }

    // Everything a round must leave true (see the top of the file).
    void check_pool(const KeySpace &ks, const std::string &when) {
        // The daemon reaps every 100 ms; kv_reap makes it immediate.
        EXPECT_GE(kv_reap(pool_), 0);
        kv_usage u{};
        bool ok = DaemonTest::eventually(
            [&] { return kv_reap(pool_) >= 0 && kv_pool_usage(pool_, &u) == 0 && quiescent(u, 0); },
            3000);
        EXPECT_TRUE(ok) << when << ": " << quiescent(u, 0).message() << "\n"
                        << dump_suspects(pool_);
        WalkResult w = walk_all(pool_, ks);
        EXPECT_EQ(w.bad, 0u) << when << ": " << w.first_error;
        EXPECT_EQ(w.found, u.entries_committed)
            << when << ": committed entries outside the key space";
        blocks_seen_ += w.found;
    }

    // Restore the newest snapshot into a fresh pool "verify", check every
    // block, destroy it. Sized from the file: a full pool's blocks need not
    // fit an equal pool whose slabs are carved in another order (verify's
    // slabs are kvctl's default 4 MiB, and each of alpha's two dozen size
    // classes takes at least one), and a persist taken under load can hold
    // more than the pool did at any one time (a block put where the scan
    // has yet to look while one it wrote is evicted). So twice the file,
    // plus a slab per class: a fixed 128M left only a few slabs to spare.
    void check_snapshot(const std::string &when) {
        struct stat sb{};
        if (stat(snapshot().c_str(), &sb) != 0) return; // none completed yet
        const uint64_t verify_mib =
            std::max<uint64_t>(128, 2 * (uint64_t(sb.st_size) >> 20) + 24 * 4);
        Proc c = ctl({"create", "verify", "--size", std::to_string(verify_mib) + "M", "--hugepages",
                      "never"});
        ASSERT_EQ(c.code, 0) << when << ": create verify: " << c.err;
        struct Destroy {
            TortureTest *t;
            ~Destroy() { t->ctl({"destroy", "verify"}); }
        } destroy{this};
        // alpha's snapshot into another pool: root, and on purpose (--force).
        Proc r = ctl({"--json", "restore", "verify", "--path", snapshot(), "--force"});
        ASSERT_EQ(r.code, 0) << when << ": restore of the newest snapshot: " << r.out << r.err;
        json j = json::parse(r.out, nullptr, false);
        ASSERT_TRUE(j.is_object()) << r.out;
        EXPECT_EQ(j.value("dropped", -1), 0) << when << ": " << r.out;
        EXPECT_FALSE(j.value("truncated", true)) << when << ": " << r.out;
        kv_pool *v = nullptr;
        KeySpace vks;
        ASSERT_TRUE(attach_pool("verify", &v, &vks));
        WalkResult w = walk_all(v, vks);
        EXPECT_EQ(w.bad, 0u) << when << ": restored block: " << w.first_error;
        // (skipped: a key the live persist met twice, removed and put again
        // while it scanned; restore keeps the first copy.)
        EXPECT_EQ(w.found, j.value("blocks", uint64_t(0))) << when << ": " << r.out;
        kv_usage u{};
        EXPECT_EQ(kv_pool_usage(v, &u), 0);
        EXPECT_TRUE(quiescent(u, 0)) << when << " (verify pool)";
        kv_pool_detach(v);
        snapshots_checked_++;
    }

    void check_dirs(const std::string &when) {
        const std::set<std::string> pools = list_dir(shm_), want_pools = {"alpha"};
        EXPECT_EQ(pools, want_pools) << when << ": pool directory holds " << join(pools);
        for (const auto &f : list_dir(dir_ + "/state"))
            EXPECT_TRUE(f == "alpha.kvsnap" || f == "alpha.kvsnap.spare")
                << when << ": stray " << f;
    }

    Board *board_ = nullptr;
    kv_pool *pool_ = nullptr;
    std::vector<pid_t> kids_;
    std::string cfg_;
    uint64_t blocks_seen_ = 0, snapshots_checked_ = 0;
};

TEST_F(TortureTest, KillClientsAndDaemonRounds) {
    const uint64_t seed = test_seed("torture");
    const uint64_t rounds = env_u64("KV_TORTURE_ROUNDS", 16);
    ASSERT_TRUE(start_daemon(cfg_));
    KeySpace ks;
    ASSERT_TRUE(attach_pool("alpha", &pool_, &ks));

    WorkloadCfg wcfg;
    wcfg.max_ops = ~0ULL;
    wcfg.max_held = 64;
    wcfg.max_open = 4;
    wcfg.hold_percent = 50;
    Rng rng(seed);
    uint64_t kills = 0, daemon_kills = 0, persists_ok = 0, persist_kills = 0, restore_kills = 0;
    const uint64_t t0 = mono_ms();

    for (uint64_t round = 0; round < rounds && !HasFailure(); round++) {
        // Round 0 fills the pool and persists it, so every later round has a
        // snapshot to lose or restore.
        const unsigned mode =
            round == 0 ? 4 : unsigned(rng.below(4)); // 0-1 clients, 2 persist, 3 restore
        const std::string when =
            "round " + std::to_string(round) + " (mode " + std::to_string(mode) + ")";

        // Views the test holds through the round: they must survive it.
        std::vector<std::pair<kv_key, kv_view>> held;
        for (unsigned i = 0; mode != 3 && i < 64 && held.size() < kHeldByTest; i++) {
            const kv_key &k = ks.rand[rng.below(ks.rand.size())];
            kv_view v{};
            if (kv_get(pool_, ks.ns, &k, &v) == 0) held.push_back({k, v});
        }

        board_->stop.store(0);
        board_->no_reap.store(0);
        wcfg.deadline_ns = now_ns() + 10000000000ULL;
        pid_t pids[kWorkers] = {};
        for (int i = 0; i < kWorkers; i++) {
            pids[i] = start_worker(i, ks, wcfg, seed ^ mix64(round * 16 + uint64_t(i)));
            ASSERT_GT(pids[i], 0);
        }
        usleep(useconds_t(mode == 4 ? 400000 : 20000 + rng.below(60000)));

        pid_t persist = -1;
        if (mode == 2 || mode == 4) {
            persist = fork();
            if (persist == 0) {
                int fd = open("/dev/null", O_WRONLY);
                dup2(fd, 1);
                dup2(fd, 2);
                execl(kvctl_.c_str(), kvctl_.c_str(), "--socket", sock_.c_str(), "persist", "alpha",
                      nullptr);
                _exit(127);
            }
            ASSERT_GT(persist, 0);
        }
        if (mode == 2) {
            usleep(useconds_t(rng.below(500000))); // a persist here takes about 100-300 ms
            kill_daemon();
            daemon_kills++;
            persist_kills++;
        }
        if (persist > 0) {
            int st = 0;
            EXPECT_TRUE(wait_child(persist, 60000, &st)) << when << ": kvctl persist hung";
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0) persists_ok++;
            if (mode == 4) {
                ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
                    << when << ": " << status_str(st);
            }
        }

        // Kill one or more workers, stop the rest.
        const unsigned victims = mode == 4 ? 0 : 1 + unsigned(rng.below(kWorkers));
        for (unsigned v = 0; v < victims; v++) {
            const int slot = int((round + v) % kWorkers);
            kill(pids[slot], SIGKILL);
        }
        board_->stop.store(1);
        for (int i = 0; i < kWorkers; i++) {
            int st = 0;
            EXPECT_TRUE(wait_child(pids[i], 30000, &st)) << when << ": worker " << i << " hung";
            const bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
            kills += killed;
            EXPECT_TRUE(killed || (WIFEXITED(st) && WEXITSTATUS(st) == 0))
                << when << ": worker " << i << ": " << status_str(st) << "\n"
                << board_->messages();
            for (pid_t &k : kids_)
                if (k == pids[i]) k = 0;
        }
        ASSERT_EQ(board_->failures.load(), 0u) << when << ":\n" << board_->messages();

        // The held views: untouched, whatever happened to their entries.
        for (auto &[k, v] : held) {
            EXPECT_EQ(check_view(k, v), "") << when << ": a view the test held changed";
            EXPECT_EQ(kv_release(pool_, &v), 0);
        }

        if (mode == 2) {
            ASSERT_TRUE(start_daemon(cfg_)) << when; // re-attaches the pool
        }
        if (mode == 3) {
            detach();
            kill_daemon();
            unlink(pool_path("alpha").c_str()); // the region is gone, as after a reboot
            pid_t d = launch_daemon();
            ASSERT_GT(d, 0);
            usleep(useconds_t(rng.below(400000)));
            kill(d, SIGKILL);
            waitpid(d, nullptr, 0);
            daemon_kills++;
            restore_kills++;
            ASSERT_TRUE(start_daemon(cfg_)) << when; // re-attaches what it left, or restores anew
            ASSERT_TRUE(attach_pool("alpha", &pool_, &ks));
        }

        check_pool(ks, when);
        if (mode >= 2) check_snapshot(when);
        check_dirs(when);
    }
    const double secs = double(mono_ms() - t0) / 1000;
    fprintf(stderr,
            "[torture] %" PRIu64 " rounds in %.1f s: %" PRIu64
            " clients killed, kvpoold killed %" PRIu64 " times (%" PRIu64
            " during persist, %" PRIu64 " during restore), %" PRIu64 " persists completed, %" PRIu64
            " snapshots restored and checked, %" PRIu64 " blocks checked\n",
            rounds, secs, kills, daemon_kills, persist_kills, restore_kills, persists_ok,
            snapshots_checked_, blocks_seen_);
    EXPECT_GT(blocks_seen_, 0u);
}

} // namespace
