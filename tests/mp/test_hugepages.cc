// SPDX-License-Identifier: MIT
//
// Hugepage-backed pools: a file on a hugetlbfs mount and an MFD_HUGETLB
// memfd, each shared by two processes, plus the fallbacks and failures of
// KV_HUGEPAGES_PREFER / KV_HUGEPAGES_REQUIRE.
//
// As root the fixture makes sure 64 free 2 MiB pages exist (raising the pool
// by the shortfall), mounts a private hugetlbfs, and undoes both afterwards,
// from TearDown and, should that not run, from the guard's destructor.
// Without root, or when the kernel will not give the pages, those tests are
// skipped with the reason; if every test was skipped the binary exits 77.
#include "mp_common.h"

#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/mount.h>

namespace {

using namespace kvmp;

constexpr uint64_t kHuge = 2 * kMiB;
constexpr uint64_t kNeedPages = 64;
constexpr uint64_t kPoolSize = 64 * kMiB;

// ---- The hugepage environment ----------------------------------------------------

std::string read_file(const std::string &path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A "Name:  value" field of /proc/meminfo, or -1.
long meminfo(const char *field) {
    std::ifstream f("/proc/meminfo");
    std::string line;
    size_t n = strlen(field);
    while (std::getline(f, line))
        if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':')
            return strtol(line.c_str() + n + 1, nullptr, 10);
    return -1;
}

// The 2 MiB pool's knobs: /proc/sys/vm/nr_hugepages and HugePages_Free when
// 2 MiB is the default hugepage size, the per-size sysfs files otherwise.
struct HugeKnobs {
    std::string nr_path, free_path;
    bool from_meminfo = false;
    HugeKnobs() {
        if (meminfo("Hugepagesize") == 2048) {
            nr_path = "/proc/sys/vm/nr_hugepages";
            from_meminfo = true;
        } else {
            nr_path = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
            free_path = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
        }
    }
    long nr() const {
        std::string s = read_file(nr_path);
        return s.empty() ? -1 : strtol(s.c_str(), nullptr, 10);
    }
    long free_pages() const {
        if (from_meminfo) return meminfo("HugePages_Free");
        std::string s = read_file(free_path);
        return s.empty() ? -1 : strtol(s.c_str(), nullptr, 10);
    }
    int set_nr(long n) const {
        int fd = open(nr_path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return -errno;
        std::string v = std::to_string(n) + "\n";
        ssize_t w = write(fd, v.data(), v.size());
        int e = w == static_cast<ssize_t>(v.size()) ? 0 : (w < 0 ? -errno : -EIO);
        close(fd);
        return e;
    }
};

// RAII: whatever prepare() changed, restore() (or the destructor) undoes.
class HugeEnv {
  public:
    HugeEnv() = default;
    HugeEnv(const HugeEnv &) = delete;
    HugeEnv &operator=(const HugeEnv &) = delete;
    ~HugeEnv() { restore(); }

    // "" when need free 2 MiB pages exist and a hugetlbfs is mounted at
    // dir(); otherwise the reason the caller should skip.
    std::string prepare(uint64_t need) {
        if (geteuid() != 0) return "not root: cannot reserve hugepages or mount hugetlbfs";
        long nr = k_.nr(), fr = k_.free_pages();
        if (nr < 0 || fr < 0)
            return "no 2 MiB hugepage support in this kernel (" + k_.nr_path + " unreadable)";
        if (static_cast<uint64_t>(fr) < need) {
            long want = nr + static_cast<long>(need) - fr;
            old_nr_ = nr;
            int rc = k_.set_nr(want);
            if (rc != 0)
                return "writing " + std::to_string(want) + " to " + k_.nr_path +
                       " failed: " + strerror(-rc);
            raised_ = true;
            fr = k_.free_pages();
            if (fr < 0 || static_cast<uint64_t>(fr) < need)
                return "asked the kernel for " + std::to_string(want) + " hugepages; only " +
                       std::to_string(fr) + " free of " + std::to_string(need) +
                       " needed (memory fragmented?)";
        }
        char tmpl[] = "/tmp/kvpool-hugetlbfs-XXXXXX";
        if (!mkdtemp(tmpl)) return std::string("mkdtemp: ") + strerror(errno);
        dir_ = tmpl;
        if (mount("none", dir_.c_str(), "hugetlbfs", 0, "pagesize=2M") != 0)
            return "mount -t hugetlbfs -o pagesize=2M " + dir_ + ": " + strerror(errno);
        mounted_ = true;
        return "";
    }

