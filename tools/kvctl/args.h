// SPDX-License-Identifier: MIT
//
// kvctl's command line: the verbs and their options, the help text, and the
// kv_ctl_request a command asks for. Every verb is one op of the control
// protocol; its name, whether it takes a pool and how its request is read
// are the protocol's (daemon/control_protocol.h), only the options, the
// synopsis and the help text are kvctl's.
#pragma once

#include "common.h"
#include "control_protocol.h"

#include <cstdint>
#include <cstdio>
#include <kvpool/control.h>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvctl {

struct Option {
    std::string_view name;  // "--size"
    std::string_view value; // placeholder for the help text; empty for a flag
    std::string_view help;
};

struct Verb {
    uint16_t op; // KV_CTL_OP_*: the verb's name and pool argument are the op's
    std::span<const Option> options;
    std::string_view synopsis; // what follows the verb
    std::string_view help;

    std::string_view name() const { return kv::control::find_op(op)->name; }
    kv::control::PoolName pool() const { return kv::control::find_op(op)->pool; }
};

const Verb *find_verb(std::string_view name);
// "list, status, ..., help": for messages naming the verbs.
std::string verb_names();

void print_usage(FILE *out);
void print_verb_usage(const Verb &v, FILE *out);

struct Command {
    std::string socket = kDefaultSocket;
    std::string socket_source = "the default socket path"; // for messages about a bad path
    bool json = false;
    std::optional<double> timeout_s;
    bool help = false;
    bool help_verb = false; // "kvctl help [VERB]"
    const Verb *verb = nullptr;
    std::vector<std::string> positional;
    std::vector<std::pair<const Option *, std::string>> options; // value "" for a flag

    const std::string *option(std::string_view name) const {
        for (const auto &[o, value] : options)
            if (o->name == name) return &value;
        return nullptr;
    }
};

Failure usage_error(const Command &c, std::string message);

// Whether a command line asks for --json, known even when it fails to
// parse: the parser's answer up to the bad argument, else a bare --json
// among the arguments after it (before "--"), so that the failure is
// reported as JSON all the same.
struct JsonWanted {
    bool json = false;
    int next = 1;              // the first argument the parser did not examine
    bool options_done = false; // "--" was seen

    bool in_rest(int argc, char **argv) const {
        if (json) return true;
        for (int i = next; i < argc && !options_done; i++) {
            const std::string_view a = argv[i];
            if (a == "--") break;
            if (a == "--json") return true;
        }
        return false;
    }
};

Result<Command> parse_command(int argc, char **argv, JsonWanted &wanted);

// The socket path fits a sockaddr_un.
Result<void> check_socket_path(const Command &c);

// The request for a parsed command; every verb option is converted and
// range-checked here so that a bad one is a usage error before connecting.
Result<kv_ctl_request> build_request(const Command &c);

} // namespace kvctl
