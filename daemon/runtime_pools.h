// SPDX-License-Identifier: MIT
//
// Pools made at runtime (kvctl create) outlive the daemon: their settings
// are kept in STATE_DIR/runtime-pools.toml, in the config file's [[pool]]
// syntax, so a restart re-attaches (or re-creates and restores) them like
// configured pools. The file is replaced atomically (write, fsync, rename,
// fsync the directory): a crash leaves the old list or the new one.
#pragma once

#include "config.h"

#include <expected>
#include <string>
#include <vector>

namespace kv::daemon {

std::string runtime_pools_path(const std::string &state_dir);

// The pools in the file; none when it does not exist. Errors name the file
// and the problem (parse errors as the config parser gives them).
std::expected<std::vector<PoolConfig>, std::string> load_runtime_pools(const std::string &path);

// Replace the file with these pools (an empty list removes it).
std::expected<void, std::string> save_runtime_pools(const std::string &path,
                                                    const std::vector<PoolConfig> &pools);

// One pool as [[pool]] TOML text that parse_config reads back to the same PoolConfig.
std::string pool_toml(const PoolConfig &pc);

} // namespace kv::daemon
