// SPDX-License-Identifier: MIT
#include "uring.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/mman.h>

namespace kv::daemon {

std::expected<Ring, int> Ring::create(unsigned entries) {
    if (entries == 0 || entries > 4096) return std::unexpected(EINVAL);
    Ring r;
    // COOP_TASKRUN: completions are only reaped by this thread anyway, so the
    // kernel need not interrupt it to run task work. Older kernels refuse
    // the flag with EINVAL: then plain setup.
    io_uring_params p{};
    p.flags = IORING_SETUP_COOP_TASKRUN;
    int rc = io_uring_queue_init_params(entries, &r.ring_, &p);
    if (rc == -EINVAL) {
        p = io_uring_params{};
        rc = io_uring_queue_init_params(entries, &r.ring_, &p);
    }
    if (rc < 0) return std::unexpected(-rc);
    r.live_ = true;
    return r;
}

Ring::Ring(Ring &&o) noexcept
    : ring_(o.ring_), bufs_(std::move(o.bufs_)), live_(o.live_), registered_(o.registered_),
      in_flight_(o.in_flight_), queued_(o.queued_), issued_(o.issued_), fail_nth_(o.fail_nth_),
      fault_ud_(o.fault_ud_), fault_armed_(o.fault_armed_) {
    o.live_ = false;
    o.registered_ = false;
}

Ring::~Ring() {
    if (!live_) return;
    // io_uring_queue_exit also unregisters the buffers; done here first so a
    // failure to unpin is not hidden behind the ring teardown.
    if (registered_) io_uring_unregister_buffers(&ring_);
    io_uring_queue_exit(&ring_);
}

int Ring::register_buffers(std::span<const iovec> bufs) {
    if (registered_ || bufs.empty()) return -EINVAL;
    int rc = io_uring_register_buffers(&ring_, bufs.data(), unsigned(bufs.size()));
    if (rc != 0) return rc;
    registered_ = true;
    bufs_.assign(bufs.begin(), bufs.end());
    return 0;
}

int Ring::fixed_index(const void *p, uint64_t n) const {
    // A handful of buffers (one per GiB of pool, plus the caller's own):
    // a linear scan is cheaper than keeping them sorted.
    auto a = reinterpret_cast<uintptr_t>(p);
    for (size_t i = 0; i < bufs_.size(); i++) {
        auto b = reinterpret_cast<uintptr_t>(bufs_[i].iov_base);
        if (a >= b && a - b <= bufs_[i].iov_len && n <= bufs_[i].iov_len - (a - b)) return int(i);
    }
    return -1;
}

io_uring_sqe *Ring::sqe(uint64_t user_data) {
    io_uring_sqe *s = io_uring_get_sqe(&ring_);
    if (!s) return nullptr;
    std::memset(s, 0, sizeof *s);
    io_uring_sqe_set_data64(s, user_data);
    issued_++;
    if (fail_nth_ && issued_ == fail_nth_) {
        fault_ud_ = user_data;
        fault_armed_ = true;
    }
    in_flight_++;
    queued_++;
    return s;
}

int Ring::submit() {
    while (queued_) {
        int rc = io_uring_submit(&ring_);
        if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
            // EAGAIN/EBUSY: the completion queue is full or memory is short;
            // the caller reaps and calls again, so report nothing submitted.
            if (rc == -EINTR) continue;
            return 0;
        }
        if (rc < 0) return rc;
        queued_ -= unsigned(rc) < queued_ ? unsigned(rc) : queued_;
        if (rc == 0) break;
    }
    return 0;
}

int Ring::reap(std::span<Completion> out, bool wait) {
    if (out.empty()) return 0;
    if (queued_) {
        if (int rc = submit(); rc < 0) return rc;
    }
    io_uring_cqe *cqe = nullptr;
    if (wait && in_flight_) {
        for (;;) {
            int rc = io_uring_wait_cqe(&ring_, &cqe);
            if (rc == -EINTR) continue;
            if (rc < 0) return rc;
            break;
        }
    }
    int n = 0;
    while (size_t(n) < out.size() && io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe) {
        Completion c{cqe->user_data, cqe->res};
        io_uring_cqe_seen(&ring_, cqe);
        if (fault_armed_ && c.user_data == fault_ud_) {
            fault_armed_ = false;
            c.res = -EIO;
        }
        out[size_t(n++)] = c;
        in_flight_--;
    }
    return n;
}

Pump::Pump(Ring ring, int fd, Dir dir, uint64_t max_request, unsigned depth, IoOwner &owner)
    : ring_(std::move(ring)), owner_(owner), fd_(fd), dir_(dir), max_req_(max_request) {
    reqs_.resize(depth);
    for (uint32_t i = depth; i-- > 0;)
        free_.push_back(i);
    cqes_.resize(depth);
}

IoReq *Pump::acquire() {
    while (free_.empty())
        if (!wait_some()) return nullptr;
    cur_ = free_.back();
    free_.pop_back();
    IoReq &r = reqs_[cur_];
    r.off = r.len = 0;
    r.iov.clear();
    r.tags.clear();
    r.extra = kNone;
    return &r;
}

