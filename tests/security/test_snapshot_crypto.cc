// SPDX-License-Identifier: MIT
//
// Encrypted snapshots (format 1.2, <kvpool/snapshot.h>): the snapshot
// engine (daemon/snapshot.h) with a pool keyring (daemon/keyring.h) against
// pools in memfds and files under /var/tmp. Round trips on 4 KiB and
// hugepage pools, key rotation, a wrong key, a missing key, forged parts
// whose checksums were recomputed, every byte of a small snapshot flipped
// in turn and every truncation: a restore commits only blocks that are
// byte-exact, counts what it dropped, and refuses a file it cannot
// authenticate with a message that names the key id, the pool and the file.
//
// Block contents are derived from the key, so any block found in a pool
// can be checked without a list.
#include "keyring.h"
#include "snapshot.h"
#include "snapshot_format.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <kv/kv.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>
#include <xxhash.h>

namespace fs = std::filesystem;
namespace snap = kv::daemon::snapshot;
using kv::daemon::EncryptionConfig;
using kv::daemon::KeyConfig;
using kv::daemon::Keyring;

namespace {

uint64_t splitmix(uint64_t &s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// key.hi: the block's length; contents: a splitmix64 stream of the key.
kv_key make_key(uint64_t lo, uint32_t len) {
    return kv_key{lo, (uint64_t(0x5ec) << 32) | len};
}
uint32_t key_len(const kv_key &k) {
    return uint32_t(k.hi);
}
void fill(const kv_key &k, uint8_t *buf, uint64_t len) {
    uint64_t s = k.lo * 0x2545F4914F6CDD1DULL ^ k.hi;
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t v = splitmix(s);
        memcpy(buf + i, &v, std::min<uint64_t>(8, len - i));
    }
}

std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}
void write_file(const std::string &path, const std::vector<uint8_t> &b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
}

// A memfd pool (4 KiB pages, or hugepages when asked and available).
struct Pool {
    kv_pool *p = nullptr;
    int fd = -1;
    uint32_t ns = 0;
    ~Pool() {
        if (p) kv_pool_detach(p);
        if (fd >= 0) close(fd);
    }
};

// 2 MiB hugepages for one test: raises vm.nr_hugepages when too few are
// free, and puts the old value back.
class HugePages {
  public:
    ~HugePages() {
        if (old_ >= 0) write_nr(old_);
    }
    // "" when need pages are free, else why not.
    std::string reserve(long need) {
        if (geteuid() != 0) return "not root: cannot reserve hugepages";
        const long nr = read_long("/proc/sys/vm/nr_hugepages");
        const long fr = meminfo("HugePages_Free");
        if (meminfo("Hugepagesize") != 2048) return "the default hugepage size is not 2 MiB";
        if (nr < 0 || fr < 0) return "no hugepage support";
        if (fr >= need) return "";
        old_ = nr;
        write_nr(nr + need - fr);
        if (meminfo("HugePages_Free") < need)
            return "the kernel gave fewer than " + std::to_string(need) + " free hugepages";
        return "";
    }

  private:
    static long read_long(const char *path) {
        std::ifstream f(path);
        long v = -1;
        f >> v;
        return f ? v : -1;
    }
    static long meminfo(const char *field) {
        std::ifstream f("/proc/meminfo");
        std::string line;
        const size_t n = strlen(field);
        while (std::getline(f, line))
            if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':')
                return strtol(line.c_str() + n + 1, nullptr, 10);
        return -1;
    }
    static void write_nr(long v) {
        std::ofstream f("/proc/sys/vm/nr_hugepages");
        f << v << "\n";
    }
    long old_ = -1;
};

