// SPDX-License-Identifier: MIT
//
// A small owner of one io_uring (liburing 2.3) for the snapshot engine:
// setup and teardown, fixed-buffer registration, submission, batched
// completion reaping, and the fault injection the tests use (the Nth
// request completes with -EIO). Single-threaded; never throws or prints.
//
// Pump, on top of a Ring: the request pump persist and restore share. It
// merges pieces that follow each other in the file into requests of at
// most max_request bytes (one iovec: a read/write_fixed when a registered
// buffer holds it; several: a readv/writev), keeps up to depth requests
// in flight and hands each completion to its IoOwner. What a request
// means (which blocks it covers, what a short transfer costs) is the
// owner's business: the pump only counts pieces by tag.
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
    // entries: submission queue size, 1..4096. The error is a positive errno.
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

// One request of a Pump: the file range [off, off + len), the memory it
// moves (iov, in file order) and the owner's tags of the pieces in it.
struct IoReq {
    static constexpr uint32_t kNone = UINT32_MAX;
    uint64_t off = 0, len = 0;
    std::vector<iovec> iov;
    std::vector<uint32_t> tags; // one per tagged piece (a tag may repeat)
    uint32_t extra = kNone;     // the owner's own mark for the whole request
};

// Where a Pump could not go on (IoOwner::io_error).
enum class IoStep {
    submit,   // io_uring_submit failed
    wait,     // waiting for completions failed
    no_entry, // no free SQE (cannot happen: requests never outnumber entries)
    idle,     // asked to wait with nothing in flight (an internal error)
};

// The owner of a Pump's requests. Calls come from inside Pump calls, on
// the owner's thread.
class IoOwner {
  public:
    // Request id completed with res (bytes or -errno; -ECANCELED: never
    // submitted). Its tags are still listed; the pump clears them and
    // frees the request afterwards.
    virtual void io_done(uint32_t id, IoReq &r, int res) = 0;
    // A piece tagged tag joined a request.
    virtual void io_piece(uint32_t tag) = 0;
    // True once the owner has failed: the pump starts no more I/O.
    virtual bool io_failed() const = 0;
    // The pump cannot go on (code: a positive errno). Returns false.
    virtual bool io_error(IoStep step, int code) = 0;

  protected:
    ~IoOwner() = default;
};

class Pump {
  public:
    enum class Dir { read, write };
    static constexpr uint32_t kNone = IoReq::kNone;
    static constexpr unsigned kMaxIov = 512; // under IOV_MAX (1024)

    // depth requests (the ring must have at least that many entries);
    // max_request: a multiple of the page size, at most 1 GiB.
    Pump(Ring ring, int fd, Dir dir, uint64_t max_request, unsigned depth, IoOwner &owner);
    Pump(const Pump &) = delete;
    Pump &operator=(const Pump &) = delete;

    Ring &ring() { return ring_; }
    unsigned in_flight() const { return ring_.in_flight(); }
    // The request being filled (not yet submitted), or nullptr.
    IoReq *filling() { return cur_ != kNone ? &reqs_[cur_] : nullptr; }

    // Add [addr, addr + len) at file offset off to the request being
    // filled, or submit that one and start another when off does not
    // follow it, it would grow past max_request or it holds kMaxIov
    // iovecs. May wait for a free request. tag kNone: an untagged piece.
    bool add_piece(uint64_t off, const void *addr, uint64_t len, uint32_t tag);
    // add_piece in pieces of at most max_request bytes, each topping up
    // the request being filled when the file offsets meet.
    bool add_range(uint64_t off, const void *addr, uint64_t len, uint32_t tag);
    // Submit the request being filled, if any. After the owner failed it
    // is completed with -ECANCELED instead and false returned.
    bool flush();
    // Reap what has completed (wait: at least one, when any is in flight).
    bool reap(bool wait);
    // Submit what is being filled and wait for at least one completion.
    bool wait_some();
    // Cancel the request being filled and reap every one in flight: after
    // this the kernel holds none of the owner's memory (unless the ring
    // broke; then the ring's teardown waits for it).
    void drain();

  private:
    IoReq *acquire();
    void complete(uint32_t id, int res);

    Ring ring_;
    IoOwner &owner_;
    const int fd_;
    const Dir dir_;
    const uint64_t max_req_;
    std::vector<IoReq> reqs_;
    std::vector<uint32_t> free_;
    std::vector<Completion> cqes_;
    uint32_t cur_ = kNone; // the request being filled
};

// Page-aligned, zeroed memory of its own mapping: O_DIRECT needs aligned
// buffers, and a mapping of its own is never shared with a heap object
// whose pages io_uring might keep pinned.
class AlignedBuffer {
  public:
    AlignedBuffer() = default;
    static std::expected<AlignedBuffer, int> create(size_t len); // error: a positive errno
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
