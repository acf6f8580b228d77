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
#include "snapshot_fuzz.h"

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using namespace kv::fuzz;
constexpr const char *kTarget = "fuzz_snapshot";
std::string g_path;

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
    write_file(kTarget, g_path, file);

    auto ins = snap::inspect(g_path);
    if (!ins && ins.error().message.empty()) fail(kTarget, "inspect: an error without a message");

    int fd = -1;
    kv_pool *p = small_pool(kTarget, &fd);
    auto r = snap::restore(p, g_path, restore_options());
    unlink(g_path.c_str()); // per input: libFuzzer may leave with _Exit, skipping atexit
    check_error(kTarget, r);
    if (!ins && r)
        fail(kTarget,
             "inspect refused the header (" + ins.error().message + ") but restore took the file");
    check_pool(kTarget, p, r);
    kv_pool_detach(p);
    close(fd);
    return 0;
}
