// SPDX-License-Identifier: MIT
#include "control_codec.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kv::daemon::control {

Message next_message(std::string_view in) {
    Message m;
    if (in.size() < sizeof(kv_ctl_hdr)) return m;
    memcpy(&m.hdr, in.data(), sizeof m.hdr);
    const kv_ctl_hdr &h = m.hdr;
    if (h.magic != KV_CTL_MAGIC) {
        char b[128];
        snprintf(b, sizeof b, "bad magic 0x%08x: expected 0x%08x (not a kvpool control client?)", h.magic,
                 KV_CTL_MAGIC);
        m.message = b;
    } else if (h.version != KV_CTL_VERSION) {
        m.message = "protocol version " + std::to_string(h.version) + ": this daemon speaks " +
                    std::to_string(KV_CTL_VERSION);
    } else if (h.length > KV_CTL_MAX_BODY) {
        m.message = "message body of " + std::to_string(h.length) + " bytes: at most " +
                    std::to_string(KV_CTL_MAX_BODY) + " are accepted";
        m.error = EMSGSIZE;
    }
    if (!m.message.empty()) {
        // The stream cannot be resynchronized after a bad header.
        m.kind = Message::Kind::BadHeader;
        if (!m.error) m.error = EPROTO;
        return m;
    }
    if (in.size() < sizeof h + h.length) return m; // wait for the body
    m.kind = Message::Kind::Request;
    m.consumed = sizeof h + h.length;
    const std::string_view body = in.substr(sizeof h, h.length);
    if (body.size() < KV_CTL_REQUEST_SIZE_V1) {
        m.error = EPROTO;
        m.message = "request body of " + std::to_string(body.size()) + " bytes: expected at least " +
                    std::to_string(KV_CTL_REQUEST_SIZE_V1);
        return m;
    }
    // A newer client's larger struct: the tail must be zero (we cannot honour it).
    kv_ctl_request req;
    memcpy(&req, body.data(), sizeof req);
    const bool tail_zero = std::all_of(body.begin() + sizeof req, body.end(), [](char ch) { return ch == 0; });
    const bool reserved_zero =
        std::all_of(std::begin(req.reserved), std::end(req.reserved), [](uint64_t v) { return v == 0; });
    if (!tail_zero || !reserved_zero) {
        m.error = EINVAL;
        m.message = "request has non-zero reserved or unknown trailing fields";
    } else if (!memchr(req.pool, 0, sizeof req.pool) || !memchr(req.path, 0, sizeof req.path)) {
        m.error = EINVAL;
        m.message = "pool name or path is not NUL-terminated";
    } else if (req.max_entries && h.op != KV_CTL_OP_CREATE) {
        m.error = EINVAL;
        m.message = "max_entries " + std::to_string(req.max_entries) + " on a request that is not CREATE: expected 0";
    } else if (req.cursor && h.op != KV_CTL_OP_ENTRIES) {
        m.error = EINVAL;
        m.message =
            "cursor " + std::to_string(req.cursor) + " on an op other than ENTRIES: expected 0";
    } else if (req.flags & ~KV_CTL_F_KNOWN) {
        m.error = EINVAL;
        char hex[32];
        snprintf(hex, sizeof hex, "0x%x", unsigned(req.flags & ~KV_CTL_F_KNOWN));
        m.message = std::string("unknown flag bits ") + hex;
    } else {
        m.req = req;
    }
    return m;
}

std::string frame(uint16_t op, uint32_t seq, int error, const std::string &body) {
    kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, op, uint32_t(sizeof(kv_ctl_response) + body.size()), seq};
    kv_ctl_response r{uint32_t(error), uint32_t(body.size()), 0};
    std::string out(reinterpret_cast<const char *>(&h), sizeof h);
    out.append(reinterpret_cast<const char *>(&r), sizeof r);
    out += body;
    return out;
}

bool valid_pool_name(std::string_view n) {
    if (n.empty() || n.size() >= KV_CTL_NAME_MAX || n == "." || n == "..") return false;
    return std::all_of(n.begin(), n.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
               ch == '-' || ch == '.';
    });
}

} // namespace kv::daemon::control
