// SPDX-License-Identifier: MIT
//
// kvpoold logging: one line per event on stderr, prefixed with the syslog
// priority in the "<N>" form journald parses (sd-daemon(3)), then the
// component. Lines below the configured level are dropped.
#pragma once

#include "config.h"

namespace kv::daemon {

void set_log_level(LogLevel level);
LogLevel log_level();

__attribute__((format(printf, 3, 4))) void log(LogLevel level, const char *component,
                                               const char *fmt, ...);

#define KV_LOGE(comp, ...) ::kv::daemon::log(::kv::daemon::LogLevel::Error, comp, __VA_ARGS__)
#define KV_LOGW(comp, ...) ::kv::daemon::log(::kv::daemon::LogLevel::Warning, comp, __VA_ARGS__)
#define KV_LOGN(comp, ...) ::kv::daemon::log(::kv::daemon::LogLevel::Notice, comp, __VA_ARGS__)
#define KV_LOGI(comp, ...) ::kv::daemon::log(::kv::daemon::LogLevel::Info, comp, __VA_ARGS__)
#define KV_LOGD(comp, ...) ::kv::daemon::log(::kv::daemon::LogLevel::Debug, comp, __VA_ARGS__)

} // namespace kv::daemon
