// SPDX-License-Identifier: MIT
//
// The metrics endpoint: a listening socket (loopback TCP or unix) that
// answers GET and HEAD of /metrics with the Prometheus text exposition. Connections are
// served by the control server's event loop (ControlServer::Kind::Metrics).
#pragma once

#include <expected>
#include <functional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace kv::daemon {

// Listen on "tcp:127.0.0.1:9464", "tcp:[::1]:9464" or "unix:/path".
// Returns the non-blocking listening fd.
std::expected<int, std::string> metrics_listen(const std::string &spec);

// An HTTP/1.1 response with status code status (200, 400, 404, 405, 431)
// and body; a 200 is the Prometheus text format. head: the headers only, with
// the Content-Length the body would have (RFC 9110, 9.3.2).
std::string http_response(int status, const std::string &body, bool head = false);

// The answer to one HTTP request (its head, up to the blank line): GET or
// HEAD of /metrics (a query string is ignored) is 200 with metrics();
// another path 404; another method 405 (Allow: GET, HEAD); a request line
// that is not "METHOD TARGET HTTP/x" 400. metrics() is called only for 200.
std::string http_answer(std::string_view request, const std::function<std::string()> &metrics);

// The exposition text less the samples of every series with a label
// pool="NAME" for which visible(NAME) is false (their HELP and TYPE lines
// stay: they say nothing about a pool). Series without a pool label are
// kept. A sample line whose labels cannot be parsed is dropped: the filter
// fails closed.
std::string filter_pool_series(std::string_view text,
                               const std::function<bool(std::string_view)> &visible);

// The uid owning the client socket at the other end of fd, an accepted TCP
// connection on a loopback address, found with NETLINK_SOCK_DIAG
// (inet_diag): the kernel looks the client socket up by the connection's
// addresses and ports, seen from its side. Only meaningful for loopback: the
// client socket must live in this network namespace. Errors: the lookup
// failed (no inet_diag support, the client went away), with why.
std::expected<uid_t, std::string> tcp_peer_uid(int fd);

} // namespace kv::daemon
