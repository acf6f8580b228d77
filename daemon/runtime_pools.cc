// SPDX-License-Identifier: MIT
#include "runtime_pools.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace kv::daemon {

namespace {

// A TOML basic string: quotes, backslashes and control bytes escaped.
std::string quoted(const std::string &s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    return out + "\"";
}

std::string real(double v) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    std::string s = buf;
    if (s.find_first_of(".eE") == std::string::npos) s += ".0"; // a TOML float, not an integer
    return s;
}

std::string sys_error(const std::string &what, const std::string &path) {
    return what + " " + path + ": " + strerror(errno);
}

} // namespace

std::string runtime_pools_path(const std::string &state_dir) {
    return state_dir + "/runtime-pools.toml";
}

std::string pool_toml(const PoolConfig &pc) {
    std::ostringstream o;
    char mode[16];
    snprintf(mode, sizeof mode, "%04o", pc.mode);
    o << "[[pool]]\n";
    o << "name = " << quoted(pc.name) << "\n";
    o << "size = " << pc.size << "\n";
    o << "hugepages = " << quoted(std::string(to_string(pc.hugepages))) << "\n";
    o << "numa_node = "
      << (pc.numa_node == kNumaNone    ? quoted("none")
          : pc.numa_node == kNumaLocal ? quoted("local")
                                       : std::to_string(pc.numa_node))
      << "\n";
    o << "eviction = " << quoted(pc.eviction) << "\n";
    if (!pc.group.empty()) o << "group = " << quoted(pc.group) << "\n";
    o << "mode = " << quoted(mode) << "\n";
    o << "prefault = " << (pc.prefault ? "true" : "false") << "\n";
    if (pc.secure_erase) o << "secure_erase = true\n";
    o << "high_watermark = " << real(pc.high_watermark) << "\n";
    o << "low_watermark = " << real(pc.low_watermark) << "\n";
    if (pc.slab_size) o << "slab_size = " << pc.slab_size << "\n";
    if (pc.avg_block_size) o << "avg_block_size = " << pc.avg_block_size << "\n";
    if (pc.max_clients) o << "max_clients = " << pc.max_clients << "\n";
    if (pc.max_entries) o << "max_entries = " << pc.max_entries << "\n";
    if (!pc.snapshot_dir.empty()) o << "snapshot_dir = " << quoted(pc.snapshot_dir) << "\n";
    o << "persist_on_stop = " << (pc.persist_on_stop ? "true" : "false") << "\n";
    o << "restore_on_start = " << (pc.restore_on_start ? "true" : "false") << "\n";
    return o.str();
}

std::expected<std::vector<PoolConfig>, std::string> load_runtime_pools(const std::string &path) {
    std::ifstream f(path);
    if (!f) {
        if (errno == ENOENT) return std::vector<PoolConfig>{};
        return std::unexpected(sys_error("cannot read", path));
    }
    std::stringstream text;
    text << f.rdbuf();
    auto cfg = parse_config(text.str(), path);
    if (!cfg) return std::unexpected(cfg.error());
    return std::move(cfg->pools);
}

std::expected<void, std::string> save_runtime_pools(const std::string &path,
                                                    const std::vector<PoolConfig> &pools) {
    const std::string dir = path.substr(0, path.rfind('/'));
    if (pools.empty()) {
        if (unlink(path.c_str()) != 0 && errno != ENOENT)
            return std::unexpected(sys_error("cannot remove", path));
    } else {
        std::string text =
            "# Pools made with kvctl create, kept by kvpoold across restarts. Do not edit\n"
            "# while kvpoold runs: it rewrites this file at every create and destroy.\n";
        for (const PoolConfig &pc : pools) {
            text += '\n';
            text += pool_toml(pc);
        }
        const std::string tmp = path + ".tmp";
        const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0) return std::unexpected(sys_error("cannot create", tmp));
        size_t off = 0;
        while (off < text.size()) {
            const ssize_t n = write(fd, text.data() + off, text.size() - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                const std::string e = sys_error("cannot write", tmp);
                close(fd);
                unlink(tmp.c_str());
                return std::unexpected(e);
            }
            off += size_t(n);
        }
        if (fsync(fd) != 0 || close(fd) != 0) {
            const std::string e = sys_error("cannot sync", tmp);
            unlink(tmp.c_str());
            return std::unexpected(e);
        }
        if (rename(tmp.c_str(), path.c_str()) != 0) {
            const std::string e = sys_error("cannot rename " + tmp + " to", path);
            unlink(tmp.c_str());
            return std::unexpected(e);
        }
    }
    if (const int dfd = open(dir.empty() ? "/" : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return {};
}

} // namespace kv::daemon
