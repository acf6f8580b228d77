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
#include "snapshot_fuzz.h"
#include "snapshot_key.h"

#include <cstdint>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using namespace kv::fuzz;
constexpr const char *kTarget = "fuzz_snapshot_crypto";
std::string g_path;
std::unique_ptr<kv::daemon::Keyring> g_keyring;

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *dir = getenv("KVPOOL_FUZZ_TMPDIR");
    const std::string d = dir ? dir : "/var/tmp";
    g_path = d + "/kvpool-fuzz-snapshot-crypto-" + std::to_string(getpid()) + ".kvsnap";
    auto kr = snapshot_keyring(d);
    if (!kr) fail(kTarget, "keyring: " + kr.error());
    g_keyring = std::move(*kr);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    std::vector<uint8_t> file(data + 1, data + size);
    if (data[0] & 1) fix_checksums(file);
    const bool keyless = data[0] & 2;
    write_file(kTarget, g_path, file);

    int fd = -1;
    kv_pool *p = small_pool(kTarget, &fd);
    snap::Options opts = restore_options();
    opts.keyring = keyless ? nullptr : g_keyring.get();
    auto r = snap::restore(p, g_path, opts);
    unlink(g_path.c_str()); // per input: libFuzzer may leave with _Exit, skipping atexit
    check_error(kTarget, r);
    kv_snap_header h{};
    const bool encrypted = read_at(file, 0, &h) && h.magic == KV_SNAP_MAGIC &&
                           (h.incompat_features & KV_SNAP_INCOMPAT_ENCRYPTED);
    kv_usage u;
    if (kv_pool_usage(p, &u) != 0) fail(kTarget, "usage");
    if (keyless && encrypted && u.entries_committed != 0)
        fail(kTarget, "a restore without the key added blocks of an encrypted file");
    check_pool(kTarget, p, r);
    kv_pool_detach(p);
    close(fd);
    return 0;
}