bool Pump::add_piece(uint64_t off, const void *addr, uint64_t len, uint32_t tag) {
    if (cur_ != kNone) {
        const IoReq &r = reqs_[cur_];
        if (r.off + r.len != off || r.len + len > max_req_ || r.iov.size() >= kMaxIov)
            if (!flush()) return false;
    }
    IoReq *r = cur_ != kNone ? &reqs_[cur_] : acquire();
    if (!r) return false;
    auto *p = static_cast<uint8_t *>(const_cast<void *>(addr));
    if (r->len == 0) r->off = off;
    if (!r->iov.empty() &&
        static_cast<uint8_t *>(r->iov.back().iov_base) + r->iov.back().iov_len == p)
        r->iov.back().iov_len += len; // neighbours in memory too: one iovec
    else
        r->iov.push_back({p, len});
    r->len += len;
    if (tag != kNone) {
        r->tags.push_back(tag);
        owner_.io_piece(tag);
    }
    return true;
}

bool Pump::add_range(uint64_t off, const void *addr, uint64_t len, uint32_t tag) {
    const auto *p = static_cast<const uint8_t *>(addr);
    while (len) {
        uint64_t room = max_req_;
        if (cur_ != kNone) {
            const IoReq &r = reqs_[cur_];
            if (r.off + r.len == off && r.iov.size() < kMaxIov) room = max_req_ - r.len;
            if (room == 0) {
                if (!flush()) return false;
                room = max_req_;
            }
        }
        const uint64_t take = std::min(len, room);
        if (!add_piece(off, p, take, tag)) return false;
        off += take;
        p += take;
        len -= take;
    }
    return true;
}

bool Pump::flush() {
    if (cur_ == kNone) return !owner_.io_failed();
    const uint32_t id = cur_;
    cur_ = kNone;
    IoReq &r = reqs_[id];
    if (owner_.io_failed()) { // do not start more I/O: hand the request back
        complete(id, -ECANCELED);
        return false;
    }
    io_uring_sqe *s = ring_.sqe(id);
    if (!s) {
        complete(id, -EBUSY);
        return owner_.io_error(IoStep::no_entry, EBUSY);
    }
    void *base = r.iov[0].iov_base;
    const auto n = unsigned(r.len);
    if (r.iov.size() == 1) {
        const int idx = ring_.fixed_index(base, r.len);
        if (dir_ == Dir::read) {
            if (idx >= 0)
                io_uring_prep_read_fixed(s, fd_, base, n, r.off, idx);
            else
                io_uring_prep_read(s, fd_, base, n, r.off);
        } else {
            if (idx >= 0)
                io_uring_prep_write_fixed(s, fd_, base, n, r.off, idx);
            else
                io_uring_prep_write(s, fd_, base, n, r.off);
        }
    } else if (dir_ == Dir::read) {
        io_uring_prep_readv(s, fd_, r.iov.data(), unsigned(r.iov.size()), r.off);
    } else {
        io_uring_prep_writev(s, fd_, r.iov.data(), unsigned(r.iov.size()), r.off);
    }
    if (int rc = ring_.submit(); rc < 0) return owner_.io_error(IoStep::submit, -rc);
    return true;
}

bool Pump::reap(bool wait) {
    int n = ring_.reap(cqes_, wait);
    if (n < 0) return owner_.io_error(IoStep::wait, -n);
    for (int i = 0; i < n; i++)
        complete(uint32_t(cqes_[size_t(i)].user_data), cqes_[size_t(i)].res);
    return !owner_.io_failed();
}

bool Pump::wait_some() {
    if (!flush()) return false;
    if (ring_.in_flight() == 0) return owner_.io_error(IoStep::idle, EIO);
    return reap(true);
}

void Pump::complete(uint32_t id, int res) {
    IoReq &r = reqs_[id];
    owner_.io_done(id, r, res);
    r.tags.clear();
    r.extra = kNone;
    free_.push_back(id);
}

void Pump::drain() {
    if (cur_ != kNone) { // queued, never submitted
        const uint32_t id = cur_;
        cur_ = kNone;
        complete(id, -ECANCELED);
    }
    while (ring_.in_flight()) {
        int n = ring_.reap(cqes_, true);
        if (n < 0) break; // the ring is broken; its teardown waits for the kernel
        for (int i = 0; i < n; i++)
            complete(uint32_t(cqes_[size_t(i)].user_data), cqes_[size_t(i)].res);
    }
}

std::expected<AlignedBuffer, int> AlignedBuffer::create(size_t len) {
    AlignedBuffer b;
    if (len == 0) return b;
    void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return std::unexpected(errno);
    b.p_ = static_cast<uint8_t *>(p);
    b.n_ = len;
    return b;
}

AlignedBuffer &AlignedBuffer::operator=(AlignedBuffer &&o) noexcept {
    if (this != &o) {
        if (p_) munmap(p_, n_);
        p_ = o.p_;
        n_ = o.n_;
        o.p_ = nullptr;
        o.n_ = 0;
    }
    return *this;
}

AlignedBuffer::~AlignedBuffer() {
    if (p_) munmap(p_, n_);
}

} // namespace kv::daemon
