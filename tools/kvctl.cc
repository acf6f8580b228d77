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
// mistyped key. Every wait is bounded by --timeout, so a stuck daemon cannot
// hang kvctl either.
//
// Exit codes are part of the interface (scripts test them) and are listed in
// the --help text.
#include "control_client.h"
#include "control_protocol.h"
#include "units.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <initializer_list>
#include <kv/kv.h>
#include <kvpool/control.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <atomic>
#include <string_view>
#include <sys/un.h>
#include <unistd.h>
#include <utility>
#include <vector>

#ifndef KVCTL_VERSION
#define KVCTL_VERSION "0.1.0" // meson can pass the project version with -DKVCTL_VERSION
#endif

namespace {

using kv::detail::format_size;
// Not a using-declaration: ADL would find std::quoted for std::string arguments.
std::string quote(std::string_view s) {
    return kv::detail::quoted(s);
}
// ordered_json keeps the daemon's key order, so --json prints the document as sent.
using json = nlohmann::ordered_json;

constexpr const char *kDefaultSocket = "/run/kvpool/control";
constexpr double kDefaultTimeout = 30.0;
constexpr double kMaxTimeout = 365.0 * 86400.0;
constexpr const char *kNone = "-"; // shown for a key the daemon did not send

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

[[gnu::format(printf, 1, 2)]] std::string strf(const char *fmt, ...) {
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

// ---- The verbs -------------------------------------------------------------

using kv::control::PoolName;

struct Option {
    std::string_view name;  // "--size"
    std::string_view value; // placeholder for the help text; empty for a flag
    std::string_view help;
};

// A verb is one op of the control protocol: its name and pool argument are
// the op's (daemon/control_protocol.h); its options and help are kvctl's.
struct Verb {
    uint16_t op;
    std::span<const Option> options;
    std::string_view synopsis; // what follows the verb
    std::string_view help;

    std::string_view name() const { return kv::control::find_op(op)->name; }
    PoolName pool() const { return kv::control::find_op(op)->pool; }
};

constexpr std::span<const Option> kNoOptions;
constexpr Option kCreateOptions[] = {
    {"--size", "SIZE",
     "bytes, or with a binary K, M, G or T suffix: 512M, 16G, 1.5G (a fraction is rounded down "
     "to whole bytes) (required)"},
    {"--hugepages", "MODE", "require, prefer (default) or never"},
    {"--numa", "NODE", "a node number, local (the daemon's node) or none (default)"},
    {"--mode", "MODE", "octal mode of the pool file (default 0660)"},
    {"--prefault", "", "fault every page in at creation"},
    {"--policy", "POLICY", "eviction policy: prefix (default), lru, lfu, fifo, priority or clock"},
    {"--no-persist", "",
     "do not persist its blocks at stop nor restore them at start (the pool is kept)"},
    {"--max-entries", "N", "at most N entry slots, 64.. (default: capacity / 16 KiB)"},
};
constexpr Option kEntriesOptions[] = {
    {"--limit", "N", "show at most N rows (default: every entry; pages of up to 2048 rows)"},
};
constexpr Option kEvictOptions[] = {
    {"--percent", "N",
     "percent of the pool's unpinned bytes, 0..100 (0: evict nothing) (required)"},
};
constexpr Option kSnapshotOptions[] = {
    {"--path", "FILE",
     "snapshot file, opened by kvpoold: use an absolute path (default: the pool's)"},
};
constexpr Option kRestoreOptions[] = {
    {"--path", "FILE",
     "snapshot file, opened by kvpoold: use an absolute path (default: the pool's)"},
    {"--force", "", "take a snapshot written from another pool (root only)"},
};
constexpr Option kVerifyOptions[] = {
    {"--remove", "", "remove each block that fails its checksum"},
};
constexpr Option kDetachOptions[] = {
    {"--pid", "PID", "the client's process id (required)"},
    {"--kill", "", "send SIGKILL first if the process is alive"},
};

constexpr Verb kVerbs[] = {
    {KV_CTL_OP_LIST, kNoOptions, "", "Show every pool as a table."},
    {KV_CTL_OP_STATUS, kNoOptions, "[POOL]",
     "Show one pool in detail, or every pool as list does."},
    {KV_CTL_OP_CREATE, kCreateOptions,
     "POOL --size SIZE [--hugepages MODE] [--numa NODE] [--mode MODE] [--prefault] [--policy "
     "POLICY] "
     "[--no-persist] [--max-entries N]",
     "Create a pool (needs uid 0 or the daemon's admin group). kvpoold keeps it across restarts, "
     "and persists "
     "its blocks at stop and restores them at start unless --no-persist."},
    {KV_CTL_OP_DESTROY, kNoOptions, "POOL",
     "Remove a pool (attached processes keep their mapping)."},
    {KV_CTL_OP_ENTRIES, kEntriesOptions, "POOL [--limit N]",
     "List a pool's entries, page by page as they arrive."},
    {KV_CTL_OP_HEALTH, kNoOptions, "POOL",
     "Check a pool's tables (not its block data: see verify); exits 1 when unhealthy."},
    {KV_CTL_OP_VERIFY, kVerifyOptions, "POOL [--remove]",
     "Read every block and check its checksum (no timeout unless --timeout); exits 1 when a block "
     "fails it, removed or not."},
    {KV_CTL_OP_EVICT, kEvictOptions, "POOL --percent N",
     "Evict part of a pool's unpinned bytes now."},
    {KV_CTL_OP_PERSIST, kSnapshotOptions, "POOL [--path FILE]",
     "Write a pool's snapshot (no timeout unless --timeout)."},
    {KV_CTL_OP_RESTORE, kRestoreOptions,
     "POOL [--path FILE] [--force]", "Load a pool from a snapshot (no timeout unless --timeout)."},
    {KV_CTL_OP_CLIENTS, kNoOptions, "POOL",
     "List the processes attached to a pool."},
    {KV_CTL_OP_DETACH, kDetachOptions, "POOL --pid PID [--kill]",
     "Release a client's slot, pins and reservations."},
    {KV_CTL_OP_STATS, kNoOptions, "",
     "Show the daemon's counters, then each pool's."},
    {KV_CTL_OP_VERSION, kNoOptions, "",
     "Show kvctl's and kvpoold's versions."},
};

const Verb *find_verb(std::string_view name) {
    for (const Verb &v : kVerbs)
        if (v.name() == name) return &v;
    return nullptr;
}

std::string verb_names() {
    std::string s;
    for (const Verb &v : kVerbs)
        s += std::string(s.empty() ? "" : ", ") + std::string(v.name());
    return s + ", help";
}

// ---- Help ------------------------------------------------------------------

constexpr const char *kGlobalOptions =
    "Options (before or after the verb):\n"
    "  --socket PATH      the control socket (default: $KVPOOL_SOCKET, else\n"
    "                     /run/kvpool/control)\n"
    "  --json             print the daemon's JSON document instead of tables; a\n"
    "                     failure prints {\"error\": {\"exit\": N, \"errno\": E or null,\n"
    "                     \"message\": TEXT}} on stdout instead (and the message on\n"
    "                     stderr, as without --json)\n"
    "  --timeout SECONDS  give up waiting for the daemon after SECONDS (default 30;\n"
    "                     persist, restore and verify wait forever); 0: wait forever\n"
    "  -h, --help         show this help; VERB --help or help VERB shows a verb's\n"
    "  --                 end of options: a pool name after it may start with -\n";

constexpr const char *kExitCodes =
    "Exit status:\n"
    "  0  success\n"
    "  1  the daemon refused or failed the request; health: the pool is unhealthy;\n"
    "     verify: a block failed its checksum (with --remove: and was removed)\n"
    "  2  usage error: unknown verb, bad or missing argument\n"
    "  3  cannot connect to kvpoold (not running, wrong --socket, socket permissions,\n"
    "     or it refused the connection: too many open)\n"
    "  4  permission denied by kvpoold\n"
    "  5  no such pool\n"
    "  6  the pool already exists\n"
    "  7  protocol error: malformed or truncated response, connection closed, timeout\n"
    "  8  restore: the snapshot was truncated or damaged, or blocks were dropped;\n"
    "     the verified blocks were restored (the output says how many)\n"
    "  9  detach: the process is not attached to the pool\n";

void print_usage(FILE *out) {
    std::fputs("Usage: kvctl [--socket PATH] [--json] [--timeout SECONDS] VERB [ARGS]\n\n"
               "Query and manage the pools of kvpoold, the kvpool daemon.\n\n"
               "Verbs:\n",
               out);
    constexpr size_t kCol = 22;
    for (const Verb &v : kVerbs) {
        std::string left = "  ";
        left += v.name();
        if (!v.synopsis.empty()) {
            left += ' ';
            left += v.synopsis;
        }
        if (left.size() + 2 > kCol)
            left += "\n" + std::string(kCol, ' ');
        else
            left.resize(kCol, ' ');
        std::fprintf(out, "%s%.*s\n", left.c_str(), int(v.help.size()), v.help.data());
    }
    std::fprintf(out, "%-*s%s\n\n", int(kCol), "  help VERB", "Show a verb's options.");
    std::fputs(kGlobalOptions, out);
    std::fputs("\n", out);
    std::fputs(kExitCodes, out);
}

void print_verb_usage(const Verb &v, FILE *out) {
    std::fprintf(out, "Usage: kvctl [OPTIONS] %.*s%s%.*s\n\n%.*s\n", int(v.name().size()),
                 v.name().data(), v.synopsis.empty() ? "" : " ", int(v.synopsis.size()),
                 v.synopsis.data(), int(v.help.size()), v.help.data());
    if (!v.options.empty()) {
        std::fputs("\nVerb options:\n", out);
        auto left = [](const Option &o) {
            return "  " + std::string(o.name) + (o.value.empty() ? "" : " ") + std::string(o.value);
        };
        size_t w = 0;
        for (const Option &o : v.options)
            w = std::max(w, left(o).size() + 2);
        for (const Option &o : v.options)
            std::fprintf(out, "%-*s%.*s\n", int(w), left(o).c_str(), int(o.help.size()),
                         o.help.data());
    }
    std::fputs("\n", out);
    std::fputs(kGlobalOptions, out);
    std::fputs("\nRun kvctl --help for the exit codes.\n", out);
}

// ---- Command line ------------------------------------------------------------

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

Failure usage_error(const Command &c, std::string message) {
    std::string hint = c.verb ? "Try 'kvctl help " + std::string(c.verb->name()) + "'."
                              : std::string("Try 'kvctl --help'.");
    return Failure{kExitUsage, std::move(message), std::move(hint)};
}

std::optional<uint64_t> parse_uint(std::string_view s) {
    uint64_t v = 0;
    if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt; // no sign, no space
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

Result<double> parse_timeout(const Command &c, const std::string &s) {
    errno = 0;
    char *end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v) || v < 0 ||
        v > kMaxTimeout)
        return std::unexpected(
            usage_error(c, "--timeout " + quote(s) +
                               ": expected a number of seconds from 0 (wait forever) to 31536000"));
    return v;
}

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

Result<Command> parse_command(int argc, char **argv, JsonWanted &wanted) {
    Command c;
    if (const char *env = std::getenv("KVPOOL_SOCKET"); env && *env) {
        c.socket = env;
        c.socket_source = "$KVPOOL_SOCKET";
    }
    bool socket_given = false, json_given = false;
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        wanted.next = i + 1;
        const std::string_view arg = argv[i];
        const bool is_option = !options_done && arg.size() > 1 && arg[0] == '-' && arg != "--";
        if (!options_done && arg == "--") {
            wanted.options_done = options_done = true;
            continue;
        }
        if (!is_option) {
            if (c.verb || c.help_verb) {
                c.positional.emplace_back(arg);
            } else if (arg == "help") {
                c.help_verb = true;
            } else if (!(c.verb = find_verb(arg))) {
                return std::unexpected(usage_error(c, "unknown verb " + quote(arg) +
                                                          "; expected one of " + verb_names()));
            }
            continue;
        }

        // --name=value or --name value.
        std::string_view name = arg;
        std::optional<std::string> inline_value;
        if (size_t eq = arg.find('='); eq != std::string_view::npos && arg.starts_with("--")) {
            name = arg.substr(0, eq);
            inline_value = std::string(arg.substr(eq + 1));
        }
        auto take_value = [&](std::string_view what) -> Result<std::string> {
            if (inline_value) return *inline_value;
            if (i + 1 >= argc)
                return std::unexpected(usage_error(
                    c, std::string(name) + ": missing value; expected " + std::string(what)));
            wanted.next = i + 2;
            return std::string(argv[++i]);
        };
        auto no_value = [&]() -> Result<void> {
            if (inline_value)
                return std::unexpected(
                    usage_error(c, std::string(name) + " takes no value; got " + quote(arg)));
            return {};
        };

        if (name == "-h" || name == "--help") {
            if (auto r = no_value(); !r) return std::unexpected(r.error());
            c.help = true;
        } else if (name == "--json") {
            if (auto r = no_value(); !r) return std::unexpected(r.error());
            wanted.json = true;
            if (json_given) return std::unexpected(usage_error(c, "--json: given more than once"));
            json_given = c.json = true;
        } else if (name == "--socket") {
            auto v = take_value("the path of kvpoold's control socket");
            if (!v) return std::unexpected(v.error());
            if (socket_given)
                return std::unexpected(usage_error(c, "--socket: given more than once"));
            socket_given = true;
            c.socket = *v;
            c.socket_source = "--socket";
        } else if (name == "--timeout") {
            auto v = take_value("a number of seconds (0: wait forever)");
            if (!v) return std::unexpected(v.error());
            if (c.timeout_s)
                return std::unexpected(usage_error(c, "--timeout: given more than once"));
            auto t = parse_timeout(c, *v);
            if (!t) return std::unexpected(t.error());
            c.timeout_s = *t;
        } else {
            const Option *opt = nullptr;
            if (c.verb)
                for (const Option &o : c.verb->options)
                    if (o.name == name) opt = &o;
            if (!opt) {
                std::string msg = "unknown option " + quote(name);
                if (c.verb) {
                    msg += " for " + std::string(c.verb->name());
                    std::string known;
                    for (const Option &o : c.verb->options)
                        known += (known.empty() ? "" : ", ") + std::string(o.name);
                    msg += known.empty() ? "; it takes none besides --socket, --json, --timeout"
                                         : "; expected one of " + known;
                } else {
                    msg += "; verb options go after the verb";
                }
                return std::unexpected(usage_error(c, msg));
            }
            if (c.option(opt->name))
                return std::unexpected(
                    usage_error(c, std::string(opt->name) + ": given more than once"));
            std::string value;
            if (opt->value.empty()) {
                if (auto r = no_value(); !r) return std::unexpected(r.error());
            } else {
                auto v = take_value(opt->value);
                if (!v) return std::unexpected(v.error());
                value = std::move(*v);
            }
            c.options.emplace_back(opt, std::move(value));
        }
    }
    return c;
}

