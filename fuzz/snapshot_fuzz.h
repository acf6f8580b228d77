// SPDX-License-Identifier: MIT
//
// What the snapshot fuzz targets (fuzz_snapshot.cc, fuzz_snapshot_crypto.cc)
// share: reading a struct out of the input, recomputing the XXH3 checksums
// a reader checks (so mutations get past them), writing the file, a small
// pool to restore into, and the promises every restore must keep.
#pragma once

#include "snapshot.h"
#include "snapshot_format.h"

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

namespace kv::fuzz {

namespace snap = kv::daemon::snapshot;

[[noreturn]] inline void fail(const char *target, const std::string &what) {
    fprintf(stderr, "%s: %s\n", target, what.c_str());
    abort();
}

template <typename T>
bool read_at(const std::vector<uint8_t> &f, uint64_t off, T *out) {
    if (off > f.size() || f.size() - off < sizeof(T)) return false;
    memcpy(out, f.data() + off, sizeof(T));
    return true;
}

// Recompute every XXH3 checksum the reader checks (the header's, each
// segment head's, the trailer's and its chained hashes), as a writer, or
// a forger, would.
inline void fix_checksums(std::vector<uint8_t> &f) {
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

inline void write_file(const char *target, const std::string &path, const std::vector<uint8_t> &f) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fail(target, "open " + path + ": " + strerror(errno));
    size_t done = 0;
    while (done < f.size()) {
        ssize_t n = write(fd, f.data() + done, f.size() - done);
        if (n <= 0) fail(target, "write " + path + ": " + strerror(errno));
        done += size_t(n);
    }
    close(fd);
}

// A fresh pool to restore into: memfd, 2 MiB, 64 KiB slabs. *fd is its
// memfd, closed by the caller after kv_pool_detach.
inline kv_pool *small_pool(const char *target, int *fd) {
    kv_create_opts o;
    kv_create_opts_init(&o, 2 << 20);
    o.hugepages = KV_HUGEPAGES_NEVER;
    o.slab_size = 64 << 10;
    o.max_clients = 2;
    o.pins_per_client = 64;
    o.max_namespaces = 4;
    char err[256] = "";
    kv_pool *p = nullptr;
    if (kv_pool_create_memfd(target, &o, fd, err, sizeof err) != 0 ||
        kv_pool_attach_fd(*fd, 0, &p, err, sizeof err) != 0)
        fail(target, std::string("pool: ") + err);
    return p;
}

// The options both targets restore with: few requests, no fixed buffers.
inline snap::Options restore_options() {
    snap::Options opts;
    opts.queue_depth = 4;
    opts.register_buffers = false;
    return opts;
}

// An error is a negative code with a message.
inline void check_error(const char *target, const std::expected<snap::Result, snap::Error> &r) {
    if (r) return;
    if (r.error().message.empty()) fail(target, "restore: an error without a message");
    if (r.error().code >= 0) fail(target, "restore: error code " + std::to_string(r.error().code));
}

// What the restore counted as committed is exactly what the pool holds,
// nothing is left reserved, pinned or damaged, and every block in the
// pool reads back with a checksum that verifies.
inline void check_pool(const char *target, kv_pool *p,
                       const std::expected<snap::Result, snap::Error> &r) {
    kv_usage u;
    if (kv_pool_usage(p, &u) != 0) fail(target, "usage");
    if (r && (u.entries_committed != r->blocks || u.bytes_committed != r->bytes))
        fail(target, "restore reported " + std::to_string(r->blocks) + " blocks / " +
                         std::to_string(r->bytes) + " bytes, the pool holds " +
                         std::to_string(u.entries_committed) + " / " +
                         std::to_string(u.bytes_committed));
    if (u.entries_reserved || u.pins || u.orphan_blocks || u.bad_links || u.unreachable)
        fail(target, "restore left reservations, pins, orphans or index damage behind");
    uint64_t cursor = 0;
    kv_entry_info rows[64];
    while (cursor < kv_pool_header(p)->n_entries) {
        int n = kv_pool_entries(p, &cursor, rows, 64);
        if (n < 0) fail(target, "entries");
        for (int i = 0; i < n; i++) {
            kv_view v;
            if (kv_get(p, rows[i].ns, &rows[i].key, &v) != 0)
                fail(target, "a restored block cannot be read");
            if (kv_view_verify(&v) != 0) fail(target, "a restored block does not verify");
            kv_release(p, &v);
        }
    }
}

} // namespace kv::fuzz
