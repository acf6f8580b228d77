// SPDX-License-Identifier: MIT
//
// Attaching to damaged or foreign regions: every corruption of a valid image
// must be refused with the documented code and a message that names the
// field (and, where the numbers are short, the value seen and expected),
// both through kv_pool_attach on a file and kv_region_validate on a copy in
// memory. Nothing may crash.
#include "pool_fixture.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

namespace kvtest {
namespace {

using Image = std::vector<uint8_t>;

kv_region_header &hdr(Image &img) {
    return *reinterpret_cast<kv_region_header *>(img.data());
}

bool write_file(const std::string &path, const Image &img) {
    int fd = open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    size_t done = 0;
    while (done < img.size()) {
        ssize_t n = write(fd, img.data() + done, img.size() - done);
        if (n <= 0) break;
        done += static_cast<size_t>(n);
    }
    close(fd);
    return done == img.size();
}

bool read_file(const std::string &path, Image &img) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    img.clear();
    uint8_t buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            close(fd);
            return false;
        }
        if (n == 0) break;
        img.insert(img.end(), buf, buf + n);
    }
    close(fd);
    return true;
}

// A copy of the image in page-aligned heap memory, as a tool would map it.
class HeapCopy {
  public:
    explicit HeapCopy(const Image &img) : len_(img.size()) {
        size_t cap = (len_ + 4095) / 4096 * 4096;
        p_ = std::aligned_alloc(4096, cap ? cap : 4096);
        if (p_ && len_) std::memcpy(p_, img.data(), len_);
    }
    ~HeapCopy() { std::free(p_); }
    HeapCopy(const HeapCopy &) = delete;
    HeapCopy &operator=(const HeapCopy &) = delete;
    const void *data() const { return p_; }
    uint64_t size() const { return len_; }

  private:
    void *p_ = nullptr;
    size_t len_;
};

struct Corruption {
    const char *name;
    std::function<void(Image &)> mutate;
    std::vector<int> codes;                // acceptable return codes (one, usually)
    std::vector<const char *> field_words; // the message names one of these
    std::vector<const char *> values;      // and contains each of these
};

std::string codes_str(const std::vector<int> &codes) {
    std::string s;
    for (int c : codes)
        s += std::to_string(c) + " ";
    return s;
}

class BadRegionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        path_ = unique_pool_path("bad-region-base");
        kv_create_opts o = small_opts(8 * MiB, 64 * KiB);
        o.max_clients = 4;
        o.pins_per_client = 64;
        o.max_namespaces = 4;
        char msg[256] = "";
        ASSERT_EQ(kv_pool_create(path_.c_str(), &o, msg, sizeof msg), 0) << msg;
        ASSERT_TRUE(read_file(path_, image_));
        ASSERT_GE(image_.size(), sizeof(kv_region_header));
        ASSERT_EQ(hdr(image_).region_size, image_.size());
        // The pristine image validates, in memory and as a file.
        HeapCopy copy(image_);
        ASSERT_EQ(kv_region_validate(copy.data(), copy.size(), msg, sizeof msg), 0) << msg;
    }
    void TearDown() override { unlink(path_.c_str()); }

    // Attach to a file holding the corrupted image, then validate a heap copy.
    void check(const Corruption &c) {
        SCOPED_TRACE(c.name);
        Image img = image_;
        c.mutate(img);

        const std::string p = unique_pool_path(c.name);
        ASSERT_TRUE(write_file(p, img));
        kv_pool *pool = nullptr;
        char msg[512] = "";
        int rc = kv_pool_attach(p.c_str(), 0, &pool, msg, sizeof msg);
        unlink(p.c_str());
        expect_refused("kv_pool_attach", c, rc, msg);
        EXPECT_EQ(pool, nullptr);
        if (pool) kv_pool_detach(pool);

        HeapCopy copy(img);
        ASSERT_NE(copy.data(), nullptr);
        msg[0] = '\0';
        rc = kv_region_validate(copy.data(), copy.size(), msg, sizeof msg);
        expect_refused("kv_region_validate", c, rc, msg);
    }

    void expect_refused(const char *who, const Corruption &c, int rc, const char *msg) {
        const std::string m(msg);
        EXPECT_TRUE(std::find(c.codes.begin(), c.codes.end(), rc) != c.codes.end())
            << who << " returned " << rc << " (" << kv_strerror(rc) << "), expected one of "
            << codes_str(c.codes) << "; message: " << m;
        EXPECT_FALSE(m.empty()) << who << ": no message";
        bool named = c.field_words.empty();
        for (const char *w : c.field_words)
            named = named || mentions_any(m, {w});
        EXPECT_TRUE(named) << who << ": message does not name the field: \"" << m << "\"";
        for (const char *v : c.values)
            EXPECT_NE(m.find(v), std::string::npos)
                << who << ": message lacks value " << v << ": \"" << m << "\"";
    }

    // Attaching must work (compatible differences).
    void check_accepted(const char *name, const std::function<void(Image &)> &mutate) {
        SCOPED_TRACE(name);
        Image img = image_;
        mutate(img);
        const std::string p = unique_pool_path(name);
        ASSERT_TRUE(write_file(p, img));
        kv_pool *pool = nullptr;
        char msg[512] = "";
        EXPECT_EQ(kv_pool_attach(p.c_str(), 0, &pool, msg, sizeof msg), 0) << msg;
        if (pool) {
            EXPECT_EQ(kv_pool_detach(pool), 0);
        }
        unlink(p.c_str());
        HeapCopy copy(img);
        EXPECT_EQ(kv_region_validate(copy.data(), copy.size(), msg, sizeof msg), 0) << msg;
    }

    std::string path_;
    Image image_;
};

