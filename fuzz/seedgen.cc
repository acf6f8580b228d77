// SPDX-License-Identifier: MIT
//
// Writes the generated seed inputs of the fuzz targets into OUTDIR/<target>/
// (fuzz/gen_seeds.sh runs it and commits the result under fuzz/corpus/):
// region patch lists, a real snapshot of a tiny pool persisted by the
// daemon's engine (and of an empty one), control-socket streams for every
// op, and op sequences for the differential target. Each input format is
// described at the top of its fuzz_<target>.cc.
#include "snapshot.h"
#include "snapshot_key.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <kv/kv.h>
#include <kvpool/control.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace {

using Bytes = std::vector<uint8_t>;
std::string g_out;

[[noreturn]] void die(const std::string &what) {
    fprintf(stderr, "fuzz_seedgen: %s\n", what.c_str());
    exit(1);
}

void put_file(const std::string &target, const std::string &name, const Bytes &b) {
    const std::string dir = g_out + "/" + target;
    mkdir(g_out.c_str(), 0755);
    mkdir(dir.c_str(), 0755);
    std::ofstream f(dir + "/" + name, std::ios::binary);
    f.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
    if (!f) die("write " + dir + "/" + name);
}

// Resize, then copy: g++ 12 at -O3 misjudges the bounds of a range
// insert from a small object (-Warray-bounds, -Wstringop-overflow).
template <typename T>
void append(Bytes &b, const T &v) {
    const size_t at = b.size();
    b.resize(at + sizeof v);
    memcpy(b.data() + at, &v, sizeof v);
}

// ---- region: mode byte + patches (section, u16 offset, n, bytes) ----
void patch(Bytes &b, uint8_t section, uint16_t off, const Bytes &bytes) {
    b.push_back(section);
    b.push_back(uint8_t(off));
    b.push_back(uint8_t(off >> 8));
    b.push_back(uint8_t(bytes.size()));
    b.insert(b.end(), bytes.begin(), bytes.end());
}
template <typename T>
Bytes le(T v) {
    Bytes b(sizeof v);
    memcpy(b.data(), &v, sizeof v);
    return b;
}

void region_seeds() {
    put_file("region", "template-clean", {0x00});
    put_file("region", "template-dead-client", {0x04});
    put_file("region", "template-dead-client-noreap", {0x06});
    Bytes b{0x00};
    patch(b, 0, 0, le<uint64_t>(0)); // magic not published
    put_file("region", "header-magic-zero", b);
    b = {0x00};
    patch(b, 0, 88, le<uint32_t>(4096)); // max_clients
    put_file("region", "header-max-clients", b);
    b = {0x00};
    patch(b, 7, 0 * 128 + 40, le<uint32_t>(0xffffff00u)); // entry 0 class_id
    put_file("region", "entry0-class", b);
    b = {0x00};
    patch(b, 7, 1 * 128 + 48, le<uint64_t>(0x7fffffffffffull)); // entry 1 block id
    put_file("region", "entry1-block", b);
    b = {0x00};
    patch(b, 7, 2 * 128 + 56, le<uint64_t>(1ull << 40)); // entry 2 length
    put_file("region", "entry2-length", b);
    b = {0x00};
    patch(b, 7, 3 * 128 + 16, le<uint64_t>(uint64_t(3) << 32)); // entry 3 next -> itself
    put_file("region", "entry3-self-link", b);
    b = {0x00};
    patch(b, 6, 0, le<uint64_t>(uint64_t(0x7ffffff0) << 32)); // bucket 0 -> entry out of range
    put_file("region", "bucket0-out-of-range", b);
    b = {0x04};
    patch(b, 5, 0, le<uint64_t>(uint64_t(0x7ffffff0) << 32)); // journal slot names a bad entry
    put_file("region", "journal-bad-entry", b);
    b = {0x04};
    patch(
        b, 9, 8,
        le<uint64_t>(uint64_t(0xfff0) << 32 | uint64_t(KV_BLOCK_OWNED) << 24)); // block word owner
    put_file("region", "block-owner", b);
    b = {0x00};
    patch(b, 8, 0,
          le<uint64_t>(uint64_t(KV_SLAB_ACTIVE) | uint64_t(63) << 8)); // slab 0 of class 63
    put_file("region", "slab0-class", b);
    b = {0x00};
    patch(b, 4, 0, le<uint64_t>(uint64_t(1) << 32 | KV_CLIENT_LIVE)); // client 0 LIVE, pid 1
    put_file("region", "client0-pid1", b);
    // Raw: a bare header prefix (refused: the file is shorter than region_size).
    Bytes raw{0x01};
    kv_region_header h{};
    h.magic = KV_REGION_MAGIC;
    h.abi_major = KV_ABI_MAJOR;
    h.header_size = sizeof h;
    h.incompat_features = KV_INCOMPAT_F_CAS16;
    h.region_size = 4096;
    h.page_size = 4096;
    append(raw, h);
    put_file("region", "raw-header", raw);
}

