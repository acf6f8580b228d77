// SPDX-License-Identifier: MIT
//
// The daemon's clocks, in one place.
//
// mono_ns() / mono_ms(): CLOCK_MONOTONIC, for intervals, deadlines and
// rates: it never steps, and is not comparable across boots or with
// another host. realtime_ns(): CLOCK_REALTIME, for times shown to people,
// written to snapshot files or compared with times other processes wrote
// (commit times, time-to-live); it may step. seconds_since(t0): seconds
// elapsed since a mono_ns() reading.
//
// All are async-signal-safe and never fail (both clocks exist on every
// kernel kvpool runs on).
#pragma once

#include <cstdint>
#include <ctime>

namespace kv::daemon {

inline uint64_t clock_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

inline uint64_t mono_ns() {
    return clock_ns(CLOCK_MONOTONIC);
}
inline uint64_t mono_ms() {
    return mono_ns() / 1000000;
}
inline uint64_t realtime_ns() {
    return clock_ns(CLOCK_REALTIME);
}
inline double seconds_since(uint64_t mono_t0_ns) {
    return double(mono_ns() - mono_t0_ns) / 1e9;
}

} // namespace kv::daemon