    void restore() {
        if (mounted_) {
            if (umount(dir_.c_str()) != 0) {
                fprintf(stderr, "umount %s: %s; detaching lazily\n", dir_.c_str(), strerror(errno));
                umount2(dir_.c_str(), MNT_DETACH);
            }
            mounted_ = false;
        }
        if (!dir_.empty()) {
            rmdir(dir_.c_str());
            dir_.clear();
        }
        if (raised_) {
            int rc = k_.set_nr(old_nr_);
            if (rc != 0)
                fprintf(stderr, "restoring %s to %ld: %s\n", k_.nr_path.c_str(), old_nr_,
                        strerror(-rc));
            raised_ = false;
        }
    }

    const std::string &dir() const { return dir_; }
    long free_pages() const { return k_.free_pages(); }

  private:
    HugeKnobs k_;
    long old_nr_ = -1;
    bool raised_ = false;
    bool mounted_ = false;
    std::string dir_;
};

// ---- Fixtures ------------------------------------------------------------------------

class PoolFixture : public ::testing::Test {
  protected:
    void TearDown() override {
        for (pid_t pid : kids_) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        kids_.clear();
        if (pool_) kv_pool_detach(pool_);
        pool_ = nullptr;
        if (!path_.empty()) {
            kv_pool_destroy(path_.c_str());
            unlink(path_.c_str());
            path_.clear();
        }
        if (fd_ >= 0) close(fd_);
        fd_ = -1;
        shared_delete(board_);
        board_ = nullptr;
    }

    ::testing::AssertionResult attach_pool() {
        char err[256] = "";
        int rc = fd_ >= 0 ? kv_pool_attach_fd(fd_, 0, &pool_, err, sizeof err)
                          : kv_pool_attach(path_.c_str(), 0, &pool_, err, sizeof err);
        if (rc != 0)
            return ::testing::AssertionFailure()
                   << "attach = " << rc << " " << kv_strerror(rc) << ": " << err;
        return ::testing::AssertionSuccess();
    }

    // Parent stores half the keys, a child (attached by path or by the
    // inherited fd) checks them and stores the other half by reserve+commit,
    // the parent checks those. Nothing may be evicted on the way.
    void round_trip();

    std::string path_;
    int fd_ = -1;
    kv_pool *pool_ = nullptr;
    Board *board_ = nullptr;
    std::vector<pid_t> kids_;
};

void PoolFixture::round_trip() {
    kv_manifest m = test_manifest();
    uint32_t ns = 0;
    uint64_t seed = 0;
    ASSERT_EQ(kv_ns_register(pool_, &m, &ns, &seed), 0);
    KeySpace ks;
    ks.build(seed, ns, 128, 0, 1);
    // About 3 MiB each way: far from full.
    std::vector<kv_key> mine(ks.rand.begin(), ks.rand.begin() + 64),
        theirs(ks.rand.begin() + 64, ks.rand.end());
    std::vector<unsigned char> buf(kMaxBlock);
    for (const kv_key &k : mine) {
        fill_block(k, buf.data(), block_len(k));
        kv_meta meta = block_meta(k);
        ASSERT_EQ(kv_put(pool_, ns, &k, buf.data(), block_len(k), &meta), 0);
    }
    board_ = shared_new<Board>();
    ASSERT_NE(board_, nullptr);
    pid_t pid = spawn(60, [&] {
        kv_pool *p = nullptr;
        char err[256] = "";
        int rc = fd_ >= 0 ? kv_pool_attach_fd(fd_, 0, &p, err, sizeof err)
                          : kv_pool_attach(path_.c_str(), 0, &p, err, sizeof err);
        if (rc != 0) {
            board_->fail(0, "attach = %d: %s", rc, err);
            return 2;
        }
        const kv_region_header *h = kv_pool_header(p);
        if (h->page_size != kv_pool_header(pool_)->page_size)
            board_->fail(0, "child sees page_size %" PRIu64 ", parent %" PRIu64, h->page_size,
                         kv_pool_header(pool_)->page_size);
        for (const kv_key &k : mine) {
            kv_view v{};
            rc = kv_get(p, ns, &k, &v);
            if (rc != 0) {
                board_->fail(0, "kv_get of a parent block = %d", rc);
                continue;
            }
            std::string e = check_view(k, v);
            if (!e.empty()) board_->fail(0, "parent block: %s", e.c_str());
            kv_release(p, &v);
        }
        for (const kv_key &k : theirs) {
            kv_reservation r{};
            kv_meta meta = block_meta(k);
            rc = kv_reserve(p, ns, &k, block_len(k), &meta, &r);
            if (rc != 0) {
                board_->fail(0, "kv_reserve = %d", rc);
                continue;
            }
            fill_block(k, r.data, block_len(k));
            rc = kv_commit(p, &r, 0, 0);
            if (rc != 0) board_->fail(0, "kv_commit = %d", rc);
        }
        rc = kv_pool_detach(p);
        if (rc != 0) board_->fail(0, "detach = %d", rc);
        return board_->w[0].fails.load() ? 1 : 0;
    });
    ASSERT_GT(pid, 0);
    kids_.push_back(pid);
    int st = 0;
    EXPECT_TRUE(wait_child(pid, 60000, &st)) << "child hung";
    kids_.clear();
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << status_str(st) << "\n"
                                                       << board_->messages();
    for (const kv_key &k : theirs) {
        kv_view v{};
        ASSERT_EQ(kv_get(pool_, ns, &k, &v), 0);
        EXPECT_EQ(check_view(k, v), "");
        EXPECT_EQ(kv_release(pool_, &v), 0);
    }
    kv_usage u{};
    ASSERT_EQ(kv_pool_usage(pool_, &u), 0);
    EXPECT_TRUE(quiescent(u));
    EXPECT_EQ(u.entries_committed, ks.rand.size());
    kv_stats s{};
    ASSERT_EQ(kv_pool_stats(pool_, &s), 0);
    EXPECT_EQ(s.page_size, kv_pool_header(pool_)->page_size);
    EXPECT_EQ(s.evictions, 0u);
}

class HugePagesTest : public PoolFixture {
  protected:
    void SetUp() override {
        std::string why = env_.prepare(kNeedPages);
        if (!why.empty()) {
            fprintf(stderr, "hugepage test skipped: %s\n", why.c_str());
            GTEST_SKIP() << why;
        }
        free_before_ = env_.free_pages();
    }
    void TearDown() override {
        PoolFixture::TearDown(); // pool file gone before the mount goes
        env_.restore();
    }