TEST_F(BadRegionTest, WrongMagic) {
    check({"magic",
           [](Image &i) { hdr(i).magic = 0x1122334455667788ULL; },
           {-EPROTO},
           {"magic"},
           {}});
    check({"magic-byteswapped",
           [](Image &i) { hdr(i).magic = __builtin_bswap64(KV_REGION_MAGIC); },
           {-EPROTO},
           {"magic"},
           {}});
}

TEST_F(BadRegionTest, MagicNotPublished) {
    check({"magic0",
           [](Image &i) { hdr(i).magic = 0; },
           {-ENODATA},
           {"magic", "initializ", "publish"},
           {}});
}

TEST_F(BadRegionTest, OtherAbiMajor) {
    check({"abi_major2",
           [](Image &i) { hdr(i).abi_major = 2; },
           {-EPROTO},
           {"abi_major", "abi major", "major"},
           {"2", "1"}});
    check({"abi_major0",
           [](Image &i) { hdr(i).abi_major = 0; },
           {-EPROTO},
           {"abi_major", "abi major", "major"},
           {}});
}

TEST_F(BadRegionTest, UnknownIncompatBit) {
    check({"incompat40",
           [](Image &i) { hdr(i).incompat_features |= 1ULL << 40; },
           {-EPROTO},
           {"incompat"},
           {}});
    check({"incompat4",
           [](Image &i) { hdr(i).incompat_features |= 1ULL << 4; },
           {-EPROTO},
           {"incompat"},
           {}});
    // v1.3: the feed bit on a region without a feed (and so no section).
    check({"feed_bit_without_slots",
           [](Image &i) { hdr(i).incompat_features |= KV_INCOMPAT_F_FEED; },
           {-EBADMSG},
           {"feed_slots"},
           {}});
}

TEST_F(BadRegionTest, HeaderSizeTooSmall) {
    check({"header_size100",
           [](Image &i) { hdr(i).header_size = 100; },
           {-EPROTO},
           {"header_size", "header size"},
           {"100", "544"}});
    check({"header_size0",
           [](Image &i) { hdr(i).header_size = 0; },
           {-EPROTO},
           {"header_size", "header size"},
           {}});
}

TEST_F(BadRegionTest, NonZeroReserved) {
    check({"reserved5", [](Image &i) { hdr(i).reserved[5] = 1; }, {-EPROTO}, {"reserved"}, {}});
    check({"reserved27",
           [](Image &i) { hdr(i).reserved[27] = 1ULL << 63; },
           {-EPROTO},
           {"reserved"},
           {}});
    check({"daemon_slots",
           [](Image &i) { hdr(i).daemon_slots = 2; },
           {-EPROTO},
           {"daemon_slots"},
           {"2"}});
}

TEST_F(BadRegionTest, UnknownEvictionPolicy) {
    check({"policy6",
           [](Image &i) { hdr(i).evict_policy = KV_EVICT_MAX + 1; },
           {-EPROTO},
           {"evict_policy"},
           {"6"}});
}

TEST_F(BadRegionTest, RegionSizeDisagreesWithFile) {
    check({"region_size-larger",
           [](Image &i) { hdr(i).region_size *= 2; },
           {-EBADMSG, -ENODATA},
           {"region_size", "region size"},
           {}});
    check({"region_size-smaller",
           [](Image &i) { hdr(i).region_size -= 4096; },
           {-EBADMSG},
           {"region_size", "region size"},
           {}});
}

