// SPDX-License-Identifier: MIT
//
// Snapshot files whose bytes are arbitrary (a damaged disk, a hostile
// file): the daemon's snapshot engine (daemon/snapshot.h) inspects the file
// and restores it into a fresh small pool (memfd, 2 MiB, 64 KiB slabs);
// the pure format checks (daemon/snapshot_format.h) see the same bytes.
// Nothing may crash or hang, and:
//  - inspect and restore agree on the header: a file inspect refuses is
//    refused by restore, and inspect accepts the header of any file restore
//    took in;
//  - a restore keeps its promises: what it counts as committed is exactly
//    what the pool holds afterwards (entries and bytes), and every restored
//    block reads back with a checksum that verifies.
//
// Input: byte 0, bit 0: fix up checksums before writing the file (the
// header's, each segment head's, the trailer's and its chained hashes),
// so mutations reach the segment and record checks behind the checksums
// instead of stopping at the first one. The rest is the file, written to
// /var/tmp (restore uses O_DIRECT, which tmpfs refuses).
#include "snapshot.h"
#include "snapshot_format.h"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <kv/kv.h>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace snap = kv::daemon::snapshot;

namespace {

constexpr uint64_t kPoolSize = 2 << 20;
std::string g_path;

[[noreturn]] void fail(const std::string &what) {
    fprintf(stderr, "fuzz_snapshot: %s\n", what.c_str());
    abort();
}

template <typename T>
bool read_at(const std::vector<uint8_t> &f, uint64_t off, T *out) {
    if (off > f.size() || f.size() - off < sizeof(T)) return false;
    memcpy(out, f.data() + off, sizeof(T));
    return true;
}

// Recompute every checksum the reader checks, as a writer would have.
void fix_checksums(std::vector<uint8_t> &f) {
    kv_snap_header h;
    if (!read_at(f, 0, &h) || h.header_len < sizeof h || h.header_len > f.size()) return;
    std::span<uint8_t> hdr(f.data(), h.header_len);
    h.checksum = snap::header_checksum(hdr);
    memcpy(f.data() + offsetof(kv_snap_header, checksum), &h.checksum, sizeof h.checksum);
    uint64_t off = h.header_len, seq = 0, chain = 0, n_records = 0;
    for (;;) {
        kv_snap_segment s;
        if (!read_at(f, off, &s) || s.magic != KV_SNAP_SEGMENT_MAGIC ||
            f.size() - off < snap::kSegmentHead)
            break;
        const uint64_t sum = snap::segment_checksum(f.data() + off);
        memcpy(f.data() + off + offsetof(kv_snap_segment, checksum), &sum, sizeof sum);
        chain = snap::chain_segment(chain, sum);
        n_records += s.n_records;
        seq++;
        if (s.length < snap::kSegmentHead || s.length > f.size() - off) return;
        off += s.length;
    }
    kv_snap_trailer t;
    if (!read_at(f, off, &t) || t.magic != KV_SNAP_TRAILER_MAGIC) return;
    t.segments_hash = chain;
    t.header_checksum = h.checksum;
    t.checksum = snap::trailer_checksum(t);
    memcpy(f.data() + off, &t, sizeof t);
    (void)seq;
    (void)n_records;
}

// The pure checks on the same bytes (no I/O): they must not crash either.
void parse_only(std::vector<uint8_t> &f) {
    std::span<const uint8_t> first(f.data(), std::min<size_t>(f.size(), snap::kAlign));
    auto len = snap::check_header_prefix(first, f.size());
    if (!len || *len > f.size()) return;
    auto h = snap::parse_header(std::span<uint8_t>(f.data(), *len), f.size());
    if (!h) return;
    uint64_t off = *len;
    for (uint64_t seq = 0; seq < 64 && f.size() - off >= snap::kSegmentHead; seq++) {
        auto s = snap::parse_segment(std::span<const uint8_t>(f.data() + off, snap::kSegmentHead),
                                     seq, off, f.size(), *h);
        if (!s) break;
        for (uint32_t i = 0; i < s->seg.n_records; i++)
            (void)snap::record_in_file(s->records[i], off, f.size());
        if (s->data_cut || s->seg.length > f.size() - off) break;
        off += s->seg.length;
    }
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
    g_path = std::string(dir ? dir : "/var/tmp") + "/kvpool-fuzz-snapshot-" +
             std::to_string(getpid()) + ".kvsnap";
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    std::vector<uint8_t> file(data + 1, data + size);
    if (data[0] & 1) fix_checksums(file);
    parse_only(file);
    write_file(file);

    auto ins = snap::inspect(g_path);
    if (!ins && ins.error().message.empty()) fail("inspect: an error without a message");

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
    if (kv_pool_create_memfd("fuzz-snapshot", &o, &fd, err, sizeof err) != 0 ||
        kv_pool_attach_fd(fd, 0, &p, err, sizeof err) != 0)
        fail(std::string("pool: ") + err);

    snap::Options opts;
    opts.queue_depth = 4;
    opts.register_buffers = false;
    auto r = snap::restore(p, g_path, opts);
    unlink(g_path.c_str()); // per input: libFuzzer may leave with _Exit, skipping atexit
    if (!r) {
        if (r.error().message.empty()) fail("restore: an error without a message");
        if (r.error().code >= 0) fail("restore: error code " + std::to_string(r.error().code));
    }
    if (!ins && r)
        fail("inspect refused the header (" + ins.error().message + ") but restore took the file");

    kv_usage u;
    if (kv_pool_usage(p, &u) != 0) fail("usage");
    if (r) {
        if (u.entries_committed != r->blocks || u.bytes_committed != r->bytes)
            fail("restore reported " + std::to_string(r->blocks) + " blocks / " +
                 std::to_string(r->bytes) + " bytes, the pool holds " +
                 std::to_string(u.entries_committed) + " / " + std::to_string(u.bytes_committed));
    }
    if (u.entries_reserved || u.pins || u.orphan_blocks || u.bad_links || u.unreachable)
        fail("restore left reservations, pins, orphans or index damage behind");
    // Every block in the pool reads back and verifies.
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
