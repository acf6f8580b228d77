// SPDX-License-Identifier: MIT
//
// Framing and validation of control-socket messages (<kvpool/control.h>),
// apart from the sockets and the pools so tests and fuzzers reach it: the
// server feeds its input buffer to next_message() and answers each message
// with frame(). Pure functions: no I/O, no logging, nothing throws except
// std::bad_alloc.
#pragma once

#include <kvpool/control.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kv::daemon::control {

struct Message {
    enum class Kind {
        NeedMore,  // in holds less than a header, or a header and part of its body
        BadHeader, // wrong magic or version, or a body over KV_CTL_MAX_BODY: answer, then close
        Request,   // one whole message: consumed bytes of in
    };
    Kind kind = Kind::NeedMore;
    kv_ctl_hdr hdr{};    // BadHeader and Request: the header as received
    size_t consumed = 0; // Request: sizeof(kv_ctl_hdr) + hdr.length
    // BadHeader: EPROTO or EMSGSIZE. Request: 0 when req may be dispatched,
    // else EPROTO (body shorter than KV_CTL_REQUEST_SIZE_V1) or EINVAL
    // (non-zero reserved field or unknown trailing bytes, pool name or path
    // not NUL-terminated, a cursor on an op other than ENTRIES, unknown
    // flag bits).
    int error = 0;
    std::string message; // why, when error != 0
    kv_ctl_request req{}; // Request with error == 0: the body's first KV_CTL_REQUEST_SIZE_V1 bytes
};

// Take the first message off a control stream.
Message next_message(std::string_view in);

// A response: header (op and seq of the request) + kv_ctl_response + body.
std::string frame(uint16_t op, uint32_t seq, int error, const std::string &body);

// [A-Za-z0-9_.-]{1,63}, not "." or "..".
bool valid_pool_name(std::string_view n);

} // namespace kv::daemon::control