// Pool names as the protocol defines them: [A-Za-z0-9_.-]{1,63}, not "." or "..".
Result<void> check_pool_name(const Command &c, const std::string &name) {
    const std::string what = "POOL " + quote(name) + ": ";
    switch (kv::control::check_pool_name(name)) {
    case kv::control::NameProblem::None:
        return {};
    case kv::control::NameProblem::Empty:
        return std::unexpected(usage_error(c, what + "expected a pool name"));
    case kv::control::NameProblem::TooLong:
        return std::unexpected(usage_error(c, what + strf("%zu bytes long; expected at most %d",
                                                          name.size(), KV_CTL_NAME_MAX - 1)));
    case kv::control::NameProblem::BadCharacter:
        return std::unexpected(
            usage_error(c, what + "expected only letters, digits, '_', '.' and '-'"));
    case kv::control::NameProblem::Dots:
        break;
    }
    return std::unexpected(usage_error(c, what + "not a valid pool name"));
}

Result<void> check_socket_path(const Command &c) {
    const size_t max = sizeof(sockaddr_un::sun_path) - 1;
    if (c.socket.empty())
        return std::unexpected(
            usage_error(c, c.socket_source + ": expected the path of kvpoold's control socket"));
    if (c.socket.size() > max)
        return std::unexpected(
            usage_error(c, c.socket_source + " " + quote(c.socket) +
                               strf(": %zu bytes long; a unix socket path holds at most %zu",
                                    c.socket.size(), max)));
    return {};
}

