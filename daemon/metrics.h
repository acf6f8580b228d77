// SPDX-License-Identifier: MIT
//
// The metrics endpoint: a listening socket (loopback TCP or unix) that
// answers any HTTP GET with the Prometheus text exposition. Connections are
// served by the control server's event loop (ControlServer::Kind::Metrics).
#pragma once

#include <expected>
#include <string>

namespace kv::daemon {

// Listen on "tcp:127.0.0.1:9464", "tcp:[::1]:9464" or "unix:/path".
// Returns the non-blocking listening fd.
std::expected<int, std::string> metrics_listen(const std::string &spec);

// Wrap a Prometheus body in an HTTP/1.1 response. `ok` false: 400 with body.
std::string http_response(bool ok, const std::string &body);

} // namespace kv::daemon
