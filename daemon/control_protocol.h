// SPDX-License-Identifier: MIT
//
// The control protocol (<kvpool/control.h>) as both ends speak it: the table
// of operations, the framing of a message, and the checks each side makes on
// what it receives. kvpoold's ControlServer and kvctl link it, and so do the
// fuzzer and the tests, so that an op's name, who may call it and which
// request fields it reads are written down once.
//
// Pure functions: no I/O, no logging, nothing throws except std::bad_alloc.
// The socket I/O of a blocking client is in control_client.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <kvpool/control.h>
#include <span>
#include <string>
#include <string_view>

namespace kv::control {

// ---- The table of operations ------------------------------------------------

// Who may call an op (control.h, "Authorization"). The daemon decides with
// SO_PEERCRED; uid 0 passes every check.
enum class Access {
    // Anyone who can connect; what the answer holds about a pool depends on
    // whether the peer may read it (PoolReader): the public view otherwise.
    Anyone,
    // Reads a pool's usage, entries or clients: the pool's group or the
    // admin group.
    PoolReader,
    PoolGroup, // changes a pool, or reads every block of it: the pool's group
    Admin,     // CREATE: the daemon's admin group
};

// What an op does with kv_ctl_request.pool.
enum class PoolName {
    Ignored,  // LIST, STATS, VERSION
    Optional, // STATUS: empty means every pool, as LIST
    Required,
};

struct OpInfo {
    uint16_t op;           // KV_CTL_OP_*
    std::string_view name; // in messages, logs and kvctl's verbs
    Access access;
    PoolName pool;
    // Request fields besides pool that the op reads (KV_CTL_F_* bits it
    // honours in flags; the daemon refuses the ones a rule below names).
    uint32_t flags;
    bool uses_size_mode; // CREATE: size, hugepages, numa_node, mode, evict_policy, max_entries
    bool uses_arg;       // EVICT: percent; DETACH: pid; ENTRIES: most rows
    bool uses_path;      // PERSIST, RESTORE
    bool uses_cursor;    // ENTRIES
    // The daemon answers once the op's work is done, which grows with the
    // pool's data: a client should not bound the wait by default.
    bool unbounded;
    // The body ends with a payload of arg bytes (REMOTE_FETCH).
    bool payload = false;
};

// Every op, 1..KV_CTL_OP_MAX, indexed by op - 1.
std::span<const OpInfo> ops();
// nullptr for 0 (KV_CTL_OP_REFUSED answers no request) and past KV_CTL_OP_MAX.
const OpInfo *find_op(uint16_t op);
const OpInfo *find_op(std::string_view name);
// The op's name; "?" for KV_CTL_OP_REFUSED, "unknown" past KV_CTL_OP_MAX.
const char *op_name(uint16_t op);

// ---- Pool names -------------------------------------------------------------

// [A-Za-z0-9_.-]{1,63}, not "." or "..". The first rule a name breaks, in
// this order, so that every caller names the same problem.
enum class NameProblem { None, Empty, TooLong, BadCharacter, Dots };
NameProblem check_pool_name(std::string_view n);
inline bool valid_pool_name(std::string_view n) {
    return check_pool_name(n) == NameProblem::None;
}

// ---- Requests: the client encodes, the daemon decodes -----------------------

// Header + body of one request. req's reserved fields must be zero.
std::string encode_request(uint16_t op, uint32_t seq, const kv_ctl_request &req);
// The same with a payload after the struct (an op whose OpInfo::payload is
// set); req.arg must be payload.size().
std::string encode_request(uint16_t op, uint32_t seq, const kv_ctl_request &req,
                           std::string_view payload);

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
    // not NUL-terminated, max_entries on an op other than CREATE, a cursor
    // on an op other than ENTRIES, unknown flag bits).
    int error = 0;
    std::string message;  // why, when error != 0
    kv_ctl_request req{}; // Request with error == 0: the body's first KV_CTL_REQUEST_SIZE_V1 bytes
    std::string payload;  // Request with error == 0, an op with a payload: its req.arg bytes
};

// Take the first message off a control stream.
Message next_message(std::string_view in);

// ---- Responses: the daemon encodes, the client decodes ----------------------

// The most body bytes one response may carry after its kv_ctl_response.
constexpr size_t kMaxReplyBody = KV_CTL_MAX_BODY - sizeof(kv_ctl_response);

// A response: header (op and seq of the request) + kv_ctl_response + body.
std::string frame(uint16_t op, uint32_t seq, int error, const std::string &body);

// The client's check of a response header against its request (op, seq).
// Empty problem: the header may be trusted, and hdr.length bytes follow;
// refused is then true for the daemon's refusal at accept (op
// KV_CTL_OP_REFUSED, seq 0), which answers no request. socket names the
// peer in the message about a wrong magic.
struct HeaderCheck {
    bool refused = false;
    std::string problem;
};
HeaderCheck check_response_header(const kv_ctl_hdr &hdr, uint16_t op, uint32_t seq,
                                  std::string_view socket);

// The body of a response whose header passed check_response_header: the
// kv_ctl_response, then body_len bytes, which must be all the rest.
// Empty problem: error and text are the daemon's answer.
struct ResponseBody {
    uint32_t error = 0;
    std::string text; // JSON when error == 0, else the daemon's message
    std::string problem;
};
ResponseBody decode_response_body(std::string body);

// printf into a std::string of any length (messages of the protocol layer
// and of its clients).
[[gnu::format(printf, 1, 2)]] std::string strf(const char *fmt, ...);

} // namespace kv::control