// The request for a parsed command; every verb option is converted and
// range-checked here so that a bad one is a usage error before connecting.
Result<kv_ctl_request> build_request(const Command &c) {
    kv_ctl_request req;
    std::memset(&req, 0, sizeof req); // reserved fields and padding must be zero
    const Verb &v = *c.verb;

    if (v.pool() == PoolName::Ignored && !c.positional.empty())
        return std::unexpected(usage_error(c, std::string(v.name()) + ": unexpected argument " +
                                                  quote(c.positional[0]) + "; " +
                                                  std::string(v.name()) + " takes no pool name"));
    if (v.pool() == PoolName::Required && c.positional.empty())
        return std::unexpected(
            usage_error(c, std::string(v.name()) + ": missing POOL; expected a pool name"));
    if (c.positional.size() > 1)
        return std::unexpected(usage_error(c, std::string(v.name()) + ": unexpected argument " +
                                                  quote(c.positional[1]) + "; expected one POOL"));
    if (!c.positional.empty()) {
        const std::string &name = c.positional[0];
        if (auto r = check_pool_name(c, name); !r) return std::unexpected(r.error());
        std::memcpy(req.pool, name.data(), name.size());
    }

    auto bad = [&](std::string_view opt, const std::string &value, std::string_view expected) {
        return std::unexpected(
            usage_error(c, std::string(opt) + " " + quote(value) + ": " + std::string(expected)));
    };
    auto required = [&](std::string_view opt) -> Result<std::string> {
        if (const std::string *s = c.option(opt)) return *s;
        return std::unexpected(usage_error(c, std::string(v.name()) + ": missing " +
                                                  std::string(opt) + "; it is required"));
    };

    switch (v.op) {
    case KV_CTL_OP_CREATE: {
        auto size_text = required("--size");
        if (!size_text) return std::unexpected(size_text.error());
        auto size = kv::detail::parse_size(*size_text);
        // parse_size's message starts with "size \"TEXT\": ", naming the option completes it.
        if (!size) return std::unexpected(usage_error(c, "--" + size.error()));
        if (*size == 0) return bad("--size", *size_text, "expected a size above 0");
        req.size = *size;

        req.hugepages = KV_HUGEPAGES_PREFER;
        if (const std::string *h = c.option("--hugepages")) {
            if (*h == "require")
                req.hugepages = KV_HUGEPAGES_REQUIRE;
            else if (*h == "prefer")
                req.hugepages = KV_HUGEPAGES_PREFER;
            else if (*h == "never")
                req.hugepages = KV_HUGEPAGES_NEVER;
            else
                return bad("--hugepages", *h, "expected require, prefer or never");
        }

        req.numa_node = KV_CTL_NUMA_NONE;
        if (const std::string *n = c.option("--numa")) {
            if (*n == "none") {
                req.numa_node = KV_CTL_NUMA_NONE;
            } else if (*n == "local") {
                req.numa_node = KV_CTL_NUMA_LOCAL;
            } else {
                // Linux has at most 1024 nodes (NODES_SHIFT 10).
                auto node = parse_uint(*n);
                if (!node || *node > 1023)
                    return bad("--numa", *n, "expected a node number 0..1023, local or none");
                req.numa_node = uint32_t(*node);
            }
        }

        if (const std::string *m = c.option("--mode")) {
            auto mode = kv::detail::parse_mode(*m);
            if (!mode) return std::unexpected(usage_error(c, "--" + mode.error()));
            // The protocol reads 0 as "the default, 0660": refuse it rather than surprise.
            if (*mode == 0)
                return bad("--mode", *m,
                           "expected a non-zero mode (0 would mean the default, 0660)");
            req.mode = *mode;
        }
        if (c.option("--prefault")) req.flags |= KV_CTL_F_PREFAULT;
        if (c.option("--no-persist")) req.flags |= KV_CTL_F_NO_PERSIST;
        if (const std::string *m = c.option("--max-entries")) {
            auto n = parse_uint(*m);
            if (!n || *n < 64 || *n > 0xfffffff0ULL)
                return bad("--max-entries", *m, "expected a number of entry slots from 64 to 4294967280");
            req.max_entries = uint32_t(*n);
        }
        if (const std::string *pol = c.option("--policy")) {
            int v = kv_evict_policy_parse(pol->c_str());
            if (v < 0) return bad("--policy", *pol, "expected prefix, lru, lfu, fifo, priority or clock");
            req.flags |= KV_CTL_F_POLICY;
            req.evict_policy = uint32_t(v);
        }
        break;
    }
    case KV_CTL_OP_ENTRIES:
        if (const std::string *l = c.option("--limit")) {
            auto n = parse_uint(*l);
            if (!n || *n == 0) return bad("--limit", *l, "expected a row count of at least 1");
            req.arg = *n;
        }
        break;
    case KV_CTL_OP_EVICT: {
        auto p = required("--percent");
        if (!p) return std::unexpected(p.error());
        std::string_view digits = *p;
        if (digits.ends_with('%')) digits.remove_suffix(1);
        auto n = parse_uint(digits);
        if (!n || *n > 100) return bad("--percent", *p, "expected a whole number 0..100");
        req.arg = *n;
        break;
    }
    case KV_CTL_OP_PERSIST:
    case KV_CTL_OP_RESTORE:
        if (const std::string *path = c.option("--path")) {
            if (path->empty()) return bad("--path", *path, "expected a file path");
            if (path->size() >= KV_CTL_PATH_MAX)
                return bad(
                    "--path", *path,
                    strf("%zu bytes long; expected at most %d", path->size(), KV_CTL_PATH_MAX - 1));
            std::memcpy(req.path, path->data(), path->size());
        }
        if (c.option("--force")) req.flags |= KV_CTL_F_FORCE;
        break;
    case KV_CTL_OP_DETACH: {
        auto p = required("--pid");
        if (!p) return std::unexpected(p.error());
        auto pid = parse_uint(*p);
        if (!pid || *pid < 1 || *pid > uint64_t(INT32_MAX))
            return bad("--pid", *p, "expected a process id 1..2147483647");
        req.arg = *pid;
        if (c.option("--kill")) req.flags |= KV_CTL_F_KILL;
        break;
    }
    case KV_CTL_OP_VERIFY:
        if (c.option("--remove")) req.flags |= KV_CTL_F_REMOVE;
        break;
    default:
        break;
    }
    return req;
}

