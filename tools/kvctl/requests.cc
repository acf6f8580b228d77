// SPDX-License-Identifier: MIT
#include "requests.h"

#include "output.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <unistd.h>
#include <utility>

namespace kvctl {

namespace {

double timeout_for(const Command &c) {
    if (c.timeout_s) return *c.timeout_s;
    // persist, restore, verify: their time grows with the pool's data.
    if (kv::control::find_op(c.verb->op)->unbounded) return 0;
    return kDefaultTimeout;
}

// The client's error as kvctl reports it: failing to connect exits 3, with
// a hint that depends on why; anything after that is a protocol error.
Failure client_failure(const kv::control::ClientError &e, double timeout_s) {
    using Stage = kv::control::ClientError::Stage;
    switch (e.stage) {
    case Stage::Socket:
        return Failure{kExitConnect, e.message};
    case Stage::Connect: {
        std::string msg = e.message;
        if (e.sys_errno == EACCES || e.sys_errno == EPERM)
            msg += " (the socket's group and mode decide who may connect)";
        else if (e.sys_errno == EAGAIN)
            msg += strf(" (kvpoold did not accept the connection within %g s)", timeout_s);
        else
            msg += " (is kvpoold running? try 'systemctl start kvpoold', or give --socket)";
        return Failure{kExitConnect, msg};
    }
    case Stage::Exchange:
        break;
    }
    return Failure{kExitProtocol, e.timed_out
                                      ? e.message + "; raise --timeout or use 0 to wait forever"
                                      : e.message};
}

// One connection to kvpoold, for one request or several in turn (entries
// pages through a pool on one connection). Each request gets the whole
// --timeout.
class Session {
  public:
    static Result<Session> open(const Command &c) {
        const double timeout_s = timeout_for(c);
        auto client = kv::control::Client::connect(c.socket, timeout_s);
        if (!client) return std::unexpected(client_failure(client.error(), timeout_s));
        return Session(c, std::move(*client), timeout_s);
    }

    Result<Response> request(const kv_ctl_request &req) {
        auto r = client_.request(c_->verb->op, req);
        if (!r) return std::unexpected(client_failure(r.error(), timeout_s_));
        return std::move(*r);
    }

  private:
    Session(const Command &c, kv::control::Client client, double timeout_s)
        : c_(&c), client_(std::move(client)), timeout_s_(timeout_s) {}

