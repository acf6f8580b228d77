// SPDX-License-Identifier: MIT
#include "log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <unistd.h>

namespace kv::daemon {

namespace {
// Relaxed: the level is a filter, a stale read only lets one line through.
std::atomic<int> g_level{int(LogLevel::Info)};
} // namespace

void set_log_level(LogLevel level) {
    g_level.store(int(level), std::memory_order_relaxed);
}
LogLevel log_level() {
    return LogLevel(g_level.load(std::memory_order_relaxed));
}

void log(LogLevel level, const char *component, const char *fmt, ...) {
    if (int(level) > g_level.load(std::memory_order_relaxed)) return;
    // One write(2) per line so lines from signal-time paths never interleave.
    char line[2048];
    int n = snprintf(line, sizeof line, "<%d>%s: ", int(level), component);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - size_t(n) - 1, fmt, ap);
    va_end(ap);
    size_t len = size_t(n) + (m < 0 ? 0 : std::min<size_t>(size_t(m), sizeof line - size_t(n) - 2));
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; // nowhere left to report a failed log write
}

} // namespace kv::daemon