TEST_F(BadRegionTest, TruncatedFile) {
    check({"truncated-half",
           [](Image &i) { i.resize(i.size() / 2); },
           {-EBADMSG, -ENODATA},
           {"size", "truncat", "short"},
           {}});
    check({"truncated-100",
           [](Image &i) { i.resize(100); },
           {-ENODATA},
           {"size", "truncat", "short", "header", "bytes"},
           {}});
    check({"truncated-header-page",
           [](Image &i) { i.resize(4096); },
           {-EBADMSG, -ENODATA},
           {"size", "truncat", "short"},
           {}});
    check({"empty",
           [](Image &i) { i.clear(); },
           {-ENODATA},
           {"size", "truncat", "short", "empty", "header", "bytes"},
           {}});
}

TEST_F(BadRegionTest, SectionOutOfBounds) {
    check({"entry_off=region_size",
           [](Image &i) { hdr(i).entry_off = hdr(i).region_size; },
           {-EBADMSG},
           {"entry_off", "entry"},
           {}});
    check({"entry_off-misaligned",
           [](Image &i) { hdr(i).entry_off += 8; },
           {-EBADMSG},
           {"entry_off", "entry"},
           {}});
    check({"entry_off-in-header",
           [](Image &i) { hdr(i).entry_off = 0; },
           {-EBADMSG},
           {"entry_off", "entry"},
           {}});
    check({"entry_len-short",
           [](Image &i) { hdr(i).entry_len /= 2; },
           {-EBADMSG},
           {"entry_len", "entry"},
           {}});
    check({"state_off-overflow",
           [](Image &i) { hdr(i).state_off = ~0ULL - 63; },
           {-EBADMSG},
           {"state_off", "state"},
           {}});
    check({"block_off-misaligned",
           [](Image &i) { hdr(i).block_off += 4; },
           {-EBADMSG},
           {"block_off", "block"},
           {}});
    check({"journal_len-overflow",
           [](Image &i) { hdr(i).journal_len = ~0ULL; },
           {-EBADMSG},
           {"journal"},
           {}});
}

TEST_F(BadRegionTest, DataBeyondRegion) {
    check({"data_off-beyond",
           [](Image &i) {
               kv_region_header &h = hdr(i);
               h.data_off = h.region_size - h.data_len + h.page_size;
           },
           {-EBADMSG},
           {"data_off", "data_len", "data"},
           {}});
    check({"data_len-beyond",
           [](Image &i) { hdr(i).data_len += hdr(i).slab_size; },
           {-EBADMSG},
           {"data_off", "data_len", "data"},
           {}});
}

TEST_F(BadRegionTest, BadGeometry) {
    check({"n_buckets",
           [](Image &i) { hdr(i).n_buckets = 1000; },
           {-EBADMSG},
           {"n_buckets", "bucket"},
           {"1000"}});
    check({"n_buckets0",
           [](Image &i) { hdr(i).n_buckets = 0; },
           {-EBADMSG},
           {"n_buckets", "bucket"},
           {}});
    check({"max_clients",
           [](Image &i) { hdr(i).max_clients = KV_MAX_CLIENTS + 1; },
           {-EBADMSG},
           {"max_clients", "clients"},
           {"4096", "4095"}});
    check({"max_clients0",
           [](Image &i) { hdr(i).max_clients = 0; },
           {-EBADMSG},
           {"max_clients", "clients"},
           {}});
    check({"pins_per_client",
           [](Image &i) { hdr(i).pins_per_client = KV_MAX_PINS_PER_CLIENT + 1; },
           {-EBADMSG},
           {"pins_per_client", "pins"},
           {}});
    check({"n_classes",
           [](Image &i) { hdr(i).n_classes = KV_MAX_CLASSES + 1; },
           {-EBADMSG},
           {"n_classes", "class"},
           {}});
    check({"slab_size",
           [](Image &i) { hdr(i).slab_size = 3 * 64 * KiB; },
           {-EBADMSG},
           {"slab_size", "slab"},
           {}});
    check({"blocks_per_slab",
           [](Image &i) { hdr(i).blocks_per_slab += 1; },
           {-EBADMSG},
           {"blocks_per_slab", "block"},
           {}});
    check({"n_entries-nil",
           [](Image &i) { hdr(i).n_entries = KV_NIL32; },
           {-EBADMSG},
           {"n_entries", "entr"},
           {}});
    check({"page_size",
           [](Image &i) { hdr(i).page_size = 12345; },
           {-EBADMSG, -EPROTO},
           {"page_size", "page"},
           {}});
}

TEST_F(BadRegionTest, CompatibleDifferencesAreAccepted) {
    check_accepted("unknown-compat-bit", [](Image &i) { hdr(i).compat_features |= 1ULL << 50; });
    check_accepted("newer-minor", [](Image &i) { hdr(i).abi_minor = KV_ABI_MINOR + 7; });
}