    const Command *c_;
    kv::control::Client client_;
    double timeout_s_;
};

int exit_for_errno(uint32_t e) {
    switch (e) {
    case EPERM:
    case EACCES:
        return kExitPerm;
    case ENOENT:
        return kExitNoPool;
    case EEXIST:
        return kExitExists;
    case ESRCH:
        return kExitNotAttached;
    case EPROTO: // the daemon could not make sense of what kvctl sent
        return kExitProtocol;
    case EUSERS: // refused at accept: too many connections (control.h, KV_CTL_OP_REFUSED)
        return kExitConnect;
    default:
        return kExitFailed;
    }
}

} // namespace

Result<Response> transact(const Command &c, const kv_ctl_request &req) {
    auto session = Session::open(c);
    if (!session) return std::unexpected(session.error());
    return session->request(req);
}

Failure daemon_failure(const std::string &where, const Response &resp) {
    std::string_view body = resp.body;
    // Trailing newlines, and a NUL should the daemon send a C string's.
    constexpr std::string_view kTrim(" \t\r\n\0", 5);
    while (!body.empty() && kTrim.find(body.back()) != std::string_view::npos)
        body.remove_suffix(1);
    std::string msg = sanitize(body);
    if (msg.empty()) msg = std::strerror(int(resp.error));
    return Failure{exit_for_errno(resp.error), where + ": " + msg, {}, int(resp.error)};
}

Result<int> list_entries(const Command &c, kv_ctl_request req) {
    const uint64_t limit = req.arg; // 0: every row
    auto session = Session::open(c);
    if (!session) return std::unexpected(session.error());
    const std::string where = "entries " + c.positional[0];
    const EntryTable table;
    uint64_t shown = 0, cursor = 0;
    bool begun = false, truncated = false, old_daemon = false;
    auto stop = [&](Failure f) -> Result<int> {
        if (!begun || !c.json) return std::unexpected(std::move(f));
        std::printf("\n  ],\n  \"error\": %s\n}\n",
                    error_json(f).dump(-1, ' ', false, json::error_handler_t::replace).c_str());
        std::fflush(stdout);
        std::fprintf(stderr, "kvctl: %s\n", f.text().c_str());
        return f.exit;
    };
    for (;;) {
        req.cursor = cursor;
        req.arg = limit ? std::min<uint64_t>(limit - shown, KV_CTL_ENTRIES_MAX_ROWS) : 0;
        auto resp = session->request(req);
        if (!resp) return stop(resp.error());
        if (resp->error != 0) return stop(daemon_failure(where, *resp));
        json doc = json::parse(resp->body, nullptr, false);
        if (doc.is_discarded() || !doc.is_object()) return stop(malformed(c, "not a JSON object"));
        auto rows = array_field(c, doc, "entries");
        if (!rows) return stop(rows.error());
        if (!begun) {
            begun = true;
            if (c.json)
                std::printf("{\n  \"pool\": %s,\n  \"entry_slots\": %s,\n  \"entries\": [",
                            json(text(doc, "pool")).dump().c_str(),
                            count(doc, "entry_slots").c_str());
            else
                table.header();
        }
        for (const json &e : **rows) {
            if (limit && shown >= limit) break;
            if (c.json)
                std::printf("%s\n    %s", shown ? "," : "",
                            e.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
            else
                table.add(e);
            shown++;
        }
        std::fflush(stdout);
        const json *next = field(doc, "next_cursor");
        if (!next) { // a daemon that predates paging sent everything it would
            old_daemon = truncated = get_bool(doc, "truncated").value_or(false);
            break;
        }
        if (next->is_null()) break;
        const auto n = get_u64(doc, "next_cursor");
        if (!n || *n <= cursor)
            return stop(
                malformed(c, strf("next_cursor %s after cursor %llu: expected a larger index",
                                  any_value(*next).c_str(), (unsigned long long)cursor)));
        if (limit && shown >= limit) {
            truncated = true;
            break;
        }
        cursor = *n;
    }
    if (c.json) {
        std::printf("%s  ],\n  \"count\": %llu,\n  \"truncated\": %s\n}\n", shown ? "\n" : "",
                    (unsigned long long)shown, truncated ? "true" : "false");
    } else if (truncated) {
        std::fflush(stdout); // after the table when both go to one terminal or file
        if (old_daemon)
            std::fprintf(stderr,
                         "kvctl: showing the %llu entries of kvpoold's first page; this kvpoold "
                         "predates paged listings\n",
                         (unsigned long long)shown);
        else
            std::fprintf(stderr, "kvctl: showing the first %llu entries (--limit); more follow\n",
                         (unsigned long long)shown);
    }
    return kExitOk;
}

void show_progress(const Command &c, const std::atomic<bool> &finished) {
    const Verb *status = find_verb("status");
    if (!status) return;
    Command sc = c;
    sc.verb = status;
    sc.timeout_s = 5;
    auto req = build_request(sc);
    if (!req) return;
    const bool tty = isatty(STDERR_FILENO);
    bool printed = false;
    for (int tick = 1; !finished.load(); tick++) {
        for (int i = 0; i < 10 && !finished.load(); i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (finished.load()) break;
        if (!tty && tick % 10 != 0) continue;
        auto resp = transact(sc, *req);
        if (!resp || resp->error) continue;
        json doc = json::parse(resp->body, nullptr, false);
        if (doc.is_discarded()) continue;
        const json *snap = field(doc, "snapshot");
        const json *run = snap ? field(*snap, "running") : nullptr;
        if (!run || !run->is_object()) continue;
        const auto done = get_u64(*run, "done_bytes"), total = get_u64(*run, "total_bytes");
        const auto secs = get_double(*run, "seconds");
        std::string line = strf("%s %s: %s of %s", std::string(c.verb->name()).c_str(),
                                c.positional.empty() ? "" : c.positional[0].c_str(),
                                size(done).c_str(), size(total).c_str());
        if (done && secs && *secs > 0)
            line += strf(" (%.2f GiB/s)", double(*done) / *secs / double(1ULL << 30));
        std::fprintf(stderr, tty ? "\r%s\033[K" : "%s\n", line.c_str());
        printed = true;
    }
    if (printed && tty) std::fprintf(stderr, "\n");
}

} // namespace kvctl
