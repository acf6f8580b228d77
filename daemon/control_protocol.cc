// SPDX-License-Identifier: MIT
#include "control_protocol.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace kv::control {

namespace {

// One row per op, in op order (find_op indexes it). The flags column lists
// the KV_CTL_F_* bits an op honours; control.h documents each.
constexpr OpInfo kOps[] = {
    // op                name       access             pool                flags
    //   size/mode arg    path   cursor unbounded
    {KV_CTL_OP_VERSION, "version", Access::Anyone, PoolName::Ignored, 0, false, false, false, false,
     false},
    {KV_CTL_OP_LIST, "list", Access::Anyone, PoolName::Ignored, 0, false, false, false, false,
     false},
    {KV_CTL_OP_STATUS, "status", Access::Anyone, PoolName::Optional, 0, false, false, false, false,
     false},
    {KV_CTL_OP_CREATE, "create", Access::Admin, PoolName::Required,
     KV_CTL_F_PREFAULT | KV_CTL_F_POLICY | KV_CTL_F_NO_PERSIST | KV_CTL_F_SECURE_ERASE, true, false,
     false, false, false},
    {KV_CTL_OP_DESTROY, "destroy", Access::PoolGroup, PoolName::Required, 0, false, false, false,
     false, false},
    {KV_CTL_OP_ENTRIES, "entries", Access::PoolReader, PoolName::Required, 0, false, true, false,
     true, false},
    {KV_CTL_OP_HEALTH, "health", Access::PoolReader, PoolName::Required, 0, false, false, false,
     false, false},
    {KV_CTL_OP_EVICT, "evict", Access::PoolGroup, PoolName::Required, 0, false, true, false, false,
     false},
    {KV_CTL_OP_PERSIST, "persist", Access::PoolGroup, PoolName::Required, 0, false, false, true,
     false, true},
    {KV_CTL_OP_RESTORE, "restore", Access::PoolGroup, PoolName::Required, KV_CTL_F_FORCE, false,
     false, true, false, true},
    {KV_CTL_OP_CLIENTS, "clients", Access::PoolReader, PoolName::Required, 0, false, false, false,
     false, false},
    {KV_CTL_OP_DETACH, "detach", Access::PoolGroup, PoolName::Required, KV_CTL_F_KILL, false, true,
     false, false, false},
    {KV_CTL_OP_STATS, "stats", Access::Anyone, PoolName::Ignored, 0, false, false, false, false,
     false},
    // VERIFY changes nothing without KV_CTL_F_REMOVE, but it reads every
    // block: the pool's group, as for a change.
    {KV_CTL_OP_VERIFY, "verify", Access::PoolGroup, PoolName::Required, KV_CTL_F_REMOVE, false,
     false, false, false, true},
    // REMOTE_FETCH writes blocks into the pool: the pool's group. Its wait
    // is bounded by the payload's timeout_ms, not by the pool's size.
    {KV_CTL_OP_REMOTE_FETCH, "remote fetch", Access::PoolGroup, PoolName::Required, 0, false, true,
     false, false, false, true},
    {KV_CTL_OP_REMOTE_STATUS, "remote status", Access::PoolReader, PoolName::Optional, 0, false,
     false, false, false, false},
};
static_assert(std::size(kOps) == KV_CTL_OP_MAX, "a row for every op");

constexpr bool ops_in_order() {
    for (size_t i = 0; i < std::size(kOps); i++)
        if (kOps[i].op != i + 1) return false;
    return true;
}
static_assert(ops_in_order(), "kOps is indexed by op - 1");

} // namespace

std::span<const OpInfo> ops() {
    return kOps;
}

const OpInfo *find_op(uint16_t op) {
    return op >= 1 && op <= KV_CTL_OP_MAX ? &kOps[op - 1] : nullptr;
}

const OpInfo *find_op(std::string_view name) {
    for (const OpInfo &o : kOps)
        if (o.name == name) return &o;
    return nullptr;
}

const char *op_name(uint16_t op) {
    if (op == KV_CTL_OP_REFUSED) return "?";
    const OpInfo *o = find_op(op);
    return o ? o->name.data() : "unknown"; // the names are literals: NUL-terminated
}

NameProblem check_pool_name(std::string_view n) {
    if (n.empty()) return NameProblem::Empty;
    if (n.size() >= KV_CTL_NAME_MAX) return NameProblem::TooLong;
    const bool chars_ok = std::all_of(n.begin(), n.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '_' || ch == '-' || ch == '.';
    });
    if (!chars_ok) return NameProblem::BadCharacter;
    if (n == "." || n == "..") return NameProblem::Dots;
    return NameProblem::None;
}

std::string encode_request(uint16_t op, uint32_t seq, const kv_ctl_request &req) {
    return encode_request(op, seq, req, {});
}

std::string encode_request(uint16_t op, uint32_t seq, const kv_ctl_request &req,
                           std::string_view payload) {
    const kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, op, uint32_t(sizeof req + payload.size()),
                       seq};
    std::string out(reinterpret_cast<const char *>(&h), sizeof h);
    out.append(reinterpret_cast<const char *>(&req), sizeof req);
    out.append(payload);
    return out;
}

