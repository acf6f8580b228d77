// SPDX-License-Identifier: MIT
//
// Reading a secret from a file or a systemd credential: see secret_file.h.
#include "secret_file.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace kv::daemon {

std::expected<std::string, std::string> read_secret(std::string_view file,
                                                    std::string_view credential,
                                                    std::string_view kind, size_t max_bytes) {
    std::string path(file);
    const bool from_credential = path.empty();
    if (from_credential) {
        const char *dir = std::getenv("CREDENTIALS_DIRECTORY");
        if (!dir || !*dir)
            return std::unexpected(std::string(kind) + " credential \"" + std::string(credential) +
                                   "\": $CREDENTIALS_DIRECTORY is not set (expected kvpoold to be "
                                   "started by systemd with LoadCredential=, "
                                   "LoadCredentialEncrypted= or SetCredential=)");
        path = std::string(dir) + "/" + std::string(credential);
    }
    const std::string what = std::string(kind) + (from_credential ? " credential " : " ") + path;
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return std::unexpected(what + ": " + std::strerror(errno));
    struct stat st{};
    if (fstat(fd, &st) != 0) {
        const int e = errno;
        close(fd);
        return std::unexpected(what + ": " + std::strerror(e));
    }
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    std::string bad;
    if (!S_ISREG(st.st_mode))
        bad = "is not a regular file";
    else if (!from_credential && st.st_uid != 0 && st.st_uid != geteuid())
        bad = "is owned by uid " + std::to_string(st.st_uid) +
              "; expected root (uid 0): its owner could read or replace it";
    else if (!from_credential && (st.st_mode & S_IRWXO))
        bad = std::string("has mode ") + mode +
              ", readable or writable by others; expected no access for others (chmod 600)";
    else if (!from_credential && (st.st_mode & S_IWGRP))
        bad = std::string("has mode ") + mode +
              ", writable by its group; expected no group write (chmod 600)";
    else if (uint64_t(st.st_size) > max_bytes)
        bad = "is " + std::to_string(st.st_size) + " bytes; expected at most " +
              std::to_string(max_bytes);
    if (!bad.empty()) {
        close(fd);
        return std::unexpected(what + " " + bad);
    }
    std::string out(max_bytes + 1, '\0'); // one more: a file that grew is caught
    size_t got = 0;
    while (got < out.size()) {
        const ssize_t n = read(fd, out.data() + got, out.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int e = errno;
            close(fd);
            return std::unexpected(what + ": " + std::strerror(e));
        }
        if (n == 0) break;
        got += size_t(n);
    }
    close(fd);
    if (got > max_bytes)
        return std::unexpected(what + " is more than " + std::to_string(max_bytes) +
                               " bytes; expected at most " + std::to_string(max_bytes));
    out.resize(got);
    return out;
}

} // namespace kv::daemon
