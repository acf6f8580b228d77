// SPDX-License-Identifier: MIT
//
// Keyrings for the remote tier's tests and bench: keys written to private
// key files (mode 0600, owned by whoever runs the test, as load_keyring
// accepts) and loaded the way kvpoold loads [pool.encryption].
#pragma once

#include "keyring.h"

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace kvtest {

// 32 key bytes derived from seed (distinct seeds, distinct keys).
inline std::string key_bytes(uint8_t seed) {
    std::string k(32, '\0');
    for (size_t i = 0; i < k.size(); i++)
        k[i] = char(uint8_t(seed * 0x9d + i * 0x3b + 1));
    return k;
}

// A keyring of keys (id, seed), sealing with current. Null (and a message
// on stderr) if the files or the load fail.
inline std::shared_ptr<const kv::daemon::Keyring>
make_keyring(const std::vector<std::pair<std::string, uint8_t>> &keys, const std::string &current) {
    char tmpl[] = "/tmp/kvpool-keys-XXXXXX";
    if (!mkdtemp(tmpl)) return nullptr;
    const std::string dir = tmpl;
    kv::daemon::EncryptionConfig ec;
    ec.enabled = true;
    ec.key = current;
    std::vector<std::string> files;
    for (const auto &[id, seed] : keys) {
        const std::string path = dir + "/" + id + ".key";
        const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) return nullptr;
        const std::string k = key_bytes(seed);
        const bool ok = write(fd, k.data(), k.size()) == ssize_t(k.size());
        close(fd);
        if (!ok) return nullptr;
        files.push_back(path);
        kv::daemon::KeyConfig kc;
        kc.id = id;
        kc.file = path;
        ec.keys.push_back(kc);
    }
    auto ring = kv::daemon::load_keyring(ec);
    for (const std::string &f : files)
        unlink(f.c_str());
    rmdir(dir.c_str());
    if (!ring) {
        std::fprintf(stderr, "load_keyring: %s\n", ring.error().c_str());
        return nullptr;
    }
    return std::make_shared<const kv::daemon::Keyring>(std::move(*ring));
}

} // namespace kvtest
