// SPDX-License-Identifier: MIT
//
// Pool lifecycle: kv_create_opts_init, kv_pool_create (and its option
// checks), kv_pool_create_memfd, kv_pool_attach / attach_fd / detach,
// kv_pool_destroy, kv_pool_header, kv_pool_client_index, kv_reap.
#include "pool_fixture.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace kvtest {
namespace {

bool is_pow2(uint64_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

uint64_t file_size(const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.st_size);
}

// Create-only tests: a unique path per test, removed in TearDown.
class CreateTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path_ = unique_pool_path(::testing::UnitTest::GetInstance()->current_test_info()->name());
    }
    void TearDown() override {
        if (pool_) {
            EXPECT_EQ(kv_pool_detach(pool_), 0);
        }
        unlink(path_.c_str());
    }
    int create(const kv_create_opts &o) {
        msg_[0] = '\0';
        return kv_pool_create(path_.c_str(), &o, msg_, sizeof msg_);
    }
    int attach() {
        msg_[0] = '\0';
        return kv_pool_attach(path_.c_str(), 0, &pool_, msg_, sizeof msg_);
    }

    std::string path_;
    char msg_[256] = "";
    kv_pool *pool_ = nullptr;
};

TEST_F(CreateTest, OptsInitFillsSizeAndStructSize) {
    kv_create_opts o;
    std::memset(&o, 0xa5, sizeof o);
    kv_create_opts_init(&o, 123 * MiB);
    EXPECT_EQ(o.struct_size, sizeof(kv_create_opts));
    EXPECT_EQ(o.size, 123 * MiB);
    EXPECT_EQ(o.numa_node, -1);
    EXPECT_EQ(o.flags, 0u);
    EXPECT_TRUE(o.hugepages == KV_HUGEPAGES_NEVER || o.hugepages == KV_HUGEPAGES_PREFER)
        << o.hugepages;
    // Either 0 ("use the default") or the documented default.
    EXPECT_TRUE(o.slab_size == 0 || o.slab_size == 4 * MiB) << o.slab_size;
    EXPECT_TRUE(o.avg_block_size == 0 || o.avg_block_size == 16 * KiB) << o.avg_block_size;
    EXPECT_TRUE(o.max_clients == 0 || o.max_clients == 64) << o.max_clients;
    EXPECT_TRUE(o.pins_per_client == 0 || o.pins_per_client == 4096) << o.pins_per_client;
    EXPECT_TRUE(o.max_namespaces == 0 || o.max_namespaces == 64) << o.max_namespaces;
    EXPECT_TRUE(o.mode == 0 || o.mode == 0660) << o.mode;
}

TEST_F(CreateTest, DefaultsGiveDocumentedGeometry) {
    kv_create_opts o;
    kv_create_opts_init(&o, 64 * MiB);
    ASSERT_EQ(create(o), 0) << msg_;
    EXPECT_EQ(file_size(path_), 64 * MiB);
    ASSERT_EQ(attach(), 0) << msg_;
    const kv_region_header *h = kv_pool_header(pool_);
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->slab_size, 4 * MiB);
    EXPECT_EQ(h->max_clients, 64u);
    EXPECT_EQ(h->pins_per_client, 4096u);
    EXPECT_EQ(h->max_namespaces, 64u);
    EXPECT_EQ(h->page_size, 4096u);
    EXPECT_EQ(h->backing, static_cast<uint32_t>(KV_BACKING_SHM));
    EXPECT_EQ(h->numa_node, KV_NUMA_NONE);
    EXPECT_EQ(h->region_size, 64 * MiB);
    // entries = data / avg_block_size (16 KiB), give or take rounding.
    const uint64_t want = h->data_len / (16 * KiB);
    EXPECT_GE(h->n_entries, want * 9 / 10) << "data_len " << h->data_len;
    EXPECT_LE(h->n_entries, want * 11 / 10 + 64) << "data_len " << h->data_len;
    struct stat st;
    ASSERT_EQ(stat(path_.c_str(), &st), 0);
    // Default mode 0660, possibly narrowed by the umask, never widened.
    EXPECT_EQ(st.st_mode & 0777 & ~0660u, 0u) << std::oct << (st.st_mode & 0777);
}

