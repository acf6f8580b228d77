// SPDX-License-Identifier: MIT
//
// Periodic work of the daemon, each on its own timerfd in the main epoll
// loop: reaping dead clients (so a killed client's pins are released within
// a reap interval), watermark eviction (so puts rarely evict inline), the
// systemd watchdog, and closing idle control connections.
#pragma once

#include <cstdint>

namespace kv::daemon {

class Timer {
  public:
    // A periodic CLOCK_MONOTONIC timer registered with epfd; interval 0: disarmed.
    Timer(int epfd, uint64_t interval_us);
    ~Timer();
    Timer(const Timer &) = delete;
    Timer &operator=(const Timer &) = delete;
    int fd() const { return fd_; }
    void set_interval(uint64_t interval_us);
    // Consume the expirations; returns how many happened since the last call.
    uint64_t drain();

  private:
    int epfd_;
    int fd_;
};

// Most bytes the watermark pass evicts from one pool per tick: bounds how
// long one tick keeps the loop away from the control socket.
inline constexpr uint64_t kEvictChunkBytes = 256ULL << 20;

} // namespace kv::daemon
