// SPDX-License-Identifier: MIT
//
// A blocking client of kvpoold's control socket (<kvpool/control.h>): one
// connection, requests sent and answered in turn. kvctl is its user; the
// framing and the checks are control_protocol.h's.
//
// Nothing the daemon sends is trusted: a response header is checked against
// its request before its body is read (never more than KV_CTL_MAX_BODY), and
// body_len against the header's length. Every wait is bounded by the
// timeout, so a stuck daemon cannot hang the client. Errors name what was
// expected and what was seen; no function prints or throws, except
// std::bad_alloc.
#pragma once

#include <cstdint>
#include <expected>
#include <kvpool/control.h>
#include <string>
#include <string_view>

namespace kv::control {

struct ClientError {
    enum class Stage {
        Socket,   // socket(AF_UNIX) failed
        Connect,  // connect() failed: sys_errno says why, the caller may add a hint
        Exchange, // sending, receiving or a malformed response
    };
    Stage stage = Stage::Exchange;
    int sys_errno = 0;
    // No response within the timeout: the caller may say how to wait longer.
    bool timed_out = false;
    std::string message;
};

struct Reply {
    uint32_t error = 0; // 0, or the daemon's positive errno
    std::string body;   // JSON when error == 0, else the daemon's message
};

class Client {
  public:
    // timeout_s > 0 bounds connect(), each send and each request's wait for
    // its response; 0 waits forever. socket must fit sockaddr_un::sun_path
    // (the caller checks, to name its own option in the message).
    static std::expected<Client, ClientError> connect(const std::string &socket, double timeout_s);

    // Send one request and read its response. A connection the daemon
    // refused at accept (KV_CTL_OP_REFUSED) answers with the refusal's
    // error (EUSERS) and message, whichever request was sent.
    std::expected<Reply, ClientError> request(uint16_t op, const kv_ctl_request &req);
    // The same for an op that takes a payload (REMOTE_FETCH): req.arg must
    // be payload.size().
    std::expected<Reply, ClientError> request(uint16_t op, const kv_ctl_request &req,
                                              std::string_view payload);

    Client(Client &&o) noexcept;
    Client &operator=(Client &&o) noexcept;
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;
    ~Client();

  private:
    Client(int fd, std::string socket, double timeout_s);

    int fd_ = -1;
    std::string socket_;
    double timeout_s_ = 0;
    // Starts at the pid, which makes a confused daemon that answers another
    // client's request visible; later requests count up from it.
    uint32_t seq_ = 0;
};

} // namespace kv::control