TEST_F(CreateTest, ExplicitModeIsApplied) {
    kv_create_opts o = small_opts();
    o.mode = 0600;
    ASSERT_EQ(create(o), 0) << msg_;
    struct stat st;
    ASSERT_EQ(stat(path_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << std::oct << (st.st_mode & 0777);
}

TEST_F(CreateTest, ExclRefusesExistingPath) {
    kv_create_opts o = small_opts();
    o.flags = KV_CREATE_F_EXCL;
    ASSERT_EQ(create(o), 0) << msg_; // does not exist yet: fine
    EXPECT_EQ(create(o), -EEXIST);
    EXPECT_NE(msg_[0], '\0');
    // The existing pool is left intact.
    ASSERT_EQ(attach(), 0) << msg_;
}

// The README's first example (kv_pool_create with default flags) used to
// replace a live pool every time it ran: now an existing pool is left
// alone unless the caller asks for KV_CREATE_F_REPLACE.
TEST_F(CreateTest, DefaultCreateNeverReplacesAPool) {
    kv_create_opts o = small_opts();
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(attach(), 0) << msg_;
    uint32_t ns = 0;
    kv_manifest m;
    kv_manifest_init(&m, "m", 16);
    ASSERT_EQ(kv_ns_register(pool_, &m, &ns, nullptr), 0);
    const kv_key k{1, 2};
    ASSERT_EQ(kv_put(pool_, ns, &k, "block", 5, nullptr), 0);
    struct stat before;
    ASSERT_EQ(stat(path_.c_str(), &before), 0);
    EXPECT_EQ(create(o), -EEXIST);
    EXPECT_TRUE(mentions_any(msg_, {"KV_CREATE_F_REPLACE"})) << msg_;
    struct stat after;
    ASSERT_EQ(stat(path_.c_str(), &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino) << "the pool was replaced";
    o.flags = KV_CREATE_F_EXCL | KV_CREATE_F_REPLACE;
    EXPECT_EQ(create(o), -EINVAL);
    o.flags = KV_CREATE_F_REPLACE;
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(stat(path_.c_str(), &after), 0);
    EXPECT_NE(after.st_ino, before.st_ino);
}

TEST_F(CreateTest, MaxEntriesCapsTheEntryTable) {
    kv_create_opts o = small_opts();
    o.max_entries = 100;
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(attach(), 0) << msg_;
    EXPECT_EQ(kv_pool_header(pool_)->n_entries, 100u);
    kv_pool_detach(pool_);
    pool_ = nullptr;
    unlink(path_.c_str());
    o.max_entries = 10;
    EXPECT_EQ(create(o), -EINVAL);
    EXPECT_TRUE(mentions_any(msg_, {"max_entries 10"})) << msg_;
    o.max_entries = 1u << 30; // above what the data area gives: no effect
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(attach(), 0) << msg_;
    EXPECT_EQ(kv_pool_header(pool_)->n_entries,
              uint32_t(kv_pool_header(pool_)->data_len / (16 * KiB)));
}

TEST_F(CreateTest, SizeIsRoundedUpToThePage) {
    kv_create_opts o = small_opts(64 * MiB + 1);
    ASSERT_EQ(create(o), 0) << msg_;
    EXPECT_EQ(file_size(path_), 64 * MiB + 4096);
    ASSERT_EQ(attach(), 0) << msg_;
    EXPECT_EQ(kv_pool_header(pool_)->region_size, 64 * MiB + 4096);
}

TEST_F(CreateTest, PrefaultFlagIsRecorded) {
    kv_create_opts o = small_opts(16 * MiB);
    o.flags = KV_CREATE_F_PREFAULT;
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(attach(), 0) << msg_;
    EXPECT_NE(kv_pool_header(pool_)->flags & KV_REGION_F_PREFAULTED, 0u);
}

TEST_F(CreateTest, HugepagesPreferFallsBackOnTmpfs) {
    kv_create_opts o = small_opts();
    o.hugepages = KV_HUGEPAGES_PREFER;
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(attach(), 0) << msg_;
    EXPECT_EQ(kv_pool_header(pool_)->page_size, 4096u);
    EXPECT_EQ(kv_pool_header(pool_)->backing, static_cast<uint32_t>(KV_BACKING_SHM));
}

TEST_F(CreateTest, HugepagesRequireFailsOnTmpfs) {
    kv_create_opts o = small_opts();
    o.hugepages = KV_HUGEPAGES_REQUIRE;
    int rc = create(o);
    EXPECT_TRUE(rc == -EINVAL || rc == -ENOMEM) << rc << " " << msg_;
    EXPECT_NE(msg_[0], '\0');
    EXPECT_FALSE(path_exists(path_)) << "failed create left " << path_ << " behind";
}

struct BadOpts {
    const char *what;
    void (*apply)(kv_create_opts &);
};

TEST_F(CreateTest, InvalidOptionsAreRejected) {
    const BadOpts cases[] = {
        {"slab_size not a power of two", [](kv_create_opts &o) { o.slab_size = 3 * MiB; }},
        {"slab_size 96 KiB", [](kv_create_opts &o) { o.slab_size = 96 * KiB; }},
        {"slab_size below 64 KiB", [](kv_create_opts &o) { o.slab_size = 32 * KiB; }},
        {"slab_size above 1 GiB", [](kv_create_opts &o) { o.slab_size = 2048 * MiB; }},
        {"size below metadata plus one slab",
         [](kv_create_opts &o) {
             o.size = 1 * MiB;
             o.slab_size = 1 * MiB;
         }},
        {"size 0", [](kv_create_opts &o) { o.size = 0; }},
        {"unknown hugepages value", [](kv_create_opts &o) { o.hugepages = 7; }},
        {"struct_size 0", [](kv_create_opts &o) { o.struct_size = 0; }},
        {"struct_size too small", [](kv_create_opts &o) { o.struct_size = 8; }},
        {"max_clients above KV_MAX_CLIENTS",
         [](kv_create_opts &o) { o.max_clients = KV_MAX_CLIENTS + 1; }},
        {"pins_per_client above KV_MAX_PINS_PER_CLIENT",
         [](kv_create_opts &o) { o.pins_per_client = KV_MAX_PINS_PER_CLIENT + 1; }},
        {"unknown create flag", [](kv_create_opts &o) { o.flags = 1U << 20; }},
    };
    for (const BadOpts &c : cases) {
        SCOPED_TRACE(c.what);
        kv_create_opts o = small_opts();
        c.apply(o);
        EXPECT_EQ(create(o), -EINVAL) << msg_;
        EXPECT_NE(msg_[0], '\0');
        EXPECT_FALSE(path_exists(path_)) << "failed create left " << path_ << " behind";
        unlink(path_.c_str());
    }
}

// A create that fails for a bad option must not take the existing pool
// at that path with it.
TEST_F(CreateTest, InvalidCreateLeavesExistingPoolIntact) {
    const BadOpts cases[] = {
        {"unknown hugepages value", [](kv_create_opts &x) { x.hugepages = 7; }},
        {"slab_size not a power of two", [](kv_create_opts &x) { x.slab_size = 3 * MiB; }},
        {"size below metadata plus one slab", [](kv_create_opts &x) { x.size = 64 * KiB; }},
        {"max_clients above KV_MAX_CLIENTS",
         [](kv_create_opts &x) { x.max_clients = KV_MAX_CLIENTS + 1; }},
    };
    for (const BadOpts &c : cases) {
        SCOPED_TRACE(c.what);
        unlink(path_.c_str());
        ASSERT_EQ(create(small_opts()), 0) << msg_;
        kv_create_opts bad = small_opts();
        c.apply(bad);
        EXPECT_EQ(create(bad), -EINVAL) << msg_;
        EXPECT_TRUE(path_exists(path_)) << "the existing pool file was removed";
        kv_pool *p = nullptr;
        EXPECT_EQ(kv_pool_attach(path_.c_str(), 0, &p, msg_, sizeof msg_), 0) << msg_;
        if (p) {
            EXPECT_EQ(kv_pool_header(p)->slab_size, 1 * MiB);
            EXPECT_EQ(kv_pool_detach(p), 0);
        }
    }
}

TEST_F(CreateTest, NullErrbufIsAccepted) {
    kv_create_opts o = small_opts();
    o.slab_size = 3 * MiB;
    EXPECT_EQ(kv_pool_create(path_.c_str(), &o, nullptr, 0), -EINVAL);
    unlink(path_.c_str());
    o = small_opts();
    EXPECT_EQ(kv_pool_create(path_.c_str(), &o, nullptr, 0), 0);
    EXPECT_EQ(kv_pool_attach(path_.c_str(), 0, &pool_, nullptr, 0), 0);
}

TEST_F(CreateTest, DestroyRemovesFileButKeepsMappings) {
    kv_create_opts o = small_opts();
    ASSERT_EQ(create(o), 0) << msg_;
    ASSERT_EQ(attach(), 0) << msg_;
    kv_manifest m;
    kv_manifest_init(&m, "destroy", 16);
    uint32_t ns = 0;
    ASSERT_EQ(kv_ns_register(pool_, &m, &ns, nullptr), 0);

    EXPECT_EQ(kv_pool_destroy(path_.c_str()), 0);
    EXPECT_FALSE(path_exists(path_));
    EXPECT_EQ(kv_pool_destroy(path_.c_str()), -ENOENT);

    // The attached client keeps working on its mapping.
    const auto data = payload(8192, 1);
    const kv_key k = key_of(1);
    EXPECT_EQ(kv_put(pool_, ns, &k, data.data(), data.size(), nullptr), 0);
    kv_view v{};
    ASSERT_EQ(kv_get(pool_, ns, &k, &v), 0);
    EXPECT_TRUE(view_equals(v, data));
    EXPECT_EQ(kv_release(pool_, &v), 0);

    kv_pool *again = nullptr;
    EXPECT_EQ(kv_pool_attach(path_.c_str(), 0, &again, msg_, sizeof msg_), -ENOENT);
}

TEST_F(CreateTest, AttachMissingFile) {
    EXPECT_EQ(attach(), -ENOENT);
    EXPECT_EQ(pool_, nullptr);
}

TEST_F(CreateTest, MemfdPoolAttachFd) {
    kv_create_opts o = small_opts();
    int fd = -1;
    ASSERT_EQ(kv_pool_create_memfd("kvpool-unit", &o, &fd, msg_, sizeof msg_), 0) << msg_;
    ASSERT_GE(fd, 0);
    kv_pool *a = nullptr;
    kv_pool *b = nullptr;
    ASSERT_EQ(kv_pool_attach_fd(fd, 0, &a, msg_, sizeof msg_), 0) << msg_;
    ASSERT_EQ(kv_pool_attach_fd(fd, 0, &b, msg_, sizeof msg_), 0) << msg_;
    const kv_region_header *h = kv_pool_header(a);
    EXPECT_EQ(h->magic, KV_REGION_MAGIC);
    EXPECT_EQ(h->page_size, 4096u);
    EXPECT_EQ(h->backing, static_cast<uint32_t>(KV_BACKING_SHM));
    EXPECT_NE(kv_pool_client_index(a), kv_pool_client_index(b));

    // a and b are two clients of one pool: b sees what a stored.
    kv_manifest m;
    kv_manifest_init(&m, "memfd", 16);
    uint32_t ns_a = 0, ns_b = 0;
    ASSERT_EQ(kv_ns_register(a, &m, &ns_a, nullptr), 0);
    ASSERT_EQ(kv_ns_register(b, &m, &ns_b, nullptr), 0);
    EXPECT_EQ(ns_a, ns_b);
    const auto data = payload(12345, 2);
    const kv_key k = key_of(2);
    EXPECT_EQ(kv_put(a, ns_a, &k, data.data(), data.size(), nullptr), 0);
    kv_view v{};
    ASSERT_EQ(kv_get(b, ns_b, &k, &v), 0);
    EXPECT_TRUE(view_equals(v, data));
    EXPECT_EQ(kv_release(b, &v), 0);

    EXPECT_EQ(kv_pool_detach(b), 0);
    EXPECT_EQ(kv_pool_detach(a), 0);
    EXPECT_EQ(close(fd), 0);
}

TEST_F(CreateTest, MemfdInvalidOptions) {
    kv_create_opts o = small_opts();
    o.slab_size = 3 * MiB;
    int fd = -1;
    EXPECT_EQ(kv_pool_create_memfd("kvpool-unit", &o, &fd, msg_, sizeof msg_), -EINVAL);
    EXPECT_NE(msg_[0], '\0');
}

TEST_F(CreateTest, AttachFdOfEmptyMemfd) {
    int fd = memfd_create("kvpool-unit-empty", 0);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(kv_pool_attach_fd(fd, 0, &pool_, msg_, sizeof msg_), -ENODATA);
    EXPECT_NE(msg_[0], '\0');
    EXPECT_EQ(pool_, nullptr);
    close(fd);
}

// ---- An attached pool --------------------------------------------------------

class AttachTest : public PoolTest {};

TEST_F(AttachTest, HeaderDescribesThePool) {
    const kv_region_header *h = kv_pool_header(pool_);
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->magic, KV_REGION_MAGIC);
    EXPECT_EQ(h->abi_major, KV_ABI_MAJOR);
    EXPECT_EQ(h->abi_minor, KV_ABI_MINOR);
    EXPECT_EQ(h->header_size, static_cast<uint32_t>(KV_REGION_HEADER_SIZE_V1));
    EXPECT_EQ(h->compat_features & ~KV_COMPAT_KNOWN, 0u);
    EXPECT_EQ(h->incompat_features & ~KV_INCOMPAT_KNOWN, 0u);
    EXPECT_NE(h->incompat_features & KV_INCOMPAT_F_CAS16, 0u);
    EXPECT_EQ(h->region_size, 64 * MiB);
    EXPECT_EQ(h->region_size, file_size(path_));
    EXPECT_EQ(h->page_size, 4096u);
    EXPECT_EQ(h->numa_node, KV_NUMA_NONE);
    EXPECT_EQ(h->backing, static_cast<uint32_t>(KV_BACKING_SHM));
    EXPECT_EQ(h->creator_pid, static_cast<uint32_t>(getpid()));
    EXPECT_NE(h->create_time_ns, 0u);
    EXPECT_NE(h->pool_id_lo | h->pool_id_hi, 0u);
    for (size_t i = 0; i < std::size(h->reserved); i++)
        EXPECT_EQ(h->reserved[i], 0u) << i;

    // Geometry follows the options.
    EXPECT_EQ(h->slab_size, 1 * MiB);
    EXPECT_EQ(h->blocks_per_slab, static_cast<uint32_t>(h->slab_size >> KV_MIN_BLOCK_SHIFT));
    EXPECT_EQ(h->max_clients, 64u);
    EXPECT_EQ(h->pins_per_client, 4096u);
    EXPECT_EQ(h->max_namespaces, 64u);
    EXPECT_GE(h->n_classes, 1u);
    EXPECT_LE(h->n_classes, static_cast<uint32_t>(KV_MAX_CLASSES));
    EXPECT_TRUE(is_pow2(h->n_buckets)) << h->n_buckets;
    EXPECT_GT(h->n_entries, 0u);
    EXPECT_GT(h->n_slabs, 0u);

    // Sections: sized for their tables, aligned, after the header page,
    // disjoint and inside the region.
    struct Section {
        const char *name;
        uint64_t off, len, min_len;
    };
    std::vector<Section> s = {
        {"state", h->state_off, h->state_len, KV_REGION_STATE_SIZE_V1},
        {"class", h->class_off, h->class_len, uint64_t{h->n_classes} * KV_CLASS_SIZE_V1},
        {"ns", h->ns_off, h->ns_len, uint64_t{h->max_namespaces} * KV_NAMESPACE_SIZE_V1},
        {"client", h->client_off, h->client_len, uint64_t{h->max_clients} * KV_CLIENT_SIZE_V1},
        {"journal", h->journal_off, h->journal_len,
         uint64_t{h->max_clients} * h->pins_per_client * KV_PIN_SLOT_SIZE_V1},
        {"bucket", h->bucket_off, h->bucket_len, uint64_t{h->n_buckets} * 8},
        {"entry", h->entry_off, h->entry_len, uint64_t{h->n_entries} * KV_ENTRY_SIZE_V1},
        {"slab", h->slab_off, h->slab_len, uint64_t{h->n_slabs} * KV_SLAB_SIZE_V1},
        {"block", h->block_off, h->block_len, uint64_t{h->n_slabs} * h->blocks_per_slab * 8},
        {"data", h->data_off, h->data_len, uint64_t{h->n_slabs} * h->slab_size},
    };
    for (const Section &x : s) {
        SCOPED_TRACE(x.name);
        EXPECT_GE(x.off, uint64_t{KV_HEADER_BYTES});
        EXPECT_EQ(x.off % KV_CACHELINE, 0u);
        EXPECT_GE(x.len, x.min_len);
        EXPECT_LE(x.off + x.len, h->region_size);
    }
    EXPECT_EQ(h->data_off % h->page_size, 0u);
    EXPECT_EQ(h->data_len, uint64_t{h->n_slabs} * h->slab_size);
    std::sort(s.begin(), s.end(), [](const Section &a, const Section &b) { return a.off < b.off; });
    for (size_t i = 1; i < s.size(); i++)
        EXPECT_LE(s[i - 1].off + s[i - 1].len, s[i].off)
            << s[i - 1].name << " overlaps " << s[i].name;

    char msg[256] = "";
    EXPECT_EQ(kv_region_validate(h, h->region_size, msg, sizeof msg), 0) << msg;
}

TEST_F(AttachTest, StatsReportGeometry) {
    const kv_region_header *h = kv_pool_header(pool_);
    kv_stats s = stats();
    EXPECT_EQ(s.capacity, h->data_len);
    EXPECT_EQ(s.slab_size, 1 * MiB);
    EXPECT_EQ(s.page_size, 4096u);
    EXPECT_EQ(s.numa_node, KV_NUMA_NONE);
    EXPECT_EQ(s.backing, static_cast<uint32_t>(KV_BACKING_SHM));
    EXPECT_EQ(s.clients, 1u);
    EXPECT_EQ(s.n_entries, h->n_entries);
}

TEST_F(AttachTest, TwoAttachesAreTwoClients) {
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    const uint32_t a = kv_pool_client_index(pool_);
    const uint32_t b = kv_pool_client_index(other);
    EXPECT_NE(a, b);
    EXPECT_LT(a, kv_pool_header(pool_)->max_clients);
    EXPECT_LT(b, kv_pool_header(pool_)->max_clients);
    EXPECT_EQ(kv_pool_header(pool_)->pool_id_lo, kv_pool_header(other)->pool_id_lo);
    EXPECT_EQ(kv_pool_header(pool_)->pool_id_hi, kv_pool_header(other)->pool_id_hi);
    EXPECT_EQ(stats().clients, 2u);

    kv_pool *third = attach_another();
    ASSERT_NE(third, nullptr);
    const uint32_t c = kv_pool_client_index(third);
    EXPECT_NE(c, a);
    EXPECT_NE(c, b);
    EXPECT_EQ(stats().clients, 3u);

    EXPECT_EQ(detach_other(other), 0);
    EXPECT_EQ(stats().clients, 2u);
    EXPECT_EQ(detach_other(third), 0);
    EXPECT_EQ(stats().clients, 1u);
}

TEST_F(AttachTest, NoReapFlagAttaches) {
    kv_pool *p = nullptr;
    char msg[256] = "";
    ASSERT_EQ(kv_pool_attach(path_.c_str(), KV_ATTACH_F_NO_REAP, &p, msg, sizeof msg), 0) << msg;
    EXPECT_NE(kv_pool_client_index(p), kv_pool_client_index(pool_));
    EXPECT_EQ(kv_pool_detach(p), 0);
}

TEST_F(AttachTest, DetachReleasesPinsAndReservations) {
    const auto data = payload(20000, 3);
    ASSERT_EQ(put(1, data), 0);
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);

    kv_view v{};
    const kv_key k1 = key_of(1);
    ASSERT_EQ(kv_get(other, ns_, &k1, &v), 0);
    kv_reservation r{};
    const kv_key k2 = key_of(2);
    ASSERT_EQ(kv_reserve(other, ns_, &k2, 5000, nullptr, &r), 0);
    kv_usage u = usage();
    EXPECT_EQ(u.pins, 1u);
    EXPECT_EQ(u.entries_reserved, 1u);

    ASSERT_EQ(detach_other(other), 0);
    u = usage();
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.journal_pins, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.entries_committed, 1u);
    expect_consistent();

    // The key the departed client had reserved is free to write.
    EXPECT_EQ(contains(2), 0);
    EXPECT_EQ(put(2, payload(5000, 4)), 0);
    // And the unpinned block can be removed and freed.
    EXPECT_EQ(kv_remove(pool_, ns_, &k1), 0);
    EXPECT_EQ(usage().entries_dead, 0u);
}