class SnapshotCryptoTest : public ::testing::Test {
  protected:
    void SetUp() override {
        // O_DIRECT: not tmpfs.
        char tmpl[] = "/var/tmp/kvsnap-crypto-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr) << strerror(errno);
        dir_ = tmpl;
        kv_manifest_init(&manifest_, "crypto-test-model", 16);
        manifest_.dtype = KV_DTYPE_BF16;
        manifest_.tp_world = 1;
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    std::string file(const std::string &name) const { return dir_ + "/" + name; }

    // A key file of 32 bytes derived from seed, mode 0600.
    std::string key_file(const std::string &name, uint64_t seed) {
        const std::string path = file(name + ".key");
        std::string hex;
        for (int i = 0; i < 32; i++) {
            char b[3];
            snprintf(b, sizeof b, "%02x", unsigned(splitmix(seed) & 0xff));
            hex += b;
        }
        int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        EXPECT_GE(fd, 0) << strerror(errno);
        EXPECT_EQ(write(fd, hex.data(), hex.size()), ssize_t(hex.size()));
        fchmod(fd, 0600);
        close(fd);
        return path;
    }

    // A keyring writing with current; keys: (id, seed) pairs.
    std::unique_ptr<Keyring> keyring(const std::string &current,
                                     const std::vector<std::pair<std::string, uint64_t>> &keys) {
        EncryptionConfig ec;
        ec.enabled = true;
        ec.key = current;
        for (auto &[id, seed] : keys)
            ec.keys.push_back(KeyConfig{id, key_file(id + "-" + std::to_string(seed), seed), ""});
        auto kr = kv::daemon::load_keyring(ec);
        EXPECT_TRUE(kr.has_value()) << (kr ? "" : kr.error());
        if (!kr) return nullptr;
        return std::make_unique<Keyring>(std::move(*kr));
    }

    std::unique_ptr<Pool> make_pool(uint64_t size, uint32_t hugepages = KV_HUGEPAGES_NEVER) {
        auto p = std::make_unique<Pool>();
        kv_create_opts o;
        kv_create_opts_init(&o, size);
        o.hugepages = hugepages;
        o.avg_block_size = 64 << 10;
        char err[256] = "";
        int rc = kv_pool_create_memfd("crypto-test", &o, &p->fd, err, sizeof err);
        EXPECT_EQ(rc, 0) << err;
        if (rc != 0) return nullptr;
        rc = kv_pool_attach_fd(p->fd, 0, &p->p, err, sizeof err);
        EXPECT_EQ(rc, 0) << err;
        if (rc != 0) return nullptr;
        EXPECT_EQ(kv_ns_register(p->p, &manifest_, &p->ns, nullptr), 0);
        return p;
    }

    static std::vector<kv_key> populate(Pool &p, const std::vector<uint32_t> &sizes, size_t n) {
        std::vector<kv_key> keys;
        std::vector<uint8_t> buf(4 << 20);
        for (size_t i = 0; i < n; i++) {
            const kv_key k = make_key(i + 1, sizes[i % sizes.size()]);
            fill(k, buf.data(), key_len(k));
            const kv_meta m{uint32_t(i + 1), uint32_t(i & 3), i * 7};
            EXPECT_EQ(kv_put(p.p, p.ns, &k, buf.data(), key_len(k), &m), 0) << i;
            keys.push_back(k);
        }
        return keys;
    }

    // Every committed block is byte-exact; returns how many there are.
    static size_t check_every_block(kv_pool *p) {
        std::vector<kv_entry_info> rows(256);
        uint64_t cursor = 0;
        size_t n = 0;
        std::vector<uint8_t> want;
        while (cursor < kv_pool_header(p)->n_entries) {
            int k = kv_pool_entries(p, &cursor, rows.data(), rows.size());
            EXPECT_GE(k, 0);
            if (k < 0) break;
            for (int i = 0; i < k; i++) {
                if (rows[i].state != KV_ENTRY_COMMITTED) continue;
                kv_view v{};
                EXPECT_EQ(kv_get(p, rows[i].ns, &rows[i].key, &v), 0);
                want.resize(key_len(rows[i].key));
                fill(rows[i].key, want.data(), want.size());
                EXPECT_EQ(v.length, want.size());
                EXPECT_TRUE(v.length == want.size() && memcmp(v.data, want.data(), v.length) == 0)
                    << "block " << rows[i].key.lo << " is not what was put";
                EXPECT_EQ(kv_view_verify(&v), 0);
                kv_release(p, &v);
                n++;
            }
        }
        return n;
    }

    static void expect_clean(kv_pool *p) {
        kv_usage u{};
        ASSERT_EQ(kv_pool_usage(p, &u), 0);
        EXPECT_EQ(u.pins, 0u);
        EXPECT_EQ(u.entries_reserved, 0u);
        EXPECT_EQ(u.orphan_blocks, 0u);
    }

    static bool contains(const std::vector<uint8_t> &hay, const uint8_t *needle, size_t n) {
        return std::search(hay.begin(), hay.end(), needle, needle + n) != hay.end();
    }

    std::string dir_;
    kv_manifest manifest_;
};

constexpr uint32_t kSizes[] = {1,      4095,   4096,    5000,          65536, 65537,
                               100000, 262144, 1 << 20, (2 << 20) - 7, 12345, 8192};

snap::Options with(const Keyring *kr, const std::string &pool = "") {
    snap::Options o;
    o.keyring = kr;
    o.expect_pool = pool;
    return o;
}

// A round trip: the file is encrypted (its header says so and names the
// key; no block's bytes, no manifest name appear in it) and restores every
// block byte-exact with its metadata.
TEST_F(SnapshotCryptoTest, RoundTrip4KiBPages) {
    auto kr = keyring("alpha-1", {{"alpha-1", 1}});
    ASSERT_TRUE(kr);
    auto src = make_pool(96 << 20);
    auto dst = make_pool(96 << 20);
    ASSERT_TRUE(src && dst);
    auto keys = populate(*src, {std::begin(kSizes), std::end(kSizes)}, 120);
    const std::string path = file("alpha.kvsnap");
    auto w = snap::persist(src->p, "alpha", path, with(kr.get()));
    ASSERT_TRUE(w.has_value()) << w.error().message;
    EXPECT_EQ(w->blocks, keys.size());
    expect_clean(src->p);

    const auto bytes = read_file(path);
    auto h = snap::inspect(path);
    ASSERT_TRUE(h.has_value()) << h.error().message;
    EXPECT_EQ(h->incompat_features, uint64_t(KV_SNAP_INCOMPAT_ENCRYPTED));
    EXPECT_EQ(h->version_minor, 2u);
    EXPECT_STREQ(reinterpret_cast<const char *>(h->data_key.key_id), "alpha-1");
    EXPECT_FALSE(contains(bytes, reinterpret_cast<const uint8_t *>("crypto-test-model"), 17))
        << "the namespace table is in the clear";
    std::vector<uint8_t> blk(1 << 20);
    for (const kv_key &k : keys) {
        if (key_len(k) < 64) continue;
        fill(k, blk.data(), 64);
        ASSERT_FALSE(contains(bytes, blk.data(), 64)) << "block " << k.lo << " is in the clear";
    }

    auto r = snap::restore(dst->p, path, with(kr.get(), "alpha"));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->blocks, keys.size());
    EXPECT_EQ(r->dropped, 0u);
    EXPECT_FALSE(r->truncated);
    EXPECT_FALSE(r->trailer_damaged) << r->trailer_problem;
    EXPECT_EQ(check_every_block(dst->p), keys.size());
    for (size_t i = 0; i < keys.size(); i++) {
        kv_view v{};
        ASSERT_EQ(kv_get(dst->p, dst->ns, &keys[i], &v), 0);
        EXPECT_EQ(v.meta.tokens, uint32_t(i + 1));
        EXPECT_EQ(v.meta.user_tag, i * 7);
        kv_release(dst->p, &v);
    }
    expect_clean(dst->p);
}