// ---- snapshot: mode byte + file ----
kv_key key_of(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 1, ~i ^ 0x5851f42d4c957f2dULL};
}

Bytes read_all(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) die("read " + path);
    return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// target "snapshot": plain files; "snapshot_crypto": encrypted with the
// fixed test key of snapshot_key.h.
void snapshot_seeds(const std::string &target, const kv::daemon::Keyring *keyring) {
    const std::string path = "/var/tmp/kvpool-seedgen-" + std::to_string(getpid()) + ".kvsnap";
    for (int n : {0, 3}) {
        kv_create_opts o;
        kv_create_opts_init(&o, 8 << 20);
        o.hugepages = KV_HUGEPAGES_NEVER;
        o.slab_size = 64 << 10;
        int fd = -1;
        kv_pool *p = nullptr;
        char err[256] = "";
        if (kv_pool_create_memfd("seedgen", &o, &fd, err, sizeof err) != 0 ||
            kv_pool_attach_fd(fd, 0, &p, err, sizeof err) != 0)
            die(std::string("pool: ") + err);
        kv_manifest m;
        kv_manifest_init(&m, "seed-model", 16);
        uint32_t ns = 0;
        if (kv_ns_register(p, &m, &ns, nullptr) != 0) die("ns");
        // A chain (each block the parent of the next), the last with a
        // time to live, so the seeds carry every part of a history.
        for (int i = 0; i < n; i++) {
            Bytes data(size_t(100 + 1000 * i), uint8_t('a' + i));
            const kv_key k = key_of(uint64_t(i));
            kv_put_opts po{};
            po.struct_size = sizeof po;
            po.meta = kv_meta{uint32_t(16 * (i + 1)), uint32_t(i), uint64_t(i)};
            if (i > 0) {
                po.flags = KV_PUT_F_PARENT;
                po.parent = key_of(uint64_t(i - 1));
            }
            if (i == n - 1) po.ttl_ms = 0x7fffffff;
            if (kv_put_ex(p, ns, &k, data.data(), data.size(), &po) != 0) die("put");
        }
        kv::daemon::snapshot::Options so;
        so.keyring = keyring;
        auto w = kv::daemon::snapshot::persist(p, "seed", path, so);
        if (!w) die("persist: " + w.error().message);
        kv_pool_detach(p);
        close(fd);
        Bytes file = read_all(path);
        unlink(path.c_str());
        for (uint8_t mode : {0, 1, 2}) {
            if (mode == 2 && !keyring) continue; // the keyless restore: encrypted only
            Bytes b(file.size() + 1);
            b[0] = mode;
            if (!file.empty()) memcpy(b.data() + 1, file.data(), file.size());
            const char *suffix[] = {"", "-fixup", "-keyless"};
            put_file(target, "persist-" + std::to_string(n) + "-blocks" + suffix[mode], b);
        }
    }
}

// ---- control: chunk byte + stream ----
Bytes request(uint16_t op, uint32_t seq, const char *pool, uint64_t size, uint64_t arg,
              uint32_t flags, const char *path, uint32_t extra = 0) {
    kv_ctl_request r{};
    snprintf(reinterpret_cast<char *>(r.pool), sizeof r.pool, "%s", pool);
    snprintf(reinterpret_cast<char *>(r.path), sizeof r.path, "%s", path);
    r.size = size;
    r.arg = arg;
    r.flags = flags;
    r.numa_node = KV_CTL_NUMA_NONE;
    kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, op, uint32_t(sizeof r + extra), seq};
    Bytes b;
    append(b, h);
    append(b, r);
    b.resize(b.size() + extra, 0);
    return b;
}

