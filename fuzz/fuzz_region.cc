// SPDX-License-Identifier: MIT
//
// Attaching to a region whose bytes an attacker (or a crash) controls.
// The region lives in a memfd; each input rebuilds it and then:
//   kv_region_validate on the mapping, kv_pool_attach_fd, and when that
//   succeeds every read path: stats, usage, the entry and client tables,
//   namespaces, contains / get (+ verify, release) / match_prefix (with and
//   without pins) on the keys the template holds and the keys the entry
//   table names, then reap and detach.
// Nothing may crash, hang or touch memory outside the mapping: a view must
// lie inside the data section (checked here, since a pointer outside the
// mapping would not fault if it happened to hit other memory).
//
// Input: byte 0 selects the mode:
//   bit 0 set: raw. The remaining bytes are the region itself (zero padded
//     to a multiple of 4 KiB, at most kRawMax bytes).
//   bit 0 clear: patch. The region is a valid template (1 MiB, 64 KiB slabs,
//     a namespace, committed blocks of several classes, and with bit 2 a
//     dead client that left pins and reservations behind), and the rest of
//     the input is a list of patches, each
//       u8 section (header, state, classes, namespaces, clients, journal,
//          buckets, entries, slabs, block words, data; modulo 11),
//       u16 offset (little-endian, modulo the section's length),
//       u8 n, then n bytes written there (clipped at the section's end),
//     so the fuzzer reaches the index, entry table and allocator state
//     behind a header that validates.
//   bit 1: attach with KV_ATTACH_F_NO_REAP.
// Only what an input changes is rewritten between inputs (the template's
// data section stays in the memfd), which keeps the rate up under ASan.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <kv/kv.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr uint64_t kRegionSize = 1 << 20;
constexpr uint64_t kSlab = 64 << 10;
constexpr size_t kRawMax = 1 << 20;
constexpr int kTemplateKeys = 24;

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "fuzz_region: %s\n", what);
    abort();
}

kv_key key_of(uint64_t i) {
    return kv_key{i * 0x9e3779b97f4a7c15ULL + 1, ~i ^ 0x5851f42d4c957f2dULL};
}

struct Template {
    std::vector<uint8_t> clean, dead_client; // region images
    uint32_t ns = 0;
};
Template g_tpl;
int g_fd = -1; // the memfd every input is written to

std::vector<uint8_t> read_fd(int fd, uint64_t len) {
    std::vector<uint8_t> v(len);
    if (pread(fd, v.data(), len, 0) != ssize_t(len)) fail("template: pread");
    return v;
}

// A small pool with blocks of several size classes, some removed.
void fill(kv_pool *p, uint32_t ns) {
    for (int i = 0; i < kTemplateKeys; i++) {
        std::vector<uint8_t> data(size_t(1 + (i * 7919) % (3 * 4096 + 17)), uint8_t(i));
        kv_meta m{uint32_t(i), uint32_t(i % 3), uint64_t(i) * 11};
        const kv_key k = key_of(uint64_t(i));
        if (kv_put(p, ns, &k, data.data(), data.size(), &m) < 0) fail("template: put");
    }
    for (int i = 0; i < kTemplateKeys; i += 5) {
        const kv_key k = key_of(uint64_t(i));
        kv_remove(p, ns, &k);
    }
}

