// SPDX-License-Identifier: MIT
//
// Reading a secret (a Redis password, a pool key) from a file or a systemd
// credential, with the checks that keep it one: a file must be a regular
// file (not a symlink: O_NOFOLLOW), owned by root or the daemon's user,
// with no access for others and no write for its group, since whoever else
// can read it has the secret and whoever else can write it can swap in
// their own. A credential is read from $CREDENTIALS_DIRECTORY/NAME, which
// systemd makes private to the unit (LoadCredential=,
// LoadCredentialEncrypted=, SetCredential=), so it is not checked further.
#pragma once

#include <cstddef>
#include <expected>
#include <string>
#include <string_view>

namespace kv::daemon {

// The bytes of file (when not empty) or of credential, at most max_bytes.
// kind names the secret in messages ("password_file", "key file"); errors
// name the path and what is wrong, e.g.
//   key file /etc/kvpool/a.key has mode 0644, readable or writable by
//   others; expected no access for others (chmod 600)
// The caller wipes the returned bytes when it is done with them.
std::expected<std::string, std::string> read_secret(std::string_view file,
                                                    std::string_view credential,
                                                    std::string_view kind, size_t max_bytes);

} // namespace kv::daemon