TEST_F(SnapshotCryptoTest, RoundTripHugepages) {
    HugePages hp;
    const uint64_t size = 64 << 20;
    if (std::string why = hp.reserve(long(2 * size / (2 << 20)) + 4); !why.empty())
        GTEST_SKIP() << "hugepages: " << why;
    auto kr = keyring("huge-1", {{"huge-1", 2}});
    ASSERT_TRUE(kr);
    auto src = make_pool(size, KV_HUGEPAGES_REQUIRE);
    auto dst = make_pool(size, KV_HUGEPAGES_REQUIRE);
    if (!src || !dst) GTEST_SKIP() << "could not create hugepage pools";
    auto keys = populate(*src, {65536, 1 << 20, 5000, (2 << 20) - 7}, 40);
    const std::string path = file("huge.kvsnap");
    auto w = snap::persist(src->p, "huge", path, with(kr.get()));
    ASSERT_TRUE(w.has_value()) << w.error().message;
    auto r = snap::restore(dst->p, path, with(kr.get(), "huge"));
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->blocks, keys.size());
    EXPECT_EQ(check_every_block(dst->p), keys.size());
    expect_clean(dst->p);
}

// No keyring: a plain file, as before 1.2, restored with or without keys.
TEST_F(SnapshotCryptoTest, PlainWithoutKeyring) {
    auto src = make_pool(32 << 20);
    auto keys = populate(*src, {5000, 65536}, 20);
    const std::string path = file("plain.kvsnap");
    ASSERT_TRUE(snap::persist(src->p, "plain", path, {}).has_value());
    auto h = snap::inspect(path);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->incompat_features, 0u);
    auto kr = keyring("k", {{"k", 3}});
    for (const Keyring *k : std::vector<const Keyring *>{nullptr, kr.get()}) {
        auto dst = make_pool(32 << 20);
        auto r = snap::restore(dst->p, path, with(k));
        ASSERT_TRUE(r.has_value()) << r.error().message;
        EXPECT_EQ(r->blocks, keys.size());
        EXPECT_EQ(check_every_block(dst->p), keys.size());
    }
}

