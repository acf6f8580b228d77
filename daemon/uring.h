// SPDX-License-Identifier: MIT
//
// A small owner of one io_uring (liburing 2.3) for the snapshot engine:
// setup and teardown, fixed-buffer registration, submission, batched
// completion reaping, and the fault injection the tests use (the Nth
// request completes with -EIO). Single-threaded; never throws or prints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <liburing.h>
#include <span>
#include <sys/uio.h>
#include <vector>

namespace kv::daemon {

struct Completion {
    uint64_t user_data;
    int32_t res; // bytes or -errno
};

class Ring {
  public:
    // entries: submission queue size, 1..4096. Returns -errno.
    static std::expected<Ring, int> create(unsigned entries);
    Ring(Ring &&o) noexcept;
    Ring &operator=(Ring &&) = delete;
    Ring(const Ring &) = delete;
    ~Ring(); // the caller must have reaped every request first (the kernel may still use its
             // buffers)

    // Register bufs as fixed buffers, index = position. 0 or -errno (ENOMEM
    // or EPERM: locked-memory limit; EOPNOTSUPP/EFAULT: memory the kernel
    // cannot pin long-term; EINVAL: a buffer over 1 GiB).
    int register_buffers(std::span<const iovec> bufs);
    bool registered() const { return registered_; }
    // The index of the registered buffer that holds [p, p + n) whole, or -1.
    int fixed_index(const void *p, uint64_t n) const;

    // The nth request handed out from now on (1-based) completes with -EIO
    // whatever the kernel did; 0 turns it off.
    void fail_nth(uint64_t n) { fail_nth_ = n ? issued_ + n : 0; }

    // A zeroed SQE tagged with user_data, or nullptr when none is free
    // (submit and reap first). Counts as one request in flight.
    io_uring_sqe *sqe(uint64_t user_data);
    // Submit what sqe() handed out. Returns 0 or -errno.
    int submit();
    // Reap completions into out: waits for at least one when wait is true
    // and a request is in flight. Returns how many, or -errno.
    int reap(std::span<Completion> out, bool wait);
    unsigned in_flight() const { return in_flight_; }

  private:
    Ring() = default;
    io_uring ring_{};
    std::vector<iovec> bufs_; // registered, in index order
    bool live_ = false, registered_ = false;
    unsigned in_flight_ = 0, queued_ = 0;
    uint64_t issued_ = 0, fail_nth_ = 0, fault_ud_ = 0;
    bool fault_armed_ = false;
};

// Page-aligned, zeroed memory of its own mapping: O_DIRECT needs aligned
// buffers, and a mapping of its own is never shared with a heap object
// whose pages io_uring might keep pinned.
class AlignedBuffer {
  public:
    AlignedBuffer() = default;
    static std::expected<AlignedBuffer, int> create(size_t len); // -errno
    AlignedBuffer(AlignedBuffer &&o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
    AlignedBuffer &operator=(AlignedBuffer &&o) noexcept;
    AlignedBuffer(const AlignedBuffer &) = delete;
    ~AlignedBuffer();
    uint8_t *data() const { return p_; }
    size_t size() const { return n_; }

  private:
    uint8_t *p_ = nullptr;
    size_t n_ = 0;
};

} // namespace kv::daemon
