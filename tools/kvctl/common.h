// SPDX-License-Identifier: MIT
//
// What every part of kvctl shares: its exit codes, the failure it reports,
// and small text helpers. kvctl's files: args (the command line and the
// request it asks for), requests (talking to kvpoold through the control
// client, daemon/control_client.h), output (tables and JSON), main.
#pragma once

#include "control_protocol.h"
#include "units.h"

#include <cstdarg>
#include <cstdio>
#include <expected>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

namespace kvctl {

using kv::detail::format_size;
// Not a using-declaration: ADL would find std::quoted for std::string arguments.
inline std::string quote(std::string_view s) {
    return kv::detail::quoted(s);
}
// ordered_json keeps the daemon's key order, so --json prints the document as sent.
using json = nlohmann::ordered_json;

constexpr const char *kDefaultSocket = "/run/kvpool/control";
constexpr double kDefaultTimeout = 30.0;
constexpr double kMaxTimeout = 365.0 * 86400.0;
constexpr const char *kNone = "-"; // shown for a key the daemon did not send

// Exit codes are part of the interface (scripts test them) and are listed in
// the --help text.
enum Exit : int {
    kExitOk = 0,
    kExitFailed = 1,      // the daemon refused or failed the request; health: unhealthy
    kExitUsage = 2,       // bad command line
    kExitConnect = 3,     // cannot connect to the socket
    kExitPerm = 4,        // EPERM / EACCES from the daemon
    kExitNoPool = 5,      // ENOENT from the daemon
    kExitExists = 6,      // EEXIST from the daemon
    kExitProtocol = 7,    // malformed or truncated response, closed connection, timeout
    kExitPartial = 8,     // restore: the snapshot was damaged; only its verified part was restored
    kExitNotAttached = 9, // ESRCH from the daemon: detach of a process that is not attached
};

struct Failure {
    int exit;
    std::string message;   // printed after "kvctl: "
    std::string hint = {}; // usage errors: where to look, on a line of its own
    int error = 0;         // the daemon's errno, when it answered with one

    std::string text() const { return hint.empty() ? message : message + "\n" + hint; }
};

template <typename T>
using Result = std::expected<T, Failure>;

using kv::control::strf;

} // namespace kvctl