    kv_create_opts huge_opts(uint32_t mode, uint64_t size = kPoolSize) {
        kv_create_opts o = pool_opts(size, kHuge);
        o.hugepages = mode;
        return o;
    }

    void expect_pages_returned() {
        EXPECT_EQ(env_.free_pages(), free_before_)
            << "hugepages still in use after the pool was destroyed";
    }

    HugeEnv env_;
    long free_before_ = -1;
};

TEST_F(HugePagesTest, HugetlbfsRoundTripTwoProcesses) {
    path_ = env_.dir() + "/pool";
    kv_create_opts o = huge_opts(KV_HUGEPAGES_REQUIRE);
    char err[256] = "";
    int rc = kv_pool_create(path_.c_str(), &o, err, sizeof err);
    ASSERT_EQ(rc, 0) << kv_strerror(rc) << ": " << err;
    long used = free_before_ - env_.free_pages();
    ASSERT_TRUE(attach_pool());
    const kv_region_header *h = kv_pool_header(pool_);
    EXPECT_EQ(h->page_size, kHuge);
    EXPECT_EQ(h->backing, static_cast<uint32_t>(KV_BACKING_HUGETLBFS));
    EXPECT_EQ(h->region_size % kHuge, 0u);
    EXPECT_GE(h->region_size, kPoolSize);
    EXPECT_EQ(h->data_off % kHuge, 0u);
    EXPECT_EQ(h->slab_size, kHuge);
    // kv_pool_create reserves the backing up front (fallocate).
    EXPECT_GE(static_cast<uint64_t>(used) * kHuge, h->region_size)
        << "only " << used << " hugepages taken at create for a " << h->region_size
        << "-byte region";
    round_trip();
    EXPECT_EQ(kv_pool_detach(pool_), 0);
    pool_ = nullptr;
    EXPECT_EQ(kv_pool_destroy(path_.c_str()), 0);
    path_.clear();
    expect_pages_returned();
}

TEST_F(HugePagesTest, PreferOnHugetlbfsUsesHugepages) {
    path_ = env_.dir() + "/pool";
    kv_create_opts o = huge_opts(KV_HUGEPAGES_PREFER);
    char err[256] = "";
    int rc = kv_pool_create(path_.c_str(), &o, err, sizeof err);
    ASSERT_EQ(rc, 0) << kv_strerror(rc) << ": " << err;
    ASSERT_TRUE(attach_pool());
    EXPECT_EQ(kv_pool_header(pool_)->page_size, kHuge);
    EXPECT_EQ(kv_pool_header(pool_)->backing, static_cast<uint32_t>(KV_BACKING_HUGETLBFS));
    round_trip();
}

TEST_F(HugePagesTest, MemfdHugetlbAttachFd) {
    kv_create_opts o = huge_opts(KV_HUGEPAGES_REQUIRE);
    char err[256] = "";
    int rc = kv_pool_create_memfd("kvpool-mp-huge", &o, &fd_, err, sizeof err);
    ASSERT_EQ(rc, 0) << kv_strerror(rc) << ": " << err;
    ASSERT_GE(fd_, 0);
    ASSERT_TRUE(attach_pool());
    const kv_region_header *h = kv_pool_header(pool_);
    EXPECT_EQ(h->page_size, kHuge);
    EXPECT_EQ(h->backing, static_cast<uint32_t>(KV_BACKING_MEMFD_HUGETLB));
    EXPECT_EQ(h->region_size % kHuge, 0u);
    EXPECT_EQ(h->data_off % kHuge, 0u);
    round_trip(); // the child attaches through the fd it inherited
    EXPECT_EQ(kv_pool_detach(pool_), 0);
    pool_ = nullptr;
    close(fd_);
    fd_ = -1;
    expect_pages_returned();
}

// More than the free pages: REQUIRE fails cleanly, naming the need, and
// leaves no hugepage behind.
TEST_F(HugePagesTest, RequireWithTooFewPagesFails) {
    long fr = env_.free_pages();
    ASSERT_GT(fr, 0);
    uint64_t size = static_cast<uint64_t>(fr + 16) * kHuge;
    path_ = env_.dir() + "/toobig";
    kv_create_opts o = huge_opts(KV_HUGEPAGES_REQUIRE, size);
    char err[256] = "";
    int rc = kv_pool_create(path_.c_str(), &o, err, sizeof err);
    EXPECT_TRUE(rc == -ENOMEM || rc == -ENOSPC)
        << "kv_pool_create = " << rc << " (" << kv_strerror(rc) << ")";
    EXPECT_NE(err[0], '\0') << "no message saying how many hugepages are needed";
    std::string msg = err;
    EXPECT_TRUE(msg.find(std::to_string(size / kHuge)) != std::string::npos ||
                msg.find(std::to_string(size)) != std::string::npos)
        << "message names neither the " << size / kHuge << " pages nor the " << size
        << " bytes needed: " << msg;
    fprintf(stderr, "kv_pool_create message: %s\n", err);
    EXPECT_EQ(env_.free_pages(), fr) << "a failed create left hugepages allocated";
    kv_pool_destroy(path_.c_str());
    path_.clear();

    int fd = -1;
    err[0] = '\0';
    rc = kv_pool_create_memfd("kvpool-mp-toobig", &o, &fd, err, sizeof err);
    EXPECT_TRUE(rc == -ENOMEM || rc == -ENOSPC)
        << "kv_pool_create_memfd = " << rc << " (" << kv_strerror(rc) << ")";
    EXPECT_NE(err[0], '\0');
    if (rc == 0) close(fd);
    EXPECT_EQ(env_.free_pages(), fr);
}

// ---- Without hugepages ------------------------------------------------------------

class ShmFallbackTest : public PoolFixture {};

TEST_F(ShmFallbackTest, PreferOnDevShmFallsBackTo4K) {
    path_ = unique_pool_path("/dev/shm", "prefer");
    kv_create_opts o = pool_opts(kPoolSize, kHuge);
    o.hugepages = KV_HUGEPAGES_PREFER;
    char err[256] = "";
    int rc = kv_pool_create(path_.c_str(), &o, err, sizeof err);
    ASSERT_EQ(rc, 0) << kv_strerror(rc) << ": " << err;
    ASSERT_TRUE(attach_pool());
    EXPECT_EQ(kv_pool_header(pool_)->page_size, 4096u);
    EXPECT_EQ(kv_pool_header(pool_)->backing, static_cast<uint32_t>(KV_BACKING_SHM));
    round_trip();
}

TEST_F(ShmFallbackTest, RequireOnDevShmFails) {
    path_ = unique_pool_path("/dev/shm", "require");
    kv_create_opts o = pool_opts(kPoolSize, kHuge);
    o.hugepages = KV_HUGEPAGES_REQUIRE;
    char err[256] = "";
    int rc = kv_pool_create(path_.c_str(), &o, err, sizeof err);
    EXPECT_TRUE(rc == -EINVAL || rc == -ENOMEM)
        << "kv_pool_create = " << rc << " (" << kv_strerror(rc) << ")";
    EXPECT_NE(err[0], '\0') << "REQUIRE failures carry a message";
    fprintf(stderr, "kv_pool_create message: %s\n", err);
}

} // namespace

// Exit 77 (meson's "skipped") when every selected test skipped.
int main(int argc, char **argv) {
    ::testing::InitGoogleTest(&argc, argv);
    int rc = RUN_ALL_TESTS();
    const ::testing::UnitTest *ut = ::testing::UnitTest::GetInstance();
    if (rc == 0 && ut->test_to_run_count() > 0 &&
        ut->skipped_test_count() == ut->test_to_run_count())
        return 77;
    return rc;
}