// Rotation: a new key id writes; the old one, still configured, reads the
// old snapshot; once it is removed the old snapshot is refused by name.
TEST_F(SnapshotCryptoTest, KeyRotation) {
    auto k1 = keyring("gen-1", {{"gen-1", 10}});
    auto k12 = keyring("gen-2", {{"gen-2", 20}, {"gen-1", 10}});
    auto k2 = keyring("gen-2", {{"gen-2", 20}});
    auto src = make_pool(32 << 20);
    auto keys = populate(*src, {5000, 65536, 1}, 30);
    const std::string old_path = file("old.kvsnap"), new_path = file("new.kvsnap");
    ASSERT_TRUE(snap::persist(src->p, "rot", old_path, with(k1.get())).has_value());
    ASSERT_TRUE(snap::persist(src->p, "rot", new_path, with(k12.get())).has_value());
    auto h = snap::inspect(new_path);
    ASSERT_TRUE(h.has_value());
    EXPECT_STREQ(reinterpret_cast<const char *>(h->data_key.key_id), "gen-2");

    for (const std::string &p : {old_path, new_path}) {
        auto dst = make_pool(32 << 20);
        auto r = snap::restore(dst->p, p, with(k12.get()));
        ASSERT_TRUE(r.has_value()) << r.error().message;
        EXPECT_EQ(r->blocks, keys.size());
        EXPECT_EQ(check_every_block(dst->p), keys.size());
    }
    auto dst = make_pool(32 << 20);
    auto r = snap::restore(dst->p, old_path, with(k2.get(), "rot"));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, -ENOKEY);
    const std::string &m = r.error().message;
    EXPECT_NE(m.find("\"gen-1\""), std::string::npos) << m;
    EXPECT_NE(m.find("configured: gen-2"), std::string::npos) << m;
    EXPECT_NE(m.find("pool rot"), std::string::npos) << m;
    EXPECT_NE(m.find(old_path), std::string::npos) << m;
    EXPECT_EQ(check_every_block(dst->p), 0u);
}