Message next_message(std::string_view in) {
    Message m;
    if (in.size() < sizeof(kv_ctl_hdr)) return m;
    memcpy(&m.hdr, in.data(), sizeof m.hdr);
    const kv_ctl_hdr &h = m.hdr;
    if (h.magic != KV_CTL_MAGIC) {
        char b[128];
        snprintf(b, sizeof b, "bad magic 0x%08x: expected 0x%08x (not a kvpool control client?)",
                 h.magic, KV_CTL_MAGIC);
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
    std::string_view body = in.substr(sizeof h, h.length);
    if (body.size() < KV_CTL_REQUEST_SIZE_V1) {
        m.error = EPROTO;
        m.message = "request body of " + std::to_string(body.size()) +
                    " bytes: expected at least " + std::to_string(KV_CTL_REQUEST_SIZE_V1);
        return m;
    }
    // An op with a payload: its last arg bytes (arg is in every version's struct).
    std::string_view payload;
    if (const OpInfo *pi = find_op(h.op); pi && pi->payload) {
        uint64_t arg;
        memcpy(&arg, body.data() + offsetof(kv_ctl_request, arg), sizeof arg);
        if (arg > body.size() - KV_CTL_REQUEST_SIZE_V1) {
            m.error = EINVAL;
            m.message = "payload of " + std::to_string(arg) + " bytes (arg) in a body of " +
                        std::to_string(body.size()) + ": expected at most " +
                        std::to_string(body.size() - KV_CTL_REQUEST_SIZE_V1);
            return m;
        }
        payload = body.substr(body.size() - arg);
        body.remove_suffix(arg);
    }
    // A newer client's larger struct: the tail must be zero (we cannot honour it).
    kv_ctl_request req;
    memcpy(&req, body.data(), sizeof req);
    const bool tail_zero =
        std::all_of(body.begin() + sizeof req, body.end(), [](char ch) { return ch == 0; });
    const bool reserved_zero = std::all_of(std::begin(req.reserved), std::end(req.reserved),
                                           [](uint64_t v) { return v == 0; });
    const OpInfo *info = find_op(h.op); // unknown ops are refused later, by the dispatcher
    if (!tail_zero || !reserved_zero) {
        m.error = EINVAL;
        m.message = "request has non-zero reserved or unknown trailing fields";
    } else if (!memchr(req.pool, 0, sizeof req.pool) || !memchr(req.path, 0, sizeof req.path)) {
        m.error = EINVAL;
        m.message = "pool name or path is not NUL-terminated";
    } else if (req.max_entries && !(info && info->uses_size_mode)) {
        m.error = EINVAL;
        m.message = "max_entries " + std::to_string(req.max_entries) +
                    " on a request that is not CREATE: expected 0";
    } else if (req.cursor && !(info && info->uses_cursor)) {
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
        m.payload = payload;
    }
    return m;
}

std::string frame(uint16_t op, uint32_t seq, int error, const std::string &body) {
    kv_ctl_hdr h{KV_CTL_MAGIC, KV_CTL_VERSION, op, uint32_t(sizeof(kv_ctl_response) + body.size()),
                 seq};
    kv_ctl_response r{uint32_t(error), uint32_t(body.size()), 0};
    std::string out(reinterpret_cast<const char *>(&h), sizeof h);
    out.append(reinterpret_cast<const char *>(&r), sizeof r);
    out += body;
    return out;
}

HeaderCheck check_response_header(const kv_ctl_hdr &hdr, uint16_t op, uint32_t seq,
                                  std::string_view socket) {
    HeaderCheck c;
    c.refused = hdr.op == KV_CTL_OP_REFUSED && hdr.seq == 0;
    if (hdr.magic != KV_CTL_MAGIC)
        c.problem = strf("bad response magic 0x%08x (expected 0x%08x): is %.*s kvpoold's control "
                         "socket?",
                         hdr.magic, KV_CTL_MAGIC, int(socket.size()), socket.data());
    else if (hdr.version != KV_CTL_VERSION)
        c.problem = strf("response has protocol version %u (kvctl speaks %u)",
                         unsigned(hdr.version), unsigned(KV_CTL_VERSION));
    else if (hdr.op != op && !c.refused)
        c.problem = strf("response is for op %u (expected %u, the request's op)", unsigned(hdr.op),
                         unsigned(op));
    else if (hdr.seq != seq && !c.refused)
        c.problem = strf("response seq %u (expected %u, the request's seq)", hdr.seq, seq);
    else if (hdr.length > KV_CTL_MAX_BODY)
        c.problem = strf("response length %u (expected at most %u, KV_CTL_MAX_BODY)", hdr.length,
                         KV_CTL_MAX_BODY);
    else if (hdr.length < sizeof(kv_ctl_response))
        c.problem = strf("response length %u (expected at least %zu, the size of "
                         "struct kv_ctl_response)",
                         hdr.length, sizeof(kv_ctl_response));
    return c;
}

ResponseBody decode_response_body(std::string body) {
    ResponseBody r;
    kv_ctl_response resp;
    if (body.size() < sizeof resp) {
        r.problem = strf("response length %zu (expected at least %zu, the size of "
                         "struct kv_ctl_response)",
                         body.size(), sizeof resp);
        return r;
    }
    std::memcpy(&resp, body.data(), sizeof resp);
    // reserved is not checked: a later version may use it for something a
    // version-1 client can ignore.
    if (uint64_t(resp.body_len) + sizeof resp != body.size()) {
        r.problem = strf("response body_len %u does not match its length %zu "
                         "(expected body_len = length - %zu)",
                         resp.body_len, body.size(), sizeof resp);
        return r;
    }
    body.erase(0, sizeof resp);
    r.error = resp.error;
    r.text = std::move(body);
    return r;
}

std::string strf(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return {};
    if (size_t(n) < sizeof buf) return std::string(buf, size_t(n));
    std::string s(size_t(n), '\0');
    va_start(ap, fmt);
    std::vsnprintf(s.data(), s.size() + 1, fmt, ap);
    va_end(ap);
    return s;
}

} // namespace kv::control