TEST_F(BadRegionTest, ValidateShortBuffers) {
    char msg[256] = "";
    HeapCopy copy(image_);
    for (uint64_t len :
         {uint64_t{0}, uint64_t{8}, uint64_t{100}, uint64_t{KV_REGION_HEADER_SIZE_V1 - 1}}) {
        SCOPED_TRACE(len);
        msg[0] = '\0';
        EXPECT_EQ(kv_region_validate(copy.data(), len, msg, sizeof msg), -ENODATA);
        EXPECT_NE(msg[0], '\0');
    }
    // A buffer that holds the whole header but not the region.
    EXPECT_LT(kv_region_validate(copy.data(), 4096, msg, sizeof msg), 0);
    EXPECT_LT(kv_region_validate(copy.data(), copy.size() - 1, msg, sizeof msg), 0);
    // Tiny message buffers are filled without overrun and NUL-terminated.
    char tiny[4] = {'x', 'x', 'x', 'x'};
    EXPECT_EQ(kv_region_validate(copy.data(), 8, tiny, 3), -ENODATA);
    EXPECT_EQ(tiny[3], 'x') << "wrote past errlen";
    EXPECT_NE(std::memchr(tiny, '\0', 3), nullptr) << "message not NUL-terminated";
    EXPECT_EQ(kv_region_validate(copy.data(), 8, nullptr, 0), -ENODATA);
}

// Random damage to the header: validation returns 0 or a negative code with a
// message, never crashes, and an image it accepts can be attached and used.
TEST_F(BadRegionTest, RandomHeaderDamageNeverCrashes) {
    std::mt19937_64 rng(12345);
    HeapCopy copy(image_);
    auto *base = static_cast<uint8_t *>(const_cast<void *>(copy.data()));
    int refused = 0, accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        std::memcpy(base, image_.data(), KV_HEADER_BYTES);
        const int edits = 1 + static_cast<int>(rng() % 3);
        for (int e = 0; e < edits; e++) {
            const size_t word = rng() % (KV_REGION_HEADER_SIZE_V1 / 8);
            uint64_t v;
            switch (rng() % 4) {
            case 0:
                v = rng();
                break;
            case 1:
                v = 0;
                break;
            case 2:
                v = ~0ULL;
                break;
            default: {
                std::memcpy(&v, base + word * 8, 8);
                v ^= 1ULL << (rng() % 64);
            }
            }
            std::memcpy(base + word * 8, &v, 8);
        }
        char msg[256] = "";
        int rc = kv_region_validate(base, copy.size(), msg, sizeof msg);
        ASSERT_LE(rc, 0) << "iteration " << iter;
        if (rc < 0) {
            refused++;
            ASSERT_NE(msg[0], '\0') << "iteration " << iter << " rc " << rc;
        } else {
            accepted++;
        }
    }
    EXPECT_GT(refused, 10000);
    RecordProperty("accepted", accepted);
}

TEST_F(BadRegionTest, RandomHeaderDamageAttach) {
    std::mt19937_64 rng(777);
    for (int iter = 0; iter < 60; iter++) {
        Image img = image_;
        const size_t word = rng() % (KV_REGION_HEADER_SIZE_V1 / 8);
        uint64_t v;
        std::memcpy(&v, img.data() + word * 8, 8);
        v ^= 1ULL << (rng() % 64);
        std::memcpy(img.data() + word * 8, &v, 8);
        const std::string p = unique_pool_path("random-attach");
        ASSERT_TRUE(write_file(p, img));
        kv_pool *pool = nullptr;
        char msg[256] = "";
        int rc = kv_pool_attach(p.c_str(), 0, &pool, msg, sizeof msg);
        unlink(p.c_str());
        if (rc < 0) {
            EXPECT_NE(msg[0], '\0') << "word " << word << " rc " << rc;
            EXPECT_EQ(pool, nullptr);
            continue;
        }
        // Accepted: the flipped bit was in a field that does not matter.
        ASSERT_NE(pool, nullptr);
        kv_manifest m;
        kv_manifest_init(&m, "fuzz", 16);
        uint32_t ns = 0;
        EXPECT_EQ(kv_ns_register(pool, &m, &ns, nullptr), 0) << "word " << word;
        const auto d = payload(4096, 1);
        const kv_key k = key_of(1);
        EXPECT_EQ(kv_put(pool, ns, &k, d.data(), d.size(), nullptr), 0) << "word " << word;
        EXPECT_EQ(kv_pool_detach(pool), 0);
    }
}

} // namespace
} // namespace kvtest