// The key id is configured but with other bytes: EKEYREJECTED, nothing added.
TEST_F(SnapshotCryptoTest, WrongKeyIsRejected) {
    auto good = keyring("tenant-a", {{"tenant-a", 100}});
    auto bad = keyring("tenant-a", {{"tenant-a", 101}});
    auto src = make_pool(32 << 20);
    populate(*src, {5000}, 5);
    const std::string path = file("a.kvsnap");
    ASSERT_TRUE(snap::persist(src->p, "a", path, with(good.get())).has_value());
    auto dst = make_pool(32 << 20);
    auto r = snap::restore(dst->p, path, with(bad.get(), "a"));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, -EKEYREJECTED);
    const std::string &m = r.error().message;
    EXPECT_NE(m.find("\"tenant-a\""), std::string::npos) << m;
    EXPECT_NE(m.find("pool a"), std::string::npos) << m;
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_EQ(check_every_block(dst->p), 0u);
}

// No keyring at all, or one without the id: ENOKEY naming the id.
TEST_F(SnapshotCryptoTest, MissingKeyIsRefused) {
    auto kr = keyring("only", {{"only", 7}});
    auto other = keyring("else", {{"else", 8}});
    auto src = make_pool(32 << 20);
    populate(*src, {5000}, 5);
    const std::string path = file("m.kvsnap");
    ASSERT_TRUE(snap::persist(src->p, "m", path, with(kr.get())).has_value());
    for (const Keyring *k : std::vector<const Keyring *>{nullptr, other.get()}) {
        auto dst = make_pool(32 << 20);
        auto r = snap::restore(dst->p, path, with(k, "m"));
        ASSERT_FALSE(r.has_value());
        EXPECT_EQ(r.error().code, -ENOKEY);
        EXPECT_NE(r.error().message.find("\"only\""), std::string::npos) << r.error().message;
        EXPECT_NE(r.error().message.find(path), std::string::npos) << r.error().message;
        EXPECT_EQ(check_every_block(dst->p), 0u);
    }
}

