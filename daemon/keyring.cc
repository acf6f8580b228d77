// SPDX-License-Identifier: MIT
//
// A pool's encryption keys: see keyring.h.
#include "keyring.h"

#include "secret_file.h"

#include <cstring>
#include <openssl/crypto.h>
#include <sys/mman.h>
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

// Read one key's bytes (secret_file.h checks who else may read or write
// the file) and wipe every copy but the key's.
static std::expected<crypto::Key, std::string> read_key(const KeyConfig &kc) {
    auto bytes = read_secret(kc.file, kc.credential, "key file", 4096);
    if (!bytes) return std::unexpected(bytes.error());
    auto k = parse_key_bytes(*bytes);
    OPENSSL_cleanse(bytes->data(), bytes->size());
    if (!k)
        return std::unexpected(
            (kc.file.empty() ? "key file credential " + kc.credential : "key file " + kc.file) +
            " " + k.error());
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
    // Best effort: keep the keys out of swap and out of core dumps.
    // Without CAP_IPC_LOCK or enough RLIMIT_MEMLOCK mlock fails and the
    // keys stay swappable (see doc/security.md); the unit runs as root,
    // where it works. MADV_DONTDUMP takes whole pages: the heap pages
    // around the keys are left out of a dump too, which costs nothing.
    if (!ring.keys_.empty()) {
        const size_t len = ring.keys_.size() * sizeof ring.keys_[0];
        (void)mlock(ring.keys_.data(), len);
        const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
        const uintptr_t lo = uintptr_t(ring.keys_.data()) & ~(page - 1);
        const uintptr_t hi = (uintptr_t(ring.keys_.data()) + len + page - 1) & ~(page - 1);
        (void)madvise(reinterpret_cast<void *>(lo), hi - lo, MADV_DONTDUMP);
    }
    return ring;
}

} // namespace kv::daemon
