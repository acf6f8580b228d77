// SPDX-License-Identifier: MIT
#include "control_client.h"

#include "control_protocol.h"

#include <bit>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <utility>

namespace kv::control {

// Requests are sent and responses read as the structs lie in memory.
static_assert(std::endian::native == std::endian::little,
              "the control protocol is little-endian; the client would need byte swapping");

namespace {

using Clock = std::chrono::steady_clock;

std::unexpected<ClientError> fail(std::string message, bool timed_out = false) {
    return std::unexpected(
        ClientError{ClientError::Stage::Exchange, 0, timed_out, std::move(message)});
}

// No time point: wait forever.
struct Deadline {
    std::optional<Clock::time_point> at;

    static Deadline after(double seconds) {
        Deadline d;
        if (seconds > 0)
            d.at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
        return d;
    }

    // Milliseconds to pass to poll(): -1 forever, 0 expired.
    int poll_ms() const {
        if (!at) return -1;
        const auto left = *at - Clock::now();
        if (left <= Clock::duration::zero()) return 0;
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
        return ms > INT_MAX ? INT_MAX : int(ms);
    }
};

std::expected<void, ClientError> send_all(int fd, const void *buf, size_t n) {
    const auto *p = static_cast<const uint8_t *>(buf);
    size_t done = 0;
    while (done < n) {
        const ssize_t k = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return fail("timed out sending the request to kvpoold");
        if (k < 0)
            return fail(std::string("sending the request to kvpoold: ") + std::strerror(errno));
        done += size_t(k);
    }
    return {};
}

// Read exactly n bytes; what names them in messages, timeout_s the limit
// the deadline was set from.
std::expected<void, ClientError> recv_all(int fd, void *buf, size_t n, const Deadline &deadline,
                                          const char *what, double timeout_s) {
    auto *p = static_cast<uint8_t *>(buf);
    size_t done = 0;
    while (done < n) {
        pollfd pfd{fd, POLLIN, 0};
        const int ms = deadline.poll_ms();
        const int r = ms == 0 ? 0 : ::poll(&pfd, 1, ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail(std::string("poll on the control socket: ") + std::strerror(errno));
        if (r == 0)
            return fail(strf("no response from kvpoold within %g s (%zu of %zu bytes of the %s "
                             "received)",
                             timeout_s, done, n, what),
                        true);
        const ssize_t k = ::recv(fd, p + done, n - done, MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (k < 0 && errno != ECONNRESET)
            return fail(std::string("reading the response from kvpoold: ") + std::strerror(errno));
        if (k <= 0)
            return fail(strf("kvpoold closed the connection after %zu of %zu bytes of the %s", done,
                             n, what));
        done += size_t(k);
    }
    return {};
}

} // namespace

Client::Client(int fd, std::string socket, double timeout_s)
    : fd_(fd), socket_(std::move(socket)), timeout_s_(timeout_s), seq_(uint32_t(::getpid())) {}

Client::Client(Client &&o) noexcept
    : fd_(std::exchange(o.fd_, -1)), socket_(std::move(o.socket_)), timeout_s_(o.timeout_s_),
      seq_(o.seq_) {}

Client &Client::operator=(Client &&o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(o.fd_, -1);
        socket_ = std::move(o.socket_);
        timeout_s_ = o.timeout_s_;
        seq_ = o.seq_;
    }
    return *this;
}

Client::~Client() {
    if (fd_ >= 0) ::close(fd_);
}

std::expected<Client, ClientError> Client::connect(const std::string &socket, double timeout_s) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return std::unexpected(
            ClientError{ClientError::Stage::Socket, errno, false,
                        std::string("socket(AF_UNIX): ") + std::strerror(errno)});
    Client c(fd, socket, timeout_s);

    // A unix connect() blocks while the listener's backlog is full, and send()
    // while the socket buffer is; SO_SNDTIMEO bounds both (EAGAIN when it expires).
    if (timeout_s > 0) {
        timeval tv{};
        tv.tv_sec = time_t(timeout_s);
        tv.tv_usec = suseconds_t((timeout_s - double(tv.tv_sec)) * 1e6);
        if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
        (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }

    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket.data(), std::min(socket.size(), sizeof addr.sun_path - 1));
    int r;
    do {
        r = ::connect(fd, reinterpret_cast<const sockaddr *>(&addr), sizeof addr);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        const int e = errno;
        return std::unexpected(
            ClientError{ClientError::Stage::Connect, e, false,
                        "cannot connect to kvpoold at " + socket + ": " + std::strerror(e)});
    }
    return c;
}

std::expected<Reply, ClientError> Client::request(uint16_t op, const kv_ctl_request &req) {
    return request(op, req, {});
}

std::expected<Reply, ClientError> Client::request(uint16_t op, const kv_ctl_request &req,
                                                  std::string_view payload) {
    const Deadline deadline = Deadline::after(timeout_s_);
    const uint32_t seq = seq_++;
    const std::string msg = encode_request(op, seq, req, payload);
    kv_ctl_hdr hdr{};
    if (auto r = send_all(fd_, msg.data(), msg.size()); !r) {
        // The daemon may have refused the connection and closed it before
        // the request arrived: its reason (KV_CTL_OP_REFUSED) is then
        // waiting to be read. Without one, the send's error stands.
        if (!recv_all(fd_, &hdr, sizeof hdr, Deadline::after(1.0), "response header", 1.0) ||
            hdr.magic != KV_CTL_MAGIC || hdr.op != KV_CTL_OP_REFUSED)
            return std::unexpected(r.error());
    } else if (auto r2 = recv_all(fd_, &hdr, sizeof hdr, deadline, "response header", timeout_s_);
               !r2) {
        return std::unexpected(r2.error());
    }
    const HeaderCheck check = check_response_header(hdr, op, seq, socket_);
    if (!check.problem.empty()) return fail(check.problem);

    std::string body(hdr.length, '\0');
    if (auto r = recv_all(fd_, body.data(), body.size(), deadline, "response body", timeout_s_); !r)
        return std::unexpected(r.error());
    ResponseBody resp = decode_response_body(std::move(body));
    if (!resp.problem.empty()) return fail(resp.problem);
    if (check.refused && resp.error == 0)
        return fail("kvpoold refused the connection without an error code");
    return Reply{resp.error, std::move(resp.text)};
}

} // namespace kv::control