// Snapshot files: 0640 in the pool's group, 0600 when there is none.
TEST_F(SnapshotCryptoTest, FileModes) {
    auto kr = keyring("k", {{"k", 9}});
    auto src = make_pool(32 << 20);
    populate(*src, {5000}, 3);
    struct stat sb{};
    const std::string p1 = file("nogroup.kvsnap"), p2 = file("group.kvsnap");
    ASSERT_TRUE(snap::persist(src->p, "m", p1, with(kr.get())).has_value());
    ASSERT_EQ(stat(p1.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0600u);
    snap::Options o = with(kr.get());
    o.file_gid = int(getgid());
    ASSERT_TRUE(snap::persist(src->p, "m", p2, o).has_value());
    ASSERT_EQ(stat(p2.c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 07777, 0640u);
    EXPECT_EQ(sb.st_gid, getgid());
}

// ---- Damage and forgery -------------------------------------------------------

// Where the parts of a small encrypted snapshot are.
struct Parts {
    uint64_t header_len = 0, trailer_off = 0;
    std::vector<std::pair<uint64_t, kv_snap_segment>> segs;
};
Parts parts_of(const std::vector<uint8_t> &f) {
    Parts p;
    kv_snap_header h;
    memcpy(&h, f.data(), sizeof h);
    p.header_len = h.header_len;
    uint64_t off = h.header_len;
    for (;;) {
        kv_snap_segment s;
        memcpy(&s, f.data() + off, sizeof s);
        if (s.magic != KV_SNAP_SEGMENT_MAGIC) break;
        p.segs.push_back({off, s});
        off += s.length;
    }
    p.trailer_off = off;
    return p;
}

// Recompute every XXH3 checksum (as someone who altered the file would):
// what is left to catch a change is the tags.
void fix_checksums(std::vector<uint8_t> &f) {
    const Parts p = parts_of(f);
    std::span<uint8_t> hdr(f.data(), p.header_len);
    const uint64_t hsum = snap::header_checksum(hdr);
    memcpy(f.data() + offsetof(kv_snap_header, checksum), &hsum, 8);
    uint64_t chain = 0;
    for (auto &[off, s] : p.segs) {
        const uint64_t sum = snap::segment_checksum(f.data() + off);
        memcpy(f.data() + off + offsetof(kv_snap_segment, checksum), &sum, 8);
        chain = snap::chain_segment(chain, sum);
    }
    kv_snap_trailer t;
    memcpy(&t, f.data() + p.trailer_off, sizeof t);
    t.segments_hash = chain;
    t.header_checksum = hsum;
    t.checksum = snap::trailer_checksum(t);
    memcpy(f.data() + p.trailer_off, &t, sizeof t);
}

class SnapshotDamageTest : public SnapshotCryptoTest {
  protected:
    // A small encrypted snapshot: one namespace, blocks of 100 and 5000 bytes.
    void SetUp() override {
        SnapshotCryptoTest::SetUp();
        kr_ = keyring("small", {{"small", 42}});
        ASSERT_TRUE(kr_);
        auto src = make_pool(16 << 20);
        ASSERT_TRUE(src);
        keys_ = populate(*src, {100, 5000}, 2);
        ASSERT_TRUE(
            snap::persist(src->p, "small", file("small.kvsnap"), with(kr_.get())).has_value());
        good_ = read_file(file("small.kvsnap"));
        // The damaged copies are read from memory (tmpfs: buffered reads):
        // O_DIRECT would first wait for each copy to reach the disk.
        char tmpl[] = "/dev/shm/kvsnap-crypto-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr) << strerror(errno);
        shm_ = tmpl;
        path_ = shm_ + "/small.kvsnap";
        dst_ = make_pool(16 << 20);
        ASSERT_TRUE(dst_);
    }
    void TearDown() override {
        std::error_code ec;
        if (!shm_.empty()) fs::remove_all(shm_, ec);
        SnapshotCryptoTest::TearDown();
    }

    // The records of the good file, decrypted (file order).
    std::vector<kv_snap_record> records() {
        std::vector<uint8_t> f = good_;
        std::vector<kv_snap_record> out;
        auto h = snap::parse_header({f.data(), snap::kAlign}, f.size());
        EXPECT_TRUE(h.has_value());
        if (!h) return out;
        auto ok = snap::unlock_header({f.data(), snap::kAlign}, *h, *kr_->find("small"));
        EXPECT_TRUE(ok.has_value()) << (ok ? "" : ok.error().what);
        auto seg = snap::parse_segment({f.data() + h->hdr.header_len, snap::kSegmentHead}, 0,
                                       h->hdr.header_len, f.size(), *h);
        EXPECT_TRUE(seg.has_value()) << (seg ? "" : seg.error().what);
        if (seg) out.assign(seg->records, seg->records + seg->seg.n_records);
        return out;
    }

    // Restore bytes into the (emptied) destination; every block committed
    // must be byte-exact, and fewer than all must be accounted for.
    std::expected<snap::Result, snap::Error> restore_bytes(const std::vector<uint8_t> &b,
                                                           const std::string &what) {
        write_file(path_, b);
        snap::Options o = with(kr_.get(), "small");
        o.queue_depth = 4;
        o.register_buffers = false;
        auto r = snap::restore(dst_->p, path_, o);
        const size_t n = check_every_block(dst_->p);
        if (r) {
            EXPECT_EQ(n, r->blocks) << what;
            if (r->blocks < keys_.size()) {
                EXPECT_TRUE(r->corrupt || r->damaged_segments || r->truncated)
                    << what << ": " << keys_.size() - r->blocks << " blocks missing, none counted";
            }
        } else {
            EXPECT_EQ(n, 0u) << what << ": refused, yet blocks were added";
            EXPECT_FALSE(r.error().message.empty());
        }
        expect_clean(dst_->p);
        for (const kv_key &k : keys_)
            kv_remove(dst_->p, dst_->ns, &k);
        return r;
    }

    std::unique_ptr<Keyring> kr_;
    std::vector<kv_key> keys_;
    std::string path_, shm_;
    std::vector<uint8_t> good_;
    std::unique_ptr<Pool> dst_;
};

// Every byte flipped in turn: nothing wrong is ever served, and a flip
// that costs blocks is counted. Every byte of the parts a reader uses (the
// header struct and namespace table, the segment head, each block's data,
// the trailer struct); of the zero padding behind them, which is either
// checksummed (the header's) or never used (a data extent's, the trailer
// page's), every 7th byte and the first and last of each run, to keep the
// test short.
TEST_F(SnapshotDamageTest, EveryByteFlipped) {
    auto clean = restore_bytes(good_, "intact");
    ASSERT_TRUE(clean.has_value()) << clean.error().message;
    ASSERT_EQ(clean->blocks, keys_.size());
    const Parts p = parts_of(good_);
    const auto recs = records();
    ASSERT_EQ(recs.size(), keys_.size());
    ASSERT_EQ(p.segs.size(), 1u);
    // [begin, end) of the padding runs.
    std::vector<std::pair<uint64_t, uint64_t>> pads = {
        {sizeof(kv_snap_header) + sizeof(kv_snap_namespace), p.header_len},
        {p.trailer_off + sizeof(kv_snap_trailer), good_.size()}};
    for (const kv_snap_record &r : recs)
        pads.push_back({p.segs[0].first + r.data_off + r.length,
                        p.segs[0].first + r.data_off + snap::align_up(r.length, snap::kAlign)});
    auto tried = [&](uint64_t i) {
        for (auto [b, e] : pads)
            if (i >= b && i < e) return i == b || i == e - 1 || (i - b) % 7 == 0;
        return true;
    };
    size_t refused = 0, lost = 0, harmless = 0, n = 0;
    for (size_t i = 0; i < good_.size(); i++) {
        if (!tried(i)) continue;
        n++;
        std::vector<uint8_t> b = good_;
        b[i] ^= 0x5a;
        auto r = restore_bytes(b, "byte " + std::to_string(i));
        if (!r) {
            refused++;
            EXPECT_LT(i, p.header_len) << "only a damaged header refuses the file: byte " << i
                                       << ": " << r.error().message;
        } else if (r->blocks < keys_.size()) {
            lost++;
        } else {
            harmless++;
        }
        if (HasFailure()) {
            ADD_FAILURE() << "stopped at byte " << i;
            return;
        }
    }
    EXPECT_EQ(refused, n - lost - harmless);
    EXPECT_GE(refused, sizeof(kv_snap_header) + sizeof(kv_snap_namespace))
        << "every header byte is checked";
    EXPECT_GE(lost, snap::kSegmentHead + 100 + 5000) << "every head and data byte costs blocks";
    printf("%zu of %zu bytes flipped: %zu refused the file, %zu cost blocks, %zu changed nothing "
           "served\n",
           n, good_.size(), refused, lost, harmless);
}

// The same with the checksums recomputed after the change: the tags alone
// must catch it. Header: refused as unauthenticated; a segment head: the
// segment is lost; a data extent: its block is dropped as corrupt; the
// trailer: damaged.
TEST_F(SnapshotDamageTest, ForgedChecksumsAreCaughtByTags) {
    const Parts p = parts_of(good_);
    ASSERT_EQ(p.segs.size(), 1u);
    const uint64_t seg = p.segs[0].first;
    const auto recs = records();
    ASSERT_EQ(recs.size(), 2u);
    struct Case {
        const char *what;
        uint64_t off;
    } cases[] = {
        {"header: snapshot_ns", offsetof(kv_snap_header, snapshot_ns) + 1},
        {"header: pool_name", offsetof(kv_snap_header, pool_name) + 2},
        {"header: wrapped key", offsetof(kv_snap_header, data_key) + 50},
        {"header: namespace table", sizeof(kv_snap_header) + 10},
        {"segment: n_records", seg + offsetof(kv_snap_segment, n_records)},
        {"segment: sealed records", seg + sizeof(kv_snap_segment) + 20},
        {"segment: sealed histories", seg + KV_SNAP_SEGMENT_HISTORY_OFF + 3},
        {"segment: sealed tags", seg + KV_SNAP_SEGMENT_TAGS_OFF + 1},
        {"data of record 0", seg + recs[0].data_off + recs[0].length - 1},
        {"data of record 1", seg + recs[1].data_off + 3},
        {"trailer: n_records", p.trailer_off + offsetof(kv_snap_trailer, n_records)},
        {"trailer: tag", p.trailer_off + offsetof(kv_snap_trailer, tag)},
    };
    for (const Case &c : cases) {
        std::vector<uint8_t> b = good_;
        b[c.off] ^= 1;
        fix_checksums(b);
        auto r = restore_bytes(b, c.what);
        if (c.off < p.header_len) {
            ASSERT_FALSE(r.has_value()) << c.what;
            EXPECT_TRUE(r.error().code == -EBADMSG || r.error().code == -EKEYREJECTED)
                << c.what << ": " << r.error().message;
            EXPECT_NE(r.error().message.find("\"small\""), std::string::npos)
                << c.what << ": " << r.error().message;
            continue;
        }
        ASSERT_TRUE(r.has_value()) << c.what << ": " << r.error().message;
        if (c.off >= p.trailer_off) {
            EXPECT_EQ(r->blocks, keys_.size()) << c.what;
            EXPECT_TRUE(r->trailer_damaged) << c.what;
            EXPECT_NE(r->trailer_problem.find(
                          c.off == p.trailer_off + offsetof(kv_snap_trailer, tag) ? "authentication"
                                                                                  : ""),
                      std::string::npos)
                << r->trailer_problem;
        } else if (c.off >= seg + snap::kSegmentHead) {
            EXPECT_EQ(r->blocks, keys_.size() - 1) << c.what;
            EXPECT_EQ(r->corrupt, 1u) << c.what;
        } else {
            EXPECT_EQ(r->blocks, 0u) << c.what;
            EXPECT_EQ(r->damaged_segments, 1u) << c.what;
        }
    }
}

// A segment copied from another snapshot under the same pool key (same
// layout, its own data key) does not open: the data key is per snapshot.
TEST_F(SnapshotDamageTest, PartsOfAnotherSnapshotDoNotOpen) {
    auto src = make_pool(16 << 20);
    populate(*src, {100, 5000}, 2); // the same blocks
    const std::string other = file("other.kvsnap");
    ASSERT_TRUE(snap::persist(src->p, "small", other, with(kr_.get())).has_value());
    const auto o = read_file(other);
    ASSERT_EQ(o.size(), good_.size());
    const Parts p = parts_of(good_);
    std::vector<uint8_t> b = good_;
    std::copy(o.begin() + long(p.segs[0].first), o.begin() + long(p.trailer_off),
              b.begin() + long(p.segs[0].first));
    fix_checksums(b);
    auto r = restore_bytes(b, "segment of another snapshot");
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->blocks, 0u);
    EXPECT_EQ(r->damaged_segments, 1u);
}

// Cut at every page boundary and a few bytes around each: the verified
// part restores, the rest is reported truncated.
TEST_F(SnapshotDamageTest, TruncatedFiles) {
    for (uint64_t page = 0; page <= good_.size(); page += snap::kAlign) {
        for (int64_t d : {-1, 0, 1, 100}) {
            const int64_t len = int64_t(page) + d;
            if (len < 0 || uint64_t(len) >= good_.size()) continue;
            std::vector<uint8_t> b(good_.begin(), good_.begin() + len);
            auto r = restore_bytes(b, "cut at " + std::to_string(len));
            if (r) {
                EXPECT_TRUE(r->truncated) << "cut at " << len;
            }
        }
    }
}

} // namespace
