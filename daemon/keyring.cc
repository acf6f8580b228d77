// SPDX-License-Identifier: MIT
//
// A pool's encryption keys: see keyring.h.
#include "keyring.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kv::daemon {

const crypto::Key *Keyring::find(std::string_view id) const {
    for (const auto &[kid, key] : keys_)
        if (kid == id) return &key;
    return nullptr;
}

std::string Keyring::ids() const {
    std::string s;
    for (const auto &[kid, key] : keys_)
        s += (s.empty() ? "" : ", ") + kid;
    return s;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::expected<crypto::Key, std::string> parse_key_bytes(std::string_view b) {
    crypto::Key k;
    if (b.size() == crypto::kKeyBytes) {
        std::memcpy(k.bytes.data(), b.data(), b.size());
        return k;
    }
    std::string_view h = b;
    if (!h.empty() && h.back() == '\n') h.remove_suffix(1);
    if (!h.empty() && h.back() == '\r') h.remove_suffix(1);
    if (h.size() != 2 * crypto::kKeyBytes)
        return std::unexpected("holds " + std::to_string(b.size()) +
                               " bytes; expected 32 raw bytes or 64 hex digits (openssl rand "
                               "-hex 32)");
    for (size_t i = 0; i < crypto::kKeyBytes; i++) {
        const int hi = hex_value(h[2 * i]), lo = hex_value(h[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return std::unexpected("has a character that is not a hex digit at byte " +
                                   std::to_string(hi < 0 ? 2 * i : 2 * i + 1) +
                                   "; expected 32 raw bytes or 64 hex digits");
        k.bytes[i] = uint8_t(hi << 4 | lo);
    }
    return k;
}

// Read one key's bytes, checking who may have written or read the file.
static std::expected<crypto::Key, std::string> read_key(const KeyConfig &kc) {
    std::string path = kc.file;
    const bool credential = path.empty();
    if (credential) {
        const char *dir = std::getenv("CREDENTIALS_DIRECTORY");
        if (!dir || !*dir)
            return std::unexpected("credential \"" + kc.credential +
                                   "\": $CREDENTIALS_DIRECTORY is not set (expected kvpoold to be "
                                   "started by systemd with LoadCredential=, "
                                   "LoadCredentialEncrypted= or SetCredential=)");
        path = std::string(dir) + "/" + kc.credential;
    }
    const std::string what = (credential ? "credential " : "key file ") + path;
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return std::unexpected(what + ": " + std::strerror(errno));
    struct stat st{};
    if (fstat(fd, &st) != 0) {
        const int e = errno;
        close(fd);
        return std::unexpected(what + ": " + std::strerror(e));
    }
    // A key anyone else may read is disclosed; one anyone else may write can
    // be swapped for theirs. systemd's credentials directory is the unit's.
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    std::string bad;
    if (!S_ISREG(st.st_mode))
        bad = "is not a regular file";
    else if (!credential && st.st_uid != 0 && st.st_uid != geteuid())
        bad = "is owned by uid " + std::to_string(st.st_uid) +
              "; expected root (uid 0): its owner could read or replace the key";
    else if (!credential && (st.st_mode & S_IRWXO))
        bad = std::string("has mode ") + mode +
              ", readable or writable by others; expected no access for others (chmod 600)";
    else if (!credential && (st.st_mode & S_IWGRP))
        bad = std::string("has mode ") + mode +
              ", writable by its group; expected no group write (chmod 600)";
    else if (st.st_size > 4096)
        bad = "is " + std::to_string(st.st_size) + " bytes; expected a 32-byte key";
    if (!bad.empty()) {
        close(fd);
        return std::unexpected(what + " " + bad);
    }
    char buf[4097];
    size_t got = 0;
    for (;;) {
        const ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int e = errno;
            close(fd);
            OPENSSL_cleanse(buf, sizeof buf);
            return std::unexpected(what + ": " + std::strerror(e));
        }
        if (n == 0 || (got += size_t(n)) == sizeof buf) break;
    }
    close(fd);
    auto k = parse_key_bytes(std::string_view(buf, got));
    OPENSSL_cleanse(buf, sizeof buf);
    if (!k) return std::unexpected(what + " " + k.error());
    return k;
}

std::expected<Keyring, std::string> load_keyring(const EncryptionConfig &ec) {
    Keyring ring;
    ring.current_id_ = ec.key;
    ring.keys_.reserve(ec.keys.size()); // keys never move once read: they are locked in place
    for (const KeyConfig &kc : ec.keys) {
        auto k = read_key(kc);
        if (!k) return std::unexpected("key \"" + kc.id + "\": " + k.error());
        ring.keys_.emplace_back(kc.id, *k);
    }
    if (!ring.find(ring.current_id_))
        return std::unexpected("key \"" + ring.current_id_ +
                               "\" is not among the configured keys (" + ring.ids() + ")");
    // Best effort: keep the keys out of swap. Without CAP_IPC_LOCK or
    // enough RLIMIT_MEMLOCK this fails and the keys stay swappable (see
    // doc/security.md); the unit runs as root, where it works.
    if (!ring.keys_.empty())
        (void)mlock(ring.keys_.data(), ring.keys_.size() * sizeof ring.keys_[0]);
    return ring;
}

} // namespace kv::daemon
