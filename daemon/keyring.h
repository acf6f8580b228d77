// SPDX-License-Identifier: MIT
//
// A pool's encryption keys ([pool.encryption] in kvpoold.toml), read once
// when the pool is opened or the config reloaded. The key of id `key` seals
// what the pool writes; every configured key opens what names its id, so an
// old key kept in the list keeps old snapshots and remote values readable
// after a rotation.
//
// Where a key comes from, and what is refused (the message names the key
// id, the file and the problem):
//   file = PATH        a regular file, not a symlink, owned by root (or the
//                      daemon's user), with no access for others and no
//                      write for the group; 32 raw bytes, or 64 hex digits
//                      and an optional newline (`openssl rand -hex 32`)
//   credential = NAME  $CREDENTIALS_DIRECTORY/NAME, the directory systemd
//                      gives the unit for LoadCredential=,
//                      LoadCredentialEncrypted= (systemd-creds encrypt) or
//                      SetCredential=; same contents
// Keys are kept in memory locked against swap where the limit allows, and
// wiped when the keyring is destroyed.
#pragma once

#include "config.h"
#include "crypto.h"

#include <expected>
#include <string>
#include <utility>
#include <vector>

namespace kv::daemon {

class Keyring {
  public:
    // The id and key that seal new containers.
    const std::string &current_id() const { return current_id_; }
    const crypto::Key &current() const { return *find(current_id_); }
    // The key of that id, or null when it is not configured.
    const crypto::Key *find(std::string_view id) const;
    // Every configured id, for messages ("configured: alpha-2, alpha-1").
    std::string ids() const;

    Keyring() = default;
    Keyring(const Keyring &) = delete;
    Keyring &operator=(const Keyring &) = delete;
    Keyring(Keyring &&) = default;
    Keyring &operator=(Keyring &&) = default;

  private:
    friend std::expected<Keyring, std::string> load_keyring(const EncryptionConfig &ec);
    std::string current_id_;
    std::vector<std::pair<std::string, crypto::Key>> keys_;
};

// Read every key of ec (ec.enabled must be true). Errors look like
//   key "alpha-1": key file /etc/kvpool/alpha-1.key has mode 0644, readable
//   by others; expected no access for others (chmod 600)
std::expected<Keyring, std::string> load_keyring(const EncryptionConfig &ec);

// Parse a key file's bytes: 32 raw bytes, or 64 hex digits with an optional
// trailing newline. Errors say what was seen.
std::expected<crypto::Key, std::string> parse_key_bytes(std::string_view bytes);

} // namespace kv::daemon