// ---- The connection ----------------------------------------------------------

using Response = kv::control::Reply;

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
    return Failure{kExitProtocol,
                   e.timed_out ? e.message + "; raise --timeout or use 0 to wait forever" : e.message};
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

Result<Response> transact(const Command &c, const kv_ctl_request &req) {
    auto session = Session::open(c);
    if (!session) return std::unexpected(session.error());
    return session->request(req);
}

// ---- Reading the daemon's JSON: nothing here throws ---------------------------

const json *field(const json &o, const char *key) {
    if (!o.is_object()) return nullptr;
    const auto it = o.find(key);
    return it == o.end() ? nullptr : &*it;
}

std::optional<uint64_t> get_u64(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_number_integer()) {
        const int64_t i = v->get<int64_t>();
        return i >= 0 ? std::optional<uint64_t>(uint64_t(i)) : std::nullopt;
    }
    if (v->is_number_float()) {
        const double d = v->get<double>();
        if (d >= 0 && d < 18446744073709551616.0 && d == std::floor(d)) return uint64_t(d);
    }
    return std::nullopt;
}

std::optional<int64_t> get_i64(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) {
        const uint64_t u = v->get<uint64_t>();
        return u <= uint64_t(INT64_MAX) ? std::optional<int64_t>(int64_t(u)) : std::nullopt;
    }
    if (v->is_number_integer()) return v->get<int64_t>();
    return std::nullopt;
}

std::optional<double> get_double(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_number()) return std::nullopt;
    const double d = v->get<double>();
    return std::isfinite(d) ? std::optional<double>(d) : std::nullopt;
}

std::optional<bool> get_bool(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_boolean()) return std::nullopt;
    return v->get<bool>();
}

// Text from the daemon goes to a terminal: control characters (C0, DEL and
// the UTF-8 encoded C1 range, which holds CSI) and every byte that does not
// start a well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or
// code points past U+10FFFF) become '?'.
std::string sanitize(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    auto byte = [&](size_t i) { return i < s.size() ? static_cast<unsigned char>(s[i]) : 0; };
    for (size_t i = 0; i < s.size();) {
        const unsigned char b = byte(i);
        if (b < 0x80) {
            out += b < 0x20 || b == 0x7f ? '?' : char(b);
            i++;
            continue;
        }
        // Length and the allowed range of the second byte, by the lead byte.
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf) len = 2;
        else if (b == 0xe0) len = 3, lo = 0xa0;
        else if (b == 0xed) len = 3, hi = 0x9f;
        else if (b >= 0xe1 && b <= 0xef) len = 3;
        else if (b == 0xf0) len = 4, lo = 0x90;
        else if (b == 0xf4) len = 4, hi = 0x8f;
        else if (b >= 0xf1 && b <= 0xf3) len = 4;
        bool ok = len != 0 && byte(i + 1) >= lo && byte(i + 1) <= hi;
        for (size_t k = 2; ok && k < len; k++) ok = byte(i + k) >= 0x80 && byte(i + k) <= 0xbf;
        if (!ok) { // a stray byte: one '?', and resynchronise on the next
            out += '?';
            i++;
        } else if (b == 0xc2 && byte(i + 1) <= 0x9f) { // C1 control
            out += '?';
            i += 2;
        } else {
            out.append(s.substr(i, len));
            i += len;
        }
    }
    return out;
}

std::string text(const json &o, const char *key) {
    const json *v = field(o, key);
    if (!v || !v->is_string() || v->get_ref<const std::string &>().empty()) return kNone;
    return sanitize(v->get_ref<const std::string &>());
}

std::string count(std::optional<uint64_t> v) {
    return v ? std::to_string(*v) : kNone;
}
std::string count(const json &o, const char *key) {
    return count(get_u64(o, key));
}

std::string size(std::optional<uint64_t> v) {
    return v ? format_size(*v) : kNone;
}
std::string size(const json &o, const char *key) {
    return size(get_u64(o, key));
}

// "16.0 GiB (17179869184 bytes)"; the exact count matters next to a rounded one.
std::string size_exact(const json &o, const char *key) {
    const auto v = get_u64(o, key);
    if (!v) return kNone;
    if (*v < 1024) return format_size(*v);
    return format_size(*v) + " (" + std::to_string(*v) + " bytes)";
}

// A value already in percent (0..100).
std::string percent(std::optional<double> v) {
    return v ? strf("%.1f%%", *v) : kNone;
}
// A fraction (0..1) shown in percent.
std::string fraction(std::optional<double> v) {
    return v ? strf("%.1f%%", *v * 100.0) : kNone;
}

std::string yes_no(std::optional<bool> v) {
    if (!v) return kNone;
    return *v ? "yes" : "no";
}

std::string duration(std::optional<double> s) {
    if (!s || *s < 0) return kNone;
    if (*s < 10) return strf("%.1fs", *s);
    if (*s < 60) return strf("%.0fs", *s);
    if (*s >= 1e12) return strf("%.3gs", *s); // keeps the conversions below in range
    const auto t = uint64_t(*s);
    if (t < 3600) return strf("%um%02us", unsigned(t / 60), unsigned(t % 60));
    if (t < 86400) return strf("%uh%02um", unsigned(t / 3600), unsigned(t / 60 % 60));
    return strf("%llud%02uh", (unsigned long long)(t / 86400), unsigned(t / 3600 % 24));
}

