// SPDX-License-Identifier: MIT
#include "housekeeping.h"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

namespace kv::daemon {

Timer::Timer(int epfd, uint64_t interval_us) : epfd_(epfd) {
    fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd_ >= 0) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd_;
        epoll_ctl(epfd_, EPOLL_CTL_ADD, fd_, &ev);
        set_interval(interval_us);
    }
}

Timer::~Timer() {
    if (fd_ >= 0) {
        epoll_ctl(epfd_, EPOLL_CTL_DEL, fd_, nullptr);
        close(fd_);
    }
}

void Timer::set_interval(uint64_t us) {
    itimerspec its{};
    its.it_interval.tv_sec = time_t(us / 1000000);
    its.it_interval.tv_nsec = long(us % 1000000) * 1000;
    its.it_value = its.it_interval;
    timerfd_settime(fd_, 0, &its, nullptr);
}

uint64_t Timer::drain() {
    uint64_t n = 0;
    if (read(fd_, &n, sizeof n) != sizeof n) return 0;
    return n;
}

} // namespace kv::daemon
