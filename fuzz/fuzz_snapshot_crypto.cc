// SPDX-License-Identifier: MIT
//
// Encrypted snapshot files (format 1.2) whose bytes are arbitrary: the
// snapshot engine (daemon/snapshot.h) restores the file into a fresh small
// pool (memfd, 2 MiB, 64 KiB slabs) with a keyring holding the fixed test
// key of the seeds (snapshot_key.h). Nothing may crash or hang, and:
//  - what a restore counts as committed is exactly what the pool holds,
//    every restored block verifies, and nothing is left reserved or pinned;
//  - a restore without the keyring never adds a block of an encrypted file
//    (it is refused with ENOKEY once the header checks out);
//  - errors are negative codes with a message.
//
// Input: byte 0, bit 0: recompute the XXH3 checksums (header, segment
// heads, trailer and its chained hashes) before writing the file, so that
// mutations get past them to the authentication tags; bit 1: restore
// without the keyring. The rest is the file, written to /var/tmp (restore
// uses O_DIRECT, which tmpfs refuses).
#include "keyring.h"
#include "snapshot.h"
#include "snapshot_format.h"
#include "snapshot_key.h"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <kv/kv.h>
#include <memory>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace snap = kv::daemon::snapshot;

namespace {

constexpr uint64_t kPoolSize = 2 << 20;
std::string g_path;
std::unique_ptr<kv::daemon::Keyring> g_keyring;

[[noreturn]] void fail(const std::string &what) {
    fprintf(stderr, "fuzz_snapshot_crypto: %s\n", what.c_str());
    abort();
}

template <typename T>
bool read_at(const std::vector<uint8_t> &f, uint64_t off, T *out) {
    if (off > f.size() || f.size() - off < sizeof(T)) return false;
    memcpy(out, f.data() + off, sizeof(T));
    return true;
}

// Recompute every XXH3 checksum the reader checks, as a forger would.
void fix_checksums(std::vector<uint8_t> &f) {
    kv_snap_header h;
    if (!read_at(f, 0, &h) || h.header_len < sizeof h || h.header_len > f.size()) return;
    h.checksum = snap::header_checksum(std::span<uint8_t>(f.data(), h.header_len));
    memcpy(f.data() + offsetof(kv_snap_header, checksum), &h.checksum, sizeof h.checksum);
    uint64_t off = h.header_len, chain = 0;
    for (;;) {
        kv_snap_segment s;
        if (!read_at(f, off, &s) || s.magic != KV_SNAP_SEGMENT_MAGIC ||
            f.size() - off < snap::kSegmentHead)
            break;
        const uint64_t sum = snap::segment_checksum(f.data() + off);
        memcpy(f.data() + off + offsetof(kv_snap_segment, checksum), &sum, sizeof sum);
        chain = snap::chain_segment(chain, sum);
        if (s.length < snap::kSegmentHead || s.length > f.size() - off) return;
        off += s.length;
    }
    kv_snap_trailer t;
    if (!read_at(f, off, &t) || t.magic != KV_SNAP_TRAILER_MAGIC) return;
    t.segments_hash = chain;
    t.header_checksum = h.checksum;
    t.checksum = snap::trailer_checksum(t);
    memcpy(f.data() + off, &t, sizeof t);
}

void write_file(const std::vector<uint8_t> &f) {
    int fd = open(g_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fail("open " + g_path + ": " + strerror(errno));
    size_t done = 0;
    while (done < f.size()) {
        ssize_t n = write(fd, f.data() + done, f.size() - done);
        if (n <= 0) fail("write " + g_path + ": " + strerror(errno));
        done += size_t(n);
    }
    close(fd);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *dir = getenv("KVPOOL_FUZZ_TMPDIR");
    const std::string d = dir ? dir : "/var/tmp";
    g_path = d + "/kvpool-fuzz-snapshot-crypto-" + std::to_string(getpid()) + ".kvsnap";
    auto kr = kv::fuzz::snapshot_keyring(d);
    if (!kr) fail("keyring: " + kr.error());
    g_keyring = std::move(*kr);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    std::vector<uint8_t> file(data + 1, data + size);
    if (data[0] & 1) fix_checksums(file);
    const bool keyless = data[0] & 2;
    write_file(file);

    kv_create_opts o;
    kv_create_opts_init(&o, kPoolSize);
    o.hugepages = KV_HUGEPAGES_NEVER;
    o.slab_size = 64 << 10;
    o.max_clients = 2;
    o.pins_per_client = 64;
    o.max_namespaces = 4;
    char err[256] = "";
    int fd = -1;
    kv_pool *p = nullptr;
    if (kv_pool_create_memfd("fuzz-snapshot-crypto", &o, &fd, err, sizeof err) != 0 ||
        kv_pool_attach_fd(fd, 0, &p, err, sizeof err) != 0)
        fail(std::string("pool: ") + err);

    snap::Options opts;
    opts.queue_depth = 4;
    opts.register_buffers = false;
    opts.keyring = keyless ? nullptr : g_keyring.get();
    auto r = snap::restore(p, g_path, opts);
    unlink(g_path.c_str()); // per input: libFuzzer may leave with _Exit, skipping atexit
    if (!r) {
        if (r.error().message.empty()) fail("restore: an error without a message");
        if (r.error().code >= 0) fail("restore: error code " + std::to_string(r.error().code));
    }
    kv_snap_header h{};
    const bool encrypted = read_at(file, 0, &h) && h.magic == KV_SNAP_MAGIC &&
                           (h.incompat_features & KV_SNAP_INCOMPAT_ENCRYPTED);

    kv_usage u;
    if (kv_pool_usage(p, &u) != 0) fail("usage");
    if (r && (u.entries_committed != r->blocks || u.bytes_committed != r->bytes))
        fail("restore reported " + std::to_string(r->blocks) + " blocks / " +
             std::to_string(r->bytes) + " bytes, the pool holds " +
             std::to_string(u.entries_committed) + " / " + std::to_string(u.bytes_committed));
    if (keyless && encrypted && u.entries_committed != 0)
        fail("a restore without the key added blocks of an encrypted file");
    if (u.entries_reserved || u.pins || u.orphan_blocks || u.bad_links || u.unreachable)
        fail("restore left reservations, pins, orphans or index damage behind");
    uint64_t cursor = 0;
    kv_entry_info rows[64];
    while (cursor < kv_pool_header(p)->n_entries) {
        int n = kv_pool_entries(p, &cursor, rows, 64);
        if (n < 0) fail("entries");
        for (int i = 0; i < n; i++) {
            kv_view v;
            if (kv_get(p, rows[i].ns, &rows[i].key, &v) != 0)
                fail("a restored block cannot be read");
            if (kv_view_verify(&v) != 0) fail("a restored block does not verify");
            kv_release(p, &v);
        }
    }
    kv_pool_detach(p);
    close(fd);
    return 0;
}