void control_seeds() {
    Bytes all{0};
    for (uint16_t op = 1; op <= KV_CTL_OP_MAX + 1; op++) {
        Bytes b{0};
        Bytes r =
            request(op, op, op == KV_CTL_OP_LIST ? "" : "default", 64 << 20,
                    op == KV_CTL_OP_EVICT ? 50 : 0, op == KV_CTL_OP_CREATE ? KV_CTL_F_PREFAULT : 0,
                    op == KV_CTL_OP_PERSIST ? "/var/lib/kvpool/default.kvsnap" : "");
        b.insert(b.end(), r.begin(), r.end());
        put_file("control", "op-" + std::to_string(op), b);
        all.insert(all.end(), r.begin(), r.end());
    }
    put_file("control", "pipeline-all-ops", all);
    all[0] = 7; // the same stream in 7-byte reads
    put_file("control", "pipeline-all-ops-7", all);
    Bytes b{3};
    Bytes r = request(KV_CTL_OP_STATUS, 9, "p", 0, 0, 0, "", 64); // a newer client's larger struct
    b.insert(b.end(), r.begin(), r.end());
    put_file("control", "larger-struct", b);
    b = {0};
    kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, KV_CTL_OP_LIST, 8, 1};
    append(b, h);
    b.resize(b.size() + 8, 0);
    put_file("control", "short-body", b);
    b = {0};
    h = {KV_CTL_MAGIC, KV_CTL_VERSION, KV_CTL_OP_LIST, KV_CTL_MAX_BODY + 1, 2};
    append(b, h);
    put_file("control", "body-too-large", b);
    b = {1};
    h = {0x11223344, KV_CTL_VERSION, KV_CTL_OP_LIST, 0, 3};
    append(b, h);
    put_file("control", "bad-magic", b);
    for (uint16_t op : {KV_CTL_OP_ENTRIES, KV_CTL_OP_LIST}) { // a cursor: accepted on ENTRIES only
        b = {0};
        r = request(op, 4, "default", 0, KV_CTL_ENTRIES_MAX_ROWS, 0, "");
        const uint64_t cursor = 4096;
        memcpy(r.data() + sizeof(kv_ctl_hdr) + offsetof(kv_ctl_request, cursor), &cursor,
               sizeof cursor);
        b.insert(b.end(), r.begin(), r.end());
        put_file("control", op == KV_CTL_OP_ENTRIES ? "entries-cursor" : "cursor-on-list", b);
    }
}

// ---- ops: op byte + arguments (see fuzz_ops.cc) ----
void ops_seeds() {
    // put k1..k4, get k2, match 0..5, remove k2, release, contains, evict
    put_file("ops", "put-get-match-remove", {0, 1, 3, 1, 0, 2, 4, 9, 0, 3, 8, 11, 0, 4, 9, 12, 4,
                                             2, 8, 1, 6, 0, 9, 1, 5, 0, 6, 2, 7,  2, 5, 0, 10, 40});
    // reserve k5, get k5 (absent), put k5 (busy), commit, get k5, double commit, abort stale
    put_file("ops", "reserve-commit", {1, 5, 4, 9, 4, 5, 0, 5, 3, 2, 2, 0, 0, 4, 5, 2, 0, 1, 3, 0});
    // reserve k6, abort, reserve again, commit with own checksum
    put_file("ops", "reserve-abort", {1, 6, 7, 1, 3, 0, 1, 6, 2, 2, 2, 1, 1, 4, 6});
    // fill with slab-sized blocks until puts evict, holding pins
    Bytes fill;
    for (uint8_t k = 0; k < 24; k++) {
        fill.insert(fill.end(), {0, k, 2, uint8_t(k + 1)});
        if (k % 6 == 0) fill.insert(fill.end(), {4, k});
    }
    fill.insert(fill.end(), {10, 255, 9, 0, 30, 1});
    put_file("ops", "fill-evict-pinned", fill);
    // bad sizes and an unknown namespace
    put_file("ops", "bad-sizes", {0, 1, 0, 1, 0, 1, 1, 1, 1, 2, 0, 2, 11, 3});
    // run out of pins
    Bytes pins;
    pins.insert(pins.end(), {0, 0, 3, 1, 0, 1, 3, 2});
    for (int i = 0; i < 18; i++)
        pins.insert(pins.end(), {4, uint8_t(i % 2)});
    pins.insert(pins.end(), {9, 0, 2, 0, 5, 3, 5, 3});
    put_file("ops", "pin-limit", pins);
}

} // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    g_out = argv[1];
    region_seeds();
    snapshot_seeds("snapshot", nullptr);
    auto keyring = kv::fuzz::snapshot_keyring("/var/tmp");
    if (!keyring) die("keyring: " + keyring.error());
    snapshot_seeds("snapshot_crypto", keyring->get());
    control_seeds();
    ops_seeds();
    return 0;
}
