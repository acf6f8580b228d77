// SPDX-License-Identifier: MIT
//
// The pool key of the encrypted-snapshot fuzz target (fuzz_snapshot_crypto.cc)
// and of the seeds fuzz_seedgen writes for it: a fixed test key, public by
// design, so that the committed seeds stay readable by the target.
#pragma once

#include "keyring.h"

#include <cerrno>
#include <cstring>
#include <expected>
#include <fcntl.h>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace kv::fuzz {

inline constexpr char kSnapshotKeyId[] = "fuzz-key";
inline constexpr char kSnapshotKeyHex[] =
    "8d2f1c4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f\n";

// Write the key to DIR/fuzz-key.key (mode 0600) and load a keyring of it
// alone. Error: what failed.
inline std::expected<std::unique_ptr<kv::daemon::Keyring>, std::string>
snapshot_keyring(const std::string &dir) {
    const std::string path = dir + "/kvpool-fuzz-" + std::to_string(getpid()) + ".key";
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return std::unexpected("create " + path + ": " + strerror(errno));
    const size_t n = sizeof kSnapshotKeyHex - 1;
    const bool ok = write(fd, kSnapshotKeyHex, n) == ssize_t(n) && fchmod(fd, 0600) == 0;
    close(fd);
    if (!ok) return std::unexpected("write " + path);
    kv::daemon::EncryptionConfig ec;
    ec.enabled = true;
    ec.key = kSnapshotKeyId;
    ec.keys.push_back({kSnapshotKeyId, path, ""});
    auto kr = kv::daemon::load_keyring(ec);
    unlink(path.c_str());
    if (!kr) return std::unexpected(kr.error());
    return std::make_unique<kv::daemon::Keyring>(std::move(*kr));
}

} // namespace kv::fuzz