TEST_F(AttachTest, ReapReturnsZeroWhenNobodyDied) {
    kv_pool *other = attach_another();
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(kv_reap(pool_), 0);
    EXPECT_EQ(kv_reap(other), 0);
    EXPECT_EQ(stats().clients, 2u);
    EXPECT_EQ(stats().reaps, 0u);
}

// A child attaches, pins a block and reserves another, then exits without
// detaching; kv_reap in the parent must return its slot, pin and reservation.
TEST_F(AttachTest, ReapRecoversADeadClient) {
    const auto data = payload(30000, 5);
    ASSERT_EQ(put(1, data), 0);
    const kv_key k1 = key_of(1);
    const kv_key k2 = key_of(2);

    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        kv_pool *p = nullptr;
        if (kv_pool_attach(path_.c_str(), 0, &p, nullptr, 0) != 0) _exit(10);
        kv_view v{};
        if (kv_get(p, ns_, &k1, &v) != 0) _exit(11);
        kv_reservation r{};
        if (kv_reserve(p, ns_, &k2, 4096, nullptr, &r) != 0) _exit(12);
        std::memset(r.data, 0x5a, 4096);
        _exit(0); // dies holding a pin and a reservation
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0) << "child step failed";

    kv_usage u = usage();
    EXPECT_EQ(u.pins, 1u);
    EXPECT_EQ(u.entries_reserved, 1u);
    EXPECT_EQ(stats().clients, 2u);

    EXPECT_EQ(kv_reap(pool_), 1);
    EXPECT_EQ(kv_reap(pool_), 0);
    u = usage();
    EXPECT_EQ(u.pins, 0u);
    EXPECT_EQ(u.entries_reserved, 0u);
    EXPECT_EQ(u.entries_committed, 1u);
    EXPECT_EQ(stats().clients, 1u);
    EXPECT_EQ(stats().reaps, 1u);
    expect_consistent();
    EXPECT_EQ(kv_put(pool_, ns_, &k2, data.data(), 4096, nullptr), 0);
}

class TinyClientTable : public PoolTest {
  protected:
    void customize(kv_create_opts &o) override { o.max_clients = 2; }
};

TEST_F(TinyClientTable, FullTableGivesEUSERS) {
    kv_pool *second = attach_another();
    ASSERT_NE(second, nullptr);
    kv_pool *third = nullptr;
    char msg[256] = "";
    EXPECT_EQ(kv_pool_attach(path_.c_str(), 0, &third, msg, sizeof msg), -EUSERS);
    EXPECT_NE(msg[0], '\0');
    EXPECT_EQ(third, nullptr);
    EXPECT_EQ(detach_other(second), 0);
    // A freed slot is reusable.
    ASSERT_EQ(kv_pool_attach(path_.c_str(), 0, &third, msg, sizeof msg), 0) << msg;
    EXPECT_EQ(kv_pool_detach(third), 0);
}

} // namespace
} // namespace kvtest
