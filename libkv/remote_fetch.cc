// SPDX-License-Identifier: MIT
//
// kv_remote_fetch: one REMOTE_FETCH request on kvpoold's control socket,
// framed and checked by the daemon's own protocol code (control_protocol.h,
// control_client.h), not a copy of it.
#include "control_client.h"
#include "control_protocol.h"
#include "detail.h"

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <kv/kv.h>
#include <kvpool/control.h>
#include <string>
#include <string_view>
#include <unistd.h>

namespace {

constexpr const char *kDefaultSocket = "/run/kvpool/control";
constexpr uint32_t kDefaultTimeoutMs = 10000;
// Beyond timeout_ms: kvpoold's own Redis timeout for the call under way,
// and the trip through its loop.
constexpr double kSlackSeconds = 70.0;

int fail(char *errbuf, size_t errlen, int code, const std::string &msg) {
    if (errbuf && errlen) std::snprintf(errbuf, errlen, "%s", msg.c_str());
    return code;
}

// The value of "name": N in the daemon's flat JSON answer (control.h,
// REMOTE_FETCH: keys are unique and values of these names are integers).
bool json_u64(std::string_view body, std::string_view name, uint64_t *out) {
    // Appended piecewise: g++ 12 at -O3 warns (-Wrestrict) about the
    // inlined operator+ chain on a string_view's copy.
    std::string pat;
    pat.reserve(name.size() + 3);
    pat += '"';
    pat += name;
    pat += "\":";
    const size_t at = body.find(pat);
    if (at == std::string_view::npos) return false;
    const char *b = body.data() + at + pat.size();
    const char *e = body.data() + body.size();
    while (b < e && *b == ' ')
        b++;
    auto [p, ec] = std::from_chars(b, e, *out);
    return ec == std::errc() && p != b;
}

// The pool's name as kvpoold serves it: the name of its file, found as the
// file mapped at the region's base (/proc/self/maps; libkv keeps no path,
// and may have closed the descriptor).
std::string name_of(kv_pool *pool) {
    std::FILE *f = std::fopen("/proc/self/maps", "re");
    if (!f) return {};
    char line[4352];
    std::string found;
    const auto base = reinterpret_cast<uintptr_t>(pool->base);
    while (std::fgets(line, sizeof line, f)) {
        char *end = nullptr;
        const unsigned long long start = std::strtoull(line, &end, 16);
        if (start != base || !end || *end != '-') continue;
        std::string_view l(line);
        while (!l.empty() && (l.back() == '\n' || l.back() == ' '))
            l.remove_suffix(1);
        const size_t slash = l.find('/');
        if (slash == std::string_view::npos || l.ends_with(" (deleted)")) break;
        found = std::string(l.substr(l.rfind('/') + 1));
        break;
    }
    std::fclose(f);
    return found;
}

} // namespace

extern "C" int kv_remote_fetch(kv_pool *pool, const char *control_socket, const char *pool_name,
                               uint32_t ns, const kv_key *keys, size_t n, size_t first,
                               uint32_t timeout_ms, kv_remote_fetch_result *out, char *errbuf,
                               size_t errlen) noexcept {
    try {
        if (errbuf && errlen) errbuf[0] = 0;
        if (!pool || !keys) return fail(errbuf, errlen, -EINVAL, "pool and keys are required");
        if (n == 0 || n > KV_CTL_REMOTE_FETCH_MAX_KEYS)
            return fail(errbuf, errlen, -EINVAL,
                        "n " + std::to_string(n) + ": expected 1.." +
                            std::to_string(KV_CTL_REMOTE_FETCH_MAX_KEYS));
        if (first >= n)
            return fail(errbuf, errlen, -EINVAL,
                        "first " + std::to_string(first) + ": expected below n (" +
                            std::to_string(n) + ")");
        if (out && out->struct_size < sizeof(kv_remote_fetch_result))
            return fail(errbuf, errlen, -EINVAL,
                        "out->struct_size " + std::to_string(out->struct_size) +
                            ": expected at least " +
                            std::to_string(sizeof(kv_remote_fetch_result)));
        const std::string name = pool_name ? std::string(pool_name) : name_of(pool);
        if (!kv::control::valid_pool_name(name))
            return fail(errbuf, errlen, -EINVAL,
                        pool_name ? "pool name \"" + name + "\": not a valid pool name"
                                  : std::string("cannot tell the pool's name from its file; pass "
                                                "pool_name"));
        const std::string socket = control_socket ? control_socket : kDefaultSocket;
        if (socket.empty() || socket.size() >= 108)
            return fail(errbuf, errlen, -EINVAL,
                        "control socket \"" + socket + "\": expected a unix socket path");

        kv_ctl_remote_fetch f{};
        const kv_region_header *h = pool->hdr;
        f.pool_id_lo = h->pool_id_lo;
        f.pool_id_hi = h->pool_id_hi;
        f.ns = ns;
        f.n_keys = uint32_t(n);
        f.first = uint32_t(first);
        f.timeout_ms = timeout_ms;
        std::string payload(reinterpret_cast<const char *>(&f), sizeof f);
        payload.append(reinterpret_cast<const char *>(keys), n * sizeof(kv_key));

        kv_ctl_request req;
        std::memset(&req, 0, sizeof req);
        std::memcpy(req.pool, name.data(), name.size());
        req.arg = payload.size();

        const double wait_s = double(timeout_ms ? timeout_ms : kDefaultTimeoutMs) / 1000.0;
        auto client = kv::control::Client::connect(socket, wait_s + kSlackSeconds);
        if (!client) {
            const int e = client.error().sys_errno ? client.error().sys_errno : EIO;
            return fail(errbuf, errlen, -e, client.error().message);
        }
        auto reply = client->request(KV_CTL_OP_REMOTE_FETCH, req, payload);
        if (!reply)
            return fail(errbuf, errlen, reply.error().timed_out ? -ETIMEDOUT : -EPROTO,
                        reply.error().message);
        if (reply->error)
            return fail(errbuf, errlen, -int(reply->error), "kvpoold: " + reply->body);

        uint64_t committed = 0;
        if (!json_u64(reply->body, "committed", &committed) || committed > n - first)
            return fail(errbuf, errlen, -EPROTO,
                        "kvpoold's remote fetch answer has no valid \"committed\": " +
                            reply->body.substr(0, 200));
        if (out) {
            uint64_t v = 0;
            const uint32_t size = out->struct_size;
            std::memset(out, 0, sizeof *out);
            out->struct_size = size;
            out->committed = uint32_t(committed);
            auto take = [&](const char *k) { return json_u64(reply->body, k, &v) ? v : 0; };
            out->present = uint32_t(take("present"));
            out->fetched = uint32_t(take("fetched"));
            out->missing = uint32_t(take("missing"));
            out->rejected = uint32_t(take("rejected"));
            out->errors = uint32_t(take("errors"));
            out->fetched_bytes = take("fetched_bytes");
        }
        return int(committed);
    } catch (const std::exception &e) { // std::bad_alloc
        return fail(errbuf, errlen, -ENOMEM, e.what());
    }
}
