// SPDX-License-Identifier: MIT
//
// kvctl: the command-line client of kvpoold's control socket
// (uapi/kvpool/control.h).
//
// One run sends one request and reads one response (entries: one page
// after another on one connection). Nothing the daemon sends is trusted:
// the control client (daemon/control_client.h) checks each response's
// header and sizes before reading it, the JSON is parsed inside a try block,
// and every field is read through accessors that show "-" for a missing or
// mistyped key (output.h). Every wait is bounded by --timeout, so a stuck
// daemon cannot hang kvctl either.
//
// Exit codes are part of the interface (scripts test them) and are listed in
// the --help text.
#include "args.h"
#include "common.h"
#include "events.h"
#include "output.h"
#include "requests.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <kvpool/control.h>
#include <thread>

#ifndef KVCTL_VERSION
#define KVCTL_VERSION "0.1.0" // meson can pass the project version with -DKVCTL_VERSION
#endif

namespace kvctl {
namespace {

Result<int> run(const Command &c) {
    if (c.help_verb) {
        if (c.positional.empty()) {
            print_usage(stdout);
            return kExitOk;
        }
        const Verb *v = c.positional.size() == 1 ? find_verb(c.positional[0])
                        : c.positional.size() == 2
                            ? find_verb(c.positional[0] + " " + c.positional[1])
                            : nullptr;
        if (!v)
            return std::unexpected(usage_error(c, "help: unknown verb " + quote(c.positional[0]) +
                                                      "; expected one of " + verb_names()));
        print_verb_usage(*v, stdout);
        return kExitOk;
    }
    if (c.help) {
        if (c.verb)
            print_verb_usage(*c.verb, stdout);
        else
            print_usage(stdout);
        return kExitOk;
    }
    if (!c.verb)
        return std::unexpected(usage_error(c, "missing verb; expected one of " + verb_names()));

    auto req = build_request(c);
    if (!req) return std::unexpected(req.error());
    if (auto r = check_socket_path(c); !r) return std::unexpected(r.error());

    if (c.verb->op == KV_CTL_OP_VERSION && !c.json)
        std::printf("kvctl %s (protocol %u)\n", KVCTL_VERSION, unsigned(KV_CTL_VERSION));

    if (c.verb->op == KV_CTL_OP_ENTRIES) return list_entries(c, *req);

    // A persist or restore can run for minutes: show its progress from the
    // pool's status (a second connection) while the answer is pending.
    std::atomic<bool> finished{false};
    std::thread progress;
    if ((c.verb->op == KV_CTL_OP_PERSIST || c.verb->op == KV_CTL_OP_RESTORE) && !c.json)
        progress = std::thread([&c, &finished] { show_progress(c, finished); });
    auto resp = transact(c, *req);
    finished.store(true);
    if (progress.joinable()) progress.join();
    if (!resp) return std::unexpected(resp.error());

    const std::string where =
        std::string(c.verb->name()) + (c.positional.empty() ? "" : " " + c.positional[0]);
    if (resp->error != 0) return std::unexpected(daemon_failure(where, *resp));

    json doc;
    try {
        doc = json::parse(resp->body);
    } catch (const json::exception &e) {
        return std::unexpected(malformed(c, std::string("not JSON: ") + e.what()));
    }
    if (c.json) {
        std::printf("%s\n", doc.dump(2, ' ', false, json::error_handler_t::replace).c_str());
        // health and restore keep their exit status: scripts test it with or without --json.
        if (c.verb->op == KV_CTL_OP_HEALTH && get_bool(doc, "healthy") == false) return kExitFailed;
        if (c.verb->op == KV_CTL_OP_VERIFY && get_u64(doc, "bad_count").value_or(0))
            return kExitFailed;
        return partial_restore(c, doc);
    }
    auto code = render(c, doc);
    if (!code || *code != kExitOk) return code;
    return partial_restore(c, doc);
}

} // namespace
} // namespace kvctl

int main(int argc, char **argv) {
    using namespace kvctl;
    int code;
    JsonWanted wanted;
    bool as_json = false;
    try {
        // events tail is no control op: it talks to the pool's event sockets.
        if (is_events_command(argc, argv)) return events_main(argc, argv);
        auto cmd = parse_command(argc, argv, wanted);
        as_json = cmd ? cmd->json : wanted.in_rest(argc, argv);
        auto r = cmd ? run(*cmd) : Result<int>(std::unexpected(cmd.error()));
        code = r ? *r : report(r.error(), as_json);
    } catch (const nlohmann::json::exception &e) {
        // Accessors do not throw; this is a last line against a response kvctl misread.
        code = report(
            Failure{kExitProtocol, std::string("malformed response from kvpoold: ") + e.what()},
            as_json);
    } catch (const std::exception &e) {
        code = report(Failure{kExitFailed, e.what()}, as_json);
    }
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
        std::fprintf(stderr, "kvctl: writing the output: %s\n", std::strerror(errno));
        if (code == kExitOk) code = kExitFailed;
    }
    return code;
}