void build_template() {
    kv_create_opts o;
    kv_create_opts_init(&o, kRegionSize);
    o.hugepages = KV_HUGEPAGES_NEVER;
    o.slab_size = kSlab;
    o.avg_block_size = 8192;
    o.max_clients = 4;
    o.pins_per_client = 16;
    o.max_namespaces = 4;
    char err[256] = "";
    int fd = -1;
    if (kv_pool_create_memfd("fuzz-region-template", &o, &fd, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_region: create: %s\n", err);
        abort();
    }
    kv_pool *p = nullptr;
    if (kv_pool_attach_fd(fd, 0, &p, err, sizeof err) != 0) fail("template: attach");
    kv_manifest m;
    kv_manifest_init(&m, "fuzz-model", 16);
    if (kv_ns_register(p, &m, &g_tpl.ns, nullptr) != 0) fail("template: ns");
    fill(p, g_tpl.ns);
    kv_pool_detach(p);
    g_tpl.clean = read_fd(fd, kRegionSize);

    // A client that dies holding two pins and a reservation.
    pid_t pid = fork();
    if (pid < 0) fail("template: fork");
    if (pid == 0) {
        kv_pool *c = nullptr;
        if (kv_pool_attach_fd(fd, 0, &c, nullptr, 0) != 0) _exit(1);
        kv_view v;
        for (int i = 1; i < 3; i++) {
            const kv_key k = key_of(uint64_t(i));
            if (kv_get(c, g_tpl.ns, &k, &v) != 0) _exit(2);
        }
        kv_reservation r;
        const kv_key k = key_of(1000);
        if (kv_reserve(c, g_tpl.ns, &k, 5000, nullptr, &r) != 0) _exit(3);
        memset(r.data, 0xab, 5000);
        _exit(0);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail("template: dead client");
    g_tpl.dead_client = read_fd(fd, kRegionSize);
    close(fd);
}

// Section (offset, length) by selector, from the template's header.
void section(const kv_region_header &h, unsigned sel, uint64_t *off, uint64_t *len) {
    switch (sel % 11) {
    case 0:
        *off = 0, *len = KV_HEADER_BYTES;
        break;
    case 1:
        *off = h.state_off, *len = h.state_len;
        break;
    case 2:
        *off = h.class_off, *len = h.class_len;
        break;
    case 3:
        *off = h.ns_off, *len = h.ns_len;
        break;
    case 4:
        *off = h.client_off, *len = h.client_len;
        break;
    case 5:
        *off = h.journal_off, *len = h.journal_len;
        break;
    case 6:
        *off = h.bucket_off, *len = h.bucket_len;
        break;
    case 7:
        *off = h.entry_off, *len = h.entry_len;
        break;
    case 8:
        *off = h.slab_off, *len = h.slab_len;
        break;
    case 9:
        *off = h.block_off, *len = h.block_len;
        break;
    default:
        *off = h.data_off, *len = h.data_len;
        break;
    }
}

void write_at(const uint8_t *p, size_t n, uint64_t off) {
    if (pwrite(g_fd, p, n, off_t(off)) != ssize_t(n)) fail("pwrite");
}

// What the memfd holds between inputs: which template, whole, or anything.
const std::vector<uint8_t> *g_loaded = nullptr;

// Write the input's region into the memfd; returns its size. In patch mode
// only the metadata is rewritten (the data section stays the template's,
// and data patches are undone after the input by restore_data()).
std::vector<std::pair<uint64_t, size_t>> g_data_patches;

uint64_t load_image(const uint8_t *data, size_t size) {
    const uint8_t mode = data[0];
    data++, size--;
    if (mode & 1) {
        size = std::min(size, kRawMax);
        const uint64_t len = (std::max<size_t>(size, 1) + 4095) / 4096 * 4096;
        if (ftruncate(g_fd, 0) != 0 || ftruncate(g_fd, off_t(len)) != 0) fail("ftruncate");
        write_at(data, size, 0);
        g_loaded = nullptr;
        return len;
    }
    const std::vector<uint8_t> &tpl = (mode & 4) ? g_tpl.dead_client : g_tpl.clean;
    kv_region_header h;
    memcpy(&h, tpl.data(), sizeof h);
    if (g_loaded != &tpl) {
        if (ftruncate(g_fd, 0) != 0 || ftruncate(g_fd, off_t(tpl.size())) != 0) fail("ftruncate");
        write_at(tpl.data(), tpl.size(), 0);
        g_loaded = &tpl;
    }
    std::vector<uint8_t> meta(tpl.begin(), tpl.begin() + ptrdiff_t(h.data_off));
    size_t i = 0;
    while (i + 4 <= size) {
        uint64_t off, len;
        section(h, data[i], &off, &len);
        const uint64_t at =
            off + (len ? (uint64_t(data[i + 1]) | uint64_t(data[i + 2]) << 8) % len : 0);
        size_t n = data[i + 3];
        i += 4;
        n = std::min<size_t>({n, size - i, size_t(off + len - at)});
        if (at + n <= meta.size()) {
            memcpy(meta.data() + at, data + i, n);
        } else {
            write_at(data + i, n, at);
            g_data_patches.push_back({at, n});
        }
        i += n;
    }
    write_at(meta.data(), meta.size(), 0);
    return tpl.size();
}

void restore_data() {
    for (auto [at, n] : g_data_patches)
        write_at(g_loaded->data() + at, n, at);
    g_data_patches.clear();
}

const uint8_t *g_lo = nullptr, *g_hi = nullptr; // the attached pool's data section

void check_view(const kv_view &v) {
    const auto *d = static_cast<const uint8_t *>(v.data);
    if (d < g_lo || d > g_hi || v.length > uint64_t(g_hi - d)) {
        fprintf(stderr, "fuzz_region: view [%p, +%llu) outside the data section [%p, %p)\n", v.data,
                (unsigned long long)v.length, (const void *)g_lo, (const void *)g_hi);
        abort();
    }
    (void)kv_view_verify(&v);
}

void exercise(kv_pool *p) {
    const kv_region_header *h = kv_pool_header(p);
    g_lo = reinterpret_cast<const uint8_t *>(h) + h->data_off;
    g_hi = g_lo + h->data_len;

    kv_stats st;
    if (kv_pool_stats(p, &st) != 0) fail("stats");
    kv_usage u;
    (void)kv_pool_usage(p, &u);
    kv_client_info ci[8];
    (void)kv_pool_clients(p, ci, 8);

    // The entry table, as kvctl entries reads it; bounded walk.
    std::vector<kv_entry_info> rows;
    uint64_t cursor = 0;
    kv_entry_info buf[64];
    for (int iter = 0; iter < 4096 && cursor < h->n_entries; iter++) {
        const uint64_t before = cursor;
        int n = kv_pool_entries(p, &cursor, buf, 64);
        if (n < 0) break;
        if (n > 64) fail("entries: more rows than asked for");
        if (cursor <= before) fail("entries: cursor did not advance");
        for (int j = 0; j < n && rows.size() < 256; j++)
            rows.push_back(buf[j]);
    }

    for (uint32_t ns = 0; ns < std::min<uint32_t>(h->max_namespaces, 8); ns++) {
        kv_manifest m;
        uint64_t seed;
        (void)kv_ns_get(p, ns, &m, &seed);
    }

    std::vector<std::pair<uint32_t, kv_key>> keys;
    for (int i = 0; i < kTemplateKeys; i++)
        keys.push_back({g_tpl.ns, key_of(uint64_t(i))});
    keys.push_back({g_tpl.ns, key_of(1000)});
    for (const kv_entry_info &r : rows)
        keys.push_back({r.ns, r.key});

    std::vector<kv_view> held;
    for (const auto &[ns, k] : keys) {
        (void)kv_contains(p, ns, &k);
        kv_view v;
        const int rc = kv_get(p, ns, &k, &v);
        if (rc == 0) {
            check_view(v);
            // Keep a few pins across the other calls, release the rest now.
            if (held.size() < 4)
                held.push_back(v);
            else if (kv_release(p, &v) != 0)
                fail("release of a fresh pin failed");
        }
    }

    std::vector<kv_key> chain;
    for (int i = 0; i < kTemplateKeys; i++)
        chain.push_back(key_of(uint64_t(i)));
    (void)kv_match_prefix(p, g_tpl.ns, chain.data(), chain.size(), 0, nullptr);
    std::vector<kv_view> views(chain.size());
    const int m =
        kv_match_prefix(p, g_tpl.ns, chain.data(), chain.size(), KV_MATCH_F_PIN, views.data());
    if (m > int(chain.size())) fail("match_prefix: more than n");
    for (int i = 0; i < m; i++) {
        check_view(views[size_t(i)]);
        if (kv_release(p, &views[size_t(i)]) != 0) fail("release of a match_prefix pin failed");
    }
    for (kv_view &v : held)
        if (kv_release(p, &v) != 0) fail("release of a held pin failed");
    (void)kv_reap(p);
    (void)kv_pool_stats(p, &st);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    build_template();
    g_fd = memfd_create("fuzz-region", MFD_CLOEXEC);
    if (g_fd < 0) fail("memfd_create");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint64_t len = load_image(data, size);
    struct Undo {
        ~Undo() { restore_data(); }
    } undo;

    // Validation alone, on a private read-only mapping.
    void *map = mmap(nullptr, len, PROT_READ, MAP_SHARED, g_fd, 0);
    if (map == MAP_FAILED) fail("mmap");
    char err[512] = "";
    const int vrc = kv_region_validate(map, len, err, sizeof err);
    munmap(map, len);
    if (vrc > 0) fail("validate returned a positive value");
    if (vrc < 0 && !err[0]) fail("validate refused without a message");

    kv_pool *p = nullptr;
    err[0] = '\0';
    const int rc =
        kv_pool_attach_fd(g_fd, (data[0] & 2) ? KV_ATTACH_F_NO_REAP : 0, &p, err, sizeof err);
    if (rc != 0) {
        if (rc > 0 || p) fail("attach failed but returned a pool or a positive code");
        if (vrc == 0 && rc != -EUSERS && rc != -ENOMEM) {
            fprintf(stderr, "fuzz_region: validate accepted, attach refused: %d %s\n", rc, err);
            abort();
        }
        return 0;
    }
    if (vrc != 0) {
        fprintf(stderr, "fuzz_region: validate refused (%d: %s), attach accepted\n", vrc, err);
        abort();
    }
    exercise(p);
    if (kv_pool_detach(p) != 0) fail("detach");
    return 0;
}
