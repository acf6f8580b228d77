// SPDX-License-Identifier: MIT
//
// The control socket's message stream (daemon/control_protocol.h, the
// framing and validation kvpoold's ControlServer runs on every byte a peer
// sends, and the checks kvctl runs on each response).
// Input: byte 0 picks how the stream is cut into reads (1..255 bytes each,
// or 0: all at once); the rest is the stream. The stream is consumed twice,
// as the server does (append what arrived, take every whole message, stop
// at a bad header), once whole and once in reads of that size, and:
//  - both give the same messages (a slow peer gets the same answers);
//  - no message is taken before its header and body have all arrived, a
//    consumed length is exactly header + body, no body over KV_CTL_MAX_BODY
//    is waited for;
//  - an accepted request keeps every promise of <kvpool/control.h>: body of
//    at least KV_CTL_REQUEST_SIZE_V1, zero reserved fields and tail, NUL
//    terminated pool name and path, known flags, a cursor only on ENTRIES;
//  - each answer frames into a response whose sizes add up, and that the
//    client's checks (check_response_header, decode_response_body) accept
//    and read back as sent.
#include "control_protocol.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace ctl = kv::control;

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "fuzz_control: %s\n", what);
    abort();
}

struct Seen {
    int kind, error;
    size_t consumed;
    uint16_t op;
    uint32_t seq;
    std::string message;
    bool operator==(const Seen &) const = default;
};

void check_request(const ctl::Message &m, std::string_view stream) {
    if (m.consumed != sizeof(kv_ctl_hdr) + m.hdr.length) fail("consumed is not header + body");
    if (m.consumed > stream.size()) fail("message taken before its body arrived");
    if (m.hdr.length > KV_CTL_MAX_BODY) fail("body over KV_CTL_MAX_BODY accepted");
    if (m.error == 0) {
        if (m.hdr.length < KV_CTL_REQUEST_SIZE_V1) fail("short body accepted");
        if (!memchr(m.req.pool, 0, sizeof m.req.pool)) fail("pool name not NUL-terminated");
        if (!memchr(m.req.path, 0, sizeof m.req.path)) fail("path not NUL-terminated");
        if (m.req.flags & ~KV_CTL_F_KNOWN) fail("unknown flags accepted");
        for (uint64_t r : m.req.reserved)
            if (r) fail("non-zero reserved field accepted");
        if (m.req.cursor && m.hdr.op != KV_CTL_OP_ENTRIES)
            fail("cursor accepted on an op other than ENTRIES");
        const std::string_view body = stream.substr(sizeof(kv_ctl_hdr), m.hdr.length);
        if (memcmp(&m.req, body.data(), sizeof m.req) != 0)
            fail("request differs from the bytes sent");
        if (!std::all_of(body.begin() + sizeof m.req, body.end(), [](char c) { return c == 0; }))
            fail("non-zero tail accepted");
        (void)ctl::valid_pool_name(reinterpret_cast<const char *>(m.req.pool));
    } else if (m.error != EPROTO && m.error != EINVAL) {
        fail("request error is neither EPROTO nor EINVAL");
    } else if (m.message.empty()) {
        fail("error without a message");
    }
}

void check_frame(const ctl::Message &m) {
    const std::string &body = m.message;
    const std::string f = ctl::frame(m.hdr.op, m.hdr.seq, m.error, body);
    if (f.size() != sizeof(kv_ctl_hdr) + sizeof(kv_ctl_response) + body.size()) fail("frame size");
    kv_ctl_hdr h;
    kv_ctl_response r;
    memcpy(&h, f.data(), sizeof h);
    memcpy(&r, f.data() + sizeof h, sizeof r);
    if (h.magic != KV_CTL_MAGIC || h.version != KV_CTL_VERSION || h.op != m.hdr.op ||
        h.seq != m.hdr.seq)
        fail("frame header");
    if (h.length != sizeof r + body.size() || r.body_len != body.size() ||
        r.error != uint32_t(m.error) || r.reserved != 0)
        fail("frame response");
    if (f.compare(sizeof h + sizeof r, std::string::npos, body) != 0) fail("frame body");
    const ctl::HeaderCheck hc = ctl::check_response_header(h, m.hdr.op, m.hdr.seq, "fuzz");
    if (!hc.problem.empty()) fail("the client refuses a framed response's header");
    const ctl::ResponseBody rb = ctl::decode_response_body(f.substr(sizeof h));
    if (!rb.problem.empty() || rb.error != uint32_t(m.error) || rb.text != body)
        fail("the client reads a framed response back differently");
}

// The server's loop: append each read, then take every whole message.
std::vector<Seen> consume(std::string_view stream, size_t chunk) {
    std::vector<Seen> out;
    std::string in;
    size_t off = 0;
    bool closed = false;
    while (off < stream.size() && !closed) {
        const size_t n = chunk ? std::min(chunk, stream.size() - off) : stream.size();
        in.append(stream.substr(off, n));
        off += n;
        while (in.size() >= sizeof(kv_ctl_hdr)) {
            ctl::Message m = ctl::next_message(in);
            if (m.kind == ctl::Message::Kind::NeedMore) {
                kv_ctl_hdr h;
                memcpy(&h, in.data(), sizeof h);
                if (h.length > KV_CTL_MAX_BODY) fail("waiting for a body over KV_CTL_MAX_BODY");
                if (in.size() >= sizeof h + h.length)
                    fail("NeedMore with the whole message present");
                break;
            }
            if (m.kind == ctl::Message::Kind::BadHeader) {
                if (m.error != EPROTO && m.error != EMSGSIZE) fail("bad header error code");
                if (m.message.empty()) fail("bad header without a message");
                check_frame(m);
                out.push_back({1, m.error, 0, m.hdr.op, m.hdr.seq, m.message});
                closed = true;
                break;
            }
            check_request(m, in);
            check_frame(m);
            out.push_back({2, m.error, m.consumed, m.hdr.op, m.hdr.seq, m.message});
            in.erase(0, m.consumed);
        }
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const size_t chunk = data[0];
    const std::string_view stream(reinterpret_cast<const char *>(data + 1), size - 1);
    const std::vector<Seen> whole = consume(stream, 0);
    if (chunk && consume(stream, chunk) != whole)
        fail("the answers depend on how the stream is cut into reads");
    return 0;
}