std::string numa(const json &o, const char *key) {
    const auto n = get_i64(o, key);
    if (!n) return kNone;
    return *n == -1 ? "none" : std::to_string(*n);
}

// "-" when nothing was looked up: a 0.0% hit rate then would read as all misses.
std::string hit_rate(const json &pool) {
    const auto hits = get_u64(pool, "hits"), misses = get_u64(pool, "misses");
    if (hits && misses && *hits == 0 && *misses == 0) return kNone;
    return fraction(get_double(pool, "hit_rate"));
}

// A value of a key kvctl does not know, shown as well as it can be.
std::string any_value(const json &v) {
    if (v.is_string()) return sanitize(v.get_ref<const std::string &>());
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    if (v.is_null()) return kNone;
    return sanitize(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

// ---- Output ------------------------------------------------------------------

using Lines = std::vector<std::pair<std::string, std::string>>;

// "key: value" lines with the values aligned.
void print_lines(const Lines &lines, const char *indent = "") {
    size_t w = 0;
    for (const auto &[k, v] : lines)
        w = std::max(w, k.size() + 1);
    for (const auto &[k, v] : lines)
        std::printf("%s%-*s %s\n", indent, int(w), (k + ":").c_str(), v.c_str());
}

// The keys of o that are not in known, appended as they are: a newer daemon's
// additions show up without a new kvctl.
void add_unknown(Lines &lines, const json &o, std::initializer_list<std::string_view> known) {
    if (!o.is_object()) return;
    for (const auto &[k, v] : o.items()) {
        bool seen = false;
        for (std::string_view n : known)
            seen = seen || n == k;
        if (!seen) lines.emplace_back(sanitize(k), any_value(v));
    }
}

size_t display_width(std::string_view s) {
    size_t n = 0;
    for (char ch : s)
        n += (static_cast<unsigned char>(ch) & 0xc0) != 0x80; // UTF-8 lead bytes
    return n;
}

class Table {
  public:
    struct Column {
        const char *title;
        bool right; // numbers are right-aligned
    };

    explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

    void print() const {
        std::vector<size_t> w(columns_.size());
        for (size_t i = 0; i < columns_.size(); i++)
            w[i] = display_width(columns_[i].title);
        for (const auto &row : rows_)
            for (size_t i = 0; i < row.size() && i < w.size(); i++)
                w[i] = std::max(w[i], display_width(row[i]));
        std::vector<std::string> header;
        for (const Column &col : columns_)
            header.emplace_back(col.title);
        print_row(header, w);
        for (const auto &row : rows_)
            print_row(row, w);
    }

  private:
    void print_row(const std::vector<std::string> &row, const std::vector<size_t> &w) const {
        std::string line;
        for (size_t i = 0; i < columns_.size(); i++) {
            const std::string &cell = i < row.size() ? row[i] : std::string(kNone);
            const std::string pad(w[i] - std::min(w[i], display_width(cell)), ' ');
            if (i) line += "  ";
            if (columns_[i].right)
                line += pad + cell;
            else
                line += cell + (i + 1 < columns_.size() ? pad : "");
        }
        std::printf("%s\n", line.c_str());
    }

    std::vector<Column> columns_;
    std::vector<std::vector<std::string>> rows_;
};

// A response whose shape is wrong where kvctl cannot print "-" instead.
Failure malformed(const Command &c, const std::string &what) {
    // what may quote the response (the JSON parser's "last read"): sanitized.
    return Failure{kExitProtocol,
                   "malformed " + std::string(c.verb->name()) + " response from kvpoold: " + sanitize(what)};
}

Result<const json *> array_field(const Command &c, const json &doc, const char *key) {
    const json *a = field(doc, key);
    if (!a || !a->is_array())
        return std::unexpected(malformed(c, strf("expected a \"%s\" array", key)));
    return a;
}

Result<int> print_pools(const Command &c, const json &doc) {
    auto pools = array_field(c, doc, "pools");
    if (!pools) return std::unexpected(pools.error());
    Table t({{"NAME", false},
             {"SIZE", true},
             {"USED", true},
             {"USED%", true},
             {"ENTRIES", true},
             {"HIT RATE", true},
             {"POLICY", false},
             {"PAGE", true},
             {"NUMA", true},
             {"CLIENTS", true}});
    for (const json &p : **pools)
        t.add({text(p, "name"), size(p, "size"), size(p, "used_bytes"),
               percent(get_double(p, "used_pct")), count(p, "entries"), hit_rate(p),
               text(p, "policy"), size(p, "page_size"), numa(p, "numa_node"), count(p, "clients")});
    t.print();
    return kExitOk;
}

void print_pool(const json &p) {
    Lines l = {
        {"name", text(p, "name")},
        {"path", text(p, "path")},
        {"state", text(p, "state")},
        {"origin", text(p, "origin")},
        {"size", size_exact(p, "size")},
        {"capacity", size_exact(p, "capacity")},
        {"used", size(p, "used_bytes") + " (" + percent(get_double(p, "used_pct")) + ")"},
        {"free", size(p, "free_bytes")},
        {"entries", count(p, "entries") + " committed of " + count(p, "entry_slots") + " slots"},
        {"bytes committed", size_exact(p, "bytes_committed")},
        {"hit rate",
         hit_rate(p) + " (" + count(p, "hits") + " hits, " + count(p, "misses") + " misses)"},
        {"puts", count(p, "puts")},
        {"dedups", count(p, "dedups")},
        {"evictions", count(p, "evictions")},
        {"removes", count(p, "removes")},
        {"pins", count(p, "pins")},
        {"clients", count(p, "clients")},
        {"policy", text(p, "policy")},
        {"page size", size(p, "page_size")},
        {"backing", text(p, "backing")},
        {"numa node", numa(p, "numa_node")},
        {"group", text(p, "group")},
        {"mode", text(p, "mode")},
        {"watermarks", "high " + fraction(get_double(p, "high_watermark")) + ", low " +
                           fraction(get_double(p, "low_watermark"))},
    };
    if (field(p, "created")) {
        const auto ns = get_u64(p, "create_time_ns");
        const double now =
            std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        const double age = ns ? now - double(*ns) / 1e9 : -1;
        l.emplace_back("created",
                       text(p, "created") + (age >= 0 ? " (" + duration(age) + " ago)" : ""));
    }
    // Keys the contract does not list yet: shown only when sent.
    if (field(p, "background_evicted_bytes"))
        l.emplace_back("background evicted", size(p, "background_evicted_bytes"));
    if (field(p, "reaped_clients")) l.emplace_back("reaped clients", count(p, "reaped_clients"));
    if (const json *snap = field(p, "snapshot"); snap && snap->is_object()) {
        std::string when;
        if (get_bool(*snap, "persist_on_stop").value_or(false)) when += "persist on stop";
        if (get_bool(*snap, "restore_on_start").value_or(false))
            when += std::string(when.empty() ? "" : ", ") + "restore on start";
        l.emplace_back("snapshot", text(*snap, "path") + (when.empty() ? "" : " (" + when + ")"));
        if (const json *run = field(*snap, "running"); run && run->is_object())
            l.emplace_back("running", text(*run, "op") + ": " + size(*run, "done_bytes") + " of " +
                                          size(*run, "total_bytes"));
        for (const char *k : {"last_persist", "last_restore"}) {
            const json *r = field(*snap, k);
            if (!r || !r->is_object()) continue;
            const bool ok = get_bool(*r, "ok").value_or(false);
            std::string line = ok ? count(*r, "blocks") + " blocks, " + size(*r, "bytes") + " in " +
                                        duration(get_double(*r, "seconds"))
                                  : "FAILED: " + text(*r, "error");
            if (ok && get_u64(*r, "dropped").value_or(0)) line += ", " + count(*r, "dropped") + " dropped";
            if (ok && get_bool(*r, "truncated").value_or(false))
                line += ", file truncated or damaged (its verified part was restored)";
            l.emplace_back(k[5] == 'p' ? "last persist" : "last restore", line);
        }
    }
    add_unknown(l, p,
                {"name",
                 "path",
                 "state",
                 "origin",
                 "size",
                 "capacity",
                 "used_bytes",
                 "used_pct",
                 "entries",
                 "entry_slots",
                 "bytes_committed",
                 "hits",
                 "misses",
                 "hit_rate",
                 "puts",
                 "dedups",
                 "evictions",
                 "removes",
                 "pins",
                 "clients",
                 "policy",
                 "page_size",
                 "backing",
                 "numa_node",
                 "group",
                 "mode",
                 "high_watermark",
                 "snapshot",
                 "low_watermark",
                 "background_evicted_bytes",
                 "reaped_clients",
                 "free_bytes",
                 "create_time_ns",
                 "created"});
    print_lines(l);
}

// The rows of entries, printed as pages arrive: fixed column widths (the
// widest usual value of each), so rows of later pages line up with the
// header; a wider cell only shifts the rest of its row.
class EntryTable {
  public:
    void header() const {
        row({"NS", "KEY", "LENGTH", "TOKENS", "PRIORITY", "PINS", "STATE", "AGE", "ACCESS"});
    }
    void add(const json &e) const {
        row({count(e, "ns"), text(e, "key"), size(e, "length"), count(e, "tokens"),
             count(e, "priority"), count(e, "pins"), text(e, "state"),
             duration(get_double(e, "age_s")), access(e)});
    }

  private:
    // What the pool's policy records of the block's use (control.h, ENTRY).
    static std::string access(const json &e) {
        if (const auto idle = get_double(e, "last_access_s")) return "idle " + duration(idle);
        if (const auto n = get_u64(e, "access_count")) return "lfu " + std::to_string(*n);
        if (const auto ref = get_bool(e, "referenced")) return *ref ? "referenced" : "unreferenced";
        return kNone;
    }

    struct Column {
        size_t width;
        bool right;
    };
    static constexpr Column kColumns[] = {{4, true}, {32, false}, {10, true}, {6, true},  {8, true},
                                          {4, true}, {9, false},  {6, true},  {12, false}};
    void row(const std::vector<std::string> &cells) const {
        std::string line;
        for (size_t i = 0; i < std::size(kColumns); i++) {
            const std::string &cell = cells[i];
            const size_t w = kColumns[i].width;
            const std::string pad(w - std::min(w, display_width(cell)), ' ');
            if (i) line += "  ";
            if (kColumns[i].right)
                line += pad + cell;
            else
                line += cell + (i + 1 < std::size(kColumns) ? pad : "");
        }
        std::printf("%s\n", line.c_str());
    }
};

Failure daemon_failure(const std::string &where, const Response &resp);

// How an error is shown once the --json document has begun on stdout.
json error_json(const Failure &f) {
    return json{{"exit", f.exit},
                {"errno", f.error ? json(f.error) : json(nullptr)},
                {"message", f.message}};
}

// entries: pages through the pool on one connection (control.h, ENTRIES:
// each request is bounded in the daemon's work and reply) and prints each
// page as it arrives, so a pool of millions of blocks lists in constant
// memory. --limit N stops after N rows (default: all). With --json, one
// document that is written as it grows:
//   {"pool": P, "entry_slots": N, "entries": [ROW, ...], "count": N, "truncated": B}
// one row per line; "truncated" is true when --limit stopped the listing
// before the end of the table. A failure after the document began closes it
// with "error": {"exit": N, "message": TEXT} in place of count and truncated.
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

Result<int> print_health(const Command &c, const json &doc) {
    const auto healthy = get_bool(doc, "healthy");
    if (!healthy) return std::unexpected(malformed(c, "expected a \"healthy\" boolean"));
    if (*healthy) {
        std::printf("healthy\n");
    } else {
        std::printf("unhealthy:\n");
        if (const json *problems = field(doc, "problems"); problems && problems->is_array())
            for (const json &p : *problems)
                std::printf("  - %s\n", any_value(p).c_str());
    }
    // The daemon's checks read the tables only (control.h, HEALTH).
    if (get_bool(doc, "data_checked") == false)
        std::printf("(block data not read: kvctl verify %s checks every block's checksum)\n",
                    text(doc, "pool").c_str());
    Lines l = {{"dead clients", count(doc, "dead_clients")}};
    static const json kEmpty = json::object();
    const json *u = field(doc, "usage");
    const json &usage = u ? *u : kEmpty;
    l.insert(l.end(), {
                          {"entries committed", count(usage, "entries_committed")},
                          {"entries reserved", count(usage, "entries_reserved")},
                          {"entries dead", count(usage, "entries_dead")},
                          {"entries free", count(usage, "entries_free")},
                          {"bytes committed", size_exact(usage, "bytes_committed")},
                          {"blocks used", count(usage, "blocks_used")},
                          {"blocks free", count(usage, "blocks_free")},
                          {"block bytes used", size_exact(usage, "block_bytes_used")},
                          {"pins", count(usage, "pins")},
                          {"journal pins", count(usage, "journal_pins")},
                          {"slabs active", count(usage, "slabs_active")},
                          {"slabs free", count(usage, "slabs_free")},
                          {"orphan blocks", count(usage, "orphan_blocks")},
                          {"bad links", count(usage, "bad_links")},
                          {"unreachable", count(usage, "unreachable")},
                      });
    add_unknown(l, usage,
                {"entries_committed", "entries_reserved", "entries_dead", "entries_free",
                 "bytes_committed", "blocks_used", "blocks_free", "block_bytes_used", "pins",
                 "journal_pins", "slabs_active", "slabs_free", "orphan_blocks", "bad_links",
                 "unreachable"});
    std::printf("\n");
    print_lines(l);
    return *healthy ? kExitOk : kExitFailed;
}

// persist and restore: what was written or read, in words. Every key of
// the daemon's document (snapshot_jobs.cc, result_json) has a line or is
// folded into one; only keys kvctl does not know are shown as they are.
void print_snapshot(const Command &c, const json &doc) {
    const bool restore = c.verb->op == KV_CTL_OP_RESTORE;
    std::printf("%s pool %s %s %s\n", restore ? "restored" : "persisted", text(doc, "pool").c_str(),
                restore ? "from" : "to", text(doc, "path").c_str());
    const auto seconds = get_double(doc, "seconds");
    auto rate = get_double(doc, "gib_per_s");
    if (!rate) { // a daemon that does not send it: the data bytes over the time
        const auto bytes = get_u64(doc, "bytes");
        if (bytes && seconds && *seconds > 0) rate = double(*bytes) / *seconds / double(1ULL << 30);
    }
    Lines l = {{"blocks", count(doc, "blocks")}, {"data", size_exact(doc, "bytes")}};
    if (const auto f = get_u64(doc, "file_bytes"); f && *f)
        l.emplace_back("file", size_exact(doc, "file_bytes"));
    l.emplace_back("time", seconds ? strf("%.3f s", *seconds) : kNone);
    l.emplace_back("rate", rate && *rate > 0 ? strf("%.2f GiB/s", *rate) : kNone);
    if (restore) {
        const auto dropped = get_u64(doc, "dropped");
        std::string why;
        if (dropped && *dropped && field(doc, "dropped_corrupt")) {
            const uint64_t corrupt = get_u64(doc, "dropped_corrupt").value_or(0);
            const uint64_t no_room = get_u64(doc, "dropped_no_room").value_or(0);
            if (corrupt + no_room <= *dropped)
                why = " (" + std::to_string(corrupt) + " failed verification, " +
                      std::to_string(no_room) + " found no room in the pool, " +
                      std::to_string(*dropped - corrupt - no_room) + " refused by the pool)";
        }
        l.emplace_back("dropped", count(dropped) + " blocks" + why);
        l.emplace_back("evicted", count(doc, "evicted") +
                                      " blocks of the pool, to make room for the snapshot's");
        if (get_u64(doc, "skipped").value_or(0))
            l.emplace_back("skipped", count(doc, "skipped") + " blocks already in the pool");
        if (get_u64(doc, "damaged_segments").value_or(0))
            l.emplace_back("damaged", count(doc, "damaged_segments") +
                                          " segment(s) of the file lost to a damaged head");
        if (get_u64(doc, "expired").value_or(0))
            l.emplace_back("expired", count(doc, "expired") + " blocks whose time to live ran out since the persist");
        if (get_bool(doc, "truncated").value_or(false))
            l.emplace_back("file state",
                           "truncated or damaged: only its verified part was restored");
        if (get_bool(doc, "trailer_damaged").value_or(false))
            l.emplace_back("trailer", "damaged (" + text(doc, "trailer_problem") +
                                          "); every block before it was read and verified");
        if (get_u64(doc, "trailing_bytes").value_or(0))
            l.emplace_back("trailing", size_exact(doc, "trailing_bytes") + " after the trailer, ignored");
    } else if (get_bool(doc, "recycled_spare").value_or(false)) {
        l.emplace_back("spare", "written over the previous snapshot's blocks (the .spare file)");
    }
    if (const auto fixed = get_bool(doc, "fixed_buffers"))
        l.emplace_back("buffers", *fixed ? "registered with io_uring (fixed buffers)"
                                         : "not registered (plain io_uring I/O)");
    if (field(doc, "quarantined"))
        l.emplace_back("quarantined", text(doc, "quarantined") +
                                          " (the file, moved aside: no persist writes over it)");
    add_unknown(l, doc,
                {"pool", "op", "path", "blocks", "bytes", "file_bytes", "seconds", "gib_per_s",
                 "dropped", "dropped_corrupt", "dropped_no_room", "evicted", "skipped", "truncated",
                 "damaged_segments", "fixed_buffers", "recycled_spare", "quarantined", "expired",
                 "trailer_damaged", "trailer_problem", "trailing_bytes"});
    print_lines(l, "  ");
}

// verify: the totals, then the blocks that failed their checksum.
Result<int> print_verify(const Command &c, const json &doc) {
    const auto bad = get_u64(doc, "bad_count");
    if (!bad) return std::unexpected(malformed(c, "expected a \"bad_count\" number"));
    const auto seconds = get_double(doc, "seconds");
    std::printf("pool %s: %s blocks (%s) checked in %s: %s\n", text(doc, "pool").c_str(),
                count(doc, "checked").c_str(), size(doc, "checked_bytes").c_str(),
                seconds ? strf("%.3f s", *seconds).c_str() : kNone,
                *bad ? strf("%llu failed the checksum", (unsigned long long)*bad).c_str()
                     : "every checksum matches");
    if (*bad) {
        auto rows = array_field(c, doc, "bad");
        if (!rows) return std::unexpected(rows.error());
        Table t({{"NS", true},
                 {"KEY", false},
                 {"LENGTH", true},
                 {"ENTRY", true},
                 {"CHECKSUM", false},
                 {"REMOVED", false}});
        for (const json &b : **rows)
            t.add({count(b, "ns"), text(b, "key"), size(b, "length"), count(b, "index"),
                   text(b, "checksum"), yes_no(get_bool(b, "removed"))});
        t.print();
        if ((*rows)->size() < *bad)
            std::printf("(the first %zu of %llu are listed)\n", (*rows)->size(),
                        (unsigned long long)*bad);
        if (c.option("--remove"))
            std::printf("removed %s bad blocks\n", count(doc, "removed").c_str());
    }
    if (get_u64(doc, "skipped").value_or(0))
        std::printf("%s blocks were removed or replaced while the verify ran, and not checked\n",
                    count(doc, "skipped").c_str());
    return *bad ? kExitFailed : kExitOk;
}

Result<int> print_clients(const Command &c, const json &doc) {
    auto clients = array_field(c, doc, "clients");
    if (!clients) return std::unexpected(clients.error());
    Table t({{"SLOT", true},
             {"PID", true},
             {"ALIVE", false},
             {"COMM", false},
             {"PINS", true},
             {"RESERVATIONS", true},
             {"BYTES RESERVED", true},
             {"ATTACHED FOR", true}});
    for (const json &cl : **clients)
        t.add({count(cl, "slot"), count(cl, "pid"), yes_no(get_bool(cl, "alive")), text(cl, "comm"),
               count(cl, "pins"), count(cl, "reservations"), size(cl, "bytes_reserved"),
               duration(get_double(cl, "attached_s"))});
    t.print();
    return kExitOk;
}

Result<int> print_stats(const Command &c, const json &doc) {
    static const json kEmpty = json::object();
    const json *d = field(doc, "daemon");
    const json &daemon = d ? *d : kEmpty;
    Lines l = {
        {"version", text(daemon, "version")},
        {"pid", count(daemon, "pid")},
        {"uptime", duration(get_double(daemon, "uptime_s"))},
        {"rss", size(daemon, "rss_bytes")},
        {"requests", count(daemon, "requests")},
        {"request errors", count(daemon, "request_errors")},
        {"reaped clients", count(daemon, "reaped_clients")},
        {"background evicted", size(daemon, "background_evicted_bytes")},
    };
    add_unknown(l, daemon,
                {"version", "pid", "uptime_s", "rss_bytes", "requests", "request_errors",
                 "reaped_clients", "background_evicted_bytes"});
    std::printf("kvpoold:\n");
    print_lines(l, "  ");
    std::printf("\n");

    auto pools = array_field(c, doc, "pools");
    if (!pools) return std::unexpected(pools.error());
    Table t({{"NAME", false},
             {"ENTRIES", true},
             {"USED", true},
             {"HITS", true},
             {"MISSES", true},
             {"HIT RATE", true},
             {"PUTS", true},
             {"DEDUPS", true},
             {"EVICTIONS", true},
             {"REMOVES", true},
             {"PINS", true},
             {"CLIENTS", true}});
    for (const json &p : **pools)
        t.add({text(p, "name"), count(p, "entries"), size(p, "used_bytes"), count(p, "hits"),
               count(p, "misses"), hit_rate(p), count(p, "puts"), count(p, "dedups"),
               count(p, "evictions"), count(p, "removes"), count(p, "pins"), count(p, "clients")});
    t.print();
    return kExitOk;
}

Result<int> render(const Command &c, const json &doc) {
    if (!doc.is_object())
        return std::unexpected(
            malformed(c, std::string("expected a JSON object, got ") + doc.type_name()));
    const std::string pool = text(doc, "pool");
    switch (c.verb->op) {
    case KV_CTL_OP_LIST:
        return print_pools(c, doc);
    case KV_CTL_OP_STATUS:
        if (c.positional.empty()) return print_pools(c, doc);
        print_pool(doc);
        return kExitOk;
    case KV_CTL_OP_CREATE:
        std::printf("created pool %s\n\n", text(doc, "name").c_str());
        print_pool(doc);
        return kExitOk;
    case KV_CTL_OP_DESTROY:
        if (get_bool(doc, "destroyed") != true) {
            std::fprintf(stderr,
                         "kvctl: destroy %s: kvpoold answered without \"destroyed\": true\n",
                         pool.c_str());
            return kExitFailed;
        }
        std::printf("destroyed pool %s\n", pool.c_str());
        return kExitOk;
    case KV_CTL_OP_ENTRIES: // list_entries prints as pages arrive
        return kExitOk;
    case KV_CTL_OP_HEALTH:
        return print_health(c, doc);
    case KV_CTL_OP_VERIFY:
        return print_verify(c, doc);
    case KV_CTL_OP_EVICT:
        std::printf("pool %s: freed %s of %s requested\n", pool.c_str(),
                    size(doc, "freed_bytes").c_str(), size(doc, "requested_bytes").c_str());
        return kExitOk;
    case KV_CTL_OP_PERSIST:
    case KV_CTL_OP_RESTORE:
        print_snapshot(c, doc);
        return kExitOk;
    case KV_CTL_OP_CLIENTS:
        return print_clients(c, doc);
    case KV_CTL_OP_DETACH:
        std::printf("pool %s: detached pid %s (killed: %s, clients reaped: %s)\n", pool.c_str(),
                    count(doc, "pid").c_str(), yes_no(get_bool(doc, "killed")).c_str(),
                    count(doc, "reaped").c_str());
        return kExitOk;
    case KV_CTL_OP_STATS:
        return print_stats(c, doc);
    case KV_CTL_OP_VERSION:
        std::printf("kvpoold %s (protocol %s, pid %s)\n", text(doc, "daemon").c_str(),
                    count(doc, "protocol").c_str(), count(doc, "pid").c_str());
        return kExitOk;
    }
    return kExitOk;
}

// A restore that kept only part of its snapshot (a truncated or damaged
// file, blocks that failed verification or found no room) succeeded at what
// it could do, but a script must be able to tell it from a whole restore:
// exit 8, and say why on stderr (after the summary, which says how many
// blocks were restored).
int partial_restore(const Command &c, const json &doc) {
    if (c.verb->op != KV_CTL_OP_RESTORE) return kExitOk;
    const bool truncated = get_bool(doc, "truncated").value_or(false);
    const uint64_t dropped = get_u64(doc, "dropped").value_or(0);
    if (!truncated && dropped == 0) return kExitOk;
    std::string why;
    if (truncated) why = "the snapshot is truncated or damaged: only its verified part was restored";
    if (dropped) {
        const uint64_t corrupt = get_u64(doc, "dropped_corrupt").value_or(0);
        const uint64_t no_room = get_u64(doc, "dropped_no_room").value_or(0);
        why += std::string(why.empty() ? "" : "; ") + std::to_string(dropped) + " block(s) dropped";
        if (field(doc, "dropped_corrupt") && corrupt + no_room <= dropped)
            why += " (" + std::to_string(corrupt) + " failed verification, " +
                   std::to_string(no_room) + " found no room in the pool, " +
                   std::to_string(dropped - corrupt - no_room) + " refused by the pool)";
        else
            why += " (failed verification or no room in the pool)";
    }
    std::fflush(stdout);
    std::fprintf(stderr, "kvctl: restore %s: %s blocks restored; %s\n",
                 c.positional.empty() ? "" : c.positional[0].c_str(), count(doc, "blocks").c_str(),
                 why.c_str());
    return kExitPartial;
}

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

// The daemon's error answer as kvctl reports it: "VERB POOL: MESSAGE".
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

// Poll the pool's status once a second and print the running job's
// progress on stderr: one updating line on a terminal, a line every 10 s
// otherwise. Quiet for jobs that finish within the first second.
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
        for (int i = 0; i < 10 && !finished.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(100));
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
        std::string line = strf("%s %s: %s of %s", std::string(c.verb->name()).c_str(), c.positional.empty() ? "" : c.positional[0].c_str(),
                                size(done).c_str(), size(total).c_str());
        if (done && secs && *secs > 0)
            line += strf(" (%.2f GiB/s)", double(*done) / *secs / double(1ULL << 30));
        std::fprintf(stderr, tty ? "\r%s\033[K" : "%s\n", line.c_str());
        printed = true;
    }
    if (printed && tty) std::fprintf(stderr, "\n");
}

Result<int> run(const Command &c) {
    if (c.help_verb) {
        if (c.positional.empty()) {
            print_usage(stdout);
            return kExitOk;
        }
        const Verb *v = c.positional.size() == 1 ? find_verb(c.positional[0]) : nullptr;
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

// A failure as the user asked for it: "kvctl: MESSAGE" on stderr always,
// and with --json also {"error": {"exit", "errno", "message"}} on stdout,
// where the document a success prints would have gone.
int report(const Failure &f, bool as_json) {
    if (as_json)
        std::printf("%s\n", json{{"error", error_json(f)}}
                                .dump(2, ' ', false, json::error_handler_t::replace)
                                .c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "kvctl: %s\n", f.text().c_str());
    return f.exit;
}

} // namespace

int main(int argc, char **argv) {
    int code;
    JsonWanted wanted;
    bool as_json = false;
    try {
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
